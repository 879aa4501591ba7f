//! The sequential phase: the suspect asked the probes that tell most, one at a time,
//! until the sequential test decides or its budget is spent (`compare::sequential`).
//! Logit probes with log-probabilities; greedy answers read back by the reference
//! without. Only an `identical` decision, confirmed by the comparison of what was asked,
//! stops a scan.

use super::judge;
use crate::compare::likelihood::AnswerScore;
use crate::compare::sequential::{self, SequentialDecision, SequentialTest};
use crate::compare::{self, reported_temperature, CompareOptions, Report, Verdict};
use crate::fingerprint::{Fingerprint, ModelDescription, Observation, ProbeSetRef};
use crate::probes::{identity, Probe, ProbeForm, ProbeKind, ProbeSet};
use crate::read_back;

/// Where the sequential phase gets an answer (`sample` 0, or a later sample of a sampling
/// probe): one already kept from an earlier attempt, or a new ask that is kept before it
/// is used (so a resumed scan never asks twice).
#[async_trait::async_trait]
pub trait AnswerSource: Send {
    type Error: Send;
    async fn answer(&mut self, probe: &Probe, sample: usize) -> Result<Observation, Self::Error>;
}

/// How an early stop ended: `stopped` with the partial print and its report where the
/// verdict is `identical`; otherwise the scan goes on to the whole probe set, and
/// `unconfirmed` keeps a sequential test that said identical while the comparison of the
/// answers it had did not, so the full report can say that it was overturned and why.
#[derive(Debug, Default)]
pub struct EarlyStop {
    pub stopped: Option<(Fingerprint, Report)>,
    pub unconfirmed: Option<Unconfirmed>,
}

/// A sequential test's `identical` that the comparison of its answers did not confirm.
#[derive(Debug, Clone)]
pub struct Unconfirmed {
    pub outcome: sequential::SequentialOutcome,
    /// What the comparison of the answers asked by then read.
    pub partial_verdict: Verdict,
}

impl EarlyStop {
    pub fn go_on() -> Self {
        Self::default()
    }

    pub fn stop(print: Fingerprint, report: Report) -> Self {
        Self {
            stopped: Some((print, report)),
            unconfirmed: None,
        }
    }

    fn unconfirmed(outcome: sequential::SequentialOutcome, partial_verdict: Verdict) -> Self {
        Self {
            stopped: None,
            unconfirmed: Some(Unconfirmed {
                outcome,
                partial_verdict,
            }),
        }
    }

