//! The sequential phase: the suspect asked the probes that tell most, one at a time,
//! until the sequential test decides or its budget is spent (`compare::sequential`).
//! Logit probes with log-probabilities; greedy answers read back by the reference
//! without. Only an `identical` decision, confirmed by the comparison of what was asked,
//! stops a scan.

use super::judge;
use crate::compare::sequential::{self, SequentialDecision, SequentialTest};
use crate::compare::{self, CompareOptions, Report, Verdict};
use crate::fingerprint::{Fingerprint, ModelDescription, Observation, ProbeSetRef};
use crate::probes::{Probe, ProbeForm, ProbeSet};
use crate::read_back;

/// Where the sequential phase gets an answer: one already kept from an earlier attempt,
/// or a new ask that is kept before it is used (so a resumed scan never asks twice).
#[async_trait::async_trait]
pub trait AnswerSource: Send {
    type Error: Send;
    async fn answer(&mut self, probe: &Probe) -> Result<Observation, Self::Error>;
}

/// What the sequential phase holds the suspect's answers against: the reference, the
/// controls (for P(match | unrelated)) and the reference's quantized forms.
#[derive(Clone, Copy)]
pub struct Against<'a> {
    pub reference: &'a Fingerprint,
    pub controls: &'a [Fingerprint],
    pub forms: &'a [compare::QuantizedForm],
}

/// Asks the planned logit probes one at a time until the sequential test decides or its
/// budget is spent. Returns the partial fingerprint and its report when the verdict is
/// `identical`; `None` when the scan must go on (the answers asked so far are kept by the
/// source, and the rest of the scan reuses them).
pub async fn sequential_phase<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    text: Option<TextEarlyStop<'_>>,
) -> Result<Option<(Fingerprint, Report)>, S::Error> {
    let Against {
        reference,
        controls,
        forms,
    } = against;
    if suspect.capabilities.max_top_logprobs == 0 {
        return match text {
            Some(text) => text_sequential_phase(against, set, suspect, opts, source, text).await,
            None => {
                tracing::info!("the suspect gives no log-probabilities: no early stop");
                Ok(None)
            }
        };
    }
    let seq = &opts.sequential;
    // A copy served quantized matches its form rather than the reference as given.
    let form_prints: Vec<&Fingerprint> = forms.iter().map(|f| &f.fingerprint).collect();
    let plan = sequential::plan_with_forms(reference, &form_prints, controls, seq);
    let mut test =
        SequentialTest::new(reference, &plan, seq.default_q1, seq).with_forms(&form_prints);
    let mut asked = Vec::new();
    for planned in &plan {
        if test.decided() {
            break;
        }
        let Some(probe) = set.probes.iter().find(|p| p.id == planned.probe_id) else {
            continue;
        };
        // A suspect without raw completions is never sent a raw probe: its refusal would
        // spend the test's budget on an answer that places no bet.
        if probe.form == ProbeForm::Raw && !suspect.capabilities.raw_completion {
            continue;
        }
        let obs = source.answer(probe).await?;
        test.update(&obs);
        asked.push(obs);
    }
    let outcome = test.outcome();
    tracing::info!(
        decision = ?outcome.decision,
        queries = outcome.queries,
        e_against_unrelated = outcome.e_against_unrelated,
        e_against_identical = outcome.e_against_identical,
        "sequential phase"
    );
    if outcome.decision != SequentialDecision::Identical {
        return Ok(None);
    }
    let print = Fingerprint::new(suspect, ProbeSetRef::of(set), asked);
    let report = judge(against, &print, None, opts).await;
    Ok((report.verdict == Verdict::Identical).then_some((print, report)))
}

/// What the sequential phase needs to stop early on a suspect without log-probabilities:
/// the reference's model thread, to read each greedy answer back, and the controls'
/// answers read back by it (one list per control, in the order of the controls).
#[derive(Clone, Copy)]
pub struct TextEarlyStop<'a> {
    pub reference: &'a crate::model::ModelHandle,
    pub controls: &'a [Vec<crate::compare::likelihood::AnswerScore>],
}

