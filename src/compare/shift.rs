//! Same weights, or weights changed by less than engine noise? A test that looks past the
//! size of the log-probability differences to their consistency.
//!
//! Two engines running the same weights differ by rounding: which activation codes flip
//! depends on the exact input, so the differences change sign from prompt to prompt. Changed
//! weights (noise, a short fine-tune, another rounding of the weights) move the same
//! tokens the same way wherever they appear: the tied output rows shift every logit of
//! their token by about the same amount. Mean |Δlogprob| cannot tell them apart when both
//! are the same size (on the zoo, Gemma with 1% weight noise differs from the reference by
//! 0.141 nats, less than our runner differs from llama.cpp), consistency can.
//!
//! Per logit position (while both sides chose the same tokens, as in [`super::logits`]), each
//! token both top-k lists share gets Δ = reference − suspect log-probability, centred on the
//! position's mean Δ (which removes the shift of the normaliser that every token at a
//! position shares). Per token `j` and probe `p`, `s_jp` sums its centred Δ. The statistic
//!
//! `T = Σ_j (S_j² − Q_j) / Q_j`, with `S_j = Σ_p s_jp` and `Q_j = Σ_p s_jp²`,
//!
//! over tokens seen in at least two probes, is each token's cross-probe agreement
//! (`S² − Q` is twice the sum of the products of its probes' shifts), scaled per token so
//! that rare, noisy tail tokens weigh no more than frequent ones. Under "shifts are noise"
//! each probe's shifts have either sign, independently of other probes', so flipping the
//! sign of every shift of a probe leaves their distribution unchanged: the p-value is the
//! share of random sign flips (probe by probe, seeded) whose T reaches the observed one. The
//! flips keep every dependence inside a probe and every token's own noise level, so nothing
//! is assumed about either.
//!
//! Rounding is not perfectly sign-free either: features that hold nearly the same value at
//! every position (massive activations) round the same way every time. So the verdict asks
//! for more than significance: the *share* of the shifts that repeats,
//! `T / Σ_j (k_j − 1)` for a token seen in `k_j` probes (its expectation is
//! `b² / (b² + σ²)` for a consistent shift `b` under noise `σ`), must exceed the band
//! (`IdenticalBand::max_shift_share`). Measured over the 113 raw logit probes of the
//! default set: the same weights through other arithmetic (f32, or candle's kernels) share
//! -0.002 to 0.012, the zoo's Q8_0 re-quantizations 0.024 and 0.038, 1% weight noise 0.090
//! (Gemma) and 0.096 (SmolLM2), SmolLM2's fine-tune 0.40.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::logits::{aligned_positions, common_length, shared_deltas};
use super::Pair;

/// How many sign flips; p-values are multiples of 1 / (FLIPS + 1).
pub const FLIPS: usize = 1999;
/// Fixed, so a report is reproducible.
const SEED: u64 = 0x5eed_5a1f;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShiftTest {
    /// `T` above; near 0 (or below) when shifts do not repeat across probes.
    pub statistic: f64,
    /// The share of the shifts that repeats across probes (see the module notes).
    pub share: f64,
    /// Tokens seen in at least two probes (the terms of `T`).
    pub tokens: usize,
    /// Probes compared (a position with two shared tokens or more).
    pub probes: usize,
    /// Whether only raw-form probes (no chat template, no system prompt) were used.
    #[serde(default)]
    pub raw_only: bool,
    /// Share of sign flips with `T` at least as large (with the observed one counted).
    pub p_value: f64,
}

/// The test over the raw-form logit pairs when at least `min_probes` of them could be
/// compared, else over all; `None` when fewer than `min_probes` could be.
///
/// Raw first, because chat probes pass through the chat template and whatever system
/// prompt the suspect hides behind: a persona shifts the same tokens in every chat probe
/// (on the zoo, Gemma behind a persona: 34% to 39% of the chat probes' differences repeat,
/// none of the raw ones differ), a change of context that is not a change of weights.
pub fn test(pairs: &[Pair], min_probes: usize) -> Option<ShiftTest> {
    let raw: Vec<Pair> = pairs
        .iter()
        .filter(|p| p.reference.request.prompt.is_raw())
        .copied()
        .collect();
    test_on(&raw, min_probes, true).or_else(|| test_on(pairs, min_probes, false))
}

/// One token's summed centred Δ per probe: (probe index, sum).
type Shifts = Vec<(usize, f64)>;

