//! Log-probabilities reported after a temperature. Stacks disagree on what `logprobs`
//! means when a request samples: vLLM and Ollama report the model's own distribution,
//! SGLang (by default) and llama.cpp's `post_sampling_probs` report the one sampled from,
//! `log_softmax(logits / T)`, cut to what top-k, top-p or min-p kept and renormalised. A
//! copy behind an API that fixes its temperature then reports every gap between two tokens
//! multiplied by 1/T, which no engine noise explains, and would read as changed weights.
//!
//! Temperature keeps the order of tokens and scales every gap by one factor, so the
//! factor is fitted from the gaps below each position's top token that both lists show
//! ([`fit`]). Where it is far from one, the print is read back at temperature one
//! ([`undo`]): every gap divided by the factor, and the level of each list set so that
//! the tokens it shares with the reference carry the reference's mass there (what the
//! renormalisation over an unknown tail moved). Every print compared is read this way,
//! controls included, so the step gives a suspect nothing a control does not also get;
//! one factor cannot turn another model's gaps into the reference's.

use super::logits::{aligned_positions, token_key, TopK};
use crate::fingerprint::{Fingerprint, Observation};
use crate::probes::ProbeKind;

/// Gaps smaller than this (nats) are left out of the fit: engine noise (~0.07 nats) would
/// dominate their ratio.
const MIN_GAP: f64 = 0.5;
/// Fewer gaps than this say too little to fit a factor.
const MIN_GAPS: usize = 20;
/// Factors within this ratio of one are left alone: engines and quantization move gaps
/// by a few percent without any temperature.
const MAX_UNSCALED_RATIO: f64 = 1.1;

/// The factor by which a print's gaps exceed the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemperatureFit {
    /// Median of suspect gap / reference gap: 1/T for a copy reported at temperature T.
    pub factor: f64,
    /// How many gaps it was fitted on.
    pub gaps: usize,
}

impl TemperatureFit {
    /// The temperature the print's log-probabilities look reported at.
    pub fn temperature(&self) -> f64 {
        1.0 / self.factor
    }

    /// Whether enough gaps were seen to say whether the print is scaled.
    pub fn enough(&self) -> bool {
        self.gaps >= MIN_GAPS
    }

    /// Whether the factor is far enough from one to read the print again.
    pub fn scaled(&self) -> bool {
        self.enough()
            && (self.factor >= MAX_UNSCALED_RATIO || self.factor <= 1.0 / MAX_UNSCALED_RATIO)
    }
}

/// Fits the factor on the logit probes both prints answered: for each aligned position
/// and each token both lists show below the reference's top token, the ratio of the two
/// gaps to that top token.
pub fn fit(reference: &Fingerprint, print: &Fingerprint) -> Option<TemperatureFit> {
    let mut ratios = Vec::new();
    for (r, s) in logit_pairs(reference, print) {
        for (rt, st) in aligned_positions(r, s) {
            let Some((top, r_top)) = rt.entries.first() else {
                continue;
            };
            let Some(s_top) = lookup(&st, top) else {
                continue;
            };
            for (key, r_lp) in rt.entries.iter().skip(1) {
                let gap = r_top - r_lp;
                if gap < MIN_GAP {
                    continue;
                }
                if let Some(s_lp) = lookup(&st, key) {
                    ratios.push((s_top - s_lp) / gap);
                }
            }
        }
    }
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let mid = ratios.len() / 2;
    let factor = if ratios.len() % 2 == 1 {
        ratios[mid]
    } else {
        (ratios[mid - 1] + ratios[mid]) / 2.0
    };
    (factor > 0.0).then_some(TemperatureFit {
        factor,
        gaps: ratios.len(),
    })
}

/// The print read back at temperature one when its fitted factor is far from one, with
/// the fit; `None` when it is read as given.
///
/// The print is read back only where that at least halves its mean |Δ logprob| on the
/// logit probes: a temperature explains every gap at once, while rounding can sharpen a
/// distribution without being one (SmolLM2's Q4_1 weights re-rounded to Q4_0 show gaps
/// 1.25 times the reference's and read further away once divided).
pub fn undo(reference: &Fingerprint, print: &Fingerprint) -> Option<(Fingerprint, TemperatureFit)> {
    let fit = fit(reference, print).filter(TemperatureFit::scaled)?;
    let mut out = print.clone();
    for obs in &mut out.observations {
        *obs = read_at_one(reference, obs, &fit);
    }
    let before = logit_distance(reference, print)?;
    let after = logit_distance(reference, &out)?;
    (after <= EXPLAINED * before).then_some((out, fit))
}

/// How much of a print's distance from the reference reading it back at one must remove.
const EXPLAINED: f64 = 0.5;

/// Mean |Δ logprob| over the logit probes both prints answered.
fn logit_distance(reference: &Fingerprint, print: &Fingerprint) -> Option<f64> {
    let probes: Vec<_> = logit_pairs(reference, print)
        .filter_map(|(r, s)| super::logits::compare_observations(r, s))
        .collect();
    super::logits::summarize(&probes)?.mean_abs_dlogprob
}

