//! Next-token distributions: the strongest signal of shared weights. Per logit probe and
//! generated position, the two top-k lists are aligned by token BYTES (so tokenizers
//! with different ids still line up), then compared by
//!
//! - top-1 agreement,
//! - top-k overlap (Jaccard of the two sets, both cut to the shorter list),
//! - Jensen-Shannon divergence of the top-k distributions, each completed by a tail
//!   bucket holding the mass outside its list (1 - sum of its top-k),
//! - Spearman rank correlation over the tokens both lists share,
//! - mean |Δ logprob| over shared tokens (the quantity serving engines are known to
//!   differ by, ~0.07 nats, which the identical band is about).
//!
//! Positions after the first are compared only while both models chose the same tokens:
//! after a different choice they condition on different text.
//!
//! When a side gives no log-probabilities, [`greedy_signal`] compares the greedy text of
//! the same probes instead (first word, exact common prefix).

use std::collections::{BTreeMap, BTreeSet};
use std::f64::consts::LN_2;

use super::bootstrap::{self, BootstrapOptions};
use super::{clip, Pair, ProbeScore, SignalOutcome};
use crate::endpoint::TokenLogprobs;
use crate::fingerprint::Observation;

/// Log-probabilities this close are one value: a server's f32 written as decimal text and
/// read back. Ties from coarse arithmetic are exact, so nothing wider is needed.
const TIE: f64 = 1e-6;

/// A token's identity across tokenizers: its bytes; a token without bytes (a special
/// token) is keyed by its text behind a 0xFF byte, which never starts UTF-8 text.
pub fn token_key(bytes: &[u8], token: &str) -> Vec<u8> {
    if bytes.is_empty() {
        let mut key = vec![0xFF];
        key.extend_from_slice(token.as_bytes());
        key
    } else {
        bytes.to_vec()
    }
}

/// Whether a position's list belongs to another position: llama.cpp reports a character
/// made of several byte tokens as one entry carrying the alternatives of its last piece,
/// so the chosen token is missing from its list though as likely as a listed one. A
/// greedy answer meets this only where the reference's own top token is a byte piece
/// (never compared); a sampled one wherever it draws such a character.
fn lists_another_position(position: &TokenLogprobs) -> bool {
    let chosen = f64::from(position.logprob);
    if !chosen.is_finite() {
        return false;
    }
    let same = |t: &crate::endpoint::TopLogprob| {
        if t.bytes.is_empty() || position.bytes.is_empty() {
            t.token == position.token
        } else {
            t.bytes == position.bytes
        }
    };
    let listed = || position.top.iter().filter(|t| t.logprob.is_finite());
    let last = listed()
        .map(|t| f64::from(t.logprob))
        .fold(f64::INFINITY, f64::min);
    !listed().any(same) && chosen >= last - 1e-4
}

/// One position's alternatives: (token key, log-probability), most likely first, with
/// tokens of equal bytes merged.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    pub entries: Vec<(Vec<u8>, f64)>,
}

impl TopK {
    pub fn from_entries<I: IntoIterator<Item = (Vec<u8>, f64)>>(entries: I) -> TopK {
        let mut merged: Vec<(Vec<u8>, f64)> = Vec::new();
        for (key, logprob) in entries {
            match merged.iter_mut().find(|(k, _)| *k == key) {
                // Two ids with the same bytes: the text has the probability of both.
                Some((_, lp)) => *lp = log_add(*lp, logprob),
                None => merged.push((key, logprob)),
            }
        }
        merged.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        TopK { entries: merged }
    }

