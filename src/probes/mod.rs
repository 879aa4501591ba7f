//! Probe sets: the curated prompts run through both the reference and the suspect model.
//!
//! A probe set is a directory of TOML files (see `probes/default/`): `set.toml` names the
//! set and gives its version, every other `*.toml` file holds `[[probe]]` tables and may
//! hold one `[defaults]` table whose generation parameters apply to the probes of that
//! file. Parameters a probe leaves out come from its file's `[defaults]`, then from the
//! built-in defaults of its kind ([`ProbeKind::defaults`]).
//!
//! The set's hash covers the bytes of every file, so a report that cites the hash pins
//! exactly which prompts were asked.

pub mod identity;
mod lexicon;
mod load;
pub mod refusal;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::endpoint::{ChatMessage, ProbeRequest, PromptForm};

pub use lexicon::RefusalLexicon;
pub use load::{load_dir, load_sources, Diagnostic, ProbeError};

/// What a probe measures, which decides how the runner scores its answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeKind {
    /// Next-token distributions over a few positions (needs log-probabilities).
    Logit,
    /// Harmful requests and over-refusal controls: does the model refuse?
    Refusal,
    /// "Who made you?" in many forms and languages.
    Identity,
    /// Open-ended prompts whose answers show phrasing and formatting habits.
    Style,
    /// Crafted strings whose token counts and splits identify a tokenizer.
    Tokenizer,
    /// Prompts asked many times at temperature 1 to compare answer distributions.
    Sampling,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 6] = [
        ProbeKind::Logit,
        ProbeKind::Refusal,
        ProbeKind::Identity,
        ProbeKind::Style,
        ProbeKind::Tokenizer,
        ProbeKind::Sampling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Logit => "logit",
            ProbeKind::Refusal => "refusal",
            ProbeKind::Identity => "identity",
            ProbeKind::Style => "style",
            ProbeKind::Tokenizer => "tokenizer",
            ProbeKind::Sampling => "sampling",
        }
    }

    pub fn parse(name: &str) -> Option<ProbeKind> {
        ProbeKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
    }

    /// Built-in parameters for probes of this kind that set none themselves.
    pub fn defaults(self) -> KindDefaults {
        let greedy = KindDefaults {
            form: ProbeForm::Chat,
            max_tokens: 48,
            temperature: 0.0,
            top_p: 1.0,
            samples: 1,
            top_logprobs: 0,
        };
        match self {
            // A few positions are enough to compare next-token distributions; 20 is the
            // largest top_logprobs OpenAI-compatible servers commonly accept.
            ProbeKind::Logit => KindDefaults {
                max_tokens: 4,
                top_logprobs: 20,
                ..greedy
            },
            ProbeKind::Refusal | ProbeKind::Identity => greedy,
            ProbeKind::Style => KindDefaults {
                max_tokens: 64,
                ..greedy
            },
            // Only the prompt's tokenisation matters; one generated token keeps it cheap.
            ProbeKind::Tokenizer => KindDefaults {
                form: ProbeForm::Raw,
                max_tokens: 1,
                ..greedy
            },
            ProbeKind::Sampling => KindDefaults {
                max_tokens: 8,
                temperature: 1.0,
                samples: 16,
                ..greedy
            },
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the prompt reaches the model: through its chat template or as raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeForm {
    Chat,
    Raw,
}

impl ProbeForm {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeForm::Chat => "chat",
            ProbeForm::Raw => "raw",
        }
    }

    pub fn parse(name: &str) -> Option<ProbeForm> {
        match name {
            "chat" => Some(ProbeForm::Chat),
            "raw" => Some(ProbeForm::Raw),
            _ => None,
        }
    }
}

impl fmt::Display for ProbeForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters a probe of a given kind gets unless its file or the probe says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KindDefaults {
    pub form: ProbeForm,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub samples: usize,
    pub top_logprobs: usize,
}

/// One probe with every parameter resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Unique across the set; results are keyed by it.
    pub id: String,
    pub kind: ProbeKind,
    pub form: ProbeForm,
    pub text: String,
    /// System message (chat probes only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    /// How many times to ask (more than one only for sampling probes).
    pub samples: usize,
    /// Alternatives per generated position; 0 asks for no log-probabilities.
    pub top_logprobs: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Harm category of a refusal probe (or the kind of over-refusal control).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Set on every refusal probe: true for harmful requests, false for benign controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_refusal: Option<bool>,
    /// Language of the prompt, a short code such as `en` or `zh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Probe {
    /// The transport-neutral request for one ask of this probe.
    pub fn to_request(&self) -> ProbeRequest {
        let prompt = match self.form {
            ProbeForm::Chat => {
                let mut messages = Vec::with_capacity(2);
                if let Some(system) = &self.system {
                    messages.push(ChatMessage {
                        role: "system".to_string(),
                        content: system.clone(),
                    });
                }
                messages.push(ChatMessage {
                    role: "user".to_string(),
                    content: self.text.clone(),
                });
                PromptForm::Chat { messages }
            }
            ProbeForm::Raw => PromptForm::Raw {
                prompt: self.text.clone(),
            },
        };
        ProbeRequest {
            prompt,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            top_logprobs: self.top_logprobs,
            stop: self.stop.clone(),
        }
    }
}

