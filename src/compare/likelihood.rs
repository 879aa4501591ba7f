//! Likelihood under the reference: how the reference model itself rates another model's
//! answers, read back token by token (teacher forcing, done outside this pure module by
//! `crate::read_back`).
//!
//! A student learns its teacher's distribution, so its answers are text the teacher would
//! have written: the teacher finds them unsurprising. The raw log-probability mixes that
//! with fluency (any good model's greedy text is likely under any other), so each answer is
//! judged against the reference's own expectation at every position, as Fast-DetectGPT
//! does: (Σ log p(token) − Σ E_p[log p]) / sqrt(Σ Var_p[log p]). Text the reference wrote
//! itself scores about 0 (sampled) or above (greedy); text from another distribution is
//! more surprising than the reference expects of itself and scores below. Answers are
//! re-tokenized by the reference, so this works across tokenizers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bootstrap::{self, BootstrapOptions};
use super::{clip, ProbeScore, SignalOutcome};
use crate::probes::ProbeKind;

/// One answer read back by the reference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerScore {
    pub probe_id: String,
    pub kind: ProbeKind,
    /// The answer as the other model gave it (clipped).
    pub text: String,
    /// Reference tokens in the answer.
    pub tokens: usize,
    /// Σ log p(token).
    pub logprob: f64,
    /// Σ E_p[log p] at each position.
    pub expected: f64,
    /// Σ Var_p[log p] at each position.
    pub variance: f64,
    /// Tokens that are the reference's most likely one.
    pub top1: usize,
    /// A raw completion (no chat template, so no system prompt either); the likelihood
    /// signal reads chat answers only, the greedy-token share prefers these.
    #[serde(default)]
    pub raw: bool,
    /// Tokens within [`NEAR_TOP_NATS`] of the reference's most likely one.
    #[serde(default)]
    pub near_top: usize,
    /// The system prompt the chat answer was read after, when the read-back inferred one
    /// from the answers' persona (`crate::read_back` says when and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The turn format the chat answer was read in (llama.cpp's name), when the read-back
    /// found the answers fit another than the reference's own template better.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// How the reference's context was stretched to read it (`yarn x4`), when the answers
    /// fit a stretched reference better (a server's `--rope-scaling`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stretch: Option<String>,
    /// Each token as the reference saw it, kept only for a suspect that samples whatever
    /// temperature it is asked for (`super::sampled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sampled: Vec<super::sampled::SampledToken>,
    /// Which sample of the probe this is; the sampling probes' samples are read back, all
    /// of them, only for such a suspect (`super::sampled::collisions`), and no other
    /// signal reads them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sample_index: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How far below the reference's top token a greedy token may lie and still count as the
/// reference's choice: another engine's rounding moves log-probabilities by 0.1 to 0.15
/// nats on average and flips near-ties, so an exact top-1 rule would count those flips
/// against a copy (llama.cpp serving SmolLM2: 92.7% exact top-1 on raw answers).
pub const NEAR_TOP_NATS: f64 = 0.5;

impl AnswerScore {
    /// This answer as `super::sampled` reads a sampling suspect's tokens.
    pub fn sampled_read(&self) -> super::sampled::Read<'_> {
        super::sampled::Read {
            probe_id: &self.probe_id,
            sampling: self.kind == ProbeKind::Sampling,
            sample_index: self.sample_index,
            tokens: &self.sampled,
        }
    }

    /// The normalised discrepancy; `None` for an empty answer or one the reference was
    /// certain about at every position (no spread to judge it by).
    pub fn discrepancy(&self) -> Option<f64> {
        (self.tokens > 0 && self.variance > 1e-9)
            .then(|| (self.logprob - self.expected) / self.variance.sqrt())
    }
}

/// Summary of a set of answer scores (several statistics, for reports and measurement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub answers: usize,
    /// Mean per-answer discrepancy (the signal's score).
    pub discrepancy: f64,
    /// Mean log-probability per token, pooled over answers.
    pub logprob_per_token: f64,
    /// Share of tokens that are the reference's top choice.
    pub top1: f64,
}

