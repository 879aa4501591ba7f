//! The similarity engine: pure functions from fingerprints to a report, no I/O.
//!
//! One file per signal (logits, tokenizer, refusal, identity, style, equality), each
//! giving a similarity score (higher = closer to the reference) with a bootstrap
//! interval. [`compare`] scores the suspect against the reference, scores every control
//! (an unrelated model) against the same reference to learn what "unrelated" looks like,
//! turns each suspect score into a p-value against those control scores
//! ([`calibration`]), and decides a verdict from them ([`verdict`]).

pub mod bootstrap;
pub mod calibration;
pub mod contrast;
pub mod equality;
pub mod greedy_path;
pub mod identity;
pub mod lexicon;
pub mod likelihood;
pub mod lineage;
pub mod logits;
pub mod refusal;
pub mod report;
pub mod reported_temperature;
pub mod sampled;
pub mod sequential;
pub mod shift;
pub mod stats;
pub mod style;
pub mod tokenizer;
pub mod verdict;

mod assemble;
mod signal;
mod signals;

use std::collections::BTreeMap;

use crate::fingerprint::{Fingerprint, Observation};
use crate::probes::{ProbeKind, RefusalLexicon};

use bootstrap::BootstrapOptions;
use calibration::{null_test_floored, Level, NullTest};
use equality::EqualityOptions;
use logits::LogitSummary;

pub use report::{to_markdown, EvidenceItem, Finding, ModelRef, Queries, Report, SignalScore};
pub use sequential::{SequentialDecision, SequentialOptions, SequentialOutcome};
pub use signal::{
    default_null, pairs, sample_groups, Pair, ProbeScore, Signal, SignalOutcome, CONTRAST,
    EQUALITY, GREEDY_TEXT, GREEDY_TOKENS, IDENTITY, LEXICON, LIKELIHOOD, LOGITS, REFUSAL, STYLE,
    TOKENIZER,
};
pub use verdict::{IdenticalBand, Verdict};

pub(crate) use signal::clip;

use assemble::{evidence, missing_reasons, model_ref, signal_score, unavailable_reason};
use signals::{contrast_signals, distillation_signals, findings, Signals};

#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Error rate of the verdict (false "identical/derived/distilled" among unrelated).
    pub alpha: f64,
    pub bootstrap: BootstrapOptions,
    pub equality: EqualityOptions,
    /// Probes both sides must have answered for a signal to count in the verdict.
    pub min_probes: usize,
    /// Share of tokenizer strings counted alike above which tokenizers are the same. The
    /// same tokenizer agrees on all of them; the slack absorbs a string or two that a
    /// serving engine normalises differently.
    pub same_tokenizer_min: f64,
    /// Overrides the identical band (else from known-same pairs, else the default).
    pub band: Option<IdenticalBand>,
    pub max_evidence: usize,
    /// Refusal markers; the built-in list when `None`.
    pub lexicon: Option<RefusalLexicon>,
    pub sequential: SequentialOptions,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            bootstrap: BootstrapOptions::default(),
            equality: EqualityOptions::default(),
            min_probes: 5,
            same_tokenizer_min: 0.95,
            band: None,
            max_evidence: 16,
            lexicon: None,
            sequential: SequentialOptions::default(),
        }
    }
}

/// Fingerprints that tell what "unrelated" and "the same model" look like.
#[derive(Debug, Clone, Copy, Default)]
pub struct Calibration<'a> {
    /// Models known to be unrelated to the reference.
    pub controls: &'a [Fingerprint],
    /// The reference itself served another way (engine, quantization, system prompt).
    pub known_same: &'a [Fingerprint],
    /// The reference quantized by the engine to standard weight types: a suspect inside
    /// the identical band of one of them is the reference served quantized.
    pub forms: &'a [QuantizedForm],
    /// The suspect's and the controls' answers read back by the reference model
    /// (`crate::read_back`); without them the likelihood signal is not computed.
    pub likelihood: Option<Likelihoods<'a>>,
}

/// Answers read back by the reference: the suspect's, and each control's in the order of
/// [`Calibration::controls`] (an empty list for a control that was not read back).
#[derive(Debug, Clone, Copy)]
pub struct Likelihoods<'a> {
    pub suspect: &'a [likelihood::AnswerScore],
    pub controls: &'a [Vec<likelihood::AnswerScore>],
}

