//! From per-signal p-values to one verdict.
//!
//! Nothing here is tuned to particular models. Each signal's p-value comes from the
//! controls (see [`super::calibration`]); the only fixed numbers are the error rate alpha
//! and, when no known-same pairs are given, the default identical band (engine noise, see
//! [`IdenticalBand::default_band`]). The rules, in order:
//!
//! 1. Nothing usable (no logits and no text signal with enough probes): `inconclusive`,
//!    saying what was missing.
//! 2. A tokenizer mismatch rules out `identical` and `derived`.
//! 3. With logits: similarity far above controls (p <= alpha) and agreement inside the
//!    identical band, with differences that do not repeat token by token across probes
//!    (the shift test, [`super::shift`]), is `identical`; so is such agreement with one of
//!    the reference's quantized forms (the reference quantized by the engine,
//!    `crate::quantized_forms`) when the suspect is far from unrelated models (its
//!    similarity to its nearest form against each control's to its own nearest); so is agreement outside the band but within three
//!    times it whose differences do not repeat in a shift test with the tokens to see
//!    them (the same weights through coarser arithmetic: a 4-bit KV cache). Far above
//!    controls but outside every band, or inside it with repeating differences (weights
//!    changed by less than engine noise), is `derived`.
//! 4. Without logits but with the same tokenizer: `identical` needs the text signals far
//!    above controls (Bonferroni, as in 5), greedy answers as exact as the band asks, and
//!    sampled answers that the equality test does not tell apart.
//! 5. The distillation signals (greedy text, style, vocabulary (the contrast with the
//!    controls, else the pooled similarity), refusal; and, across tokenizers, logits
//!    aligned by bytes) far above controls after Bonferroni's
//!    correction (the smallest p-value times their number, valid however the signals
//!    depend on each other): `distilled`; without logits from a suspect that samples
//!    whatever temperature it is asked for, `inconclusive` (a sampled copy's text is as
//!    far from the reference's greedy answers as a student's).
//! 6. Otherwise `unrelated`.
//!
//! Identity claims never decide: a persona system prompt changes them at will.

use serde::{Deserialize, Serialize};

use super::logits::LogitSummary;
use super::shift::ShiftTest;
use super::stats::bonferroni;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Identical,
    Derived,
    Distilled,
    Unrelated,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Identical => "identical",
            Verdict::Derived => "derived",
            Verdict::Distilled => "distilled",
            Verdict::Unrelated => "unrelated",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// How close "the same weights" are allowed to be: serving engines, quantizations and
/// batching differ a little in log-probabilities, so identical is a band, not zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdenticalBand {
    /// Largest mean |Δ logprob| over shared top-k tokens.
    pub max_mean_abs_dlogprob: f64,
    /// Smallest share of positions with the same most likely token.
    pub min_top1: f64,
    /// Smallest share of greedy answers that are exactly equal (used without logits).
    pub min_greedy_exact: f64,
    /// Smallest share of the suspect's greedy tokens that are the reference's own top
    /// choice (used without logits).
    #[serde(default = "default_min_greedy_top1")]
    pub min_greedy_top1: f64,
    /// The same, read on chat answers, where generic assistant phrasing is any fluent
    /// model's top choice too (an unrelated Gemma reads 84% there, 62% on raw answers).
    #[serde(default = "default_min_greedy_top1_chat")]
    pub min_greedy_top1_chat: f64,
    /// Largest share of log-probability differences that may repeat token by token
    /// across probes (`super::shift`) when that repetition is significant.
    #[serde(default = "default_max_shift_share")]
    pub max_shift_share: f64,
    /// `default` or `known-same pairs (n)`.
    pub source: String,
}

/// Four times the most that the same weights showed through other arithmetic (0.012: f32,
/// or candle's kernels against ours, over the raw logit probes; `super::shift`); 1% weight
/// noise shows 0.09.
/// The same weights pick the reference's top token wherever no near-tie lets rounding flip
/// it; near-ties within engine noise (0.1 to 0.2 nats) are a few percent of positions.
fn default_min_greedy_top1() -> f64 {
    0.9
}

/// Copies read 96.9% to 97.2% on chat answers (SmolLM2 behind a persona, llama.cpp and
/// our server), an unrelated model 84.4%.
fn default_min_greedy_top1_chat() -> f64 {
    0.95
}

fn default_max_shift_share() -> f64 {
    0.05
}

/// Slack added to what known-same pairs show, so the band is not the narrowest pair seen.
const BAND_SLACK_FACTOR: f64 = 1.5;
const BAND_SLACK_NATS: f64 = 0.02;
const BAND_SLACK_SHARE: f64 = 0.05;

impl IdenticalBand {
    /// Without known-same pairs: what the same weights show through other arithmetic, with
    /// room. Measured over the 165 default logit probes, our kernels against candle's and
    /// against f32 weights: mean |Δlogprob| 0.10 to 0.15 (Gemma 0.148), top-1 agreement 81%
    /// to 92% (SmolLM2's near-ties flip). Weights changed by less than this (1% weight
    /// noise: 0.18 to 0.19) are the shift test's to find, not the band's.
    pub fn default_band() -> IdenticalBand {
        IdenticalBand {
            max_mean_abs_dlogprob: 0.2,
            min_top1: 0.75,
            min_greedy_exact: 0.9,
            min_greedy_top1: default_min_greedy_top1(),
            min_greedy_top1_chat: default_min_greedy_top1_chat(),
            max_shift_share: default_max_shift_share(),
            source: "default".to_string(),
        }
    }

    /// The band that the reference served some other way (known-same pairs) falls in: the
    /// typical (median) known-same pair widened by a little slack, and never narrower than
    /// the default, since pairs served by the same engine agree exactly, which says
    /// nothing about the noise another engine or quantization adds. The median rather
    /// than the widest pair, because one "copy" that its quantization damaged badly (in
    /// the zoo, re-rounding SmolLM2's 4-bit weights to another 4-bit type moves
    /// log-probabilities by a nat, as much as 10% weight noise) would otherwise widen the
    /// band until every derivative fell inside it. Fields the pairs cannot inform keep
    /// their defaults.
    pub fn from_known_same(pairs: &[(Option<LogitSummary>, Option<f64>)]) -> Option<IdenticalBand> {
        if pairs.is_empty() {
            return None;
        }
        let mut band = IdenticalBand::default_band();
        let deltas: Vec<f64> = pairs
            .iter()
            .filter_map(|(l, _)| l.as_ref()?.mean_abs_dlogprob)
            .collect();
        if let Some(typical) = median(&deltas) {
            band.max_mean_abs_dlogprob = band
                .max_mean_abs_dlogprob
                .max(typical * BAND_SLACK_FACTOR + BAND_SLACK_NATS);
        }
        let top1s: Vec<f64> = pairs
            .iter()
            .filter_map(|(l, _)| l.as_ref().map(|l| l.top1))
            .collect();
        // Top-1 agreement is noisier (a near-tie flips it), so its floor comes from the
        // lower quartile rather than the median.
        if let Some(low) = quantile(&top1s, 0.25) {
            band.min_top1 = band.min_top1.min((low - BAND_SLACK_SHARE).max(0.0));
        }
        let exact: Vec<f64> = pairs.iter().filter_map(|(_, e)| *e).collect();
        if let Some(typical) = median(&exact) {
            band.min_greedy_exact = band
                .min_greedy_exact
                .min((typical - BAND_SLACK_SHARE).max(0.0));
        }
        band.source = format!("known-same pairs ({})", pairs.len());
        Some(band)
    }

    /// Whether next-token distributions this close are "the same weights".
    pub fn contains(&self, summary: &LogitSummary) -> bool {
        summary
            .mean_abs_dlogprob
            .is_some_and(|d| d <= self.max_mean_abs_dlogprob)
            && summary.top1 >= self.min_top1
    }
}