/// Over the chat answers (the ones the likelihood signal reads).
pub fn summarize(scores: &[AnswerScore]) -> Option<Summary> {
    let scores: Vec<AnswerScore> = scores.iter().filter(|s| !s.raw).cloned().collect();
    let scores = scores.as_slice();
    let d: Vec<f64> = scores.iter().filter_map(AnswerScore::discrepancy).collect();
    if d.is_empty() {
        return None;
    }
    let tokens: usize = scores.iter().map(|s| s.tokens).sum();
    let tokens_f = tokens.max(1) as f64;
    Some(Summary {
        answers: d.len(),
        discrepancy: d.iter().sum::<f64>() / d.len() as f64,
        logprob_per_token: scores.iter().map(|s| s.logprob).sum::<f64>() / tokens_f,
        top1: scores.iter().map(|s| s.top1).sum::<usize>() as f64 / tokens_f,
    })
}

/// The signal: mean discrepancy over answers (higher = more like text the reference writes).
pub fn signal(scores: &[AnswerScore], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    let scored: Vec<(&AnswerScore, f64)> = scores
        .iter()
        .filter(|s| !s.raw)
        .filter_map(|s| Some((s, s.discrepancy()?)))
        .collect();
    let summary = summarize(scores)?;
    let values: Vec<f64> = scored.iter().map(|(_, d)| *d).collect();
    let mut extra = BTreeMap::new();
    extra.insert("logprob_per_token".to_string(), summary.logprob_per_token);
    extra.insert("top1".to_string(), summary.top1);
    let per_probe = scored
        .iter()
        .map(|(s, d)| ProbeScore {
            probe_id: s.probe_id.clone(),
            kind: s.kind,
            score: *d,
            reference_text: String::new(),
            suspect_text: clip(&s.text),
            note: format!(
                "{} tokens, {:.2} nats/token under the reference, {:.0}% its top choice",
                s.tokens,
                s.logprob / s.tokens as f64,
                100.0 * s.top1 as f64 / s.tokens as f64
            ),
        })
        .collect();
    Some(SignalOutcome {
        score: summary.discrepancy,
        n: values.len(),
        interval: boot.and_then(|opts| bootstrap::mean_interval(&values, opts)),
        detail: format!(
            "the reference reads the answers at discrepancy {:.2} ({:.2} nats/token, {:.0}% its top choice) over {} answers",
            summary.discrepancy,
            summary.logprob_per_token,
            summary.top1 * 100.0,
            summary.answers
        ),
        extra,
        per_probe,
    })
}

/// Raw-completion tokens needed before the greedy-token share reads raw answers alone
/// (with no chat answers at all, as in a text-only early stop, raw ones are read however
/// few).
pub const MIN_RAW_TOKENS: usize = 100;

