//! Fingerprints: every probe of a set run through one model, the raw observations kept
//! (so new metrics can be computed later without asking the model again) together with
//! features extracted from them.
//!
//! - [`run`] runs a probe set through any [`ModelEndpoint`] with bounded concurrency,
//!   retries and a progress bar, appending each observation to an [`ObservationLog`] as it
//!   arrives so an interrupted run resumes where it stopped.
//! - [`Fingerprint`] is the self-describing JSON document a run produces; [`load`] and
//!   [`Fingerprint::save`] read and write it, [`load_dir`] reads a folder of them (controls).

mod features;
mod log;
mod runner;
mod time;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::endpoint::{Capabilities, EndpointError, ProbeRequest, ProbeResponse};
use crate::probes::{ProbeKind, ProbeSet};

pub(crate) use features::error_kind;
pub use features::{Features, KindSummary, TokenCountMethod};
pub use log::{lock_cache, LogHeader, ObservationLog};
pub use runner::{build_request, observe, plan, run, Job, RunOptions};
pub use time::rfc3339_utc;

/// Version of the JSON layout written by this build; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a fingerprint: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{}: fingerprint format version {found} is newer than this build reads ({supported})", path.display())]
    Version {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot read the endpoint's capabilities: {0}")]
    Capabilities(EndpointError),
    #[error("{}: the partial log belongs to another run ({what}); delete it or write elsewhere", path.display())]
    LogMismatch { path: PathBuf, what: String },
    #[error("cannot encode an observation: {0}")]
    Encode(serde_json::Error),
}

/// The model a fingerprint describes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDescription {
    /// The endpoint's `describe()`: file or URL and model name.
    pub describe: String,
    pub capabilities: Capabilities,
}

/// Which probe set was asked; the hash pins the exact prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSetRef {
    pub name: String,
    pub version: String,
    pub hash: String,
}

impl ProbeSetRef {
    pub fn of(set: &ProbeSet) -> ProbeSetRef {
        ProbeSetRef {
            name: set.name.clone(),
            version: set.version.clone(),
            hash: set.hash.clone(),
        }
    }
}

/// One ask of one probe. A probe that failed for good is kept with its error: a
/// comparison must know what was asked and not answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub probe_id: String,
    pub kind: ProbeKind,
    /// 0 for greedy probes; 0..samples for sampling probes.
    pub sample_index: usize,
    /// What was sent (for tokenizer probes answered by a tokenize call: what would be sent).
    pub request: ProbeRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<ProbeResponse>,
    /// Token ids from the endpoint's own tokenizer (tokenizer probes, when it can say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<Vec<u32>>,
    /// Tokenizer probes on an endpoint with both `/tokenize` and chat: the string's token
    /// count through the chat template too (a one-token chat request's usage), so that a
    /// chat-only suspect's counts, template and all, are compared like with like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_prompt_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<EndpointError>,
    /// Tries made, the successful one included.
    pub attempts: u32,
    /// Wall time over all tries, backoff included.
    pub latency_ms: u64,
}

impl Observation {
    /// Answered: a response or token ids, and no error.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && (self.response.is_some() || self.token_ids.is_some())
    }

    pub fn text(&self) -> Option<&str> {
        self.response.as_ref().map(|r| r.text.as_str())
    }

    /// True when the answer carries next-token alternatives.
    pub fn has_logprobs(&self) -> bool {
        self.response
            .as_ref()
            .is_some_and(|r| r.tokens.iter().any(|t| !t.top.is_empty()))
    }

    /// Tokens in the prompt: from a tokenize call, else from the usage counts.
    /// The token count to set against `other`'s: through the chat template when `other`
    /// counted that way and this observation has such a count too, else [`token_count`].
    ///
    /// [`token_count`]: Observation::token_count
    pub fn token_count_like(&self, other: &Observation) -> Option<(u32, TokenCountMethod)> {
        let other_through_chat = other.token_ids.is_none()
            && matches!(
                other.request.prompt,
                crate::endpoint::PromptForm::Chat { .. }
            );
        match self.chat_prompt_tokens {
            Some(n) if other_through_chat => Some((n, TokenCountMethod::Usage)),
            _ => self.token_count(),
        }
    }

    pub fn token_count(&self) -> Option<(u32, TokenCountMethod)> {
        if let Some(ids) = &self.token_ids {
            return Some((ids.len() as u32, TokenCountMethod::Tokenize));
        }
        let usage = self.response.as_ref()?.usage?;
        Some((usage.prompt_tokens, TokenCountMethod::Usage))
    }
}