    /// The alternatives of a generated position; `None` when there are none. A token
    /// listed at minus infinity (a server's "ruled out by the sampler", sent as null) is
    /// left out: it says no more than its absence would, and one infinite difference
    /// would swamp every mean.
    pub fn from_position(position: &TokenLogprobs) -> Option<TopK> {
        let finite = || position.top.iter().filter(|t| t.logprob.is_finite());
        finite().next()?;
        if lists_another_position(position) {
            return None;
        }
        Some(TopK::from_entries(finite().map(|t| {
            (token_key(&t.bytes, &t.token), f64::from(t.logprob))
        })))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn truncated(&self, k: usize) -> TopK {
        TopK {
            entries: self.entries.iter().take(k).cloned().collect(),
        }
    }

    /// The tokens tied for the top: one, unless the server's arithmetic is too coarse to
    /// order them (logits in bfloat16, as vLLM and TGI serve by default, or rounded
    /// log-probabilities give exactly equal values, and which is listed first is arbitrary).
    fn top_tied(&self) -> impl Iterator<Item = &[u8]> {
        let first = self.entries.first().map(|(_, lp)| *lp);
        self.entries
            .iter()
            .take_while(move |(_, lp)| first.is_some_and(|top| (top - lp).abs() <= TIE))
            .map(|(k, _)| k.as_slice())
    }

    /// Whether the two lists share a top token (either of a tie counts).
    fn same_top(&self, other: &TopK) -> bool {
        self.top_tied().any(|k| other.top_tied().any(|o| o == k))
    }

    /// Probabilities renormalised together with a tail bucket for the mass outside the
    /// list, so the list plus the tail sums to one.
    fn with_tail(&self) -> (BTreeMap<&[u8], f64>, f64) {
        let probs: Vec<f64> = self.entries.iter().map(|(_, lp)| lp.exp()).collect();
        let listed: f64 = probs.iter().sum();
        let tail = (1.0 - listed).max(0.0);
        let total = listed + tail;
        let map = self
            .entries
            .iter()
            .zip(&probs)
            .map(|((k, _), p)| (k.as_slice(), p / total))
            .collect();
        (map, tail / total)
    }

    /// Entropy in nats of the list plus tail (how spread the reference's choice is).
    pub fn entropy(&self) -> f64 {
        let (map, tail) = self.with_tail();
        map.values()
            .chain(std::iter::once(&tail))
            .filter(|p| **p > 0.0)
            .map(|p| -p * p.ln())
            .sum()
    }
}

fn log_add(a: f64, b: f64) -> f64 {
    let hi = a.max(b);
    hi + ((a - hi).exp() + (b - hi).exp()).ln()
}

/// Jensen-Shannon divergence (nats) between two top-k lists completed by tail buckets.
/// 0 for identical lists, symmetric, at most ln 2.
pub fn jsd(p: &TopK, q: &TopK) -> f64 {
    let (pm, p_tail) = p.with_tail();
    let (qm, q_tail) = q.with_tail();
    let keys: BTreeSet<&[u8]> = pm.keys().chain(qm.keys()).copied().collect();
    let mut terms: Vec<(f64, f64)> = keys
        .iter()
        .map(|k| {
            (
                pm.get(k).copied().unwrap_or(0.0),
                qm.get(k).copied().unwrap_or(0.0),
            )
        })
        .collect();
    terms.push((p_tail, q_tail));
    let half_kl = |a: f64, m: f64| if a > 0.0 { 0.5 * a * (a / m).ln() } else { 0.0 };
    let total: f64 = terms
        .iter()
        .map(|&(a, b)| {
            let m = 0.5 * (a + b);
            half_kl(a, m) + half_kl(b, m)
        })
        .sum();
    total.clamp(0.0, LN_2)
}

/// Jaccard overlap of the two token sets.
pub fn jaccard(p: &TopK, q: &TopK) -> f64 {
    let a: BTreeSet<&[u8]> = p.entries.iter().map(|(k, _)| k.as_slice()).collect();
    let b: BTreeSet<&[u8]> = q.entries.iter().map(|(k, _)| k.as_slice()).collect();
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Spearman correlation of the ranks of the shared tokens; `None` below two.
pub fn spearman(p: &TopK, q: &TopK) -> Option<f64> {
    let q_rank: BTreeMap<&[u8], usize> = q
        .entries
        .iter()
        .enumerate()
        .map(|(i, (k, _))| (k.as_slice(), i))
        .collect();
    // Shared tokens in p's order, with their position in q's order.
    let mut in_q: Vec<usize> = p
        .entries
        .iter()
        .filter_map(|(k, _)| q_rank.get(k.as_slice()).copied())
        .collect();
    let n = in_q.len();
    if n < 2 {
        return None;
    }
    // Re-rank q's positions among the shared tokens.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| in_q[i]);
    for (rank, &i) in order.iter().enumerate() {
        in_q[i] = rank;
    }
    let d2: f64 = in_q
        .iter()
        .enumerate()
        .map(|(rank_p, &rank_q)| {
            let d = rank_p as f64 - rank_q as f64;
            d * d
        })
        .sum();
    let n = n as f64;
    Some(1.0 - 6.0 * d2 / (n * (n * n - 1.0)))
}

/// `p`'s minus `q`'s log-probability of every token both lists hold, in `p`'s order.
pub fn shared_deltas<'a>(p: &'a TopK, q: &TopK) -> Vec<(&'a [u8], f64)> {
    let qm: BTreeMap<&[u8], f64> = q
        .entries
        .iter()
        .map(|(k, lp)| (k.as_slice(), *lp))
        .collect();
    p.entries
        .iter()
        .filter_map(|(k, lp)| qm.get(k.as_slice()).map(|lq| (k.as_slice(), lp - lq)))
        .collect()
}

/// Mean |Δ logprob| over shared tokens (raw, not renormalised); `None` if none shared.
pub fn mean_abs_delta(p: &TopK, q: &TopK) -> Option<f64> {
    let deltas = shared_deltas(p, q);
    if deltas.is_empty() {
        None
    } else {
        Some(deltas.iter().map(|(_, d)| d.abs()).sum::<f64>() / deltas.len() as f64)
    }
}

/// Both lists cut to the shorter one's length (a longer list would otherwise hold mass,
/// and tokens, the shorter one puts in its tail).
pub fn common_length(p: &TopK, q: &TopK) -> (TopK, TopK) {
    let k = p.len().min(q.len());
    (p.truncated(k), q.truncated(k))
}

/// All measures at one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositionStats {
    pub jsd: f64,
    pub top1: bool,
    pub jaccard: f64,
    pub spearman: Option<f64>,
    pub mean_abs_dlogprob: Option<f64>,
}

