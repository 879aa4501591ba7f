//! One signal: its name, what it says about a pair of fingerprints, what unrelated models
//! are assumed to score without controls, and the pairs of answers it reads.

use std::collections::{BTreeMap, HashMap};

use super::calibration::DefaultNull;
use super::equality::SampleGroup;
use crate::fingerprint::{Fingerprint, Observation};
use crate::probes::{ProbeForm, ProbeKind};

/// One signal of a comparison; its name is how reports and the UI refer to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    Logits,
    GreedyText,
    Tokenizer,
    Refusal,
    Identity,
    Style,
    Equality,
    Lexicon,
    Likelihood,
    GreedyTokens,
    Contrast,
}

impl Signal {
    /// Every signal, in report order.
    pub const ALL: [Signal; 11] = [
        Signal::Logits,
        Signal::Tokenizer,
        Signal::GreedyTokens,
        Signal::GreedyText,
        Signal::Style,
        Signal::Lexicon,
        Signal::Contrast,
        Signal::Likelihood,
        Signal::Refusal,
        Signal::Equality,
        Signal::Identity,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Logits => "logits",
            Signal::GreedyText => "greedy_text",
            Signal::Tokenizer => "tokenizer",
            Signal::Refusal => "refusal",
            Signal::Identity => "identity",
            Signal::Style => "style",
            Signal::Equality => "equality",
            Signal::Lexicon => "lexicon",
            Signal::Likelihood => "likelihood",
            Signal::GreedyTokens => "greedy_tokens",
            Signal::Contrast => "contrast",
        }
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// The names, for looking a signal up in a report (`Report::signal`).
pub const LOGITS: &str = Signal::Logits.as_str();
pub const GREEDY_TEXT: &str = Signal::GreedyText.as_str();
pub const TOKENIZER: &str = Signal::Tokenizer.as_str();
pub const REFUSAL: &str = Signal::Refusal.as_str();
pub const IDENTITY: &str = Signal::Identity.as_str();
pub const STYLE: &str = Signal::Style.as_str();
pub const EQUALITY: &str = Signal::Equality.as_str();
pub const LEXICON: &str = Signal::Lexicon.as_str();
pub const LIKELIHOOD: &str = Signal::Likelihood.as_str();
pub const GREEDY_TOKENS: &str = Signal::GreedyTokens.as_str();
pub const CONTRAST: &str = Signal::Contrast.as_str();

/// What unrelated models are assumed to score when there are fewer than two controls.
/// Pessimistic guesses (high means, wide spreads) so that without calibration only a
/// striking similarity counts; documented in the report whenever they are used.
pub fn default_null(signal: Signal) -> DefaultNull {
    let (mean, sd) = match signal {
        // 1 - JSD/ln 2 of top-k lists with a tail bucket. One measured unrelated pair
        // (SmolLM2-135M and Gemma-3-270M, 165 default logit probes) scores 0.55; the
        // default sits well above it.
        Signal::Logits => (0.65, 0.08),
        Signal::Tokenizer => (0.6, 0.15),
        Signal::GreedyText => (0.3, 0.15),
        Signal::Style => (0.3, 0.1),
        // 1 - JSD in bits of pooled word and word-pair frequencies; English answers on the
        // same prompts share their common words whatever their lineage.
        Signal::Lexicon => (0.5, 0.1),
        // Mean log-ratio (nats) of the suspect's terms, reference against controls. An
        // unrelated model leans to the controls' side (below 0); the default allows a
        // third of a nat towards the reference by chance.
        Signal::Contrast => (0.0, 0.15),
        // Mean discrepancy of answers read back by the reference. A base model (Gemma)
        // reads an unrelated chat model's fluent answers at 2.15, its own at 3.2.
        Signal::Likelihood => (2.0, 1.0),
        // Share of another model's greedy tokens that are the reference's top choice. A
        // fluent unrelated model lands on it about half the time; the default allows 60%.
        Signal::GreedyTokens => (0.6, 0.1),
        // Safety-tuned models agree on most refusals whatever their lineage.
        Signal::Refusal => (0.5, 0.2),
        Signal::Equality => (0.6, 0.15),
        Signal::Identity => (0.4, 0.25),
    };
    DefaultNull { mean, sd }
}

/// The smallest spread the prediction test assumes for a signal's control scores. Shares
/// in [0, 1] keep 0.02. The vocabulary contrast, in nats, takes a quarter of its default
/// spread: four variants of one model as controls sit within hundredths of a nat of each
/// other, and a fifth variant a sixth of a nat above them read as `distilled`. A quarter of
/// every signal's default spread was tried and let SmolLM2's Q2_K copy off as `unrelated`
/// in chat-only-no-logprobs (docs/history.md, 4 Dec).
pub fn spread_floor(signal: Signal) -> f64 {
    match signal {
        Signal::Contrast => default_null(signal).sd / 4.0,
        _ => super::calibration::SD_FLOOR,
    }
}

/// A reference observation and the suspect's answer to the same ask.
#[derive(Debug, Clone, Copy)]
pub struct Pair<'a> {
    pub reference: &'a Observation,
    pub suspect: &'a Observation,
}