/// Everything one model answered to one probe set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub format_version: u32,
    pub model: ModelDescription,
    pub probe_set: ProbeSetRef,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// In probe-set order, samples in order.
    pub observations: Vec<Observation>,
    /// Absent in hand-written files; `compare` works from the observations alone.
    #[serde(default)]
    pub features: Features,
}

impl Fingerprint {
    /// Whether this fingerprint holds an answer (or a recorded failure) to every ask of
    /// `set`. Subsets of a probe set (`subset`) keep the set's hash, so a cached print
    /// made with fewer probes or samples must not stand in for a larger one.
    pub fn covers(&self, set: &ProbeSet) -> bool {
        let have: std::collections::HashSet<(&str, usize)> = self
            .observations
            .iter()
            .map(|o| (o.probe_id.as_str(), o.sample_index))
            .collect();
        self.probe_set.hash == set.hash
            && plan(set)
                .iter()
                .all(|j| have.contains(&(j.probe.id.as_str(), j.sample_index)))
    }

    /// Only the asks of `set`: a cached print made with more probes of the same set (the
    /// hash is the full set's) would otherwise give signals that read every answer it
    /// holds (vocabulary, style) more text than the suspect was asked for. Keeps
    /// `created_at`, which caches of its read-back are keyed on.
    pub fn restricted_to(mut self, set: &ProbeSet) -> Fingerprint {
        let wanted: std::collections::HashSet<(String, usize)> = plan(set)
            .iter()
            .map(|j| (j.probe.id.clone(), j.sample_index))
            .collect();
        let before = self.observations.len();
        self.observations
            .retain(|o| wanted.contains(&(o.probe_id.clone(), o.sample_index)));
        if self.observations.len() != before {
            self.features = Features::extract(
                &self.observations,
                crate::probes::refusal::default_lexicon(),
            );
        }
        self
    }

    /// Assembles a fingerprint and extracts its features with the built-in refusal lexicon.
    pub fn new(
        model: ModelDescription,
        probe_set: ProbeSetRef,
        observations: Vec<Observation>,
    ) -> Fingerprint {
        let features = Features::extract(&observations, crate::probes::refusal::default_lexicon());
        Fingerprint {
            format_version: FORMAT_VERSION,
            model,
            probe_set,
            created_at: rfc3339_utc(std::time::SystemTime::now()),
            observations,
            features,
        }
    }

    /// Successful observations of one kind.
    pub fn answered(&self, kind: ProbeKind) -> impl Iterator<Item = &Observation> {
        self.observations
            .iter()
            .filter(move |o| o.kind == kind && o.is_ok())
    }

    pub fn find(&self, probe_id: &str, sample_index: usize) -> Option<&Observation> {
        self.observations
            .iter()
            .find(|o| o.probe_id == probe_id && o.sample_index == sample_index)
    }

    pub fn to_json(&self) -> Result<String, FingerprintError> {
        serde_json::to_string_pretty(self).map_err(FingerprintError::Encode)
    }