/// What the verdict is decided from; signals with too few probes are left out by the
/// caller and named in `missing`.
#[derive(Debug, Clone)]
pub struct VerdictInputs {
    pub alpha: f64,
    /// Logit summary and its p-value against controls.
    pub logits: Option<(LogitSummary, f64)>,
    /// Share of tokenizer strings counted alike, and how many were compared.
    pub tokenizer: Option<(f64, usize)>,
    pub same_tokenizer_min: f64,
    pub band: IdenticalBand,
    /// Text-level signals (greedy text, style, refusal, sampling) and their p-values.
    pub text: Vec<(String, f64)>,
    /// Permutation p-value of the equality test ("same distribution").
    pub equality_p: Option<f64>,
    /// Share of greedy answers that are exactly equal.
    pub greedy_exact: Option<f64>,
    /// Share of the suspect's greedy tokens that are the reference's own top choice (read
    /// back by the reference), and its p-value against controls.
    pub greedy_tokens: Option<(f64, f64)>,
    /// The share came from chat answers (the suspect offered too few raw completions).
    pub greedy_tokens_chat: bool,
    /// The suspect gave no raw completions, so its log-probabilities all came through its
    /// chat template (and any hidden system prompt).
    pub logits_chat_only: bool,
    /// Whether the log-probability differences repeat token by token across probes
    /// (`super::shift`): inside the band, the sign of changed weights.
    pub shift: Option<ShiftTest>,
    /// The suspect's logits against each quantized form of the reference.
    pub forms: Vec<FormLogits>,
    /// The suspect's similarity to its nearest form against each control's to its own
    /// nearest form: one test over all the forms (`None` where some form or control could
    /// not be tested; the forms' own p-values are then corrected for how many were tried).
    pub forms_p: Option<f64>,
    /// Without logits from the suspect: its greedy tokens against each form's next-token
    /// lists (`super::greedy_path`), by form.
    pub form_tokens: Vec<(String, super::greedy_path::PathShare)>,
    /// The suspect's greedy-token share on its nearest form against each control's on its
    /// own nearest form, as `forms_p` is for logits (`None` where some form or control
    /// could not be walked).
    pub form_tokens_p: Option<f64>,
    /// The likelihood signal's p-value against controls: the reference reads the
    /// suspect's answers as text it writes itself.
    pub likelihood_p: Option<f64>,
    /// The suspect samples whatever temperature it is asked for, so its "greedy" answers
    /// are samples.
    pub suspect_samples: bool,
    /// For such a suspect: where its tokens fall in the reference's whole distribution at
    /// the fitted temperature, and how often its samples agree with each other against
    /// the reference's expectation (`super::sampled`).
    pub sampled: Option<super::sampled::SampledFit>,
    pub collisions: Option<super::sampled::Collisions>,
    /// How many control fingerprints the p-values were computed against (none: every
    /// p-value comes from a pessimistic default null).
    pub controls: usize,
    /// Why signals are missing, for an inconclusive verdict.
    pub missing: Vec<String>,
}