/// The reference quantized to one weight type and fingerprinted (see `crate::quantized_forms`).
#[derive(Debug, Clone)]
pub struct QuantizedForm {
    /// The GGUF type, e.g. `q4_0`.
    pub dtype: String,
    pub fingerprint: Fingerprint,
}

/// Compares `suspect` with `reference`, judging each signal against `controls`.
pub fn compare(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    controls: &[Fingerprint],
    opts: &CompareOptions,
) -> Report {
    compare_calibrated(
        reference,
        suspect,
        &Calibration {
            controls,
            ..Calibration::default()
        },
        opts,
    )
}

/// `prints` with each one whose log-probabilities were reported after a temperature read
/// at one; `None` when none was.
fn prints_read_at_one(reference: &Fingerprint, prints: &[Fingerprint]) -> Option<Vec<Fingerprint>> {
    let undone: Vec<Option<Fingerprint>> = prints
        .iter()
        .map(|p| reported_temperature::undo(reference, p).map(|(read, _)| read))
        .collect();
    undone.iter().any(Option::is_some).then(|| {
        undone
            .into_iter()
            .zip(prints)
            .map(|(read, print)| read.unwrap_or_else(|| print.clone()))
            .collect()
    })
}

/// `prints` with every position's alternatives cut to the `k` most likely; `None` where
/// `k` is 0 (no log-probabilities) or no list is longer.
pub fn lists_cut_to(prints: &[Fingerprint], k: usize) -> Option<Vec<Fingerprint>> {
    (k > 0 && prints.iter().any(|p| lists_longer(p, k)))
        .then(|| prints.iter().map(|p| lists_cut(p, k)).collect())
}

fn lists_longer(print: &Fingerprint, k: usize) -> bool {
    print.observations.iter().any(|o| {
        o.response
            .as_ref()
            .is_some_and(|r| r.tokens.iter().any(|t| t.top.len() > k))
    })
}

fn lists_cut(print: &Fingerprint, k: usize) -> Fingerprint {
    let mut print = print.clone();
    for obs in &mut print.observations {
        for position in obs.response.iter_mut().flat_map(|r| r.tokens.iter_mut()) {
            position.top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
            position.top.truncate(k);
        }
    }
    print
}

