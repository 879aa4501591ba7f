//! Which controls are one model. A p-value against the controls assumes they are
//! independent draws of "an unrelated model"; variants of one model (served behind a
//! persona, re-quantized, with a little noise) are not, and the report says how many
//! independent models the controls really are, from their answers alone (the store knows
//! nothing of where a control came from). Decisions do not collapse lineages: on the
//! recorded zoo that cost the distilled students their verdicts (docs/history.md); the
//! spread floor (`signal::spread_floor`) keeps a tight cluster from deciding.

use super::logits;
use super::signal::pairs;
use crate::fingerprint::Fingerprint;
use crate::probes::ProbeKind;

/// Fewest logit probes both prints answered for the closeness to say anything.
const MIN_PROBES: usize = 5;

/// Logit similarity (1 - JSD / ln 2 of the next-token lists, the logits signal's score)
/// from which two prints are one lineage: two spreads of the default null above its
/// pessimistic mean for unrelated models (0.65; SmolLM2 and Gemma 3 measure 0.55 to
/// 0.63). Copies, personas and Q8_0 of one model measure 0.93 and more, 3% weight noise
/// 0.94, a Q4_1 file rounded again to Q4_0 0.70: that one stands apart, a model of its
/// own as far as the controls' spread is concerned.
pub const SAME_SIMILARITY: f64 = 0.8;

/// Mean common prefix of greedy answers (share of the longer text) from which two prints
/// are one lineage, for prints without log-probabilities: the greedy-text default null's
/// mean plus its spread and a third (0.3 + 0.2). Variants of one model measure 0.56 to
/// 1, SmolLM2 against Gemma 3 0.22 to 0.45 on six short answers.
pub const SAME_PREFIX: f64 = 0.5;

/// How close two prints are, on what they both answered: the logit similarity where both
/// carry log-probabilities, else the greedy texts' common prefix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Closeness {
    Similarity(f64),
    Prefix(f64),
}

impl Closeness {
    pub fn of(a: &Fingerprint, b: &Fingerprint) -> Option<Closeness> {
        let both = pairs(a, b, ProbeKind::Logit);
        if let Some((outcome, _)) = logits::signal(&both, None) {
            if outcome.n >= MIN_PROBES {
                return Some(Closeness::Similarity(outcome.score));
            }
        }
        let greedy = logits::greedy_signal(&both, None)?;
        (greedy.n >= MIN_PROBES).then_some(Closeness::Prefix(greedy.score))
    }

    pub fn same_lineage(self) -> bool {
        match self {
            Closeness::Similarity(s) => s >= SAME_SIMILARITY,
            Closeness::Prefix(p) => p >= SAME_PREFIX,
        }
    }
}

/// The lineage of each print, as the index of its group: prints are joined when they are
/// close (single linkage), so a chain of variants is one lineage. Prints that cannot be
/// compared stay apart.
pub fn lineages(prints: &[Fingerprint]) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..prints.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..prints.len() {
        for j in i + 1..prints.len() {
            if root(&mut parent, i) == root(&mut parent, j) {
                continue;
            }
            if Closeness::of(&prints[i], &prints[j]).is_some_and(Closeness::same_lineage) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    // Numbered 0.. in order of first appearance.
    let mut numbers: Vec<Option<usize>> = vec![None; prints.len()];
    let mut next = 0;
    (0..prints.len())
        .map(|i| {
            let r = root(&mut parent, i);
            *numbers[r].get_or_insert_with(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

/// How many lineages `lineages` holds.
pub fn count(lineages: &[usize]) -> usize {
    lineages.iter().max().map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{Capabilities, ProbeRequest, ProbeResponse, PromptForm};
    use crate::fingerprint::{ModelDescription, Observation, ProbeSetRef};

    /// A print of greedy answers to logit probes, without log-probabilities.
    fn print(answers: &[&str]) -> Fingerprint {
        let observations = answers
            .iter()
            .enumerate()
            .map(|(i, text)| Observation {
                probe_id: format!("logit-{i}"),
                kind: ProbeKind::Logit,
                sample_index: 0,
                request: ProbeRequest {
                    prompt: PromptForm::Raw {
                        prompt: format!("prompt {i}"),
                    },
                    max_tokens: 8,
                    temperature: 0.0,
                    top_p: 1.0,
                    seed: None,
                    top_logprobs: 0,
                    stop: Vec::new(),
                },
                response: Some(ProbeResponse {
                    text: text.to_string(),
                    tokens: Vec::new(),
                    usage: None,
                    finish_reason: None,
                    latency_ms: 1,
                }),
                token_ids: None,
                chat_prompt_tokens: None,
                error: None,
                attempts: 1,
                latency_ms: 1,
            })
            .collect();
        Fingerprint {
            format_version: 1,
            model: ModelDescription {
                describe: "test".into(),
                capabilities: Capabilities::default(),
            },
            probe_set: ProbeSetRef {
                name: "t".into(),
                version: "1".into(),
                hash: "h".into(),
            },
            created_at: String::new(),
            observations,
            features: Default::default(),
        }
    }

    #[test]
    fn variants_of_one_model_are_one_lineage_and_strangers_are_not() {
        let a = [
            "the cat sat",
            "on the mat",
            "and then it",
            "went to sleep",
            "in the sun",
            "all day",
        ];
        // One variant changes the last word of two answers; another changes a third.
        let a2 = [
            "the cat sat",
            "on the rug",
            "and then it",
            "went to bed",
            "in the sun",
            "all day",
        ];
        let a3 = [
            "the cat sat",
            "on the rug",
            "and so it",
            "went to bed",
            "in the sun",
            "all day",
        ];
        let b = [
            "a dog ran",
            "far away",
            "but never",
            "came home",
            "at night",
            "ever",
        ];
        let lineage = lineages(&[print(&a), print(&b), print(&a2), print(&a3)]);
        assert_eq!(lineage, vec![0, 1, 0, 0]);
        assert_eq!(count(&lineage), 2);
        // Too few probes in common to tell: apart.
        assert_eq!(lineages(&[print(&a[..3]), print(&a2[..3])]), vec![0, 1]);
    }

    #[test]
    fn lineages_are_counted() {
        assert_eq!(count(&[0, 1, 0, 2, 1]), 3);
        assert_eq!(count(&[]), 0);
    }

    #[test]
    fn closeness_thresholds_split_variants_from_strangers() {
        assert!(Closeness::Similarity(0.94).same_lineage());
        assert!(!Closeness::Similarity(0.63).same_lineage());
        assert!(Closeness::Prefix(0.7).same_lineage());
        assert!(!Closeness::Prefix(0.1).same_lineage());
    }
}