/// The suspect's logits against one quantized form of the reference (`crate::quantized_forms`).
#[derive(Debug, Clone)]
pub struct FormLogits {
    /// The weight type, e.g. `q4_0`.
    pub dtype: String,
    pub summary: LogitSummary,
    /// The suspect's similarity to this form against the controls' similarity to it.
    pub p: f64,
    /// The shift test against this form (run only when the form lies inside the band).
    pub shift: Option<ShiftTest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerdictOutcome {
    pub verdict: Verdict,
    /// For identical, derived and distilled: 1 - the deciding p-value. For unrelated: the
    /// smallest p-value of the tests for a relation (near 1: nothing came close). For
    /// inconclusive: 0.
    pub confidence: f64,
    /// The deciding p-value, when there is one.
    pub p_value: Option<f64>,
    pub reasons: Vec<String>,
}

pub fn decide(inputs: &VerdictInputs) -> VerdictOutcome {
    let alpha = inputs.alpha;
    let mut reasons = Vec::new();
    if inputs.logits.is_none() && inputs.text.is_empty() {
        reasons.push("too little to compare".to_string());
        reasons.extend(inputs.missing.iter().cloned());
        return VerdictOutcome {
            verdict: Verdict::Inconclusive,
            confidence: 0.0,
            p_value: None,
            reasons,
        };
    }

    let same_tokenizer = inputs
        .tokenizer
        .map(|(share, _)| share >= inputs.same_tokenizer_min);
    match (same_tokenizer, inputs.tokenizer) {
        (Some(false), Some((share, n))) => reasons.push(format!(
            "tokenizers differ ({:.0}% of {n} strings counted alike): not identical, not derived",
            share * 100.0
        )),
        (Some(true), Some((share, n))) => reasons.push(format!(
            "same tokenizer ({:.0}% of {n} strings counted alike)",
            share * 100.0
        )),
        _ => reasons.push("tokenizers not compared".to_string()),
    }
    let band = &inputs.band;
    let mut tested: Vec<f64> = Vec::new();

    // Rule 4 from the tokens themselves: the same weights pick the reference's top token
    // almost everywhere, whatever engine serves them and whatever its sampler settings.
    let token_band = if inputs.greedy_tokens_chat {
        band.min_greedy_top1_chat
    } else {
        band.min_greedy_top1
    };
    let from_tokens = inputs
        .greedy_tokens
        .filter(|(share, p)| same_tokenizer != Some(false) && *p <= alpha && *share >= token_band)
        .map(|(share, p)| {
            (
                p,
                format!(
                    "{} (band ≥ {:.0}%), far more than controls (p = {p:.2e}); weights changed by less than engine noise cannot be told from a copy this way",
                    tokens_text(share, inputs.greedy_tokens_chat),
                    token_band * 100.0
                ),
            )
        });

    if let Some((summary, p)) = &inputs.logits {
        tested.push(*p);
        if same_tokenizer != Some(false) {
            let given = band_text(summary, band);
            let in_band = *p <= alpha && band.contains(summary);
            if in_band && !shifted(inputs.shift.as_ref(), band, alpha) {
                reasons.push(format!(
                    "next-token distributions far closer than controls (p = {p:.2e}) and within the identical band: {given}{}",
                    shift_text(inputs.shift.as_ref(), band)
                ));
                return positive(Verdict::Identical, *p, reasons);
            }
            if let Some((form, form_p)) = matched_form(inputs, *p) {
                let how = if inputs.forms_p.is_some() {
                    format!(
                        "the smaller of the reference's and one test over its {} forms, the suspect's nearest form against each control's",
                        inputs.forms.len()
                    )
                } else {
                    format!(
                        "the smaller of the reference's and the form's, Bonferroni over {} forms",
                        inputs.forms.len()
                    )
                };
                reasons.push(format!(
                    "outside the identical band of the reference as given ({given}, p = {p:.2e} against controls) but within it for the reference {} ({}), far from unrelated models (p = {form_p:.2e}: {how}): {}",
                    form_phrase(&form.dtype),
                    band_text(&form.summary, band),
                    served_as(&form.dtype),
                ));
                return positive(Verdict::Identical, form_p, reasons);
            }
            if let (false, Some(s)) = (in_band, lossy_arithmetic(*p, summary, inputs)) {
                reasons.push(format!(
                    "next-token distributions far closer than controls (p = {p:.2e}) but outside the identical band ({given}); yet their differences change sign from probe to probe instead of repeating token by token{}: rounding coarser than ours (a quantized KV cache, low-precision activations), not changed weights",
                    shift_text(Some(s), band)
                ));
                return positive(Verdict::Identical, *p, reasons);
            }
            if in_band {
                reasons.push(format!(
                    "next-token distributions far closer than controls (p = {p:.2e}) and within the identical band ({given}), but their differences repeat token by token across probes, as changed weights make them and rounding does not{}",
                    shift_text(inputs.shift.as_ref(), band)
                ));
            }
            // Log-probabilities from chat probes alone pass through the suspect's template
            // and any hidden system prompt, which move every answer the same way: outside
            // the band there, the tokens themselves decide whether the weights are the same.
            if let (true, Some((token_p, reason))) = (inputs.logits_chat_only, &from_tokens) {
                reasons.push(format!(
                    "the log-probabilities come from chat probes alone ({given}), which a hidden system prompt moves; {reason}"
                ));
                return positive(Verdict::Identical, *token_p, reasons);
            }
            if *p <= alpha {
                let forms = if inputs.forms.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", nor for any of its {} quantized forms",
                        inputs.forms.len()
                    )
                };
                if !in_band {
                    reasons.push(format!(
                        "next-token distributions far closer than controls (p = {p:.2e}) but outside the identical band: {given}{forms}"
                    ));
                } else if !inputs.forms.is_empty() {
                    reasons.push(format!(
                        "no quantized form of the reference matches either ({} tried)",
                        inputs.forms.len()
                    ));
                }
                if same_tokenizer.is_none() {
                    reasons.push("derived without a tokenizer check".to_string());
                }
                return positive(Verdict::Derived, *p, reasons);
            }
            if let Some((form, far)) = near_form(inputs) {
                reasons.push(format!(
                    "next-token distributions no closer than controls for the reference as given (p = {p:.2}), but far closer than controls for the reference {} (p = {far:.2e}, Bonferroni over {} forms; {}): the reference's weights, asked in a way that moves them beyond the identical band",
                    form_phrase(&form.dtype),
                    inputs.forms.len(),
                    band_text(&form.summary, band),
                ));
                return positive(Verdict::Derived, far, reasons);
            }
            reasons.push(format!(
                "next-token distributions no closer than controls (p = {p:.2})"
            ));
        }
    } else {
        reasons.push("no logit comparison".to_string());
    }

    // Bonferroni, as for distillation below: style and the pooled vocabulary read the same
    // answers, which Fisher's method would count twice.
    let text_p = bonferroni(&inputs.text.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    if inputs.logits.is_none() && same_tokenizer == Some(true) {
        if let (Some(p), Some(exact)) = (text_p, inputs.greedy_exact) {
            let equal_samples = inputs.equality_p.is_none_or(|q| q > alpha);
            if p <= alpha && exact >= band.min_greedy_exact && equal_samples {
                reasons.push(format!(
                    "without log-probabilities: same tokenizer, {:.0}% of greedy answers exactly equal (band ≥ {:.0}%), text signals far closer than controls (Bonferroni p = {p:.2e}){}",
                    exact * 100.0,
                    band.min_greedy_exact * 100.0,
                    match inputs.equality_p {
                        Some(q) => format!(", sampled answers not told apart (p = {q:.2})"),
                        None => String::new(),
                    }
                ));
                return positive(Verdict::Identical, p, reasons);
            }
        }
    }
    if inputs.logits.is_none() {
        if let Some((p, reason)) = &from_tokens {
            reasons.push(reason.clone());
            return positive(Verdict::Identical, *p, reasons);
        }
        // Far from unrelated models on text, and the greedy tokens of one quantized form
        // of the reference: which related model this is, as `matched_form` decides with
        // logits, so the text test already made against unrelated ones is not repeated.
        let related = bonferroni(
            &[text_p, inputs.greedy_tokens.map(|(_, p)| p)]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>(),
        )
        .unwrap_or(1.0);
        // Or its tokens on its nearest form against each control's on its own nearest
        // (one test over the forms, as `matched_form` has for logits), Bonferroni over
        // the two: with three built-in controls a llama-quantize Q2_K copy of Gemma fell
        // short of alpha on text and on the reference's own tokens, and was let off as
        // unrelated.
        let (far, how) = match inputs.form_tokens_p {
            Some(q) if q < related => (
                (2.0 * q).min(1.0),
                "its tokens on its nearest form against each control's on its own nearest form, Bonferroni over this and the text",
            ),
            Some(_) => (
                (2.0 * related).min(1.0),
                "Bonferroni over text and tokens against controls, and over the forms' own test",
            ),
            None => (related, "Bonferroni over text and tokens against controls"),
        };
        if let (true, Some((dtype, walked))) = (
            same_tokenizer != Some(false) && far <= alpha,
            nearest_form_tokens(inputs, band),
        ) {
            reasons.push(format!(
                "{:.1}% of the suspect's greedy tokens on {} {} logit probes are the top choice of the reference {} up to engine noise (band ≥ {:.0}%; read back by the reference as given: {}), and it is far closer to the reference than controls ({how}: p = {far:.2e}): {}",
                walked.share * 100.0,
                walked.probes,
                if walked.raw { "raw" } else { "chat" },
                form_phrase(dtype),
                token_band_of(band, !walked.raw) * 100.0,
                inputs
                    .greedy_tokens
                    .map(|(share, _)| format!("{:.1}%", share * 100.0))
                    .unwrap_or_else(|| "not read back".to_string()),
                served_as(dtype),
            ));
            return positive(Verdict::Identical, far, reasons);
        }
        // Tokens inside the band whose own test is short of alpha (few probes, few
        // controls) still say which related model this is, as a quantized form does: when
        // the text shows the suspect far from unrelated models, the same weights seen
        // without log-probabilities are a copy, never a distillation.
        if let (Some((share, token_p)), Some(p)) = (inputs.greedy_tokens, text_p) {
            if same_tokenizer != Some(false) && share >= token_band && p <= alpha {
                reasons.push(format!(
                    "{} (band ≥ {:.0}%; p = {token_p:.2e} against controls on the tokens alone), and its answers are far closer than controls (Bonferroni p = {p:.2e}): the reference's weights, not a model that learned from it",
                    tokens_text(share, inputs.greedy_tokens_chat),
                    token_band * 100.0
                ));
                return positive(Verdict::Identical, p, reasons);
            }
        }
    }

    // A suspect that samples: its text is as far from the reference's greedy answers as a
    // student's. Its tokens are the reference's own samples when they fall in the
    // reference's distribution as its samples would at one temperature (ranks) and its
    // samples of one prompt agree with each other as often as the reference's would at
    // that temperature (collisions): ranks alone fit any fluent text (`super::sampled`).
    if let (true, Some(fit), Some(agree)) = (
        inputs.logits.is_none() && inputs.suspect_samples && same_tokenizer != Some(false),
        &inputs.sampled,
        &inputs.collisions,
    ) {
        let seen = sampled_text(fit, agree);
        let own = fit.distance <= super::sampled::RANKS_BAND
            && agree.z.abs() <= super::sampled::MAX_COLLISION_Z
            && agree.can_tell();
        // Both fit a model that samples hot enough, whoever it is, so the answers must also
        // be far closer to the reference than unrelated models'. The controls answered
        // greedily, which only makes sampled text look less like the reference's own.
        let related = bonferroni(
            &[
                text_p,
                inputs.greedy_tokens.map(|(_, p)| p),
                inputs.likelihood_p,
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
        )
        .unwrap_or(1.0);
        if own && related <= alpha {
            reasons.push(format!(
                "{seen}: the reference's own samples; and its answers are far closer to the reference than controls (Bonferroni p = {related:.2e}): the reference's weights, sampled"
            ));
            return positive(Verdict::Identical, related, reasons);
        }
        // Without controls, "no closer" is measured against pessimistic default nulls that
        // a sampled copy does not beat (SmolLM2 at 0.7: p 0.15); calling that unrelated
        // would let a copy off on missing calibration, not on evidence.
        if own && inputs.controls == 0 {
            reasons.push(format!(
                "{seen}: as the reference's own samples would; whether its answers are closer to the reference than unrelated models' cannot be told without controls (Bonferroni p = {related:.2} against default nulls): add control fingerprints"
            ));
            return VerdictOutcome {
                verdict: Verdict::Inconclusive,
                confidence: 0.0,
                p_value: Some(related),
                reasons,
            };
        }
        reasons.push(if own {
            format!("{seen}: as the reference's own samples would, but its answers are no closer to the reference than controls (Bonferroni p = {related:.2})")
        } else if !agree.can_tell() {
            format!("{seen}: too few agreements expected to tell the reference's own samples from another model's (fewer than {:.1} standard deviations)", super::sampled::MIN_EXPECTED_SD)
        } else {
            format!("{seen}: not how the reference's own samples fall")
        });
    }

    // Greedy tokens far closer to the reference's choices than unrelated models get, with
    // the same tokenizer, but below the copy band: the reference's weights changed by
    // rounding or training (a llama-quantize Q4_0 copy reads 85-90% here). The zoo's
    // students pick the reference's top token less often than unrelated models do (chat
    // answers: 38% against Gemma's 85%), so this is not where they land.
    // Not for a suspect that samples: sampling alone puts its tokens below the band.
    if inputs.logits.is_none() && same_tokenizer == Some(true) && !inputs.suspect_samples {
        if let Some((share, p)) = inputs.greedy_tokens {
            if p <= alpha && share < token_band {
                reasons.push(format!(
                    "{}, far more than controls (p = {p:.2e}) but below the copy band (≥ {:.0}%): the reference's weights, quantized or fine-tuned; without log-probabilities the two cannot be told apart, and a student trained to imitate them closely cannot be ruled out",
                    tokens_text(share, inputs.greedy_tokens_chat),
                    token_band * 100.0
                ));
                return positive(Verdict::Derived, p, reasons);
            }
        }
    }

    // Far from unrelated models on text, with the reference's tokenizer, and text the
    // reference reads as its own (the likelihood signal): the reference's weights, changed.
    // A student writes in its teacher's style but not its teacher's token-by-token
    // distribution (the zoo's students read p 0.69 to 0.99 there).
    if let (true, Some(p), Some(lp)) = (
        inputs.logits.is_none() && same_tokenizer == Some(true) && !inputs.suspect_samples,
        text_p,
        inputs.likelihood_p,
    ) {
        if p <= alpha && lp <= alpha {
            let tokens = inputs
                .greedy_tokens
                .map(|(share, tp)| {
                    format!(
                        "; {} (p = {tp:.2e} against controls)",
                        tokens_text(share, inputs.greedy_tokens_chat)
                    )
                })
                .unwrap_or_default();
            reasons.push(format!(
                "answers far closer to the reference than controls (Bonferroni p = {p:.2e}), with its tokenizer, and the reference reads them as text it writes itself (likelihood p = {lp:.2e}){tokens}: the reference's weights, quantized or fine-tuned, below the copy band of the reference and of each of its {} quantized forms tried",
                inputs.form_tokens.len()
            ));
            return positive(Verdict::Derived, p.max(lp), reasons);
        }
    }

    // Across tokenizers, logits aligned by bytes that are closer than controls are
    // evidence of distillation on logits; with the same tokenizer they were judged above.
    let mut distill: Vec<(String, f64)> = inputs.text.clone();
    if let (Some((_, p)), Some(false)) = (&inputs.logits, same_tokenizer) {
        distill.push(("logits".to_string(), *p));
    }
    let distill_p = bonferroni(&distill.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    if let Some(p) = distill_p {
        tested.push(p);
        let listed = distill
            .iter()
            .map(|(name, p)| format!("{name} p = {p:.2e}"))
            .collect::<Vec<_>>()
            .join(", ");
        if p <= alpha {
            reasons.push(format!(
                "answers closer to the reference than controls (Bonferroni p = {p:.2e}: {listed})"
            ));
            if inputs.logits.is_none() {
                reasons.push(
                    "without log-probabilities a fine-tune of the reference would look the same"
                        .to_string(),
                );
                // A copy that samples is as far from the reference's greedy text as a
                // student (SmolLM2 served at a fixed temperature 0.7 read `distilled`
                // here), so text alone cannot say which of the two it is.
                if inputs.suspect_samples {
                    reasons.push(
                        "the suspect samples whatever temperature it is asked for, so its text is as far from the reference's greedy answers as a student's would be: the reference's own weights, sampled, cannot be ruled out; related to the reference, but which way cannot be told without log-probabilities"
                            .to_string(),
                    );
                    return VerdictOutcome {
                        verdict: Verdict::Inconclusive,
                        confidence: 1.0 - p,
                        p_value: Some(p),
                        reasons,
                    };
                }
            }
            return positive(Verdict::Distilled, p, reasons);
        }
        reasons.push(format!(
            "answers no closer than controls (Bonferroni p = {p:.2}: {listed})"
        ));
    }

    let smallest = tested.iter().copied().fold(1.0, f64::min);
    reasons.push(format!(
        "no signal closer to the reference than controls at alpha = {alpha}"
    ));
    VerdictOutcome {
        verdict: Verdict::Unrelated,
        confidence: smallest,
        p_value: Some(smallest),
        reasons,
    }
}

/// How much of the suspect's greedy text is the reference's own choice, for a reason.
fn tokens_text(share: f64, chat: bool) -> String {
    format!(
        "{:.1}% of the suspect's greedy {} tokens are the reference's own top choice up to engine noise",
        share * 100.0,
        if chat { "chat" } else { "raw" }
    )
}

/// What a sampling suspect's tokens showed against the reference's own samples.
fn sampled_text(fit: &super::sampled::SampledFit, agree: &super::sampled::Collisions) -> String {
    format!(
        "the suspect samples whatever temperature it is asked for; read back by the reference, its {} tokens fall in the reference's distribution at temperature {:.2} at distance {:.3} from uniform ranks (band ≤ {:.2}), and its samples of one prompt agree, token by token, in {} of {} pairs compared where the reference's would in {:.1} (z = {:.1}, band ± {:.0})",
        fit.tokens,
        fit.temperature,
        fit.distance,
        super::sampled::RANKS_BAND,
        agree.observed,
        agree.trials,
        agree.expected,
        agree.z,
        super::sampled::MAX_COLLISION_Z
    )
}

/// The greedy-token band for raw or chat answers.
fn token_band_of(band: &IdenticalBand, chat: bool) -> f64 {
    if chat {
        band.min_greedy_top1_chat
    } else {
        band.min_greedy_top1
    }
}

/// The form whose next-token lists the suspect's greedy tokens follow most often, when that
/// share reaches `band`; the first in the ladder's order among equals (a plain copy
/// follows every form on a few short answers, and the mildest is the one to name).
fn nearest_form_tokens<'a>(
    inputs: &'a VerdictInputs,
    band: &IdenticalBand,
) -> Option<(&'a str, super::greedy_path::PathShare)> {
    inputs
        .form_tokens
        .iter()
        .filter(|(_, w)| w.share >= token_band_of(band, !w.raw))
        .rev()
        .max_by(|a, b| a.1.share.total_cmp(&b.1.share))
        .map(|(dtype, w)| (dtype.as_str(), *w))
}

/// How a form of the reference differs from it as given, for a reason's text: a weight
/// type, or the serving form without a BOS token (`crate::quantized_forms::NO_BOS`).
fn form_phrase(dtype: &str) -> String {
    if dtype == NO_BOS_FORM {
        "asked without its BOS token".to_string()
    } else if let Some((how, factor)) = stretched_form(dtype) {
        format!("with its context stretched {factor}-fold ({how} RoPE scaling)")
    } else {
        format!("quantized to {dtype}")
    }
}

fn served_as(dtype: &str) -> &'static str {
    if dtype == NO_BOS_FORM {
        "the reference served by a stack that adds no BOS token"
    } else if stretched_form(dtype).is_some() {
        "the reference served with its context stretched"
    } else {
        "the reference served quantized"
    }
}

