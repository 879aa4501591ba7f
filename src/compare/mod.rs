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
pub mod identity;
pub mod lexicon;
pub mod likelihood;
pub mod logits;
pub mod refusal;
pub mod report;
pub mod sequential;
pub mod shift;
pub mod stats;
pub mod style;
pub mod tokenizer;
pub mod verdict;

use std::collections::{BTreeMap, HashMap};

use crate::fingerprint::{Fingerprint, Observation};
use crate::probes::{ProbeKind, RefusalLexicon};

use bootstrap::BootstrapOptions;
use calibration::{null_test, DefaultNull, Level, NullTest};
use equality::{EqualityOptions, MmdTest, SampleGroup};
use logits::LogitSummary;
use refusal::SafeguardsStripped;
use shift::ShiftTest;

pub use report::{to_markdown, EvidenceItem, Finding, ModelRef, Queries, Report, SignalScore};
pub use sequential::{SequentialDecision, SequentialOptions, SequentialOutcome};
pub use verdict::{IdenticalBand, Verdict};

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

/// Signals that can show a student trained on the reference's outputs. The equality test is
/// not one of them: failing to tell two sample distributions apart on a few prompts is weak
/// evidence, and a student's samples differ from its teacher's by design; it serves the
/// identical/not-identical question only. Identity is left out too: a persona system
/// prompt sets it at will.
/// The vocabulary counts once: as the contrast with the controls when at least two
/// controls were scored on it (with fewer, the suspect's contrast would be judged against
/// a guessed default alone), else as the pooled similarity (`lexicon`). Both read the same
/// words, and the similarity mostly measures fluency (on the zoo it missed every student;
/// the contrast caught them all), while each extra Bonferroni term weakens the others.
/// The likelihood signal is reported but left out until it is shown to catch a student:
/// on the zoo it says nothing (p 0.69 to 0.99 for the students).
fn distillation_signals(ours: &Signals, controls: &[Signals]) -> [Signal; 4] {
    let scored_controls = controls.iter().filter(|c| c.contrast.is_some()).count();
    let vocabulary = if ours.contrast.is_some() && scored_controls >= 2 {
        Signal::Contrast
    } else {
        Signal::Lexicon
    };
    [
        Signal::GreedyText,
        Signal::Style,
        vocabulary,
        Signal::Refusal,
    ]
}

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

/// All signals of one (reference, other) pair.
struct Signals {
    logits: Option<(SignalOutcome, LogitSummary)>,
    greedy: Option<SignalOutcome>,
    tokenizer: Option<SignalOutcome>,
    refusal: Option<SignalOutcome>,
    identity: Option<SignalOutcome>,
    style: Option<SignalOutcome>,
    lexicon: Option<SignalOutcome>,
    /// Set by the caller, which has the other controls (`contrast`).
    contrast: Option<SignalOutcome>,
    likelihood: Option<SignalOutcome>,
    greedy_tokens: Option<SignalOutcome>,
    equality: Option<(SignalOutcome, MmdTest)>,
    stripped: Option<SafeguardsStripped>,
    /// Only with `full`: the verdict reads it for the suspect alone.
    shift: Option<ShiftTest>,
}

impl Signals {
    /// `full` adds bootstrap intervals, the permutation test and the shift test (not needed
    /// for controls).
    fn compute(
        reference: &Fingerprint,
        other: &Fingerprint,
        read_back: Option<&[likelihood::AnswerScore]>,
        opts: &CompareOptions,
        lexicon: &RefusalLexicon,
        full: bool,
    ) -> Signals {
        let boot = full.then_some(&opts.bootstrap);
        let logit_pairs = pairs(reference, other, ProbeKind::Logit);
        let refusal_pairs = pairs(reference, other, ProbeKind::Refusal);
        let style_pairs = pairs(reference, other, ProbeKind::Style);
        let groups = sample_groups(reference, other);
        let equality_opts = EqualityOptions {
            permutations: if full { opts.equality.permutations } else { 0 },
            ..opts.equality
        };
        Signals {
            logits: logits::signal(&logit_pairs, boot),
            greedy: logits::greedy_signal(&logit_pairs, boot),
            tokenizer: tokenizer::signal(&pairs(reference, other, ProbeKind::Tokenizer), boot),
            refusal: refusal::signal(&refusal_pairs, lexicon, boot),
            identity: identity::signal(&pairs(reference, other, ProbeKind::Identity), boot),
            style: style::signal(&style_pairs, boot),
            lexicon: lexicon::signal(
                &lexicon::items(
                    logit_pairs.iter().chain(&style_pairs).chain(&refusal_pairs),
                    &groups,
                ),
                boot,
            ),
            contrast: None,
            likelihood: read_back.and_then(|scores| likelihood::signal(scores, boot)),
            greedy_tokens: read_back
                .and_then(|scores| likelihood::greedy_tokens_signal(scores, boot)),
            equality: equality::signal(&groups, &equality_opts),
            stripped: refusal::safeguards_stripped(&refusal::labelled(&refusal_pairs, lexicon)),
            shift: full
                .then(|| shift::test(&logit_pairs, opts.min_probes))
                .flatten(),
        }
    }