    /// Writes the fingerprint as JSON through a temporary file, so a crash never leaves a
    /// half-written fingerprint under the final name.
    pub fn save(&self, path: &Path) -> Result<(), FingerprintError> {
        let json = self.to_json()?;
        let tmp = sibling(path, ".tmp");
        let io = |source| FingerprintError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::write(&tmp, json).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Parses a fingerprint; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Fingerprint, FingerprintError> {
        // The version is read first so a newer file says so instead of failing on a field.
        #[derive(Deserialize)]
        struct VersionOnly {
            format_version: u32,
        }
        let parse = |source| FingerprintError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let version: VersionOnly = serde_json::from_str(text).map_err(parse)?;
        if version.format_version > FORMAT_VERSION {
            return Err(FingerprintError::Version {
                path: path.to_path_buf(),
                found: version.format_version,
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_str(text).map_err(parse)
    }
}

/// Reads one fingerprint file.
pub fn load(path: &Path) -> Result<Fingerprint, FingerprintError> {
    let text = std::fs::read_to_string(path).map_err(|source| FingerprintError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Fingerprint::from_json(&text, path)
}

/// Reads every `*.json` fingerprint directly in `dir`, in file-name order (controls).
pub fn load_dir(dir: &Path) -> Result<Vec<Fingerprint>, FingerprintError> {
    let io = |source| FingerprintError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().and_then(|e| e.to_str()) == Some("json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| load(p)).collect()
}

/// `<path><suffix>`, e.g. `out.json` -> `out.json.partial.jsonl`.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// A smaller set with at most `per_kind` probes of each kind, spread over the kind's
/// probes ([`spread_order`]), and sampling probes asked at most `max_samples` times. Name,
/// version and hash stay those of the full set: observations are matched by probe id, and
/// the fingerprint simply covers fewer of them. For quick scans and tests.
pub fn subset(set: &ProbeSet, per_kind: usize, max_samples: usize) -> ProbeSet {
    subset_with_logits(set, per_kind, per_kind, max_samples)
}

/// [`subset`] with its own cap for logit probes: they cost a few tokens each, and telling a
/// copy from a derivative closer than engine noise (`compare::shift`) takes many of them.
pub fn subset_with_logits(
    set: &ProbeSet,
    per_kind: usize,
    logit: usize,
    max_samples: usize,
) -> ProbeSet {
    let mut by_kind: std::collections::BTreeMap<ProbeKind, Vec<usize>> =
        std::collections::BTreeMap::new();
    for (i, p) in set.probes.iter().enumerate() {
        by_kind.entry(p.kind).or_default().push(i);
    }
    let mut keep = vec![false; set.probes.len()];
    for (kind, indices) in &by_kind {
        let cap = if *kind == ProbeKind::Logit {
            logit
        } else {
            per_kind
        };
        for at in spread_order(indices.len()).into_iter().take(cap) {
            keep[indices[at]] = true;
        }
    }
    // What a hidden system prompt repeats is the context the read-back tries first.
    for (i, p) in set.probes.iter().enumerate() {
        if crate::probes::identity::asks_for_system_prompt(&p.id) {
            keep[i] = true;
        }
    }
    let probes = set
        .probes
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(p, _)| {
            let mut p = p.clone();
            if p.kind == ProbeKind::Sampling {
                p.samples = p.samples.min(max_samples.max(2));
            }
            p
        })
        .collect();
    ProbeSet {
        name: set.name.clone(),
        version: set.version.clone(),
        hash: set.hash.clone(),
        probes,
    }
}

/// `0..n` in van der Corput order (0, n/2, n/4, 3n/4, ...): any prefix is spread evenly
/// over the whole range, and a longer prefix holds every shorter one. Probe files group
/// probes by theme (all whitespace strings first, all raw logit probes before the chat
/// ones), so the first few of a kind would all share one theme; and nested prefixes let
/// a print made with more probes stand in for one made with fewer.
pub fn spread_order(n: usize) -> Vec<usize> {
    let mut seen = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut denominator = 1usize;
    while order.len() < n && denominator <= n.next_power_of_two() {
        for numerator in (0..denominator).filter(|k| denominator == 1 || k % 2 == 1) {
            let at = numerator * n / denominator;
            if !seen[at] {
                seen[at] = true;
                order.push(at);
            }
        }
        denominator *= 2;
    }
    order.extend((0..n).filter(|i| !seen[*i]));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{PromptForm, Usage};

    fn observation(ok: bool) -> Observation {
        Observation {
            probe_id: "p".into(),
            kind: ProbeKind::Tokenizer,
            sample_index: 0,
            request: ProbeRequest {
                prompt: PromptForm::Raw { prompt: "x".into() },
                max_tokens: 1,
                temperature: 0.0,
                top_p: 1.0,
                seed: None,
                top_logprobs: 0,
                stop: Vec::new(),
            },
            response: ok.then(|| ProbeResponse {
                text: "y".into(),
                tokens: Vec::new(),
                usage: Some(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1,
                }),
                finish_reason: None,
                latency_ms: 1,
            }),
            token_ids: None,
            chat_prompt_tokens: None,
            error: (!ok).then(|| EndpointError::Timeout("slow".into())),
            attempts: 1,
            latency_ms: 1,
        }
    }

    #[test]
    fn token_count_prefers_tokenize() {
        let mut o = observation(true);
        assert_eq!(o.token_count(), Some((3, TokenCountMethod::Usage)));
        o.token_ids = Some(vec![1, 2]);
        assert_eq!(o.token_count(), Some((2, TokenCountMethod::Tokenize)));
        assert!(!observation(false).is_ok());
    }

    #[test]
    fn round_trips_and_refuses_newer_versions() {
        let fp = Fingerprint::new(
            ModelDescription {
                describe: "m".into(),
                capabilities: Capabilities::default(),
            },
            ProbeSetRef {
                name: "s".into(),
                version: "1".into(),
                hash: "h".into(),
            },
            vec![observation(true), observation(false)],
        );
        let json = fp.to_json().expect("encodes");
        let back = Fingerprint::from_json(&json, Path::new("x.json")).expect("parses");
        assert_eq!(back, fp);
        let newer = json.replacen("\"format_version\": 1", "\"format_version\": 99", 1);
        let err = Fingerprint::from_json(&newer, Path::new("x.json")).map(|_| ());
        assert!(matches!(
            err,
            Err(FingerprintError::Version { found: 99, .. })
        ));
    }

    #[test]
    fn spread_order_is_a_permutation_whose_prefixes_spread() {
        for n in [0, 1, 2, 3, 7, 8, 89, 165] {
            let order = spread_order(n);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
        assert_eq!(spread_order(8), vec![0, 4, 2, 6, 1, 3, 5, 7]);
        // The first 6 of 89 tokenizer strings reach past the first theme (9 whitespace ones).
        assert!(spread_order(89)[..6].iter().filter(|i| **i >= 9).count() >= 4);
        // 80 of 165 logit probes take chat ones (the last 52) too.
        let chat = spread_order(165)[..80]
            .iter()
            .filter(|i| **i >= 113)
            .count();
        assert!((20..=30).contains(&chat), "{chat}");
    }

    #[test]
    fn a_print_covers_only_the_asks_it_holds() {
        let full = crate::probes::load_dir(Path::new("probes/default")).expect("probes");
        let small = subset(&full, 1, 2);
        let print = |set: &ProbeSet| {
            let observations = plan(set)
                .iter()
                .map(|j| Observation {
                    probe_id: j.probe.id.clone(),
                    kind: j.probe.kind,
                    sample_index: j.sample_index,
                    ..observation(false)
                })
                .collect();
            let model = ModelDescription {
                describe: "m".into(),
                capabilities: Capabilities::default(),
            };
            Fingerprint::new(model, ProbeSetRef::of(set), observations)
        };
        // A recorded failure still counts as asked.
        assert!(print(&small).covers(&small));
        // Same hash, more probes and samples: not covered.
        assert!(!print(&small).covers(&subset(&full, 2, 2)));
        assert!(!print(&small).covers(&subset(&full, 1, 3)));
        assert!(print(&subset(&full, 2, 3)).covers(&small));
        assert!(print(&subset(&full, 7, 2)).covers(&subset(&full, 3, 2)));
        let narrowed = print(&subset(&full, 7, 2)).restricted_to(&subset(&full, 3, 2));
        assert_eq!(
            narrowed.observations.len(),
            plan(&subset(&full, 3, 2)).len()
        );
        assert!(narrowed.covers(&subset(&full, 3, 2)));
        // Another probe set.
        let mut other = small.clone();
        other.hash = "other".into();
        assert!(!print(&small).covers(&other));
    }
}