/// The name of the reference's serving form without a BOS token (a form of how it is
/// asked, not of its weights); `crate::quantized_forms` makes it.
pub const NO_BOS_FORM: &str = "no-bos";

/// A form of the reference served with its context stretched (`yarn-4`: YaRN by a factor
/// of 4, `linear-2`), as (scaling, factor); `crate::quantized_forms` makes them.
pub fn stretched_form(dtype: &str) -> Option<(&str, &str)> {
    let (how, factor) = dtype.split_once('-')?;
    matches!(how, "yarn" | "linear").then_some((how, factor))
}

/// The nearest quantized form whose logits lie inside the band, where the suspect is far
/// from unrelated: far closer to that form than the controls are (its p-value corrected
/// for the forms tried), or to the reference as given (one test, `given_p`). Which form
/// it sits in is then a choice among related models, not another test against unrelated
/// ones; with a handful of controls, Bonferroni over a dozen forms let a real Q4_0 copy off
/// as derived.
fn matched_form(inputs: &VerdictInputs, given_p: f64) -> Option<(&FormLogits, f64)> {
    nearest(
        forms_far(inputs)
            .map(|(f, far)| (f, far.min(given_p)))
            .filter(|(f, p)| {
                *p <= inputs.alpha
                    && inputs.band.contains(&f.summary)
                    && !shifted(f.shift.as_ref(), &inputs.band, inputs.alpha)
            }),
    )
}