    fn get(&self, name: Signal) -> Option<&SignalOutcome> {
        match name {
            Signal::Logits => self.logits.as_ref().map(|l| &l.0),
            Signal::GreedyText => self.greedy.as_ref(),
            Signal::Tokenizer => self.tokenizer.as_ref(),
            Signal::Refusal => self.refusal.as_ref(),
            Signal::Identity => self.identity.as_ref(),
            Signal::Style => self.style.as_ref(),
            Signal::Lexicon => self.lexicon.as_ref(),
            Signal::Contrast => self.contrast.as_ref(),
            Signal::Likelihood => self.likelihood.as_ref(),
            Signal::GreedyTokens => self.greedy_tokens.as_ref(),
            Signal::Equality => self.equality.as_ref().map(|e| &e.0),
        }
    }
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

/// [`compare`] with known-same pairs as well, which set the identical band and the
/// sequential test's match rate.
pub fn compare_calibrated(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    calibration: &Calibration,
    opts: &CompareOptions,
) -> Report {
    let lexicon = opts
        .lexicon
        .as_ref()
        .unwrap_or_else(|| refusal::default_lexicon());
    let read_back = calibration.likelihood;
    let mut ours = Signals::compute(
        reference,
        suspect,
        read_back.map(|l| l.suspect),
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
            Signals::compute(reference, c, scores, opts, lexicon, false)
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
        .map(|k| Signals::compute(reference, k, None, opts, lexicon, false))
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
    let missing = missing_reasons(reference, suspect, &ours, &distillation, opts.min_probes);
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
        logits_chat_only: !suspect.model.capabilities.raw_completion,
        shift: ours.shift.clone(),
        forms: calibration
            .forms
            .iter()
            .filter_map(|f| form_logits(f, suspect, calibration.controls, &band, opts))
            .collect(),
        missing,
    };
    let mut outcome = verdict::decide(&inputs);
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

    let findings = findings(&ours, &controls);
    let evidence = evidence(&ours, &controls, outcome.verdict, opts.max_evidence);

    let level = Level::of(calibration.controls.len(), opts.alpha);
    let calibration_note = match level {
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

/// The contrast signal for the suspect and for each control, every one scored against
/// all the others (`contrast::Contrast`).
fn contrast_signals(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    controls: &[Fingerprint],
    boot: &BootstrapOptions,
) -> (Option<SignalOutcome>, Vec<Option<SignalOutcome>>) {
    let reference_pool = contrast::Pool::of(reference);
    let control_pools: Vec<contrast::Pool> = controls.iter().map(contrast::Pool::of).collect();
    let suspect_pool = contrast::Pool::of(suspect);
    let contrast = contrast::Contrast::new(
        &reference_pool,
        control_pools.iter().chain([&suspect_pool]).collect(),
    );
    let ours = contrast.left_out(control_pools.len(), Some(boot));
    let theirs = (0..control_pools.len())
        .map(|i| contrast.left_out(i, None))
        .collect();
    (ours, theirs)
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
    null_test(
        outcome.score,
        se,
        control_scores,
        opts.alpha,
        default_null(name),
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
    opts: &CompareOptions,
) -> Option<verdict::FormLogits> {
    let against = |other: &Fingerprint, boot| {
        logits::signal(&pairs(&form.fingerprint, other, ProbeKind::Logit), boot)
    };
    let suspect_pairs = pairs(&form.fingerprint, suspect, ProbeKind::Logit);
    let (outcome, summary) = logits::signal(&suspect_pairs, Some(&opts.bootstrap))?;
    // Fewer probes than a test needs (an early stop): the summary still says whether the
    // suspect lies in the band of this form, and the p-value claims nothing.
    if outcome.n < opts.min_probes {
        return Some(verdict::FormLogits {
            dtype: form.dtype.clone(),
            summary,
            p: 1.0,
            shift: None,
        });
    }
    let shift = band
        .contains(&summary)
        .then(|| shift::test(&suspect_pairs, opts.min_probes))
        .flatten();
    let control_scores: Vec<f64> = controls
        .iter()
        .filter_map(|c| against(c, None).map(|(o, _)| o.score))
        .collect();
    let test = against_controls(Signal::Logits, &outcome, &control_scores, opts);
    Some(verdict::FormLogits {
        dtype: form.dtype.clone(),
        summary,
        p: test.p,
        shift,
    })
}

/// Whether any logit probe came back with alternatives (from the observations, since
/// hand-written fingerprints may leave the features out).
fn has_logprobs(fp: &Fingerprint) -> bool {
    fp.answered(ProbeKind::Logit).any(Observation::has_logprobs)
}

fn model_ref(fp: &Fingerprint) -> ModelRef {
    ModelRef {
        describe: fp.model.describe.clone(),
        probe_set: fp.probe_set.clone(),
        created_at: fp.created_at.clone(),
        capabilities: Some(fp.model.capabilities.clone()),
    }
}

/// Why a signal could not be computed.
fn unavailable_reason(name: Signal, reference: &Fingerprint, suspect: &Fingerprint) -> String {
    if name == Signal::Likelihood || name == Signal::GreedyTokens {
        return "not available: the suspect's answers were not read back by a local reference \
                model"
            .to_string();
    }
    if name == Signal::Contrast {
        return "not available: it needs control fingerprints and answers that use the \
                reference's words (the pooled vocabulary similarity counts instead)"
            .to_string();
    }
    if name == Signal::Refusal {
        let n = pairs(reference, suspect, ProbeKind::Refusal).len();
        if n > 0 {
            // Cohen's kappa is 0/0 then; an agreement of 1 would say nothing either, since
            // any model that always complies (or always refuses) would get it.
            return format!(
                "not informative: both sides gave all {n} refusal probes answered by both \
                 the same label"
            );
        }
    }
    "not available: no probes of this kind answered by both".to_string()
}

fn signal_score(
    name: Signal,
    outcome: Option<&SignalOutcome>,
    test: Option<&NullTest>,
    used: bool,
    min_probes: usize,
    unavailable: impl FnOnce() -> String,
) -> SignalScore {
    let Some(outcome) = outcome else {
        return SignalScore {
            name: name.to_string(),
            score: None,
            interval: None,
            p_value: None,
            p_empirical: None,
            method: None,
            control_mean: None,
            null_centre: None,
            null_spread: None,
            n: 0,
            used_in_verdict: false,
            detail: unavailable(),
            extra: BTreeMap::new(),
        };
    };
    let mut detail = outcome.detail.clone();
    if outcome.n < min_probes {
        detail.push_str(&format!(" (fewer than {min_probes} probes: not used)"));
    }
    if name == Signal::Identity {
        detail.push_str(" (evidence only: a system prompt can set it)");
    }
    SignalScore {
        name: name.to_string(),
        score: Some(outcome.score),
        interval: outcome.interval,
        p_value: test.map(|t| t.p),
        p_empirical: test.and_then(|t| t.empirical),
        method: test.map(|t| t.method),
        control_mean: test.and_then(|t| t.control_mean),
        null_centre: test.and_then(|t| t.null_centre),
        null_spread: test.and_then(|t| t.null_spread),
        n: outcome.n,
        used_in_verdict: used,
        detail,
        extra: outcome.extra.clone(),
    }
}

/// What was missing, in words, for an inconclusive verdict.
fn missing_reasons(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    ours: &Signals,
    distillation: &[Signal],
    min_probes: usize,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if !has_logprobs(reference) {
        reasons.push("the reference has no log-probabilities".to_string());
    }
    if !has_logprobs(suspect) {
        reasons.push("the suspect returned no log-probabilities".to_string());
    }
    let asked = suspect.observations.len();
    let answered = suspect.observations.iter().filter(|o| o.is_ok()).count();
    if answered < asked {
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for o in &suspect.observations {
            if let Some(err) = &o.error {
                *errors
                    .entry(crate::fingerprint::error_kind(err))
                    .or_insert(0) += 1;
            }
        }
        let listed = errors
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        reasons.push(format!(
            "the suspect answered {answered} of {asked} asks (errors: {listed})"
        ));
    }
    for name in distillation
        .iter()
        .copied()
        .chain([Signal::Logits, Signal::Tokenizer])
    {
        let n = ours.get(name).map(|o| o.n).unwrap_or(0);
        if ours.get(name).is_none() && name == Signal::Refusal {
            reasons.push(format!(
                "{name}: {}",
                unavailable_reason(name, reference, suspect)
            ));
        } else if n < min_probes {
            reasons.push(format!(
                "{name}: {n} probes answered by both (need {min_probes})"
            ));
        }
    }
    reasons
}

fn findings(ours: &Signals, controls: &[Signals]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(stripped) = &ours.stripped {
        let control_shares: Vec<f64> = controls
            .iter()
            .filter_map(|c| c.stripped.as_ref().map(|s| s.share))
            .collect();
        let controls_text = match stats::mean(&control_shares) {
            Some(m) => format!(" Controls: {:.0}% on average.", m * 100.0),
            None => String::new(),
        };
        out.push(Finding {
            name: "safeguards_stripped".to_string(),
            value: stripped.share,
            detail: format!(
                "The suspect complies with {} of the {} requests the reference refuses.{controls_text}",
                stripped.suspect_complied, stripped.reference_refusals
            ),
            probes: stripped.probes.clone(),
        });
    }
    out
}

/// The probes that weighed most: per signal (in report order, so logits come first), the
/// few probes furthest from the controls (or the default null), closest first; for an
/// unrelated verdict the most different probes instead. Scores of different signals are
/// on different scales, so probes are ranked within a signal, not across.
fn evidence(
    ours: &Signals,
    controls: &[Signals],
    verdict: Verdict,
    max: usize,
) -> Vec<EvidenceItem> {
    const PER_SIGNAL: usize = 2;
    let related = matches!(
        verdict,
        Verdict::Identical | Verdict::Derived | Verdict::Distilled
    );
    let mut items = Vec::new();
    for name in Signal::ALL {
        let Some(outcome) = ours.get(name) else {
            continue;
        };
        // Mean control score per probe.
        let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
        for c in controls {
            for p in c
                .get(name)
                .map(|o| o.per_probe.as_slice())
                .unwrap_or_default()
            {
                let e = sums.entry(p.probe_id.as_str()).or_insert((0.0, 0));
                e.0 += p.score;
                e.1 += 1;
            }
        }
        let fallback = default_null(name).mean;
        let mut scored: Vec<(f64, &ProbeScore, Option<f64>)> = outcome
            .per_probe
            .iter()
            .map(|p| {
                let control = sums.get(p.probe_id.as_str()).map(|(s, n)| s / *n as f64);
                (p.score - control.unwrap_or(fallback), p, control)
            })
            .collect();
        scored.sort_by(|a, b| {
            let order = if related {
                b.0.total_cmp(&a.0)
            } else {
                a.0.total_cmp(&b.0)
            };
            order.then_with(|| a.1.probe_id.cmp(&b.1.probe_id))
        });
        for (weight, p, control) in scored.into_iter().take(PER_SIGNAL) {
            let baseline = match control {
                Some(c) => format!("controls {c:.2}"),
                None => format!("default null {fallback:.2}"),
            };
            items.push(EvidenceItem {
                probe_id: p.probe_id.clone(),
                kind: p.kind,
                signal: name.to_string(),
                reference_text: p.reference_text.clone(),
                suspect_text: p.suspect_text.clone(),
                weight,
                why: format!("{}; score {:.2} vs {baseline}", p.note, p.score),
            });
        }
    }
    // Refusals the suspect no longer makes are shown whatever the verdict.
    if let (Some(stripped), Some(refusal)) = (&ours.stripped, &ours.refusal) {
        for id in stripped.probes.iter().take(PER_SIGNAL) {
            if let Some(p) = refusal.per_probe.iter().find(|p| &p.probe_id == id) {
                items.push(EvidenceItem {
                    probe_id: id.clone(),
                    kind: p.kind,
                    signal: "safeguards_stripped".to_string(),
                    reference_text: p.reference_text.clone(),
                    suspect_text: p.suspect_text.clone(),
                    weight: 0.0,
                    why: "the reference refuses, the suspect complies".to_string(),
                });
            }
        }
    }
    items.truncate(max);
    items
}