fn test_on(pairs: &[Pair], min_probes: usize, raw_only: bool) -> Option<ShiftTest> {
    let mut by_token: HashMap<Vec<u8>, Shifts> = HashMap::new();
    let mut probes = 0;
    for pair in pairs {
        let shifts = probe_shifts(pair);
        if shifts.is_empty() {
            continue;
        }
        for (token, s) in shifts {
            by_token.entry(token).or_default().push((probes, s));
        }
        probes += 1;
    }
    // Sorted, so the sum (and the p-value's last digits) do not depend on hash order.
    let mut terms: Vec<(Vec<u8>, Shifts)> = by_token
        .into_iter()
        .filter(|(_, v)| v.len() >= 2 && v.iter().any(|(_, s)| *s != 0.0))
        .collect();
    terms.sort_by(|a, b| a.0.cmp(&b.0));
    // Probes compared, whether or not they differ: a copy served alike differs nowhere.
    if probes < min_probes.max(2) {
        return None;
    }
    if terms.is_empty() {
        return Some(ShiftTest {
            statistic: 0.0,
            share: 0.0,
            tokens: 0,
            probes,
            raw_only,
            p_value: 1.0,
        });
    }
    let terms: Vec<Shifts> = terms.into_iter().map(|(_, v)| v).collect();
    let observed = statistic(&terms, &vec![1.0; probes]);
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut signs = vec![1.0; probes];
    let mut reached = 0usize;
    for _ in 0..FLIPS {
        for s in signs.iter_mut() {
            *s = if rng.random::<bool>() { 1.0 } else { -1.0 };
        }
        // A hair of tolerance: the identity flip must count as reaching itself.
        if statistic(&terms, &signs) >= observed - 1e-9 * observed.abs().max(1.0) {
            reached += 1;
        }
    }
    let pairs_of_probes: usize = terms.iter().map(|v| v.len() - 1).sum();
    Some(ShiftTest {
        statistic: observed,
        share: observed / pairs_of_probes as f64,
        tokens: terms.len(),
        probes,
        raw_only,
        p_value: (reached + 1) as f64 / (FLIPS + 1) as f64,
    })
}

/// `T` with probe `p`'s shifts multiplied by `signs[p]`.
fn statistic(terms: &[Shifts], signs: &[f64]) -> f64 {
    terms
        .iter()
        .map(|v| {
            let (sum, sq) = v.iter().fold((0.0, 0.0), |(sum, sq), (p, s)| {
                (sum + signs[*p] * s, sq + s * s)
            });
            (sum * sum - sq) / sq
        })
        .sum()
}

/// One probe's centred shifts, summed per token over its positions.
fn probe_shifts(pair: &Pair) -> Vec<(Vec<u8>, f64)> {
    let mut sums: Vec<(Vec<u8>, f64)> = Vec::new();
    for (r_top, s_top) in aligned_positions(pair.reference, pair.suspect) {
        let (r_top, s_top) = common_length(&r_top, &s_top);
        for (token, d) in centred(shared_deltas(&r_top, &s_top)) {
            match sums.iter_mut().find(|(t, _)| t.as_slice() == token) {
                Some((_, sum)) => *sum += d,
                None => sums.push((token.to_vec(), d)),
            }
        }
    }
    sums
}