/// Each form with its p-value against controls: the one test over all forms where there
/// is one, else its own corrected for how many were tried.
fn forms_far(inputs: &VerdictInputs) -> impl Iterator<Item = (&FormLogits, f64)> {
    let tried = inputs.forms.len() as f64;
    inputs
        .forms
        .iter()
        .map(move |f| (f, inputs.forms_p.unwrap_or((f.p * tried).min(1.0))))
}

/// The form nearest the suspect (smallest mean |Δlogprob|) among `forms`.
fn nearest<'a>(
    forms: impl Iterator<Item = (&'a FormLogits, f64)>,
) -> Option<(&'a FormLogits, f64)> {
    forms.min_by(|a, b| {
        let d = |f: &FormLogits| f.summary.mean_abs_dlogprob.unwrap_or(f64::INFINITY);
        d(a.0).total_cmp(&d(b.0))
    })
}

/// The form the suspect is far closer to than controls are (Bonferroni over the forms),
/// inside the identical band or not; the nearest where several are.
fn near_form(inputs: &VerdictInputs) -> Option<(&FormLogits, f64)> {
    nearest(forms_far(inputs).filter(|(_, far)| *far <= inputs.alpha))
}

/// The shift test with enough tokens to see changed weights (1% weight noise repeats 9%
/// of its differences, a fine-tune 40%) and seeing none.
const LOSSY_MIN_TOKENS: usize = 150;
/// Three times the band: a llama.cpp copy with a 4-bit KV cache differs by 0.40 nats
/// (0.53 without the Hadamard turn older builds lack), 3% weight noise by more.
const LOSSY_MAX_BAND_FACTOR: f64 = 3.0;

/// Outside the band but far from unrelated models, with differences that do not repeat
/// token by token across probes, in a test that had the tokens to see them repeat: the
/// same weights through coarser arithmetic than engine noise covers.
fn lossy_arithmetic<'a>(
    p: f64,
    summary: &LogitSummary,
    inputs: &'a VerdictInputs,
) -> Option<&'a ShiftTest> {
    let band = &inputs.band;
    let near = summary
        .mean_abs_dlogprob
        .is_some_and(|d| d <= band.max_mean_abs_dlogprob * LOSSY_MAX_BAND_FACTOR);
    let shift = inputs.shift.as_ref()?;
    (p <= inputs.alpha
        && near
        && shift.tokens >= LOSSY_MIN_TOKENS
        && shift.share <= band.max_shift_share
        && shift.p_value > inputs.alpha)
        .then_some(shift)
}

/// Whether more logit probes could still let [`lossy_arithmetic`] decide: far closer than
/// controls (`p`, the logit signal's), within three bands, and a shift test that has had
/// fewer than its tokens and has not seen the differences repeat. The scan's early stop
/// asks on for such a suspect rather than leave it to the full probe set.
pub fn awaits_shift_tokens(
    p: f64,
    mean_abs_dlogprob: Option<f64>,
    shift: Option<&ShiftTest>,
    band: &IdenticalBand,
    alpha: f64,
) -> bool {
    let near =
        mean_abs_dlogprob.is_some_and(|d| d <= band.max_mean_abs_dlogprob * LOSSY_MAX_BAND_FACTOR);
    let short = match shift {
        Some(s) => s.tokens < LOSSY_MIN_TOKENS && !shifted(Some(s), band, alpha),
        None => true,
    };
    p <= alpha && near && short
}

/// Whether more of the differences repeat across probes than rounding makes repeat, and
/// significantly so: changed weights. Without the test (too few probes) nothing is found.
fn shifted(shift: Option<&ShiftTest>, band: &IdenticalBand, alpha: f64) -> bool {
    shift.is_some_and(|s| s.p_value <= alpha && s.share > band.max_shift_share)
}

fn shift_text(shift: Option<&ShiftTest>, band: &IdenticalBand) -> String {
    match shift {
        Some(s) => format!(
            "; {:.1}% of the differences repeat token by token across probes (band ≤ {:.1}%; {} tokens in {} {}probes, p = {:.4})",
            s.share * 100.0,
            band.max_shift_share * 100.0,
            s.tokens,
            s.probes,
            if s.raw_only { "raw " } else { "" },
            s.p_value
        ),
        None => "; too few probes for the shift test".to_string(),
    }
}

fn band_text(summary: &LogitSummary, band: &IdenticalBand) -> String {
    format!(
        "mean |Δlogprob| {} (band ≤ {:.3}), top-1 agreement {:.0}% (band ≥ {:.0}%, {})",
        summary
            .mean_abs_dlogprob
            .map(|d| format!("{d:.3}"))
            .unwrap_or_else(|| "n/a".to_string()),
        band.max_mean_abs_dlogprob,
        summary.top1 * 100.0,
        band.min_top1 * 100.0,
        band.source
    )
}