/// The sequential test on text: each greedy answer "matches" when the reference, reading it
/// back, finds its own top choice (up to engine noise) at the greedy-token band's share of
/// positions; raw completions when the suspect offers them (no system prompt reaches
/// them), chat answers otherwise. Stops only where the comparison of what was asked, with
/// the read-back, says `identical` too.
async fn text_sequential_phase<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    text: TextEarlyStop<'_>,
) -> Result<Option<(Fingerprint, Report)>, S::Error> {
    let raw = suspect.capabilities.raw_completion;
    let band = opts
        .band
        .clone()
        .unwrap_or_else(crate::compare::IdenticalBand::default_band);
    let share = if raw {
        band.min_greedy_top1
    } else {
        band.min_greedy_top1_chat
    };
    let seq = &opts.sequential;
    let Against {
        reference,
        controls,
        forms,
    } = against;
    // Logit answers are walked along the reference's own greedy paths and its forms'.
    let paths: Vec<&Fingerprint> = std::iter::once(reference)
        .chain(forms.iter().map(|f| &f.fingerprint))
        .collect();
    let matching = sequential::TextMatch {
        band: share,
        forms: &paths,
    };
    let plan = sequential::text_plan(
        reference,
        sequential::TextControls {
            prints: controls,
            scores: text.controls,
        },
        &paths,
        raw,
        share,
        seq,
    );
    let mut test = SequentialTest::new(reference, &plan, seq.default_q1, seq);
    let mut asked = Vec::new();
    let mut scores = Vec::new();
    for planned in &plan {
        // A decision to stop still needs the comparison's fewest probes behind it.
        let enough = asked.len() >= opts.min_probes;
        if test.decided() && (enough || test.outcome().decision != SequentialDecision::Identical) {
            break;
        }
        let Some(probe) = set.probes.iter().find(|p| p.id == planned.probe_id) else {
            continue;
        };
        let obs = source.answer(probe).await?;
        let one = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), vec![obs.clone()]);
        // Read in the context the answers so far give away (a hidden system prompt that a
        // small model repeats), as the full comparison reads them.
        let so_far = Fingerprint::new(
            suspect.clone(),
            ProbeSetRef::of(set),
            asked.iter().cloned().chain([obs.clone()]).collect(),
        );
        let read = match read_back::read_back_in_context(text.reference, &one, &so_far).await {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "reading an answer back failed: no early stop");
                return Ok(None);
            }
        };
        let matched = matching.judge(read.iter().find(|r| r.raw == raw), Some(&obs));
        test.update_matched(&obs.probe_id, matched);
        scores.extend(read);
        asked.push(obs);
    }
    let outcome = test.outcome();
    tracing::info!(
        decision = ?outcome.decision,
        queries = outcome.queries,
        e_against_unrelated = outcome.e_against_unrelated,
        "sequential phase on text"
    );
    if outcome.decision != SequentialDecision::Identical {
        return Ok(None);
    }
    let print = Fingerprint::new(suspect, ProbeSetRef::of(set), asked);
    let likelihood = compare::Likelihoods {
        suspect: &scores,
        controls: text.controls,
    };
    let mut report = judge(against, &print, Some(likelihood), opts).await;
    if report.verdict != Verdict::Identical {
        tracing::info!(
            verdict = report.verdict.as_str(),
            reasons = ?report.reasons,
            "the answers asked so far do not decide identical: asking the rest"
        );
        return Ok(None);
    }
    report.reasons.push(format!(
        "sequential test on text: {} of {} greedy {} answers read back as the reference's own \
         choice or followed its greedy path or one of its {} quantized forms' (logit probes), \
         e-value {:.3e} against \"unrelated\" (p <= {:.2e}); stopped without asking \
         the tokenizer probes or the rest of the set",
        outcome
            .steps
            .iter()
            .filter(|s| s.matched == Some(true))
            .count(),
        outcome.queries,
        if raw { "raw" } else { "chat" },
        forms.len(),
        outcome.e_against_unrelated,
        1.0 / outcome.e_against_unrelated.max(1.0)
    ));
    report.queries.sequential = Some(outcome.queries);
    report.sequential = Some(outcome);
    Ok(Some((print, report)))
}