    /// `self`, or where it goes on with nothing to say, `earlier`'s unconfirmed test.
    fn or_unconfirmed(mut self, earlier: Option<Unconfirmed>) -> Self {
        if self.stopped.is_none() && self.unconfirmed.is_none() {
            self.unconfirmed = earlier;
        }
        self
    }
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
) -> Result<EarlyStop, S::Error> {
    let Against {
        reference,
        controls,
        forms,
    } = against;
    if suspect.capabilities.max_top_logprobs == 0 {
        return match text {
            Some(text) => {
                text_sequential_phase(against, set, suspect, opts, source, text, Vec::new()).await
            }
            None => {
                tracing::info!("the suspect gives no log-probabilities: no early stop");
                Ok(EarlyStop::go_on())
            }
        };
    }
    let seq = &opts.sequential;
    let mut asked = Vec::new();
    // A chat-only suspect's logit probes pass through any hidden system prompt, which
    // moves them all: where its identity answers or their token counts show one, its
    // answers are read back in that context instead, and the logit test is not run.
    if !suspect.capabilities.raw_completion {
        warm_up(set, source, &mut asked).await?;
        // A prompt the answers do not give away still costs tokens: where every warm-up
        // request costs the same number more than the reference's own template makes of
        // it, the logit test would spend its budget on probes that text moves.
        let counted = hidden_tokens_counted(reference, &asked);
        if shows_hidden_prompt(reference, &asked) || counted.is_some() {
            tracing::info!(
                hidden_tokens = counted,
                "the warm-up shows a hidden system prompt: testing on text"
            );
            return match text {
                Some(text) => {
                    text_sequential_phase(against, set, suspect, opts, source, text, asked).await
                }
                None => Ok(EarlyStop::go_on()),
            };
        }
        // Another stack's turn format (llama.cpp wraps a file without a template in
        // ChatML) moves every chat log-probability as a persona does, while the reference's
        // logit probes are its own template's: the answers are read back in that format.
        if let Some(early) = text {
            let warm = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
            // A stretched context alone is no reason: the logit probes have stretched forms.
            match read_back::choose_serving_on(early.reference, &warm).await {
                Ok(read_back::Serving {
                    format: Some(format),
                    ..
                }) => {
                    tracing::info!(
                        format = format.name(),
                        "the identity answers fit another turn format: testing on text"
                    );
                    return text_sequential_phase(
                        against, set, suspect, opts, source, early, asked,
                    )
                    .await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the warm-up back failed"),
            }
        }
    }
    // A copy served quantized matches its form rather than the reference as given.
    let form_prints: Vec<&Fingerprint> = forms.iter().map(|f| &f.fingerprint).collect();
    // A server that lists fewer alternatives than the controls (top-1 or top-5 of a
    // provider's API) is matched on what it lists (`sequential::matches`); the controls'
    // chance of a match is estimated from lists cut to the same length.
    let controls_cut = compare::lists_cut_to(controls, suspect.capabilities.max_top_logprobs);
    let controls = controls_cut.as_deref().unwrap_or(controls);
    let plan = sequential::plan_with_forms(reference, &form_prints, controls, seq);
    let fresh_test =
        || SequentialTest::new(reference, &plan, seq.default_q1, seq).with_forms(&form_prints);
    let mut test = fresh_test();
    // Log-probabilities reported after a temperature (`reported_temperature`): once the
    // answers so far show one, the test starts again on them read back at one.
    // A test that says "not identical" before the fit has seen enough gaps asks on, up to
    // FIT_BUDGET answers in all: short lists (llama.cpp's post-sampling probabilities list
    // what top-p kept, often two tokens) take a few more answers to show a temperature,
    // and every answer asked here is kept for the full set anyway.
    let mut scaled: Option<reported_temperature::TemperatureFit> = None;
    let mut settled = false;
    let mut queries = 0;
    for planned in &plan {
        let gave_up = test.outcome().decision != SequentialDecision::Identical;
        if test.decided() && (!gave_up || settled || queries >= FIT_BUDGET) {
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
        let obs = source.answer(probe, 0).await?;
        queries += 1;
        match &scaled {
            Some(fit) => {
                test.update(&reported_temperature::read_at_one(reference, &obs, fit));
            }
            None => {
                test.update(&obs);
            }
        }
        asked.push(obs);
        if !settled {
            let so_far = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
            settled = reported_temperature::fit(reference, &so_far).is_some_and(|fit| fit.enough());
            if let Some((read, fit)) = reported_temperature::undo(reference, &so_far) {
                tracing::info!(temperature = fit.temperature(), gaps = fit.gaps, "log-probabilities reported after a temperature: the sequential test starts again on them read at one");
                test = fresh_test();
                for o in &read.observations {
                    test.update(o);
                }
                scaled = Some(fit);
            }
        }
    }
    let outcome = test.outcome();
    tracing::info!(
        decision = ?outcome.decision,
        queries = outcome.queries,
        e_against_unrelated = outcome.e_against_unrelated,
        e_against_identical = outcome.e_against_identical,
        "sequential phase"
    );
    let print = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
    let report = judge(against, &print, None, opts).await;
    tracing::debug!(verdict = ?report.verdict, reasons = ?report.reasons, "the comparison of the sequential phase's answers");
    if outcome.decision == SequentialDecision::Identical && report.verdict == Verdict::Identical {
        return Ok(EarlyStop::stop(print, report));
    }
    let unconfirmed = (outcome.decision == SequentialDecision::Identical).then(|| Unconfirmed {
        outcome: outcome.clone(),
        partial_verdict: report.verdict,
    });
    if let Some(found) = ask_for_shift_tokens(
        against, set, &suspect, opts, source, &plan, &mut asked, report,
    )
    .await?
    {
        return Ok(EarlyStop::stop(found.0, found.1));
    }
    // A hidden system prompt that the identity answers did not show may still move the
    // logit probes: the chat answers are then read back in the context they give away.
    // Two tests on one suspect, so each runs at half the error rate.
    match text {
        Some(text) if !suspect.capabilities.raw_completion => {
            let mut halved = opts.clone();
            halved.sequential.alpha /= 2.0;
            text_sequential_phase(against, set, suspect, &halved, source, text, asked)
                .await
                .map(|early| early.or_unconfirmed(unconfirmed))
        }
        _ => Ok(EarlyStop::go_on().or_unconfirmed(unconfirmed)),
    }
}

/// Most answers the sequential phase asks to fit a reported temperature after its test
/// gave up (`sequential_phase`).
const FIT_BUDGET: usize = 12;

/// Logit probes asked between two looks at the shift test (`ask_for_shift_tokens`).
const SHIFT_BATCH: usize = 8;

/// A copy behind coarser arithmetic than engine noise (a 4-bit KV cache) loses the
/// sequential test's bets, yet lies far closer than controls; only the shift test, over
/// enough tokens, tells it from changed weights (`compare::verdict`). While the answers so
/// far leave that open, the planned logit probes are asked on, a batch at a time, until the
/// comparison of what was asked says `identical` or no longer waits. Whatever is asked here
/// the full scan would ask anyway, and reuses.
#[allow(clippy::too_many_arguments)]
async fn ask_for_shift_tokens<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: &ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    plan: &[sequential::PlannedProbe],
    asked: &mut Vec<Observation>,
    mut report: Report,
) -> Result<Option<(Fingerprint, Report)>, S::Error> {
    let mut left = plan
        .iter()
        .filter_map(|planned| set.probes.iter().find(|p| p.id == planned.probe_id))
        .filter(|p| p.form != ProbeForm::Raw || suspect.capabilities.raw_completion);
    while awaits_shift_tokens(&report) {
        let batch: Vec<&Probe> = left
            .by_ref()
            .filter(|p| {
                !asked
                    .iter()
                    .any(|o| o.probe_id == p.id && o.sample_index == 0)
            })
            .take(SHIFT_BATCH)
            .collect();
        if batch.is_empty() {
            break;
        }
        for probe in batch {
            asked.push(source.answer(probe, 0).await?);
        }
        let print = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
        report = judge(against, &print, None, opts).await;
        tracing::info!(
            asked = asked.len(),
            verdict = ?report.verdict,
            shift_tokens = report.weight_shift.as_ref().map(|s| s.tokens),
            "asking on for the shift test"
        );
        if report.verdict == Verdict::Identical {
            report.queries.sequential = Some(asked.len());
            return Ok(Some((print, report)));
        }
    }
    Ok(None)
}

/// [`compare::verdict::awaits_shift_tokens`] on a report of the answers so far.
fn awaits_shift_tokens(report: &Report) -> bool {
    let Some(logits) = report.signals.iter().find(|s| s.name == "logits") else {
        return false;
    };
    let Some(p) = logits.p_value else {
        return false;
    };
    compare::verdict::awaits_shift_tokens(
        p,
        logits.extra.get("mean_abs_dlogprob").copied(),
        report.weight_shift.as_ref(),
        &report.identical_band,
        report.alpha,
    )
}

/// Asks the first identity probes (up to [`IDENTITY_WARM_UP`] among `asked`), no bet on
/// them: a chat-only suspect's hidden system prompt shows in them, if anywhere.
pub(super) async fn warm_up<S: AnswerSource>(
    set: &ProbeSet,
    source: &mut S,
    asked: &mut Vec<Observation>,
) -> Result<(), S::Error> {
    let have = asked
        .iter()
        .filter(|o| o.kind == ProbeKind::Identity)
        .filter(|o| !identity::asks_for_system_prompt(&o.probe_id))
        .count();
    let wanted: Vec<&Probe> = set
        .probes
        .iter()
        .filter(|p| p.kind == ProbeKind::Identity && p.form == ProbeForm::Chat)
        .filter(|p| !identity::asks_for_system_prompt(&p.id))
        .filter(|p| !asked.iter().any(|o| o.probe_id == p.id))
        .take(IDENTITY_WARM_UP.saturating_sub(have))
        .collect();
    for probe in wanted {
        asked.push(source.answer(probe, 0).await?);
    }
    Ok(())
}

/// Whether the identity answers among `asked` show a system prompt the reference's own
/// identity answers do not ([`identity::shows_hidden_prompt`]).
fn shows_hidden_prompt(reference: &Fingerprint, asked: &[Observation]) -> bool {
    let texts = |obs| -> Vec<&str> {
        greedy_identity(obs, false)
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    };
    identity::shows_hidden_prompt(&texts(asked), &texts(&reference.observations))
        || identity::repeats_another_prompt(
            &greedy_identity(asked, true),
            &greedy_identity(&reference.observations, true),
        )
}

/// Tokens each of the suspect's chat answers among `asked` cost beyond what the
/// reference's own template makes of the same messages, where every one shows the same
/// number and it is text, not a merge (`compare::tokenizer::hidden_tokens_in_counts`).
fn hidden_tokens_counted(reference: &Fingerprint, asked: &[Observation]) -> Option<i64> {
    let prompt_tokens = |o: &Observation| {
        let usage = o.response.as_ref()?.usage?;
        (usage.prompt_tokens > 0).then_some(usage.prompt_tokens)
    };
    let counts: Vec<(u32, u32)> = asked
        .iter()
        .filter(|o| o.sample_index == 0 && o.is_ok() && !o.request.prompt.is_raw())
        .filter_map(|o| {
            let own = reference
                .observations
                .iter()
                .find(|r| r.probe_id == o.probe_id && r.sample_index == 0 && r.is_ok())?;
            Some((prompt_tokens(own)?, prompt_tokens(o)?))
        })
        .collect();
    compare::tokenizer::hidden_tokens_in_counts(&counts)
}

/// Greedy identity answers (probe id, text) among `obs`: those to
/// [`identity::SYSTEM_PROMPT_PROBES`] when `asks_prompt`, the others otherwise.
fn greedy_identity(obs: &[Observation], asks_prompt: bool) -> Vec<(&str, &str)> {
    obs.iter()
        .filter(|o| o.kind == ProbeKind::Identity && o.sample_index == 0)
        .filter(|o| identity::asks_for_system_prompt(&o.probe_id) == asks_prompt)
        .filter_map(|o| Some((o.probe_id.as_str(), o.text()?)))
        .collect()
}

/// The share of an answer's tokens on the reference's choice that makes it a text match:
/// the band's, for raw or chat answers.
pub(super) fn token_share(opts: &CompareOptions, raw: bool) -> f64 {
    let band = opts
        .band
        .clone()
        .unwrap_or_else(crate::compare::IdenticalBand::default_band);
    if raw {
        band.min_greedy_top1
    } else {
        band.min_greedy_top1_chat
    }
}

/// The reference and its quantized forms, whose greedy paths a logit answer may follow.
pub(super) fn greedy_paths<'a>(against: Against<'a>) -> Vec<&'a Fingerprint> {
    std::iter::once(against.reference)
        .chain(against.forms.iter().map(|f| &f.fingerprint))
        .collect()
}