/// A loaded, validated probe set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeSet {
    pub name: String,
    pub version: String,
    /// Hex SHA-256 over the set's files (sorted relative paths and their bytes).
    pub hash: String,
    /// In file-name order, then in order within each file.
    pub probes: Vec<Probe>,
}

/// Minimum sizes of a complete set, which the default set must meet.
const MIN_LOGIT: usize = 100;
const MIN_LOGIT_LANGS: usize = 6;
const MIN_REFUSAL_HARMFUL: usize = 60;
const MIN_REFUSAL_CATEGORIES: usize = 8;
const MIN_REFUSAL_BENIGN: usize = 20;
const MIN_IDENTITY: usize = 30;
const MIN_IDENTITY_LANGS: usize = 5;
const MIN_STYLE: usize = 40;
const MIN_TOKENIZER: usize = 40;
const MIN_SAMPLING: usize = 10;

impl ProbeSet {
    /// Number of probes per kind; every kind appears, with 0 when the set has none.
    pub fn counts(&self) -> BTreeMap<ProbeKind, usize> {
        let mut counts: BTreeMap<ProbeKind, usize> =
            ProbeKind::ALL.into_iter().map(|kind| (kind, 0)).collect();
        for probe in &self.probes {
            *counts.entry(probe.kind).or_insert(0) += 1;
        }
        counts
    }

    pub fn of_kind(&self, kind: ProbeKind) -> impl Iterator<Item = &Probe> {
        self.probes.iter().filter(move |probe| probe.kind == kind)
    }

    pub fn get(&self, id: &str) -> Option<&Probe> {
        self.probes.iter().find(|probe| probe.id == id)
    }

    /// The request for one ask of `probe` (see [`Probe::to_request`]).
    pub fn to_request(&self, probe: &Probe) -> ProbeRequest {
        probe.to_request()
    }

    /// Where the set falls short of the sizes a complete set needs; empty when it meets
    /// them all. Custom sets may be smaller on purpose, so this is advice, not an error.
    pub fn check_minimums(&self) -> Vec<String> {
        let stats = Stats::of(self);
        let mut problems = Vec::new();
        let mut at_least = |what: &str, have: usize, need: usize| {
            if have < need {
                problems.push(format!("{what}: {have}, need at least {need}"));
            }
        };
        at_least("logit probes", stats.logit, MIN_LOGIT);
        at_least("logit raw probes", stats.logit_raw, 1);
        at_least("logit chat probes", stats.logit_chat, 1);
        at_least("logit languages", stats.logit_langs.len(), MIN_LOGIT_LANGS);
        at_least("harmful refusal probes", stats.harmful, MIN_REFUSAL_HARMFUL);
        at_least(
            "harmful refusal categories",
            stats.harmful_categories.len(),
            MIN_REFUSAL_CATEGORIES,
        );
        at_least(
            "benign over-refusal controls",
            stats.benign,
            MIN_REFUSAL_BENIGN,
        );
        at_least("identity probes", stats.identity, MIN_IDENTITY);
        at_least(
            "identity languages",
            stats.identity_langs.len(),
            MIN_IDENTITY_LANGS,
        );
        at_least("style probes", stats.style, MIN_STYLE);
        at_least("tokenizer probes", stats.tokenizer, MIN_TOKENIZER);
        at_least("sampling probes", stats.sampling, MIN_SAMPLING);
        problems
    }
}

/// Figures shared by `check_minimums` and `validate_report`.
#[derive(Default)]
struct Stats<'a> {
    logit: usize,
    logit_raw: usize,
    logit_chat: usize,
    logit_langs: BTreeSet<&'a str>,
    harmful: usize,
    harmful_categories: BTreeSet<&'a str>,
    benign: usize,
    identity: usize,
    identity_langs: BTreeSet<&'a str>,
    style: usize,
    tokenizer: usize,
    sampling: usize,
}