/// The sequential test's say, for a scan that stopped early or whose fixed-sample logit
/// test was not decisive (the default null is pessimistic, and eight probes give a wide
/// interval). Its e-value against "unrelated" is anytime-valid, so 1/e is a p-value however
/// early the scan stopped. It can only turn a verdict into `identical`, and only when the
/// matched answers also lie inside the identical band (a close derivative also matches
/// within the test's tolerance) and the tokenizers were not seen to differ. A verdict the
/// logits already decided stays: the two tests together err at most 2 alpha, and only
/// where the logit test said nothing.
pub fn with_sequential(
    outcome: VerdictOutcome,
    inputs: &VerdictInputs,
    summary: Option<&LogitSummary>,
    e_against_unrelated: f64,
    queries: usize,
) -> VerdictOutcome {
    let logits_decided = matches!(outcome.verdict, Verdict::Identical | Verdict::Derived);
    let tokenizer_differs = inputs
        .tokenizer
        .is_some_and(|(share, _)| share < inputs.same_tokenizer_min);
    let Some(summary) = summary else {
        return outcome;
    };
    if logits_decided || tokenizer_differs || e_against_unrelated * inputs.alpha < 1.0 {
        return outcome;
    }
    // The band of the reference as given, else of the nearest quantized form the suspect
    // lies in (the sequential test counted matches with the forms too).
    let given = (inputs.band.contains(summary)
        && !shifted(inputs.shift.as_ref(), &inputs.band, inputs.alpha))
    .then_some((summary, None));
    let Some((summary, form)) = given.or_else(|| {
        inputs
            .forms
            .iter()
            .filter(|f| {
                inputs.band.contains(&f.summary)
                    && !shifted(f.shift.as_ref(), &inputs.band, inputs.alpha)
            })
            .min_by(|a, b| {
                let d = |f: &FormLogits| f.summary.mean_abs_dlogprob.unwrap_or(f64::INFINITY);
                d(a).total_cmp(&d(b))
            })
            .map(|f| (&f.summary, Some(f.dtype.as_str())))
    }) else {
        return outcome;
    };
    let p = (1.0 / e_against_unrelated).min(1.0);
    let mut reasons = outcome.reasons;
    reasons.push(format!(
        "sequential test: e-value {e_against_unrelated:.3e} against \"unrelated\" after {queries} \
         suspect queries (p ≤ 1/e = {p:.2e}), and the answers lie in the identical band{} \
         (mean |Δlogprob| {}, top-1 agreement {:.0}%)",
        match form {
            Some(dtype) => format!(
                " of the reference {}: {}",
                form_phrase(dtype),
                served_as(dtype)
            ),
            None => String::new(),
        },
        summary
            .mean_abs_dlogprob
            .map(|d| format!("{d:.3}"))
            .unwrap_or_else(|| "n/a".to_string()),
        summary.top1 * 100.0
    ));
    reasons.push(match &inputs.shift {
        None => "too few logit probes for the shift test, which alone sees weights changed \
                 by less than engine noise: scan without early stopping to rule that out"
            .to_string(),
        Some(_) => format!(
            "shift test{}",
            shift_text(inputs.shift.as_ref(), &inputs.band)
        ),
    });
    positive(Verdict::Identical, p, reasons)
}

fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// The q-quantile with linear interpolation between order statistics.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