/// Compares two lists cut to the shorter one's length ([`common_length`]).
pub fn compare_position(p: &TopK, q: &TopK) -> PositionStats {
    let (p, q) = common_length(p, q);
    PositionStats {
        jsd: jsd(&p, &q),
        top1: p.same_top(&q),
        jaccard: jaccard(&p, &q),
        spearman: spearman(&p, &q),
        mean_abs_dlogprob: mean_abs_delta(&p, &q),
    }
}

/// One logit probe compared.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeLogits {
    pub probe_id: String,
    pub positions: Vec<PositionStats>,
}

impl ProbeLogits {
    /// 1 - mean JSD / ln 2, in [0, 1].
    pub fn similarity(&self) -> f64 {
        1.0 - self.mean(|p| Some(p.jsd)).unwrap_or(LN_2) / LN_2
    }

    pub fn mean(&self, f: impl Fn(&PositionStats) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.positions.iter().filter_map(f).collect();
        if values.is_empty() {
            None
        } else {
            Some(values.iter().sum::<f64>() / values.len() as f64)
        }
    }
}

/// The top-k list of each generated position of an answer (empty if none).
pub fn positions(obs: &Observation) -> Vec<(Vec<u8>, Option<TopK>)> {
    obs.response
        .as_ref()
        .map(|r| {
            r.tokens
                .iter()
                .map(|t| (token_key(&t.bytes, &t.token), TopK::from_position(t)))
                .collect()
        })
        .unwrap_or_default()
}

/// The positions at which two answers to one probe are compared: each generated position
/// where both sides give alternatives, up to and including the first where they chose
/// different tokens (after it they condition on different text), and before the first
/// token that is part of a character: engines report those differently (llama.cpp merges
/// the byte tokens of one character into one entry, our runner keeps each), so they cannot
/// be aligned by bytes.
pub fn aligned_positions(reference: &Observation, suspect: &Observation) -> Vec<(TopK, TopK)> {
    let mut out = Vec::new();
    for ((r_chosen, r_top), (s_chosen, s_top)) in
        positions(reference).into_iter().zip(positions(suspect))
    {
        let (Some(r_top), Some(s_top)) = (r_top, s_top) else {
            break;
        };
        if partial_character(&r_chosen) || partial_character(&s_chosen) {
            break;
        }
        out.push((r_top, s_top));
        if r_chosen != s_chosen {
            break;
        }
    }
    out
}

/// A chosen token whose bytes are not whole UTF-8 characters (a byte-fallback piece).
pub(crate) fn partial_character(key: &[u8]) -> bool {
    match key.split_first() {
        // No bytes reported: the token's text, where a lone byte shows as U+FFFD.
        Some((0xFF, text)) => std::str::from_utf8(text).map_or(true, |t| t.contains('\u{FFFD}')),
        _ => std::str::from_utf8(key).is_err(),
    }
}