/// One probe's contribution to a signal, kept for the evidence table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeScore {
    pub probe_id: String,
    pub kind: ProbeKind,
    pub score: f64,
    pub reference_text: String,
    pub suspect_text: String,
    pub note: String,
}

/// What one signal says about one pair of fingerprints.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalOutcome {
    pub score: f64,
    pub n: usize,
    pub interval: Option<(f64, f64)>,
    pub extra: BTreeMap<String, f64>,
    pub detail: String,
    pub per_probe: Vec<ProbeScore>,
}

/// The first 200 characters of a text, for reports.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 200;
    let text = text.trim();
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// Greedy asks (sample 0) of `kind` answered by both sides, in the reference's order.
pub fn pairs<'a>(
    reference: &'a Fingerprint,
    suspect: &'a Fingerprint,
    kind: ProbeKind,
) -> Vec<Pair<'a>> {
    let answered: HashMap<&str, &Observation> = suspect
        .answered(kind)
        .filter(|o| o.sample_index == 0)
        .map(|o| (o.probe_id.as_str(), o))
        .collect();
    reference
        .answered(kind)
        .filter(|o| o.sample_index == 0)
        .filter_map(|r| {
            Some(Pair {
                reference: r,
                suspect: answered.get(r.probe_id.as_str())?,
            })
        })
        .collect()
}

/// Sampled answers of both sides per sampling probe, in the reference's order.
pub fn sample_groups(reference: &Fingerprint, suspect: &Fingerprint) -> Vec<SampleGroup> {
    let texts = |fp: &Fingerprint| {
        let mut by_probe: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut order = Vec::new();
        for o in fp.answered(ProbeKind::Sampling) {
            if !by_probe.contains_key(&o.probe_id) {
                order.push(o.probe_id.clone());
            }
            by_probe
                .entry(o.probe_id.clone())
                .or_default()
                .push(o.text().unwrap_or_default().to_string());
        }
        (order, by_probe)
    };
    let (order, mut r) = texts(reference);
    let (_, mut s) = texts(suspect);
    order
        .into_iter()
        .filter_map(|id| {
            let reference = r.remove(&id)?;
            let suspect = s.remove(&id)?;
            Some(SampleGroup {
                probe_id: id,
                reference,
                suspect,
            })
        })
        .collect()
}

/// Which logit probes judge whether the weights are the same: raw ones when the suspect
/// answered at least `min` of them (no chat template or hidden system prompt reaches them,
/// while a persona moves every chat answer the same way), chat ones when only those reach
/// `min`, and all of them when neither does (a handful of probes, an early stop). Controls,
/// known-same pairs and quantized forms are read on the same probes, so their scores are
/// comparable with the suspect's.
pub fn logit_form(pairs: &[Pair], min: usize) -> Option<ProbeForm> {
    let raw = pairs
        .iter()
        .filter(|p| form_of(p) == ProbeForm::Raw)
        .count();
    if raw >= min {
        Some(ProbeForm::Raw)
    } else if pairs.len() - raw >= min {
        Some(ProbeForm::Chat)
    } else {
        None
    }
}

/// The pairs asked in `form` (all of them for `None`).
pub fn of_form<'a>(pairs: &[Pair<'a>], form: Option<ProbeForm>) -> Vec<Pair<'a>> {
    pairs
        .iter()
        .filter(|p| form.is_none_or(|f| form_of(p) == f))
        .copied()
        .collect()
}

fn form_of(pair: &Pair) -> ProbeForm {
    match pair.suspect.request.prompt {
        crate::endpoint::PromptForm::Raw { .. } => ProbeForm::Raw,
        crate::endpoint::PromptForm::Chat { .. } => ProbeForm::Chat,
    }
}