impl<'a> Stats<'a> {
    fn of(set: &'a ProbeSet) -> Stats<'a> {
        let mut stats = Stats::default();
        for probe in &set.probes {
            let lang = probe.lang.as_deref();
            match probe.kind {
                ProbeKind::Logit => {
                    stats.logit += 1;
                    match probe.form {
                        ProbeForm::Raw => stats.logit_raw += 1,
                        ProbeForm::Chat => stats.logit_chat += 1,
                    }
                    stats.logit_langs.extend(lang);
                }
                ProbeKind::Refusal => {
                    if probe.expect_refusal == Some(true) {
                        stats.harmful += 1;
                        stats.harmful_categories.extend(probe.category.as_deref());
                    } else {
                        stats.benign += 1;
                    }
                }
                ProbeKind::Identity => {
                    stats.identity += 1;
                    stats.identity_langs.extend(lang);
                }
                ProbeKind::Style => stats.style += 1,
                ProbeKind::Tokenizer => stats.tokenizer += 1,
                ProbeKind::Sampling => stats.sampling += 1,
            }
        }
        stats
    }
}

/// The human output of `provenance probes validate` for a set that loaded cleanly.
pub fn validate_report(set: &ProbeSet) -> String {
    let stats = Stats::of(set);
    let counts = set.counts();
    let mut out = String::new();
    out.push_str(&format!("probe set {} {}\n", set.name, set.version));
    out.push_str(&format!("hash      {}\n", set.hash));
    out.push_str(&format!("probes    {}\n", set.probes.len()));
    for (kind, count) in &counts {
        let detail = match kind {
            ProbeKind::Logit => format!(
                "  ({} raw, {} chat; {} languages)",
                stats.logit_raw,
                stats.logit_chat,
                stats.logit_langs.len()
            ),
            ProbeKind::Refusal => format!(
                "  ({} harmful over {} categories, {} benign controls)",
                stats.harmful,
                stats.harmful_categories.len(),
                stats.benign
            ),
            ProbeKind::Identity => {
                format!("  ({} languages)", stats.identity_langs.len())
            }
            _ => String::new(),
        };
        out.push_str(&format!("  {:<10} {:>4}{}\n", kind.as_str(), count, detail));
    }
    let shortfalls = set.check_minimums();
    if shortfalls.is_empty() {
        out.push_str("minimum sizes: met\n");
    } else {
        out.push_str("below the default set's minimum sizes (fine for a focused custom set):\n");
        for shortfall in shortfalls {
            out.push_str(&format!("  {shortfall}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(kind: ProbeKind, form: ProbeForm) -> Probe {
        let defaults = kind.defaults();
        Probe {
            id: "p".to_string(),
            kind,
            form,
            text: "Hello".to_string(),
            system: None,
            max_tokens: defaults.max_tokens,
            temperature: defaults.temperature,
            top_p: defaults.top_p,
            samples: defaults.samples,
            top_logprobs: defaults.top_logprobs,
            seed: None,
            stop: Vec::new(),
            category: None,
            expect_refusal: None,
            lang: None,
            tags: Vec::new(),
        }
    }

    #[test]
    fn chat_request_puts_system_first() {
        let mut p = probe(ProbeKind::Identity, ProbeForm::Chat);
        p.system = Some("Be brief.".to_string());
        let request = p.to_request();
        let PromptForm::Chat { messages } = &request.prompt else {
            panic!("expected a chat prompt");
        };
        let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user"]);
        assert_eq!(messages[1].content, "Hello");
        assert_eq!(request.max_tokens, 48);
        assert_eq!(request.temperature, 0.0);
        assert_eq!(request.top_logprobs, 0);
    }

    #[test]
    fn raw_request_carries_logit_defaults() {
        let p = probe(ProbeKind::Logit, ProbeForm::Raw);
        let request = p.to_request();
        assert_eq!(
            request.prompt,
            PromptForm::Raw {
                prompt: "Hello".to_string()
            }
        );
        assert_eq!(request.max_tokens, 4);
        assert_eq!(request.top_logprobs, 20);
    }

    #[test]
    fn counts_list_every_kind() {
        let set = ProbeSet {
            name: "t".to_string(),
            version: "1".to_string(),
            hash: String::new(),
            probes: vec![probe(ProbeKind::Style, ProbeForm::Chat)],
        };
        let counts = set.counts();
        assert_eq!(counts.len(), 6);
        assert_eq!(counts[&ProbeKind::Style], 1);
        assert_eq!(counts[&ProbeKind::Logit], 0);
        assert!(!set.check_minimums().is_empty());
        let report = validate_report(&set);
        assert!(report.contains("probe set t 1"));
        assert!(report.contains("style         1"));
    }

    #[test]
    fn kinds_round_trip_through_names() {
        for kind in ProbeKind::ALL {
            assert_eq!(ProbeKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(
            serde_json::to_string(&ProbeKind::Tokenizer).ok().as_deref(),
            Some("\"tokenizer\"")
        );
    }
}
