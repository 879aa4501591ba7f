//! Features extracted from raw observations: small per-kind summaries a person (or a
//! listing in the service) can read without the comparison engine. The comparison itself
//! recomputes what it needs from the observations, so stored features never go stale.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Observation;
use crate::probes::identity;
use crate::probes::refusal::{self, RefusalLabel};
use crate::probes::{ProbeKind, RefusalLexicon};

/// Where a tokenizer probe's count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenCountMethod {
    /// The endpoint's tokenize call (no special tokens).
    Tokenize,
    /// `usage.prompt_tokens` of a one-token request (may include a BOS token).
    Usage,
}

/// Asked, answered and failed asks of one probe kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindSummary {
    pub kind: ProbeKind,
    pub asked: usize,
    pub answered: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    pub kinds: Vec<KindSummary>,
    /// Whether any logit probe came back with next-token alternatives.
    pub logprobs: bool,
    /// Tokenizer probe id to token count.
    pub token_counts: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_count_method: Option<TokenCountMethod>,
    /// Refusal probe id to label.
    pub refusal_labels: BTreeMap<String, RefusalLabel>,
    /// Identity probe id to the model families the answer names (may be empty).
    pub identity_claims: BTreeMap<String, Vec<String>>,
    /// Error kind (`rate_limited`, `timeout`, ...) to count.
    pub errors: BTreeMap<String, usize>,
}

impl Features {
    pub fn extract(observations: &[Observation], lexicon: &RefusalLexicon) -> Features {
        let mut features = Features::default();
        let mut kinds: BTreeMap<ProbeKind, KindSummary> = BTreeMap::new();
        for obs in observations {
            let summary = kinds.entry(obs.kind).or_insert(KindSummary {
                kind: obs.kind,
                asked: 0,
                answered: 0,
                failed: 0,
            });
            summary.asked += 1;
            if !obs.is_ok() {
                summary.failed += 1;
                if let Some(err) = &obs.error {
                    *features.errors.entry(error_kind(err)).or_insert(0) += 1;
                }
                continue;
            }
            summary.answered += 1;
            match obs.kind {
                ProbeKind::Logit => features.logprobs |= obs.has_logprobs(),
                ProbeKind::Tokenizer => {
                    if let Some((count, method)) = obs.token_count() {
                        features.token_counts.insert(obs.probe_id.clone(), count);
                        features.token_count_method = Some(method);
                    }
                }
                ProbeKind::Refusal => {
                    if let Some(text) = obs.text() {
                        features
                            .refusal_labels
                            .insert(obs.probe_id.clone(), refusal::label(lexicon, text));
                    }
                }
                ProbeKind::Identity => {
                    if let Some(text) = obs.text() {
                        let claims = identity::claims(text)
                            .into_iter()
                            .map(|f| f.to_string())
                            .collect();
                        features
                            .identity_claims
                            .insert(obs.probe_id.clone(), claims);
                    }
                }
                ProbeKind::Style | ProbeKind::Sampling => {}
            }
        }
        features.kinds = kinds.into_values().collect();
        features
    }
}

/// The serde tag of an error (`rate_limited`, `timeout`, ...).
pub(crate) fn error_kind(err: &crate::endpoint::EndpointError) -> String {
    serde_json::to_value(err)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}