/// [`compare`] with known-same pairs as well, which set the identical band and the
/// sequential test's match rate.
pub fn compare_calibrated(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    calibration: &Calibration,
    opts: &CompareOptions,
) -> Report {
    // Prints whose log-probabilities were reported after a temperature are read at one,
    // the suspect's and the controls' alike (`reported_temperature`).
    let suspect_read = reported_temperature::undo(reference, suspect);
    let suspect = suspect_read.as_ref().map_or(suspect, |(print, _)| print);
    let controls_read = prints_read_at_one(reference, calibration.controls);
    let known_same_read = prints_read_at_one(reference, calibration.known_same);
    let calibration = &Calibration {
        controls: controls_read.as_deref().unwrap_or(calibration.controls),
        known_same: known_same_read.as_deref().unwrap_or(calibration.known_same),
        ..*calibration
    };
    // A suspect whose server lists fewer alternatives than the others' (top-1 or top-5 of
    // a provider's API) is compared on that many; controls, known-same pairs and forms are
    // cut to the same length, so that each score is held against its own statistic.
    let cap = suspect.model.capabilities.max_top_logprobs;
    let controls_cut = lists_cut_to(calibration.controls, cap);
    let known_same_cut = lists_cut_to(calibration.known_same, cap);
    let forms_cut: Option<Vec<QuantizedForm>> = (cap > 0
        && calibration
            .forms
            .iter()
            .any(|f| lists_longer(&f.fingerprint, cap)))
    .then(|| {
        calibration
            .forms
            .iter()
            .map(|form| QuantizedForm {
                dtype: form.dtype.clone(),
                fingerprint: lists_cut(&form.fingerprint, cap),
            })
            .collect()
    });
    let calibration = &Calibration {
        controls: controls_cut.as_deref().unwrap_or(calibration.controls),
        known_same: known_same_cut.as_deref().unwrap_or(calibration.known_same),
        forms: forms_cut.as_deref().unwrap_or(calibration.forms),
        ..*calibration
    };
    let lexicon = opts
        .lexicon
        .as_ref()
        .unwrap_or_else(|| refusal::default_lexicon());
    let read_back = calibration.likelihood;
    let logit_form = signal::logit_form(
        &pairs(reference, suspect, ProbeKind::Logit),
        opts.min_probes,
    );
    // A sampling suspect's sampling probes are read back for `sampled::collisions` alone.
    let answers_read: Option<Vec<likelihood::AnswerScore>> = read_back
        .filter(|l| l.suspect.iter().any(|s| s.kind == ProbeKind::Sampling))
        .map(|l| {
            l.suspect
                .iter()
                .filter(|s| s.kind != ProbeKind::Sampling)
                .cloned()
                .collect()
        });
    let mut ours = Signals::compute(
        reference,
        suspect,
        logit_form,
        answers_read.as_deref().or(read_back.map(|l| l.suspect)),
        opts,
        lexicon,
        true,
    );
    let mut controls: Vec<Signals> = calibration
        .controls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let scores = read_back.and_then(|l| l.controls.get(i)).map(Vec::as_slice);
            Signals::compute(reference, c, logit_form, scores, opts, lexicon, false)
        })
        .collect();
    let (suspect_contrast, control_contrasts) =
        contrast_signals(reference, suspect, calibration.controls, &opts.bootstrap);
    ours.contrast = suspect_contrast;
    for (c, outcome) in controls.iter_mut().zip(control_contrasts) {
        c.contrast = outcome;
    }
    let distillation = distillation_signals(&ours, &controls);
    let known_same: Vec<Signals> = calibration
        .known_same
        .iter()
        .map(|k| Signals::compute(reference, k, logit_form, None, opts, lexicon, false))
        .collect();

    let band = opts.band.clone().unwrap_or_else(|| {
        let pairs: Vec<(Option<LogitSummary>, Option<f64>)> = known_same
            .iter()
            .map(|k| {
                (
                    k.logits.as_ref().map(|l| l.1.clone()),
                    k.greedy
                        .as_ref()
                        .and_then(|g| g.extra.get("exact_match").copied()),
                )
            })
            .collect();
        IdenticalBand::from_known_same(&pairs).unwrap_or_else(IdenticalBand::default_band)
    });

    // Each signal against the controls that have it.
    let mut tests: BTreeMap<Signal, NullTest> = BTreeMap::new();
    for name in Signal::ALL {
        if let Some(outcome) = ours.get(name) {
            let control_scores: Vec<f64> = controls
                .iter()
                .filter_map(|c| c.get(name).map(|o| o.score))
                .collect();
            tests.insert(name, against_controls(name, outcome, &control_scores, opts));
        }
    }

    let usable = |name: Signal| ours.get(name).is_some_and(|o| o.n >= opts.min_probes);
    let (sampled_fit, collisions) = match read_back {
        Some(l) if suspect.model.capabilities.ignores_temperature => {
            let reads: Vec<sampled::Read> = l
                .suspect
                .iter()
                .map(likelihood::AnswerScore::sampled_read)
                .collect();
            sampled::judge(&reads)
        }
        _ => (None, None),
    };
    let missing = missing_reasons(reference, suspect, &ours, &distillation, opts.min_probes);
    let form_tests: Vec<(verdict::FormLogits, Option<FormScores>)> = calibration
        .forms
        .iter()
        .filter_map(|f| form_logits(f, suspect, calibration.controls, &band, logit_form, opts))
        .collect();
    let forms_p = nearest_form_test(
        form_tests.iter().map(|(_, s)| s.as_ref()),
        Signal::Logits,
        opts,
    );
    let form_token_tests: Vec<((String, greedy_path::PathShare), Option<FormScores>)> =
        if has_logprobs(suspect) {
            Vec::new()
        } else {
            calibration
                .forms
                .iter()
                .filter_map(|f| form_tokens(f, suspect, calibration.controls, opts))
                .collect()
        };
    let form_tokens_p = nearest_form_test(
        form_token_tests.iter().map(|(_, s)| s.as_ref()),
        Signal::GreedyTokens,
        opts,
    );
    let forms: Vec<verdict::FormLogits> = form_tests.into_iter().map(|(f, _)| f).collect();
    let inputs = verdict::VerdictInputs {
        alpha: opts.alpha,
        logits: ours
            .logits
            .as_ref()
            .filter(|_| usable(Signal::Logits))
            .and_then(|(_, summary)| Some((summary.clone(), tests.get(&Signal::Logits)?.p))),
        tokenizer: ours
            .tokenizer
            .as_ref()
            .filter(|_| usable(Signal::Tokenizer))
            .map(|t| (t.score, t.n)),
        same_tokenizer_min: opts.same_tokenizer_min,
        band: band.clone(),
        text: distillation
            .iter()
            .filter(|name| usable(**name))
            .filter_map(|name| Some((name.to_string(), tests.get(name)?.p)))
            .collect(),
        equality_p: ours
            .equality
            .as_ref()
            .filter(|_| usable(Signal::Equality))
            .and_then(|e| e.1.p_value),
        greedy_exact: ours
            .greedy
            .as_ref()
            .filter(|_| usable(Signal::GreedyText))
            .and_then(|g| g.extra.get("exact_match").copied()),
        greedy_tokens: ours
            .greedy_tokens
            .as_ref()
            .filter(|_| usable(Signal::GreedyTokens))
            .and_then(|g| Some((g.score, tests.get(&Signal::GreedyTokens)?.p))),
        greedy_tokens_chat: ours
            .greedy_tokens
            .as_ref()
            .is_some_and(|g| g.extra.get("raw") == Some(&0.0)),
        logits_chat_only: !suspect.model.capabilities.raw_completion
            || logit_form == Some(crate::probes::ProbeForm::Chat),
        shift: ours.shift.clone(),
        forms,
        forms_p,
        // Without log-probabilities from the suspect, its greedy tokens against each
        // form's next-token lists are what says whether it is the reference served
        // quantized.
        form_tokens: form_token_tests.iter().map(|(f, _)| f.clone()).collect(),
        form_tokens_p,
        likelihood_p: ours
            .likelihood
            .as_ref()
            .filter(|_| usable(Signal::Likelihood))
            .and_then(|_| Some(tests.get(&Signal::Likelihood)?.p)),
        suspect_samples: suspect.model.capabilities.ignores_temperature,
        sampled: sampled_fit.clone(),
        collisions: collisions.clone(),
        controls: calibration.controls.len(),
        missing,
    };
    let mut outcome = verdict::decide(&inputs);
    if let (Verdict::Derived | Verdict::Distilled, Some(extra)) = (
        outcome.verdict,
        ours.tokenizer
            .as_ref()
            .and_then(tokenizer::hidden_chat_tokens),
    ) {
        outcome.reasons.push(format!(
            "each chat prompt costs the suspect {} tokens {} than the reference's own template makes it: text the operator adds or leaves out that the scan cannot see (a system prompt, a wrapper around each message, a template of its own) moves every chat answer, so a copy served behind it can read {} here",
            extra.abs(),
            if extra > 0 { "more" } else { "fewer" },
            outcome.verdict.as_str()
        ));
    }
    if let Some((_, fit)) = &suspect_read {
        outcome.reasons.insert(
            0,
            format!(
                "the suspect's log-probabilities read as reported after a temperature of {:.2} (its gaps below the top token {:.2} times the reference's, median of {} gaps), as stacks that report the distribution they sample from give them: compared after reading them back at temperature one, as every control is",
                fit.temperature(),
                fit.factor,
                fit.gaps
            ),
        );
    }
    let form_prints: Vec<&Fingerprint> = calibration.forms.iter().map(|f| &f.fingerprint).collect();
    let seq_plan = sequential::plan_with_forms(
        reference,
        &form_prints,
        calibration.controls,
        &opts.sequential,
    );
    let q1 = sequential::q1_from_known_same(reference, calibration.known_same, &opts.sequential);
    let sequential_outcome = (!seq_plan.is_empty() && has_logprobs(suspect)).then(|| {
        sequential::run(
            reference,
            &form_prints,
            &seq_plan,
            q1,
            sequential::in_plan_order(suspect, &seq_plan),
            &opts.sequential,
        )
    });
    if let Some(seq) = &sequential_outcome {
        if seq.decision == SequentialDecision::Identical {
            outcome = verdict::with_sequential(
                outcome,
                &inputs,
                ours.logits.as_ref().map(|l| &l.1),
                seq.e_against_unrelated,
                seq.queries,
            );
            if outcome.verdict != Verdict::Identical {
                // One answer per pair: an early stop would have said identical here, so
                // the report says why the whole probe set decides otherwise.
                let why = outcome
                    .reasons
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "see the signals below".to_string());
                outcome.reasons.insert(
                    0,
                    format!(
                        "the sequential test alone would have said identical after {} suspect \
                         queries (e-value {:.3e} against \"unrelated\"); the whole probe set \
                         decides {} instead: {why}",
                        seq.queries,
                        seq.e_against_unrelated,
                        outcome.verdict.as_str()
                    ),
                );
            }
        }
    }
    if reference.probe_set.hash != suspect.probe_set.hash {
        outcome.reasons.push(format!(
            "the fingerprints come from different probe sets ({} {} and {} {}): only probes with \
             the same id were compared",
            reference.probe_set.name,
            reference.probe_set.version,
            suspect.probe_set.name,
            suspect.probe_set.version
        ));
    }

    let used: Vec<&str> = {
        let mut used: Vec<&str> = inputs.text.iter().map(|(n, _)| n.as_str()).collect();
        if inputs.logits.is_some() {
            used.push(Signal::Logits.as_str());
        }
        if inputs.tokenizer.is_some() {
            used.push(Signal::Tokenizer.as_str());
        }
        used
    };
    let signals: Vec<SignalScore> = Signal::ALL
        .into_iter()
        .map(|name| {
            signal_score(
                name,
                ours.get(name),
                tests.get(&name),
                used.contains(&name.as_str()),
                opts.min_probes,
                || unavailable_reason(name, reference, suspect),
            )
        })
        .collect();

    let mut findings = findings(&ours, &controls);
    if let Some(fit) = &sampled_fit {
        let agreement = match &collisions {
            Some(c) => format!(
                "; its samples of one prompt agree, token by token, in {} of {} pairs compared where the reference's own would in {:.1} (z = {:.1})",
                c.observed, c.trials, c.expected, c.z
            ),
            None => "; too few samples of one prompt to count its agreement with itself".to_string(),
        };
        findings.push(Finding {
            name: "sampled tokens".to_string(),
            value: fit.distance,
            detail: format!(
                "the suspect samples whatever temperature it is asked for; read back by the reference, its {} tokens fit the reference's own distribution at temperature {:.2} (distance from uniform ranks {:.3}, Kolmogorov p = {:.2e}){agreement}",
                fit.tokens,
                fit.temperature,
                fit.distance,
                fit.p_value
            ),
            probes: Vec::new(),
        });
    }
    let evidence = evidence(&ours, &controls, outcome.verdict, opts.max_evidence);

    let lineages = lineage::count(&lineage::lineages(calibration.controls));
    let level = Level::of(calibration.controls.len(), opts.alpha);
    let mut calibration_note = match level {
        Level::None => "No control fingerprints: p-values come from documented default null \
                        distributions (pessimistic guesses), not from data. Add controls."
            .to_string(),
        Level::Few => format!(
            "Fewer than {} controls: an empirical p-value cannot reach alpha, so decisions use \
             a normal-theory prediction test on the control scores (fewer than two: the defaults).",
            (1.0 / opts.alpha).ceil() as usize - 1
        ),
        Level::Ok => "Empirical p-values against the controls.".to_string(),
    };
    if lineages < calibration.controls.len() {
        calibration_note.push_str(&format!(
            " The {} controls are {lineages} lineage(s) (variants of one model answer this \
             close to each other): each p-value counts them as independent models, which \
             overstates what variants of one model can tell. Add controls of other families.",
            calibration.controls.len()
        ));
    }

    Report {
        verdict: outcome.verdict,
        confidence: outcome.confidence,
        p_value: outcome.p_value,
        alpha: opts.alpha,
        reasons: outcome.reasons,
        signals,
        findings,
        evidence,
        queries: Queries {
            suspect: suspect.observations.len(),
            suspect_answered: suspect.observations.iter().filter(|o| o.is_ok()).count(),
            suspect_requests: suspect
                .observations
                .iter()
                .map(|o| u64::from(o.attempts))
                .sum(),
            reference: reference.observations.len(),
            sequential: sequential_outcome.as_ref().map(|s| s.queries),
        },
        calibration: level,
        controls: calibration.controls.len(),
        control_lineages: lineages,
        reference_limits: Vec::new(),
        known_same: calibration.known_same.len(),
        calibration_note,
        controls_origin: None,
        identical_band: band,
        weight_shift: inputs.shift.clone(),
        sequential: sequential_outcome,
        reference: model_ref(reference),
        suspect: model_ref(suspect),
    }
}

