//! Every signal of one (reference, other) pair, computed together, and what is read off
//! the set of them: the distillation signals, the vocabulary contrast, the findings.

use super::bootstrap::BootstrapOptions;
use super::equality::{self, EqualityOptions, MmdTest};
use super::logits::{self, LogitSummary};
use super::refusal::{self, SafeguardsStripped};
use super::report::Finding;
use super::shift::{self, ShiftTest};
use super::signal::{of_form, pairs, sample_groups, Signal, SignalOutcome};
use super::{contrast, identity, lexicon, likelihood, stats, style, tokenizer, CompareOptions};
use crate::fingerprint::Fingerprint;
use crate::probes::{ProbeForm, ProbeKind, RefusalLexicon};

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
pub(super) fn distillation_signals(ours: &Signals, controls: &[Signals]) -> [Signal; 4] {
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

/// All signals of one (reference, other) pair.
pub(super) struct Signals {
    pub(super) logits: Option<(SignalOutcome, LogitSummary)>,
    pub(super) greedy: Option<SignalOutcome>,
    pub(super) tokenizer: Option<SignalOutcome>,
    pub(super) refusal: Option<SignalOutcome>,
    pub(super) identity: Option<SignalOutcome>,
    pub(super) style: Option<SignalOutcome>,
    pub(super) lexicon: Option<SignalOutcome>,
    /// Set by the caller, which has the other controls (`contrast`).
    pub(super) contrast: Option<SignalOutcome>,
    pub(super) likelihood: Option<SignalOutcome>,
    pub(super) greedy_tokens: Option<SignalOutcome>,
    pub(super) equality: Option<(SignalOutcome, MmdTest)>,
    pub(super) stripped: Option<SafeguardsStripped>,
    /// Only with `full`: the verdict reads it for the suspect alone.
    pub(super) shift: Option<ShiftTest>,
}

impl Signals {
    /// `logit_form` says which logit probes the logit signals read (`signal::logit_form`).
    /// `full` adds bootstrap intervals, the permutation test and the shift test (not needed
    /// for controls).
    pub(super) fn compute(
        reference: &Fingerprint,
        other: &Fingerprint,
        logit_form: Option<ProbeForm>,
        read_back: Option<&[likelihood::AnswerScore]>,
        opts: &CompareOptions,
        lexicon: &RefusalLexicon,
        full: bool,
    ) -> Signals {
        let boot = full.then_some(&opts.bootstrap);
        let logit_pairs = pairs(reference, other, ProbeKind::Logit);
        let weight_pairs = of_form(&logit_pairs, logit_form);
        let refusal_pairs = pairs(reference, other, ProbeKind::Refusal);
        let style_pairs = pairs(reference, other, ProbeKind::Style);
        let groups = sample_groups(reference, other);
        let equality_opts = EqualityOptions {
            permutations: if full { opts.equality.permutations } else { 0 },
            ..opts.equality
        };
        Signals {
            logits: logits::signal(&weight_pairs, boot),
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
                .then(|| shift::test(&weight_pairs, opts.min_probes))
                .flatten(),
        }
    }

    pub(super) fn get(&self, name: Signal) -> Option<&SignalOutcome> {
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

/// The contrast signal for the suspect and for each control, every one scored against
/// all the others (`contrast::Contrast`).
pub(super) fn contrast_signals(
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

pub(super) fn findings(ours: &Signals, controls: &[Signals]) -> Vec<Finding> {
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