/// Reference-minus-suspect deltas minus their mean; empty with fewer than two (one shared
/// token carries no shift of its own once the normaliser's is removed).
fn centred(deltas: Vec<(&[u8], f64)>) -> Vec<(&[u8], f64)> {
    if deltas.len() < 2 {
        return Vec::new();
    }
    let mean = deltas.iter().map(|(_, d)| d).sum::<f64>() / deltas.len() as f64;
    deltas.into_iter().map(|(t, d)| (t, d - mean)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{
        ChatMessage, ProbeRequest, ProbeResponse, PromptForm, TokenLogprobs, TopLogprob,
    };
    use crate::fingerprint::Observation;
    use crate::probes::ProbeKind;

    const TOKENS: usize = 12;

    /// One logit answer of one position: tokens t0..t11 with log-probabilities `lp(j)`.
    fn answer(id: &str, raw: bool, lp: impl Fn(usize) -> f64) -> Observation {
        let top: Vec<TopLogprob> = (0..TOKENS)
            .map(|j| TopLogprob {
                id: Some(j as u32),
                token: format!("t{j}"),
                bytes: format!("t{j}").into_bytes(),
                logprob: lp(j) as f32,
            })
            .collect();
        let prompt = if raw {
            PromptForm::Raw { prompt: id.into() }
        } else {
            PromptForm::Chat {
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: id.into(),
                }],
            }
        };
        Observation {
            probe_id: id.into(),
            kind: ProbeKind::Logit,
            sample_index: 0,
            request: ProbeRequest {
                prompt,
                max_tokens: 1,
                temperature: 0.0,
                top_p: 1.0,
                seed: None,
                top_logprobs: TOKENS,
                stop: Vec::new(),
            },
            response: Some(ProbeResponse {
                text: "t0".into(),
                tokens: vec![TokenLogprobs {
                    id: Some(0),
                    token: "t0".into(),
                    bytes: b"t0".to_vec(),
                    logprob: top[0].logprob,
                    top,
                }],
                usage: None,
                finish_reason: None,
                latency_ms: 1,
            }),
            token_ids: None,
            chat_prompt_tokens: None,
            error: None,
            attempts: 1,
            latency_ms: 1,
        }
    }

    /// The reference's log-probabilities at probe `p` (strictly decreasing in `j`).
    fn reference_lp(p: usize, j: usize) -> f64 {
        -0.5 - 0.4 * j as f64 - 0.01 * (p % 7) as f64
    }

    /// Noise in [-0.1, 0.1] that depends on probe and token.
    fn noise(seed: u64, p: usize, j: usize) -> f64 {
        let mut rng = StdRng::seed_from_u64(seed ^ ((p as u64) << 8) ^ j as u64);
        rng.random_range(-0.1..0.1)
    }

    /// `probes` pairs: raw ones (or chat ones), the suspect being the reference plus
    /// `suspect(p, j)`.
    fn observations(
        probes: usize,
        raw: bool,
        suspect: impl Fn(usize, usize) -> f64,
    ) -> Vec<(Observation, Observation)> {
        (0..probes)
            .map(|p| {
                let id = format!("{}{p}", if raw { "raw" } else { "chat" });
                (
                    answer(&id, raw, |j| reference_lp(p, j)),
                    answer(&id, raw, |j| reference_lp(p, j) + suspect(p, j)),
                )
            })
            .collect()
    }

    fn run(obs: &[(Observation, Observation)]) -> Option<ShiftTest> {
        let pairs: Vec<Pair> = obs
            .iter()
            .map(|(r, s)| Pair {
                reference: r,
                suspect: s,
            })
            .collect();
        test(&pairs, 5)
    }

    #[test]
    fn noise_that_changes_sign_is_not_a_shift() {
        let t = run(&observations(40, true, |p, j| noise(1, p, j))).expect("enough probes");
        assert!(t.p_value > 0.01 && t.share < 0.05, "{t:?}");
        assert_eq!((t.probes, t.tokens, t.raw_only), (40, TOKENS, true));
    }

    #[test]
    fn a_shift_per_token_repeated_in_every_probe_is_found() {
        // Half the size of the noise, the same sign in every probe.
        let bias = |j: usize| if j.is_multiple_of(2) { 0.05 } else { -0.05 };
        let t =
            run(&observations(40, true, |p, j| noise(2, p, j) + bias(j))).expect("enough probes");
        assert!(t.p_value <= 0.01 && t.share > 0.05, "{t:?}");
    }

    #[test]
    fn raw_probes_decide_when_a_system_prompt_shifts_the_chat_ones() {
        // A persona: chat answers shifted the same way in every probe, raw ones equal.
        let mut obs = observations(20, true, |_, _| 0.0);
        let persona = |j: usize| 0.3 * (j % 3) as f64;
        obs.extend(observations(20, false, |p, j| noise(3, p, j) + persona(j)));
        let t = run(&obs).expect("enough probes");
        assert!(t.raw_only, "{t:?}");
        assert_eq!((t.share, t.p_value, t.tokens), (0.0, 1.0, 0));
        // Without raw probes the chat ones are all there is, and they show the shift.
        let t = run(&obs[20..]).expect("enough probes");
        assert!(!t.raw_only && t.p_value <= 0.01, "{t:?}");
    }

    #[test]
    fn too_few_probes_give_no_test() {
        assert!(run(&observations(4, true, |p, j| noise(4, p, j))).is_none());
    }
}