/// One answer read back at temperature one under `fit`: each gap divided by its factor,
/// each position that lines up with the reference's answer to the same probe levelled on
/// the tokens both show (the rest keep the scaled level).
pub fn read_at_one(
    reference: &Fingerprint,
    obs: &Observation,
    fit: &TemperatureFit,
) -> Observation {
    let counterpart = reference
        .observations
        .iter()
        .find(|r| r.probe_id == obs.probe_id && r.sample_index == 0 && r.kind == obs.kind);
    let aligned = counterpart.map_or(0, |r| aligned_positions(r, obs).len());
    let reference_tokens = counterpart
        .and_then(|r| r.response.as_ref())
        .map(|r| r.tokens.as_slice())
        .unwrap_or_default();
    let mut out = obs.clone();
    let Some(response) = out.response.as_mut() else {
        return out;
    };
    for (i, position) in response.tokens.iter_mut().enumerate() {
        let level = match reference_tokens.get(i).filter(|_| i < aligned) {
            Some(r) => level(r, position, fit.factor),
            None => 0.0,
        };
        let rescale = |lp: f32| (f64::from(lp) / fit.factor + level) as f32;
        position.logprob = rescale(position.logprob);
        for t in &mut position.top {
            t.logprob = rescale(t.logprob);
        }
    }
    out
}

/// The offset that gives the tokens both lists show, once the print's gaps are divided by
/// `factor`, the reference's mass on them.
fn level(
    reference: &crate::endpoint::TokenLogprobs,
    print: &crate::endpoint::TokenLogprobs,
    factor: f64,
) -> f64 {
    let theirs: Vec<(Vec<u8>, f64)> = reference
        .top
        .iter()
        .map(|t| (token_key(&t.bytes, &t.token), f64::from(t.logprob)))
        .collect();
    let mut ours = Vec::new();
    let mut refs = Vec::new();
    for t in &print.top {
        let key = token_key(&t.bytes, &t.token);
        if let Some((_, lp)) = theirs.iter().find(|(k, _)| *k == key) {
            ours.push(f64::from(t.logprob) / factor);
            refs.push(*lp);
        }
    }
    match (log_sum_exp(&refs), log_sum_exp(&ours)) {
        (Some(r), Some(o)) => r - o,
        _ => 0.0,
    }
}

fn log_sum_exp(values: &[f64]) -> Option<f64> {
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    hi.is_finite()
        .then(|| hi + values.iter().map(|v| (v - hi).exp()).sum::<f64>().ln())
}

fn lookup(list: &TopK, key: &[u8]) -> Option<f64> {
    list.entries
        .iter()
        .find(|(k, _)| k.as_slice() == key)
        .map(|(_, lp)| *lp)
}