/// Share of another model's greedy tokens that are the reference's own top choice after
/// the same prefix (the suspect's own text, read back). The same weights pick the same
/// token wherever no near-tie lets another engine's rounding flip it, whatever they are
/// served by and without any log-probabilities from the suspect; another model, or the
/// same one with changed weights, leaves the reference's first choice often. Raw answers
/// are read when there are enough: chat answers pass through the suspect's template and
/// any hidden system prompt, which the read-back cannot know.
pub fn greedy_tokens_signal(
    scores: &[AnswerScore],
    boot: Option<&BootstrapOptions>,
) -> Option<SignalOutcome> {
    let raw_tokens: usize = scores.iter().filter(|s| s.raw).map(|s| s.tokens).sum();
    let chat_tokens: usize = scores.iter().filter(|s| !s.raw).map(|s| s.tokens).sum();
    let use_raw = raw_tokens >= MIN_RAW_TOKENS || (raw_tokens > 0 && chat_tokens == 0);
    let chosen: Vec<&AnswerScore> = scores
        .iter()
        .filter(|s| s.raw == use_raw && s.tokens > 0)
        .collect();
    let tokens: usize = chosen.iter().map(|s| s.tokens).sum();
    if tokens == 0 {
        return None;
    }
    let top1: usize = chosen.iter().map(|s| s.top1).sum();
    let near: usize = chosen.iter().map(|s| s.near_top).sum();
    let share = near as f64 / tokens as f64;
    let values: Vec<f64> = chosen
        .iter()
        .map(|s| s.near_top as f64 / s.tokens as f64)
        .collect();
    let per_probe = chosen
        .iter()
        .zip(&values)
        .map(|(s, v)| ProbeScore {
            probe_id: s.probe_id.clone(),
            kind: s.kind,
            score: *v,
            reference_text: String::new(),
            suspect_text: clip(&s.text),
            note: format!(
                "{} of {} tokens the reference's top choice up to {NEAR_TOP_NATS} nats, as given or under one repetition penalty ({} exactly)",
                s.near_top, s.tokens, s.top1
            ),
        })
        .collect();
    let mut extra = BTreeMap::new();
    extra.insert("tokens".to_string(), tokens as f64);
    extra.insert("top1".to_string(), top1 as f64 / tokens as f64);
    extra.insert("raw".to_string(), if use_raw { 1.0 } else { 0.0 });
    // Chat answers read in an inferred context say so (one context per print).
    let format = chosen
        .iter()
        .find_map(|s| s.format.as_deref())
        .map(|name| format!(", read in the {name} turn format, which fits the answers better than the reference's own template (a serving stack's choice: llama.cpp wraps a file without a template in chatml)"))
        .unwrap_or_default();
    let system = chosen
        .iter()
        .find_map(|s| s.system.as_deref())
        .map(|system| format!(", read after the system prompt \"{}\" given away by the answers (repeated on request, an echoed line or a claimed persona)", clip(system)))
        .unwrap_or_default();
    let stretch = chosen
        .iter()
        .find_map(|s| s.stretch.as_deref())
        .map(|name| format!(", read by the reference with its context stretched ({name} RoPE scaling), which fits the answers better (a server's --rope-scaling)"))
        .unwrap_or_default();
    let context = format + &stretch + &system;
    Some(SignalOutcome {
        score: share,
        n: chosen.len(),
        interval: boot.and_then(|opts| bootstrap::mean_interval(&values, opts)),
        detail: format!(
            "{:.1}% of {tokens} greedy tokens over {} {} answers are the reference's own top choice up to {NEAR_TOP_NATS} nats, as given or under one serving penalty per answer ({:.1}% exactly){context}",
            share * 100.0,
            chosen.len(),
            if use_raw { "raw" } else { "chat" },
            top1 as f64 * 100.0 / tokens as f64
        ),
        extra,
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(tokens: usize, logprob: f64, expected: f64, variance: f64) -> AnswerScore {
        AnswerScore {
            probe_id: "p".into(),
            kind: ProbeKind::Style,
            text: "t".into(),
            tokens,
            logprob,
            expected,
            variance,
            top1: tokens / 2,
            raw: false,
            near_top: tokens / 2,
            system: None,
            format: None,
            stretch: None,
            sampled: Vec::new(),
            sample_index: 0,
        }
    }

    #[test]
    fn greedy_token_share_prefers_raw_answers_when_there_are_enough() {
        let mut chat = answer(50, -8.0, -8.0, 4.0);
        chat.near_top = 10;
        let mut raw = answer(60, -8.0, -8.0, 4.0);
        raw.raw = true;
        raw.near_top = 57;
        let few = greedy_tokens_signal(&[chat.clone(), raw.clone()], None).unwrap();
        assert_eq!(few.score, 10.0 / 50.0, "60 raw tokens are too few");
        let many = greedy_tokens_signal(&[chat.clone(), raw.clone(), raw.clone()], None).unwrap();
        assert_eq!(many.score, 114.0 / 120.0);
        assert_eq!(many.n, 2);
        assert!(greedy_tokens_signal(&[], None).is_none());
        // The likelihood signal reads only the chat answer.
        assert_eq!(signal(&[chat, raw], None).unwrap().n, 1);
    }

    #[test]
    fn discrepancy_is_surprise_against_the_models_own_expectation() {
        // As surprised as the reference expects: 0. Less surprised: above. More: below.
        assert_eq!(answer(4, -8.0, -8.0, 4.0).discrepancy(), Some(0.0));
        assert_eq!(answer(4, -4.0, -8.0, 4.0).discrepancy(), Some(2.0));
        assert_eq!(answer(4, -12.0, -8.0, 4.0).discrepancy(), Some(-2.0));
        assert_eq!(answer(0, 0.0, 0.0, 0.0).discrepancy(), None);
        assert_eq!(answer(3, 0.0, 0.0, 0.0).discrepancy(), None);
    }

    #[test]
    fn signal_averages_answers_and_skips_empty_ones() {
        let s = signal(
            &[
                answer(4, -4.0, -8.0, 4.0),
                answer(4, -12.0, -8.0, 4.0),
                answer(0, 0.0, 0.0, 0.0),
                answer(4, -8.0, -8.0, 4.0),
            ],
            None,
        )
        .expect("answers");
        assert_eq!(s.n, 3);
        assert!(s.score.abs() < 1e-12, "{}", s.score);
        assert!((s.extra["logprob_per_token"] - (-2.0)).abs() < 1e-12);
        assert!(signal(&[answer(0, 0.0, 0.0, 0.0)], None).is_none());
    }
}