/// Signal `name`'s score against the controls' scores of the same signal.
fn against_controls(
    name: Signal,
    outcome: &SignalOutcome,
    control_scores: &[f64],
    opts: &CompareOptions,
) -> NullTest {
    // Standard error from the 95% bootstrap interval (± 1.96 se).
    let se = outcome
        .interval
        .map(|(lo, hi)| (hi - lo) / 3.92)
        .unwrap_or(0.0);
    null_test_floored(
        outcome.score,
        se,
        control_scores,
        opts.alpha,
        default_null(name),
        signal::spread_floor(name),
    )
}

/// The suspect's logits against one quantized form of the reference, tested like the
/// reference's own: against the controls' similarity to the same form. The shift test
/// runs only for a form whose logits lie inside the band: elsewhere it cannot matter.
fn form_logits(
    form: &QuantizedForm,
    suspect: &Fingerprint,
    controls: &[Fingerprint],
    band: &IdenticalBand,
    logit_form: Option<crate::probes::ProbeForm>,
    opts: &CompareOptions,
) -> Option<(verdict::FormLogits, Option<FormScores>)> {
    let against = |other: &Fingerprint, boot| {
        let all = form_pairs(&form.fingerprint, other);
        logits::signal(&signal::of_form(&all, logit_form), boot)
    };
    let suspect_pairs = signal::of_form(&form_pairs(&form.fingerprint, suspect), logit_form);
    let (outcome, summary) = logits::signal(&suspect_pairs, Some(&opts.bootstrap))?;
    // Fewer probes than a test needs (an early stop): the summary still says whether the
    // suspect lies in the band of this form, and the p-value claims nothing.
    if outcome.n < opts.min_probes {
        let untested = verdict::FormLogits {
            dtype: form.dtype.clone(),
            summary,
            p: 1.0,
            shift: None,
        };
        return Some((untested, None));
    }
    let shift = band
        .contains(&summary)
        .then(|| shift::test(&suspect_pairs, opts.min_probes))
        .flatten();
    // Per control, in the controls' order (`None` where it could not be compared), for
    // [`nearest_form_test`].
    let per_control: Vec<Option<f64>> = controls
        .iter()
        .map(|c| against(c, None).map(|(o, _)| o.score))
        .collect();
    let control_scores: Vec<f64> = per_control.iter().flatten().copied().collect();
    let test = against_controls(Signal::Logits, &outcome, &control_scores, opts);
    let tested = verdict::FormLogits {
        dtype: form.dtype.clone(),
        summary,
        p: test.p,
        shift,
    };
    let scores = FormScores {
        suspect: outcome.score,
        controls: per_control,
    };
    Some((tested, Some(scores)))
}