fn logit_pairs<'a>(
    reference: &'a Fingerprint,
    print: &'a Fingerprint,
) -> impl Iterator<Item = (&'a Observation, &'a Observation)> {
    super::pairs(reference, print, ProbeKind::Logit)
        .into_iter()
        .map(|p| (p.reference, p.suspect))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::logits::{compare_observations, summarize};
    use crate::endpoint::{ProbeRequest, ProbeResponse, PromptForm, TokenLogprobs, TopLogprob};
    use rand::{rngs::StdRng, Rng, SeedableRng};

    fn logit_observation(id: &str, response: ProbeResponse) -> Observation {
        Observation {
            probe_id: id.into(),
            kind: ProbeKind::Logit,
            sample_index: 0,
            request: ProbeRequest {
                prompt: PromptForm::Raw { prompt: id.into() },
                max_tokens: 1,
                temperature: 0.0,
                top_p: 1.0,
                seed: None,
                top_logprobs: 20,
                stop: Vec::new(),
            },
            response: Some(response),
            token_ids: None,
            chat_prompt_tokens: None,
            error: None,
            attempts: 1,
            latency_ms: 1,
        }
    }

    fn fingerprint_with(observations: Vec<Observation>) -> Fingerprint {
        Fingerprint::new(
            crate::fingerprint::ModelDescription {
                describe: "m".into(),
                capabilities: Default::default(),
            },
            crate::fingerprint::ProbeSetRef {
                name: "s".into(),
                version: "1".into(),
                hash: "h".into(),
            },
            observations,
        )
    }

    /// Top-`k` of `log_softmax(logits / temperature)`, optionally cut to the tokens within
    /// `min_p` of the top and renormalised, as llama.cpp's post-sampling probabilities.
    fn listed(logits: &[f64], temperature: f64, k: usize, min_p: Option<f64>) -> Vec<(usize, f64)> {
        let scaled: Vec<f64> = logits.iter().map(|l| l / temperature).collect();
        let z = log_sum_exp(&scaled).unwrap_or(0.0);
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|a, b| scaled[*b].total_cmp(&scaled[*a]));
        let mut out: Vec<(usize, f64)> =
            order.iter().take(k).map(|&i| (i, scaled[i] - z)).collect();
        if let Some(min_p) = min_p {
            let top = out[0].1;
            out.retain(|(_, lp)| *lp >= top + min_p.ln());
            let kept: Vec<f64> = out.iter().map(|(_, lp)| *lp).collect();
            let norm = log_sum_exp(&kept).unwrap_or(0.0);
            for e in &mut out {
                e.1 -= norm;
            }
        }
        out
    }

    fn response(entries: &[(usize, f64)]) -> ProbeResponse {
        let top: Vec<TopLogprob> = entries
            .iter()
            .map(|(i, lp)| TopLogprob {
                id: Some(*i as u32),
                token: format!("t{i}"),
                bytes: format!("t{i}").into_bytes(),
                logprob: *lp as f32,
            })
            .collect();
        ProbeResponse {
            text: top[0].token.clone(),
            tokens: vec![TokenLogprobs {
                id: top[0].id,
                token: top[0].token.clone(),
                bytes: top[0].bytes.clone(),
                logprob: top[0].logprob,
                top,
            }],
            usage: None,
            finish_reason: None,
            latency_ms: 1,
        }
    }

    /// A reference and a print of `probes` logit probes whose logits are the reference's
    /// plus `noise`, reported at `temperature`.
    fn prints(
        seed: u64,
        probes: usize,
        noise: f64,
        temperature: f64,
        min_p: Option<f64>,
    ) -> (Fingerprint, Fingerprint) {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut reference = Vec::new();
        let mut print = Vec::new();
        for p in 0..probes {
            // Normal with sd 3 (Box-Muller): the top 20 of 400 span about 4 nats.
            let logits: Vec<f64> = (0..400)
                .map(|_| {
                    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
                    3.0 * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
                })
                .collect();
            let theirs: Vec<f64> = logits
                .iter()
                .map(|l| l + noise * rng.random_range(-0.5..0.5))
                .collect();
            let id = format!("logit-{p}");
            reference.push(logit_observation(
                &id,
                response(&listed(&logits, 1.0, 20, None)),
            ));
            print.push(logit_observation(
                &id,
                response(&listed(&theirs, temperature, 20, min_p)),
            ));
        }
        (fingerprint_with(reference), fingerprint_with(print))
    }

    fn mean_abs(reference: &Fingerprint, print: &Fingerprint) -> f64 {
        let probes: Vec<_> = reference
            .observations
            .iter()
            .zip(&print.observations)
            .filter_map(|(r, s)| compare_observations(r, s))
            .collect();
        summarize(&probes)
            .and_then(|s| s.mean_abs_dlogprob)
            .unwrap_or(f64::NAN)
    }

    #[test]
    fn a_copy_reported_after_temperature_is_read_back_at_one() {
        for (temperature, min_p) in [(0.7, None), (0.5, None), (1.5, None), (0.7, Some(0.05))] {
            let (reference, print) = prints(7, 40, 0.0, temperature, min_p);
            let before = mean_abs(&reference, &print);
            // Past the identical band (0.2 nats) as given.
            assert!(before > 0.2, "{temperature} {min_p:?}: {before}");
            let (read, fit) = undo(&reference, &print).expect("scaled");
            assert!(
                (fit.temperature() - temperature).abs() < 0.01,
                "{temperature}: fitted {fit:?}"
            );
            assert!(
                mean_abs(&reference, &read) < 0.01,
                "{temperature} {min_p:?}"
            );
        }
    }

    #[test]
    fn a_print_at_temperature_one_is_left_as_given() {
        // Engines differ by ~0.07 nats per log-probability.
        let (reference, print) = prints(8, 40, 0.15, 1.0, None);
        let fit = fit(&reference, &print).expect("fitted");
        assert!((fit.factor - 1.0).abs() < 0.05, "{fit:?}");
        assert!(undo(&reference, &print).is_none());
    }

    #[test]
    fn differences_one_factor_does_not_explain_are_left_as_given() {
        // Logits a nat or so apart at random, as coarse rounding leaves them: whatever
        // factor the gaps give, dividing by it does not halve the distance.
        let (reference, print) = prints(11, 40, 2.5, 1.0, None);
        assert!(
            undo(&reference, &print).is_none(),
            "{:?}",
            fit(&reference, &print)
        );
    }

    #[test]
    fn another_models_gaps_stay_far_after_any_factor() {
        let (reference, _) = prints(9, 40, 0.0, 1.0, None);
        let (_, other) = prints(10, 40, 0.0, 0.6, None);
        let before = mean_abs(&reference, &other);
        let after =
            undo(&reference, &other).map_or(before, |(read, _)| mean_abs(&reference, &read));
        assert!(after > 0.5, "before {before}, after {after}");
        assert!(after > 0.5 * before, "before {before}, after {after}");
    }
}