fn positive(verdict: Verdict, p: f64, reasons: Vec<String>) -> VerdictOutcome {
    VerdictOutcome {
        verdict,
        confidence: 1.0 - p,
        p_value: Some(p),
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(mean_abs: f64, top1: f64) -> LogitSummary {
        LogitSummary {
            probes: 20,
            positions: 40,
            similarity: 0.9,
            jsd: 0.05,
            top1,
            jaccard: 0.8,
            spearman: Some(0.9),
            mean_abs_dlogprob: Some(mean_abs),
        }
    }

    fn inputs() -> VerdictInputs {
        VerdictInputs {
            alpha: 0.01,
            logits: None,
            tokenizer: Some((1.0, 40)),
            same_tokenizer_min: 0.95,
            band: IdenticalBand::default_band(),
            text: vec![("style".into(), 0.5), ("refusal".into(), 0.4)],
            equality_p: None,
            greedy_exact: Some(0.2),
            greedy_tokens: None,
            greedy_tokens_chat: false,
            logits_chat_only: false,
            shift: None,
            forms: Vec::new(),
            forms_p: None,
            form_tokens: Vec::new(),
            form_tokens_p: None,
            likelihood_p: None,
            suspect_samples: false,
            sampled: None,
            collisions: None,
            controls: 20,
            missing: Vec::new(),
        }
    }

    fn walked(share: f64) -> (String, crate::compare::greedy_path::PathShare) {
        (
            "lq-q4_0".into(),
            crate::compare::greedy_path::PathShare {
                share,
                positions: 160,
                probes: 40,
                raw: true,
            },
        )
    }

    #[test]
    fn text_only_copy_of_a_quantized_form_is_identical_and_a_changed_one_derived() {
        // Far from unrelated on text; the reference as given reads 67% of the tokens.
        let mut i = inputs();
        i.text = vec![("contrast".into(), 1e-3), ("style".into(), 0.02)];
        i.greedy_tokens = Some((0.67, 0.02));
        i.form_tokens = vec![walked(0.8), walked(0.97)];
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!(out.reasons.iter().any(|r| r.contains("lq-q4_0")), "{out:?}");
        // Forms followed equally: the first of the ladder is named, not a serving form
        // the plain copy merely ties with.
        let stretched = ("yarn-2".to_string(), walked(1.0).1);
        i.form_tokens = vec![walked(1.0), stretched];
        let out = decide(&i);
        assert!(out.reasons.iter().any(|r| r.contains("lq-q4_0")), "{out:?}");
        assert!(
            !out.reasons.iter().any(|r| r.contains("stretched")),
            "{out:?}"
        );
        // No form close enough: a student or the reference changed; the likelihood says which.
        i.form_tokens = vec![walked(0.8)];
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
        i.likelihood_p = Some(5e-5);
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        // Another tokenizer: never derived.
        i.tokenizer = Some((0.5, 40));
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
        // Nothing far from unrelated: a form's tokens alone decide nothing.
        let mut i = inputs();
        i.form_tokens = vec![walked(0.99)];
        i.likelihood_p = Some(5e-5);
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn text_only_copy_of_a_form_is_identical_on_the_forms_own_test() {
        // Gemma's llama-quantize Q2_K copy without log-probabilities against three built-in
        // controls: text and the reference's own tokens short of alpha (67% of tokens),
        // its nearest form's tokens far beyond every control's nearest.
        let mut i = inputs();
        i.text = vec![("contrast".into(), 0.01), ("style".into(), 0.2)];
        i.greedy_tokens = Some((0.67, 0.0126));
        i.form_tokens = vec![walked(0.8), walked(0.95)];
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
        i.form_tokens_p = Some(2e-3);
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!(
            out.reasons.iter().any(|r| r.contains("nearest form")),
            "{out:?}"
        );
        // Some control as near its own nearest form: nothing shown by the forms.
        i.form_tokens_p = Some(0.3);
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
        // Far from unrelated on the forms, but no form's tokens in the band: not a copy.
        i.form_tokens_p = Some(2e-3);
        i.form_tokens = vec![walked(0.8)];
        assert_ne!(decide(&i).verdict, Verdict::Identical);
    }

    fn shift(p_value: f64) -> Option<ShiftTest> {
        Some(ShiftTest {
            statistic: 10.0,
            share: 0.1,
            tokens: 100,
            probes: 60,
            raw_only: true,
            p_value,
        })
    }

    #[test]
    fn coarse_rounding_outside_the_band_is_identical_only_where_nothing_repeats() {
        // A llama.cpp copy behind a 4-bit KV cache: 0.395 nats, 71% top-1, 0.3% repeating
        // over 312 tokens.
        let mut i = inputs();
        i.logits = Some((summary(0.395, 0.71), 2.6e-3));
        let unrepeated = ShiftTest {
            statistic: -3.1,
            share: -0.003,
            tokens: 312,
            probes: 53,
            raw_only: true,
            p_value: 0.61,
        };
        i.shift = Some(unrepeated.clone());
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!(
            out.reasons.iter().any(|r| r.contains("change sign")),
            "{out:?}"
        );
        // Changed weights repeat: derived.
        i.shift = Some(ShiftTest {
            share: 0.09,
            p_value: 0.001,
            ..unrepeated.clone()
        });
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        // Too few tokens to have seen them repeat, or no test at all: derived.
        i.shift = Some(ShiftTest {
            tokens: 60,
            ..unrepeated.clone()
        });
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        i.shift = None;
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        // Too far for rounding, or no closer than controls: not identical.
        i.shift = Some(unrepeated);
        i.logits = Some((summary(0.9, 0.5), 2.6e-3));
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        i.logits = Some((summary(0.395, 0.71), 0.2));
        assert_ne!(decide(&i).verdict, Verdict::Identical);
    }

    #[test]
    fn a_near_suspect_awaits_the_shift_tokens_until_they_are_there_or_repeat() {
        let band = IdenticalBand::default_band();
        let short = ShiftTest {
            statistic: -1.0,
            share: -0.01,
            tokens: 40,
            probes: 12,
            raw_only: true,
            p_value: 0.6,
        };
        let awaits = |p, d, s: Option<&ShiftTest>| awaits_shift_tokens(p, d, s, &band, 0.01);
        assert!(awaits(2e-3, Some(0.395), Some(&short)));
        assert!(awaits(2e-3, Some(0.395), None));
        // Enough tokens: the verdict has had its say.
        let full = ShiftTest {
            tokens: 150,
            ..short.clone()
        };
        assert!(!awaits(2e-3, Some(0.395), Some(&full)));
        // Differences already seen to repeat: changed weights, nothing to wait for.
        let repeating = ShiftTest {
            share: 0.2,
            p_value: 0.001,
            ..short.clone()
        };
        assert!(!awaits(2e-3, Some(0.395), Some(&repeating)));
        // Too far for rounding, no closer than controls, or no logits compared.
        let far = band.max_mean_abs_dlogprob * 3.5;
        assert!(!awaits(2e-3, Some(far), Some(&short)));
        assert!(!awaits(0.2, Some(0.395), Some(&short)));
        assert!(!awaits(2e-3, None, Some(&short)));
    }

    #[test]
    fn repeated_shifts_inside_the_band_are_derived_unless_a_form_matches_without_them() {
        let mut i = inputs();
        i.logits = Some((summary(0.12, 0.94), 1e-5));
        i.shift = shift(0.3);
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        // Significant, but no more of it repeating than rounding makes repeat.
        i.shift = shift(0.001).map(|s| ShiftTest { share: 0.02, ..s });
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        i.shift = shift(0.001);
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Derived);
        assert!(
            out.reasons
                .iter()
                .any(|r| r.contains("repeat token by token")),
            "{:?}",
            out.reasons
        );
        // A form inside the band but shifted against the suspect too: still derived.
        let form = |p_value| FormLogits {
            dtype: "q8_0".into(),
            summary: summary(0.01, 1.0),
            p: 1e-6,
            shift: shift(p_value),
        };
        i.forms = vec![form(0.002)];
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        // The same weights quantized: the suspect is that form, unshifted.
        i.forms = vec![form(0.4)];
        assert_eq!(decide(&i).verdict, Verdict::Identical);
    }

    #[test]
    fn greedy_tokens_decide_same_weights_without_raw_log_probabilities() {
        // No log-probabilities: the tokens decide when high and far above controls.
        let mut i = inputs();
        i.greedy_tokens = Some((0.97, 1e-4));
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        i.greedy_tokens = Some((0.85, 1e-4));
        assert_ne!(decide(&i).verdict, Verdict::Identical);
        i.greedy_tokens = Some((0.97, 0.2));
        assert_ne!(decide(&i).verdict, Verdict::Identical);
        // Another tokenizer is never the same weights.
        i.greedy_tokens = Some((0.97, 1e-4));
        i.tokenizer = Some((0.5, 40));
        assert_ne!(decide(&i).verdict, Verdict::Identical);
        i.tokenizer = Some((1.0, 40));
        // Chat-only log-probabilities outside the band (a persona moved them): the tokens
        // decide; with raw probes among them the band does, as before.
        i.logits = Some((summary(0.41, 0.6), 0.01));
        i.logits_chat_only = true;
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{:?}", out.reasons);
        assert!(out.reasons.iter().any(|r| r.contains("chat probes alone")));
        i.logits_chat_only = false;
        assert_ne!(decide(&i).verdict, Verdict::Identical);
        i.logits = Some((summary(0.6, 0.8), 1e-5));
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        i.logits_chat_only = true;
        i.greedy_tokens = Some((0.8, 1e-4));
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        // Read on chat answers the band is higher: generic phrasing is everyone's choice.
        i.logits = None;
        i.greedy_tokens = Some((0.93, 1e-4));
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        i.greedy_tokens_chat = true;
        assert_ne!(decide(&i).verdict, Verdict::Identical);
        i.greedy_tokens = Some((0.97, 1e-4));
        assert_eq!(decide(&i).verdict, Verdict::Identical);
    }

    #[test]
    fn logits_in_band_are_identical_outside_derived() {
        let mut i = inputs();
        i.logits = Some((summary(0.05, 0.97), 1e-5));
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        i.logits = Some((summary(0.6, 0.8), 1e-5));
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        i.logits = Some((summary(0.6, 0.8), 0.3));
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn a_copy_served_quantized_is_identical_through_its_form() {
        let mut i = inputs();
        // Re-rounded weights: far from the reference as given, far closer than controls.
        i.logits = Some((summary(1.04, 0.31), 1e-5));
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        let form = |dtype: &str, s: LogitSummary, p: f64| FormLogits {
            dtype: dtype.into(),
            summary: s,
            p,
            shift: None,
        };
        i.forms = vec![
            form("q8_0", summary(1.02, 0.33), 1e-4),
            form("q4_0", summary(0.0, 1.0), 1e-4),
        ];
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!(out.reasons.iter().any(|r| r.contains("quantized to q4_0")));
        // The p-value is the smaller of the reference's own (1e-5) and the form's
        // corrected for the two forms tried (2e-4).
        assert!((out.p_value.unwrap_or(1.0) - 1e-5).abs() < 1e-12);
        i.logits = Some((summary(1.04, 0.31), 0.5));
        let out = decide(&i);
        assert!((out.p_value.unwrap_or(1.0) - 2e-4).abs() < 1e-12);
        // The form stands on its own test: with too few controls the reference as given
        // may look no closer than chance, and a form it matches exactly still decides.
        i.logits = Some((summary(1.04, 0.31), 0.3));
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        // A form inside the band that the controls are as close to decides nothing.
        i.forms = vec![form("q4_0", summary(0.0, 1.0), 0.2)];
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
        // Nor does a form outside the band.
        i.logits = Some((summary(1.04, 0.31), 1e-5));
        i.forms = vec![form("q8_0", summary(0.9, 0.4), 1e-6)];
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Derived);
        assert!(out.reasons.iter().any(|r| r.contains("1 quantized forms")));
        // Different tokenizers rule identical out whatever the forms say.
        i.forms = vec![form("q4_0", summary(0.0, 1.0), 1e-6)];
        i.tokenizer = Some((0.3, 40));
        assert_ne!(decide(&i).verdict, Verdict::Identical);
    }

    /// Gemma 3 served by a stack that adds no BOS token: nothing like the reference as
    /// given, far closer than controls to the reference asked without one, though beyond
    /// the band (without its BOS token the model amplifies engines' rounding).
    #[test]
    fn a_form_far_closer_than_controls_outside_the_band_says_derived() {
        let mut i = inputs();
        i.logits = Some((summary(1.5, 0.3), 0.9));
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
        i.forms = vec![FormLogits {
            dtype: NO_BOS_FORM.into(),
            summary: summary(0.45, 0.7),
            p: 1e-5,
            shift: None,
        }];
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Derived, "{out:?}");
        assert!(out
            .reasons
            .iter()
            .any(|r| r.contains("without its BOS token")));
        // Controls as close to that form as the suspect: nothing.
        i.forms[0].p = 0.05;
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn tokenizer_mismatch_rules_out_identical() {
        let mut i = inputs();
        i.tokenizer = Some((0.4, 40));
        i.logits = Some((summary(0.05, 0.97), 1e-5));
        // Byte-aligned logits this close across tokenizers count toward distillation.
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Distilled, "{out:?}");
        i.logits = None;
        i.text = vec![("style".into(), 1e-4), ("refusal".into(), 1e-3)];
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
    }

    #[test]
    fn a_suspect_that_samples_is_not_called_distilled_from_text_alone() {
        let mut i = inputs();
        i.text = vec![("style".into(), 1e-4), ("contrast".into(), 1e-3)];
        i.greedy_tokens = Some((0.6, 0.5));
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
        i.suspect_samples = true;
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Inconclusive, "{out:?}");
        assert!(out
            .reasons
            .iter()
            .any(|r| r.contains("samples whatever temperature")));
        // Sampled tokens below the band, far more on the reference's choice than controls'
        // (a fine-tune greedily, a copy sampled): not `derived` either.
        i.greedy_tokens = Some((0.75, 0.005));
        i.likelihood_p = Some(0.004);
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        i.suspect_samples = false;
        assert_eq!(decide(&i).verdict, Verdict::Derived);
        i.suspect_samples = true;
        // Text no closer than controls stays unrelated, sampling or not.
        i.text = vec![("style".into(), 0.4), ("contrast".into(), 0.3)];
        i.greedy_tokens = Some((0.6, 0.5));
        i.likelihood_p = None;
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn a_sampling_suspect_is_a_copy_only_when_its_samples_are_the_references() {
        let fit = |distance: f64| crate::compare::sampled::SampledFit {
            tokens: 800,
            temperature: 0.7,
            cut: 9.0,
            distance,
            p_value: 0.2,
            top1: 0.6,
        };
        let agree = |z: f64| crate::compare::sampled::Collisions {
            samples: 48,
            trials: 80,
            observed: 40,
            expected: 40.0 - z * 4.0,
            sd: 4.0,
            z,
        };
        let mut i = inputs();
        i.text = vec![("style".into(), 1e-4), ("contrast".into(), 1e-3)];
        i.greedy_tokens = Some((0.6, 0.5));
        i.suspect_samples = true;
        i.sampled = Some(fit(0.03));
        i.collisions = Some(agree(0.5));
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        // Ranks that fit but samples that agree with each other far too often: another
        // model, which the reference reads as hot.
        i.collisions = Some(agree(6.0));
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        // Ranks far off.
        i.collisions = Some(agree(0.5));
        i.sampled = Some(fit(0.2));
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        // Agreement too rare to count (a hot sampler) says nothing.
        i.sampled = Some(fit(0.03));
        i.collisions = Some(crate::compare::sampled::Collisions {
            samples: 48,
            trials: 25,
            observed: 1,
            expected: 1.5,
            sd: 1.2,
            z: -0.4,
        });
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        // Without agreement counted, ranks alone never make a copy.
        i.collisions = None;
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        // The reference's samples but no closer than controls on text: not a copy.
        i.collisions = Some(agree(0.5));
        i.text = vec![("style".into(), 0.4), ("contrast".into(), 0.3)];
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
        // The same without any controls: "no closer" was never measured, so it cannot
        // clear the suspect; other models' samples still do not fit.
        i.controls = 0;
        assert_eq!(decide(&i).verdict, Verdict::Inconclusive);
        i.collisions = Some(agree(6.0));
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn greedy_tokens_in_band_are_never_distilled() {
        let mut i = inputs();
        i.text = vec![("style".into(), 1e-4), ("refusal".into(), 1e-3)];
        // 96% of tokens in band, but three controls leave their own test at p = 0.015.
        i.greedy_tokens = Some((0.96, 0.015));
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!((out.p_value.unwrap_or(1.0) - 2e-4).abs() < 1e-12);
        // A student picks the reference's top token far less often: still distilled.
        i.greedy_tokens = Some((0.6, 0.015));
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
        // Below the band but far above controls: changed weights (a re-quantization).
        i.greedy_tokens = Some((0.87, 0.005));
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Derived, "{out:?}");
        assert!((out.p_value.unwrap_or(1.0) - 0.005).abs() < 1e-12);
        // Not with another tokenizer, nor with an unchecked one.
        i.tokenizer = None;
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
        i.tokenizer = Some((1.0, 40));
        // In band but nothing sets it apart from unrelated models: not a copy.
        i.greedy_tokens = Some((0.96, 0.2));
        i.text = vec![("style".into(), 0.3)];
        assert_eq!(decide(&i).verdict, Verdict::Unrelated);
    }

    #[test]
    fn nothing_usable_is_inconclusive_with_reasons() {
        let mut i = inputs();
        i.text.clear();
        i.missing = vec!["the suspect returned no log-probabilities".into()];
        let out = decide(&i);
        assert_eq!(out.verdict, Verdict::Inconclusive);
        assert!(out
            .reasons
            .iter()
            .any(|r| r.contains("no log-probabilities")));
    }

    #[test]
    fn identical_without_logits_needs_exact_answers() {
        let mut i = inputs();
        i.text = vec![("greedy_text".into(), 1e-4), ("style".into(), 1e-3)];
        i.greedy_exact = Some(1.0);
        i.equality_p = Some(0.6);
        assert_eq!(decide(&i).verdict, Verdict::Identical);
        i.equality_p = Some(0.001);
        assert_eq!(decide(&i).verdict, Verdict::Distilled);
    }

    #[test]
    fn sequential_evidence_decides_identical_only_inside_the_band() {
        let mut i = inputs();
        // Eight probes: the fixed-sample logit test is not decisive on its own.
        i.logits = Some((summary(0.02, 1.0), 0.2));
        let base = decide(&i);
        assert_ne!(base.verdict, Verdict::Identical);
        let close = summary(0.02, 1.0);
        let out = with_sequential(base.clone(), &i, Some(&close), 170.0, 8);
        assert_eq!(out.verdict, Verdict::Identical, "{out:?}");
        assert!((out.p_value.unwrap_or(1.0) - 1.0 / 170.0).abs() < 1e-12);
        // Not enough evidence yet.
        let out = with_sequential(base.clone(), &i, Some(&close), 50.0, 6);
        assert_eq!(out.verdict, base.verdict);
        // A close derivative matches within tolerance but lies outside the band.
        let derived = summary(0.25, 0.95);
        let out = with_sequential(base.clone(), &i, Some(&derived), 1e4, 8);
        assert_eq!(out.verdict, base.verdict);
        // Different tokenizers rule identical out whatever the logits say.
        i.tokenizer = Some((0.3, 40));
        let out = with_sequential(decide(&i), &i, Some(&close), 1e4, 8);
        assert_ne!(out.verdict, Verdict::Identical);
    }

    #[test]
    fn band_from_known_same_pairs() {
        let band = IdenticalBand::from_known_same(&[
            (Some(summary(0.12, 0.80)), Some(0.95)),
            (Some(summary(0.14, 0.76)), Some(1.0)),
        ])
        .expect("band");
        assert!((band.max_mean_abs_dlogprob - (0.13 * 1.5 + 0.02)).abs() < 1e-12);
        // Lower quartile of (0.80, 0.76) is 0.77.
        assert!((band.min_top1 - 0.72).abs() < 1e-12);
        assert!((band.min_greedy_exact - 0.90).abs() < 1e-12);
        // One badly damaged "copy" among the known-same pairs does not widen the band.
        let band = IdenticalBand::from_known_same(&[
            (Some(summary(0.14, 0.94)), Some(0.95)),
            (Some(summary(0.16, 0.92)), Some(0.95)),
            (Some(summary(1.04, 0.31)), Some(0.1)),
        ])
        .expect("band");
        assert!((band.max_mean_abs_dlogprob - (0.16 * 1.5 + 0.02)).abs() < 1e-12);
        // Lower quartile of (0.31, 0.92, 0.94) is 0.615.
        assert!((band.min_top1 - 0.565).abs() < 1e-12);
        // Pairs that agree exactly (same engine) do not narrow the default band.
        let exact =
            IdenticalBand::from_known_same(&[(Some(summary(0.0, 1.0)), Some(1.0))]).expect("band");
        let default = IdenticalBand::default_band();
        assert_eq!(exact.max_mean_abs_dlogprob, default.max_mean_abs_dlogprob);
        assert_eq!(exact.min_top1, default.min_top1);
        assert_eq!(exact.min_greedy_exact, default.min_greedy_exact);
        assert_eq!(IdenticalBand::from_known_same(&[]), None);
    }
}