/// A form's logit probes paired with another fingerprint's answers asked the same way:
/// forms are fingerprinted on raw probes only, and a chat-only suspect's templated answer
/// to the same probe says nothing about a raw prompt's next tokens.
fn form_pairs<'a>(form: &'a Fingerprint, other: &'a Fingerprint) -> Vec<Pair<'a>> {
    pairs(form, other, ProbeKind::Logit)
        .into_iter()
        .filter(|p| p.reference.request.prompt.is_raw() == p.suspect.request.prompt.is_raw())
        .collect()
}

/// The suspect's greedy-token share on one form's next-token lists (`None` below
/// `min_probes`), and each control's share on the same prompt form (raw or chat) as the
/// suspect's, for [`nearest_form_test`].
fn form_tokens(
    form: &QuantizedForm,
    suspect: &Fingerprint,
    controls: &[Fingerprint],
    opts: &CompareOptions,
) -> Option<((String, greedy_path::PathShare), Option<FormScores>)> {
    let walked = greedy_path::share(&form_pairs(&form.fingerprint, suspect))?;
    if walked.probes < opts.min_probes {
        return None;
    }
    let per_control: Vec<Option<f64>> = controls
        .iter()
        .map(|c| {
            let same_form: Vec<Pair> = form_pairs(&form.fingerprint, c)
                .into_iter()
                .filter(|p| p.suspect.request.prompt.is_raw() == walked.raw)
                .collect();
            greedy_path::share(&same_form)
                .filter(|w| w.probes >= opts.min_probes)
                .map(|w| w.share)
        })
        .collect();
    let scores = FormScores {
        suspect: walked.share,
        controls: per_control,
    };
    Some(((form.dtype.clone(), walked), Some(scores)))
}