/// Compares the positions of two answers to one probe; `None` when either side has no
/// alternatives at the first position.
pub fn compare_observations(reference: &Observation, suspect: &Observation) -> Option<ProbeLogits> {
    let out: Vec<PositionStats> = aligned_positions(reference, suspect)
        .iter()
        .map(|(r, s)| compare_position(r, s))
        .collect();
    if out.is_empty() {
        return None;
    }
    Some(ProbeLogits {
        probe_id: reference.probe_id.clone(),
        positions: out,
    })
}

/// Means over probes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogitSummary {
    pub probes: usize,
    pub positions: usize,
    /// Mean of 1 - JSD / ln 2.
    pub similarity: f64,
    pub jsd: f64,
    pub top1: f64,
    pub jaccard: f64,
    pub spearman: Option<f64>,
    pub mean_abs_dlogprob: Option<f64>,
}

pub fn summarize(probes: &[ProbeLogits]) -> Option<LogitSummary> {
    if probes.is_empty() {
        return None;
    }
    let n = probes.len() as f64;
    let over = |f: &dyn Fn(&ProbeLogits) -> Option<f64>| {
        let values: Vec<f64> = probes.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    Some(LogitSummary {
        probes: probes.len(),
        positions: probes.iter().map(|p| p.positions.len()).sum(),
        similarity: probes.iter().map(ProbeLogits::similarity).sum::<f64>() / n,
        jsd: over(&|p| p.mean(|s| Some(s.jsd))).unwrap_or(LN_2),
        top1: over(&|p| p.mean(|s| Some(if s.top1 { 1.0 } else { 0.0 }))).unwrap_or(0.0),
        jaccard: over(&|p| p.mean(|s| Some(s.jaccard))).unwrap_or(0.0),
        spearman: over(&|p| p.mean(|s| s.spearman)),
        mean_abs_dlogprob: over(&|p| p.mean(|s| s.mean_abs_dlogprob)),
    })
}

/// Compares every pair with alternatives on both sides.
pub fn compare_pairs(pairs: &[Pair]) -> Vec<ProbeLogits> {
    pairs
        .iter()
        .filter_map(|p| compare_observations(p.reference, p.suspect))
        .collect()
}

/// The first position's most likely tokens, for people: `' Paris' 0.91, ' the' 0.03`.
fn describe_top(obs: &Observation, n: usize) -> String {
    let Some(Some(top)) = positions(obs).into_iter().next().map(|p| p.1) else {
        return clip(obs.text().unwrap_or_default());
    };
    top.entries
        .iter()
        .take(n)
        .map(|(k, lp)| format!("{:?} {:.2}", String::from_utf8_lossy(k), lp.exp()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The logit signal: score = mean over probes of 1 - JSD / ln 2.
pub fn signal(
    pairs: &[Pair],
    boot: Option<&BootstrapOptions>,
) -> Option<(SignalOutcome, LogitSummary)> {
    let compared: Vec<(&Pair, ProbeLogits)> = pairs
        .iter()
        .filter_map(|p| Some((p, compare_observations(p.reference, p.suspect)?)))
        .collect();
    let probes: Vec<ProbeLogits> = compared.iter().map(|c| c.1.clone()).collect();
    let summary = summarize(&probes)?;
    let sims: Vec<f64> = probes.iter().map(ProbeLogits::similarity).collect();
    let mut extra = BTreeMap::new();
    extra.insert("jsd_nats".to_string(), summary.jsd);
    extra.insert("top1_agreement".to_string(), summary.top1);
    extra.insert("topk_jaccard".to_string(), summary.jaccard);
    if let Some(rho) = summary.spearman {
        extra.insert("spearman".to_string(), rho);
    }
    if let Some(d) = summary.mean_abs_dlogprob {
        extra.insert("mean_abs_dlogprob".to_string(), d);
    }
    extra.insert("positions".to_string(), summary.positions as f64);
    let per_probe = compared
        .iter()
        .map(|(pair, probe)| ProbeScore {
            probe_id: probe.probe_id.clone(),
            kind: pair.reference.kind,
            score: probe.similarity(),
            reference_text: describe_top(pair.reference, 3),
            suspect_text: describe_top(pair.suspect, 3),
            note: format!(
                "JSD {:.3} nats, top-1 {}, mean |Δlogprob| {}",
                probe.mean(|s| Some(s.jsd)).unwrap_or(LN_2),
                if probe.positions.first().is_some_and(|p| p.top1) {
                    "agrees"
                } else {
                    "differs"
                },
                probe
                    .mean(|s| s.mean_abs_dlogprob)
                    .map(|d| format!("{d:.3}"))
                    .unwrap_or_else(|| "n/a".to_string())
            ),
        })
        .collect();
    let outcome = SignalOutcome {
        score: summary.similarity,
        n: summary.probes,
        interval: boot.and_then(|opts| bootstrap::mean_interval(&sims, opts)),
        detail: format!(
            "JSD {:.3} nats, top-1 agreement {:.0}%, top-k overlap {:.2}, mean |Δlogprob| {} over {} probes",
            summary.jsd,
            summary.top1 * 100.0,
            summary.jaccard,
            summary
                .mean_abs_dlogprob
                .map(|d| format!("{d:.3}"))
                .unwrap_or_else(|| "n/a".to_string()),
            summary.probes
        ),
        extra,
        per_probe,
    };
    Some((outcome, summary))
}

/// Share of the longer text that both texts start with, in characters; 1 if both empty.
pub fn prefix_ratio(a: &str, b: &str) -> f64 {
    let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
    let longest = a.chars().count().max(b.chars().count());
    if longest == 0 {
        1.0
    } else {
        common as f64 / longest as f64
    }
}

/// Greedy text of the same probes: score = mean exact common-prefix ratio.
pub fn greedy_signal(pairs: &[Pair], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    let texts: Vec<(&Pair, &str, &str)> = pairs
        .iter()
        .filter_map(|p| Some((p, p.reference.text()?, p.suspect.text()?)))
        .collect();
    if texts.is_empty() {
        return None;
    }
    let ratios: Vec<f64> = texts.iter().map(|(_, r, s)| prefix_ratio(r, s)).collect();
    let n = texts.len() as f64;
    let first_word = texts
        .iter()
        .filter(|(_, r, s)| r.split_whitespace().next() == s.split_whitespace().next())
        .count() as f64
        / n;
    let exact = texts.iter().filter(|(_, r, s)| r == s).count() as f64 / n;
    let score = ratios.iter().sum::<f64>() / n;
    let mut extra = BTreeMap::new();
    extra.insert("first_word_agreement".to_string(), first_word);
    extra.insert("exact_match".to_string(), exact);
    let per_probe = texts
        .iter()
        .zip(&ratios)
        .map(|((pair, r, s), ratio)| ProbeScore {
            probe_id: pair.reference.probe_id.clone(),
            kind: pair.reference.kind,
            score: *ratio,
            reference_text: clip(r),
            suspect_text: clip(s),
            note: format!("common prefix {:.0}% of the text", ratio * 100.0),
        })
        .collect();
    Some(SignalOutcome {
        score,
        n: texts.len(),
        interval: boot.and_then(|opts| bootstrap::mean_interval(&ratios, opts)),
        detail: format!(
            "greedy continuations: {:.0}% identical, {:.0}% same first word, mean common prefix {:.0}%",
            exact * 100.0,
            first_word * 100.0,
            score * 100.0
        ),
        extra,
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topk(entries: &[(&str, f64)]) -> TopK {
        TopK::from_entries(entries.iter().map(|(t, p)| (t.as_bytes().to_vec(), p.ln())))
    }

    fn token(text: &str, lp: f32, top: &[(&[u8], f32)]) -> TokenLogprobs {
        TokenLogprobs {
            id: None,
            token: text.into(),
            bytes: text.as_bytes().to_vec(),
            logprob: lp,
            top: top
                .iter()
                .map(|(b, lp)| crate::endpoint::TopLogprob {
                    id: None,
                    token: String::from_utf8_lossy(b).into_owned(),
                    bytes: b.to_vec(),
                    logprob: *lp,
                })
                .collect(),
        }
    }

    /// llama-server's entry for a sampled two-byte character (Arabic comma, as seen on
    /// SmolLM2): the alternatives listed are those of its second byte.
    #[test]
    fn a_merged_character_s_list_is_not_its_position_s() {
        let merged = token("،", -0.323, &[(&[0x8C], -0.323), (&[0x8A], -2.0)]);
        assert_eq!(TopK::from_position(&merged), None);
        // Sampled below its list, or listed: the list is its position's.
        let below = token(" (", -4.5, &[("ة".as_bytes(), -1.7), (b" x", -2.1)]);
        assert_eq!(TopK::from_position(&below).map(|t| t.len()), Some(2));
        let listed = token("ة", -1.7, &[("ة".as_bytes(), -1.7), (b" x", -2.1)]);
        assert_eq!(TopK::from_position(&listed).map(|t| t.len()), Some(2));
    }

    /// bfloat16 logits (transformers on PyTorch, SmolLM2): " A" and "2" at exactly the
    /// same log-probability, listed in an order that means nothing.
    #[test]
    fn a_tie_at_the_top_agrees_with_either_token() {
        let reference = topk(&[("2", 0.09), (" A", 0.085), ("The", 0.05)]);
        let tied = topk(&[("2", 0.087), (" A", 0.087), ("The", 0.05)]);
        // Bytes order breaks the tie: " A" (0x20) is listed before "2".
        assert_eq!(tied.entries[0].0, b" A");
        assert!(compare_position(&reference, &tied).top1);
        let other_first = topk(&[("The", 0.087), (" A", 0.087), ("2", 0.05)]);
        assert!(!compare_position(&reference, &other_first).top1);
        // Apart by more than a rounding of the same value: the order counts.
        let ordered = topk(&[(" A", 0.0871), ("2", 0.087)]);
        assert!(!compare_position(&reference, &ordered).top1);
    }

    #[test]
    fn byte_pieces_of_a_character_are_not_aligned() {
        assert!(partial_character(&[0xD0]));
        assert!(partial_character(&token_key(&[], " \u{FFFD}")));
        assert!(!partial_character(&token_key(" О".as_bytes(), " О")));
        assert!(!partial_character(&token_key(&[], " Paris")));
    }

    #[test]
    fn jsd_properties() {
        let a = topk(&[("x", 0.6), ("y", 0.3), ("z", 0.05)]);
        let b = topk(&[("y", 0.5), ("w", 0.2), ("x", 0.1)]);
        assert!(jsd(&a, &a).abs() < 1e-12, "identical lists give 0");
        assert!((jsd(&a, &b) - jsd(&b, &a)).abs() < 1e-12, "symmetric");
        assert!(jsd(&a, &b) > 0.0);
        // Disjoint, full-mass lists reach the bound ln 2.
        let c = topk(&[("p", 1.0)]);
        let d = topk(&[("q", 1.0)]);
        assert!((jsd(&c, &d) - LN_2).abs() < 1e-9);
        for (p, q) in [(&a, &b), (&a, &c), (&b, &d)] {
            let v = jsd(p, q);
            assert!((0.0..=LN_2).contains(&v));
        }
    }

    #[test]
    fn tail_bucket_counts_missing_mass() {
        // Same listed tokens, different mass outside the list: not identical.
        let a = topk(&[("x", 0.5), ("y", 0.4)]);
        let b = topk(&[("x", 0.25), ("y", 0.2)]);
        assert!(jsd(&a, &b) > 0.05);
    }

    #[test]
    fn overlap_and_ranks() {
        let a = topk(&[("a", 0.4), ("b", 0.3), ("c", 0.2), ("d", 0.1)]);
        let b = topk(&[("a", 0.4), ("b", 0.3), ("c", 0.2), ("e", 0.1)]);
        assert!((jaccard(&a, &b) - 3.0 / 5.0).abs() < 1e-12);
        assert_eq!(spearman(&a, &b), Some(1.0));
        let reversed = topk(&[("c", 0.5), ("b", 0.3), ("a", 0.2)]);
        assert_eq!(spearman(&a, &reversed), Some(-1.0));
        assert_eq!(spearman(&a, &topk(&[("a", 0.9)])), None);
        let shifted = TopK::from_entries(a.entries.iter().map(|(k, lp)| (k.clone(), lp - 0.1)));
        let d = mean_abs_delta(&a, &shifted).unwrap_or(0.0);
        assert!((d - 0.1).abs() < 1e-9);
    }

    #[test]
    fn same_bytes_merge() {
        let t = TopK::from_entries([
            (b"x".to_vec(), 0.25f64.ln()),
            (b"y".to_vec(), 0.3f64.ln()),
            (b"x".to_vec(), 0.25f64.ln()),
        ]);
        assert_eq!(t.len(), 2);
        assert_eq!(t.entries[0].0, b"x");
        assert!((t.entries[0].1.exp() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn prefix() {
        assert_eq!(prefix_ratio("Paris is", "Paris is"), 1.0);
        assert!((prefix_ratio("abcd", "abxy") - 0.5).abs() < 1e-12);
        assert_eq!(prefix_ratio("", ""), 1.0);
    }
}