/// Asks the first of [`identity::SYSTEM_PROMPT_PROBES`] in the set, no bet on it: what it
/// repeats is the context the read-back tries first for a chat suspect's answers.
pub(super) async fn ask_system_prompt<S: AnswerSource>(
    set: &ProbeSet,
    source: &mut S,
    asked: &mut Vec<Observation>,
) -> Result<(), S::Error> {
    let wanted = set
        .probes
        .iter()
        .find(|p| p.form == ProbeForm::Chat && identity::asks_for_system_prompt(&p.id));
    if let Some(probe) = wanted {
        if !asked.iter().any(|o| o.probe_id == probe.id) {
            asked.push(source.answer(probe, 0).await?);
        }
    }
    Ok(())
}

/// The comparison of the answers asked so far, with their read-backs: what a stop on text
/// must agree with.
pub(super) async fn confirm(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: &ModelDescription,
    asked: &[Observation],
    scores: &[AnswerScore],
    controls: &[Vec<AnswerScore>],
    opts: &CompareOptions,
) -> (Fingerprint, Report) {
    let print = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.to_vec());
    let likelihood = compare::Likelihoods {
        suspect: scores,
        controls,
    };
    let report = judge(against, &print, Some(likelihood), opts).await;
    (print, report)
}

/// Suspect queries after which a text stop that the comparison has not confirmed gives up
/// and the rest of the set is asked: the most a decision without log-probabilities may
/// cost.
const CONFIRM_BUDGET: usize = 32;