/// The suspect's and each control's similarity to one quantized form (logits, or greedy
/// tokens without log-probabilities).
struct FormScores {
    suspect: f64,
    controls: Vec<Option<f64>>,
}

/// One test for all the forms at once: the suspect's similarity to its nearest form
/// against each control's similarity to *its* nearest form. Under "unrelated" the suspect
/// is one more control, so the maximum needs no correction for the forms tried; Bonferroni
/// over a dozen forms that are nearly the same model asked three built-in controls for
/// more than a two-degrees-of-freedom test can give (Gemma's llama-quantize Q2_K copy read
/// `distilled`). `None` unless every form was tested against every control.
fn nearest_form_test<'a>(
    forms: impl IntoIterator<Item = Option<&'a FormScores>>,
    signal: Signal,
    opts: &CompareOptions,
) -> Option<f64> {
    let scores: Vec<&FormScores> = forms.into_iter().collect::<Option<_>>()?;
    let first = scores.first()?;
    let suspect = scores
        .iter()
        .map(|s| s.suspect)
        .fold(f64::NEG_INFINITY, f64::max);
    let controls: Vec<f64> = (0..first.controls.len())
        .map(|c| {
            scores
                .iter()
                .map(|s| s.controls.get(c).copied().flatten())
                .collect::<Option<Vec<f64>>>()
                .map(|v| v.into_iter().fold(f64::NEG_INFINITY, f64::max))
        })
        .collect::<Option<_>>()?;
    if controls.is_empty() {
        return None;
    }
    let test = null_test_floored(
        suspect,
        0.0,
        &controls,
        opts.alpha,
        default_null(signal),
        signal::spread_floor(signal),
    );
    Some(test.p)
}

/// Whether any logit probe came back with alternatives (from the observations, since
/// hand-written fingerprints may leave the features out).
pub(super) fn has_logprobs(fp: &Fingerprint) -> bool {
    fp.answered(ProbeKind::Logit).any(Observation::has_logprobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(suspect: f64, controls: &[Option<f64>]) -> (verdict::FormLogits, Option<FormScores>) {
        let summary = LogitSummary {
            probes: 60,
            positions: 120,
            similarity: suspect,
            jsd: 0.01,
            top1: 0.9,
            jaccard: 0.8,
            spearman: None,
            mean_abs_dlogprob: Some(0.1),
        };
        let tested = verdict::FormLogits {
            dtype: "q4_0".into(),
            summary,
            p: 0.5,
            shift: None,
        };
        let scores = FormScores {
            suspect,
            controls: controls.to_vec(),
        };
        (tested, Some(scores))
    }

    #[test]
    fn the_nearest_form_is_tested_against_each_controls_nearest() {
        let opts = CompareOptions::default();
        // Three controls near 0.61 to every form, the suspect at 0.99 to one of them: far
        // from unrelated with one test, where Bonferroni over twelve forms could not be.
        let controls = [Some(0.61), Some(0.62), Some(0.60)];
        let mut forms: Vec<_> = (0..11).map(|_| form(0.74, &controls)).collect();
        forms.push(form(0.99, &controls));
        let p = nearest_form_test(forms.iter().map(|(_, s)| s.as_ref()), Signal::Logits, &opts)
            .expect("every form tested");
        assert!(p <= opts.alpha, "{p}");
        // A control as close to some form as the suspect is to its nearest: nothing shown.
        forms.push(form(0.70, &[Some(0.99), Some(0.62), Some(0.60)]));
        let p = nearest_form_test(forms.iter().map(|(_, s)| s.as_ref()), Signal::Logits, &opts)
            .expect("every form tested");
        assert!(p > opts.alpha, "{p}");
        // A form some control could not be compared with, or an untested form: no test.
        forms.push(form(0.70, &[None, Some(0.62), Some(0.60)]));
        assert_eq!(
            nearest_form_test(forms.iter().map(|(_, s)| s.as_ref()), Signal::Logits, &opts),
            None
        );
        let untested = (forms[0].0.clone(), None);
        assert_eq!(
            nearest_form_test([untested.1.as_ref()], Signal::Logits, &opts),
            None
        );
    }
}