/// Answers the text test bets on at most.
const TEXT_MAX_BETS: usize = 24;

/// Answers judged between two confirmations.
const CONFIRM_STEP: usize = 3;

/// Answers judged on text after which an undecided test has the turn format chosen again
/// from all of them: a look as wide as the read-back's first one (`read_back::FIRST_LOOK`).
const RECHOOSE_AFTER: usize = 8;

/// Identity answers asked before the text test bets on chat answers.
const IDENTITY_WARM_UP: usize = 2;

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
/// the read-back, says `identical` too. `prior` are answers already asked (by the logit
/// test), kept in the print and reused, never asked again.
async fn text_sequential_phase<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    text: TextEarlyStop<'_>,
    prior: Vec<Observation>,
) -> Result<EarlyStop, S::Error> {
    let raw = suspect.capabilities.raw_completion;
    let share = token_share(opts, raw);
    // The betting test is valid at any stopping time, so text, whose answers each say
    // less than a logit probe, gets a longer budget: the most the early stop on text
    // spends before the comparison's confirmation (`CONFIRM_BUDGET`).
    let seq = &crate::compare::SequentialOptions {
        max_queries: TEXT_MAX_BETS,
        ..opts.sequential.clone()
    };
    let Against {
        reference,
        controls,
        forms,
    } = against;
    // Logit answers are walked along the reference's own greedy paths and its forms'.
    let paths = greedy_paths(against);
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
    let mut asked = prior;
    if !raw {
        warm_up(set, source, &mut asked).await?;
        ask_system_prompt(set, source, &mut asked).await?;
    }
    // A stack's turn format and stretched context move every chat answer alike: chosen
    // from the warm-up's answers, and kept for each answer after them
    // (`read_back::choose_serving`), unless the test rejects the copy so read (below).
    let mut serving = if raw {
        read_back::Serving::default()
    } else {
        let warm = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
        match read_back::choose_serving_on(text.reference, &warm).await {
            Ok(serving) => serving,
            Err(e) => {
                tracing::warn!(error = %e, "reading the warm-up back failed: no early stop");
                return Ok(EarlyStop::go_on());
            }
        }
    };
    if serving != read_back::Serving::default() {
        tracing::info!(
            serving = serving.name(),
            "the warm-up's answers fit another turn format or a stretched context"
        );
    }
    let mut scores = Vec::new();
    // The logit probes' greedy paths, taken without a system prompt, cannot match where
    // the answers show one, nor in another turn format.
    let mut in_context = !raw
        && (serving.format.is_some()
            || shows_hidden_prompt(reference, &asked)
            || hidden_tokens_counted(reference, &asked).is_some());
    let mut judged = 0usize;
    let with_logprobs = suspect.capabilities.max_top_logprobs > 0;
    // Once the test says identical, the comparison of what was asked must agree; where it
    // does not yet (a few short answers), a few more are read and it is asked again, up
    // to the budget, before the rest of the set is asked.
    let mut confirmed: Option<(Fingerprint, Report)> = None;
    let mut next_confirm = opts.min_probes;
    let mut confirmed_at = 0usize;
    let mut partial_verdict = None;
    let likelihood_controls = text.controls;
    let mut chosen_again = false;
    let mut format_note: Option<String> = None;
    let second_look = crate::compare::SequentialOptions {
        alpha: seq.alpha / 2.0,
        ..seq.clone()
    };
    for planned in &plan {
        // Two or three warm-up answers can fit a wrong format better by chance (Gemma
        // behind a stack that doubles its BOS fit ChatML), and many answers read in it
        // then miss: once the test says "not identical", or has not said "identical" after
        // `RECHOOSE_AFTER` answers read in a format other than the reference's own, the
        // format is chosen again from every answer so far; where that choice differs, a
        // second test, at half the error rate, bets on the answers still to come, read in
        // it (the earlier answers chose the format, so they do not vote). Half the answers
        // missing keeps the test undecided as long as its budget lasts, so waiting for
        // "not identical" alone can wait for ever.
        let decision = test.outcome().decision;
        let undecided_long = decision == SequentialDecision::Undecided
            && judged >= RECHOOSE_AFTER
            && serving != read_back::Serving::default();
        if !raw && !chosen_again && (decision == SequentialDecision::NotIdentical || undecided_long)
        {
            chosen_again = true;
            let all = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
            match serving_again(text.reference, &all, serving, &scores).await {
                Ok(Some((again, read))) => {
                    format_note = Some(format!(
                        "the turn format and context stretch were chosen again after {} \
                         answers ({} before, {} since): the test had rejected \"identical\" \
                         on the answers read the first way, and a second test at half the \
                         error rate bet on the answers after that",
                        asked.len(),
                        serving.name(),
                        again.name()
                    ));
                    serving = again;
                    in_context |= serving.format.is_some();
                    scores = read;
                    test = SequentialTest::new(reference, &plan, seq.default_q1, &second_look);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "choosing the turn format again failed: no early stop");
                    return Ok(EarlyStop::go_on());
                }
            }
        }
        if test.decided() {
            if test.outcome().decision != SequentialDecision::Identical {
                break;
            }
            // A decision to stop still needs the comparison's fewest probes behind it:
            // answers judged, which the warm-up's identity answers are not.
            if judged >= next_confirm {
                let (print, report) = confirm(
                    against,
                    set,
                    &suspect,
                    &asked,
                    &scores,
                    likelihood_controls,
                    opts,
                )
                .await;
                confirmed_at = asked.len();
                if report.verdict == Verdict::Identical {
                    confirmed = Some((print, report));
                    break;
                }
                partial_verdict = Some(report.verdict);
                tracing::info!(
                    verdict = report.verdict.as_str(),
                    asked = asked.len(),
                    "the answers asked so far do not decide identical yet"
                );
                if asked.len() >= CONFIRM_BUDGET {
                    break;
                }
                next_confirm = judged + CONFIRM_STEP;
            }
        }
        let Some(probe) = set.probes.iter().find(|p| p.id == planned.probe_id) else {
            continue;
        };
        // A logit probe's answer matches only along a greedy path taken without a system
        // prompt; once the answers show one, such answers say nothing and are not asked.
        // A suspect with log-probabilities had its logit probes judged by the logit test,
        // whose log-probabilities a hidden prompt moves: the comparison that confirms a
        // stop needs answers read back instead.
        if (in_context || with_logprobs) && probe.kind == ProbeKind::Logit {
            continue;
        }
        let obs = source.answer(probe, 0).await?;
        let one = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), vec![obs.clone()]);
        // Read in the context the answers so far give away (a hidden system prompt that a
        // small model repeats), as the full comparison reads them.
        let so_far = Fingerprint::new(
            suspect.clone(),
            ProbeSetRef::of(set),
            asked.iter().cloned().chain([obs.clone()]).collect(),
        );
        let read = match read_back::read_back_in_context(
            text.reference,
            &one,
            &so_far,
            read_back::Formats::Fixed(serving),
        )
        .await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "reading an answer back failed: no early stop");
                return Ok(EarlyStop::go_on());
            }
        };
        let mine = read.iter().find(|r| r.raw == raw);
        let matched = matching.judge(mine, Some(&obs));
        tracing::debug!(
            probe = %obs.probe_id,
            ?matched,
            tokens = mine.map(|r| r.tokens),
            near_top = mine.map(|r| r.near_top),
            system = ?mine.and_then(|r| r.system.as_deref()),
            "text early stop step"
        );
        if !test.decided() {
            test.update_matched(&obs.probe_id, matched);
        }
        judged += usize::from(matched.is_some());
        in_context |= read.iter().any(|r| r.system.is_some());
        scores.extend(read);
        if !asked.iter().any(|o| o.probe_id == obs.probe_id) {
            asked.push(obs);
        }
    }
    let outcome = test.outcome();
    tracing::info!(
        decision = ?outcome.decision,
        queries = outcome.queries,
        e_against_unrelated = outcome.e_against_unrelated,
        "sequential phase on text"
    );
    if outcome.decision != SequentialDecision::Identical {
        return Ok(EarlyStop::go_on());
    }
    // The plan ran out before a confirmation was tried on everything asked.
    if confirmed.is_none() && judged >= opts.min_probes && confirmed_at < asked.len() {
        let (print, report) = confirm(
            against,
            set,
            &suspect,
            &asked,
            &scores,
            likelihood_controls,
            opts,
        )
        .await;
        if report.verdict == Verdict::Identical {
            confirmed = Some((print, report));
        } else {
            partial_verdict = Some(report.verdict);
        }
    }
    let Some((print, mut report)) = confirmed else {
        tracing::info!("the answers asked so far do not decide identical: asking the rest");
        return Ok(match partial_verdict {
            Some(verdict) => EarlyStop::unconfirmed(outcome, verdict),
            None => EarlyStop::go_on(),
        });
    };
    let queries = print.observations.len();
    report.reasons.push(format!(
        "sequential test on text: {} of {} greedy {} answers read back as the reference's own \
         choice or followed its greedy path or one of its {} forms' (quantized or served \
         otherwise; logit probes), e-value {:.3e} against \"unrelated\" (p <= {:.2e}); \
         stopped without asking the tokenizer probes or the rest of the set",
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
    report.reasons.extend(format_note);
    report.queries.sequential = Some(queries);
    report.sequential = Some(outcome);
    Ok(EarlyStop::stop(print, report))
}

/// The turn format and stretch every answer in `all` fits best, when not `current`, with
/// the answers already read (those `scores` hold) read again so.
async fn serving_again(
    reference: &crate::model::ModelHandle,
    all: &Fingerprint,
    current: read_back::Serving,
    scores: &[AnswerScore],
) -> Result<Option<(read_back::Serving, Vec<AnswerScore>)>, read_back::ReadBackError> {
    let again = read_back::choose_serving_on(reference, all).await?;
    if again == current {
        return Ok(None);
    }
    tracing::info!(
        from = current.name(),
        to = again.name(),
        asked = all.observations.len(),
        "the answers so far fit another turn format or stretch: testing again so"
    );
    let mut read = all.clone();
    read.observations
        .retain(|o| scores.iter().any(|s| s.probe_id == o.probe_id));
    let scores =
        read_back::read_back_in_context(reference, &read, all, read_back::Formats::Fixed(again))
            .await?;
    Ok(Some((again, scores)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(probe_id: &str, prompt_tokens: u32) -> Observation {
        serde_json::from_value(serde_json::json!({
            "probe_id": probe_id,
            "kind": "identity",
            "sample_index": 0,
            "request": {
                "prompt": {"form": "chat", "messages": [{"role": "user", "content": "Who are you?"}]},
                "max_tokens": 48, "temperature": 0.0, "top_p": 1.0, "seed": 0,
                "top_logprobs": 20, "stop": []
            },
            "response": {
                "text": "I am an assistant.", "tokens": [],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 5},
                "finish_reason": "stop", "latency_ms": 1
            },
            "attempts": 1,
            "latency_ms": 1
        }))
        .expect("an observation")
    }

    /// SmolLM2 on llama-server, chat only, behind a 21-token system prompt in place of its
    /// template's default one: both warm-up answers cost 5 tokens more than the
    /// reference's own; a plain copy's cost the same.
    #[test]
    fn warm_up_counts_show_a_prompt_the_answers_do_not() {
        let reference = Fingerprint::new(
            ModelDescription {
                describe: "reference".into(),
                capabilities: Default::default(),
            },
            ProbeSetRef {
                name: "default".into(),
                version: "1".into(),
                hash: "h".into(),
            },
            vec![
                observation("identity.who", 31),
                observation("identity.maker", 40),
            ],
        );
        let behind = [
            observation("identity.who", 36),
            observation("identity.maker", 45),
        ];
        assert_eq!(hidden_tokens_counted(&reference, &behind), Some(5));
        let plain = [
            observation("identity.who", 31),
            observation("identity.maker", 40),
        ];
        assert_eq!(hidden_tokens_counted(&reference, &plain), None);
        // Probes the reference has no answer to say nothing.
        let other = [observation("identity.x", 36), observation("identity.y", 45)];
        assert_eq!(hidden_tokens_counted(&reference, &other), None);
    }
}
