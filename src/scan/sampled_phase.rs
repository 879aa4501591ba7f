//! The early stop for a suspect that samples whatever temperature it is asked for and gives
//! no log-probabilities. Its answers are samples, so the text test's bets on the
//! reference's top choices lose on a copy as on anything else; what decides such a suspect
//! is the comparison's sampled-token test (`compare::sampled`: ranks at a fitted
//! temperature, and how often two samples of one prompt agree) beside the text and
//! likelihood signals. So this phase asks what those read: four samples of each of the
//! sampling probes the reference agrees with itself on most (all pairs among a probe's
//! samples are compared, so four samples give six pairs where two give one), between the
//! chat (or raw) probes the controls answer least like the reference, and asks the comparison of what
//! it has at a few fixed looks, each at alpha over their number (a union bound, so the
//! looks together keep alpha). Only `identical` stops.

use super::sequential_phase::{
    ask_system_prompt, confirm, greedy_paths, token_share, warm_up, Against, AnswerSource,
    EarlyStop, TextEarlyStop,
};
use crate::compare::{sequential, CompareOptions, Verdict};
use crate::fingerprint::{Fingerprint, ModelDescription, Observation, ProbeSetRef};
use crate::probes::{Probe, ProbeKind, ProbeSet};
use crate::read_back;

/// Suspect queries at which the comparison is asked; the last is the most the phase
/// spends before the rest of the set is asked.
const LOOKS: [usize; 3] = [16, 24, 32];

/// Sampling probes whose samples are asked, at most.
const MAX_SAMPLED_PROBES: usize = 5;

/// Samples asked of each: four give six pairs to compare at each position they agree on;
/// more add pairs that share samples and so tell less each.
const SAMPLES_PER_PROBE: usize = 4;

/// Asks a sampling probe's samples and single answers in turn (the samples of one probe,
/// then [`TEXT_PER_PROBE`] answers) until the last look, judging what was asked at each
/// look.
pub(super) async fn sampled_phase<S: AnswerSource>(
    against: Against<'_>,
    set: &ProbeSet,
    suspect: ModelDescription,
    opts: &CompareOptions,
    source: &mut S,
    text: TextEarlyStop<'_>,
    prior: Vec<Observation>,
) -> Result<EarlyStop, S::Error> {
    let raw = suspect.capabilities.raw_completion;
    let mut asked = prior;
    if !raw {
        warm_up(set, source, &mut asked).await?;
        ask_system_prompt(set, source, &mut asked).await?;
    }
    let steps = plan(against, set, text, raw, opts);
    let mut per_look = opts.clone();
    per_look.alpha /= LOOKS.len() as f64;
    let mut looks = LOOKS.iter().copied().peekable();
    for (probe, sample) in steps {
        let Some(&at) = looks.peek() else {
            break;
        };
        if !asked
            .iter()
            .any(|o| o.probe_id == probe.id && o.sample_index == sample)
        {
            asked.push(source.answer(probe, sample).await?);
        }
        if asked.len() < at {
            continue;
        }
        looks.next();
        let print = Fingerprint::new(suspect.clone(), ProbeSetRef::of(set), asked.clone());
        let scores = match read_back::read_back_in_context(
            text.reference,
            &print,
            &print,
            read_back::Formats::Try,
        )
        .await
        {
            Ok(scores) => scores,
            Err(e) => {
                tracing::warn!(error = %e, "reading the answers back failed: no early stop");
                return Ok(EarlyStop::go_on());
            }
        };
        let (print, mut report) = confirm(
            against,
            set,
            &suspect,
            &asked,
            &scores,
            text.controls,
            &per_look,
        )
        .await;
        if report.verdict == Verdict::Identical {
            report.reasons.push(format!(
                "early stop on samples: the comparison of the first {} answers (samples of \
                 the sampling probes, and single answers) said identical at \
                 alpha {:.2e} (alpha over {} looks, at {:?} queries); the rest of the set \
                 was not asked",
                asked.len(),
                per_look.alpha,
                LOOKS.len(),
                LOOKS
            ));
            report.queries.sequential = Some(asked.len());
            return Ok(EarlyStop::stop(print, report));
        }
        tracing::info!(
            verdict = report.verdict.as_str(),
            asked = asked.len(),
            "the samples asked so far do not decide identical"
        );
        tracing::debug!(reasons = ?report.reasons, "why not identical yet");
    }
    tracing::info!(
        asked = asked.len(),
        "no early stop on samples: asking the rest"
    );
    Ok(EarlyStop::go_on())
}

/// Answers asked after each sampling probe's samples.
const TEXT_PER_PROBE: usize = 1;

/// The phase's asks in order: the samples of each sampling probe (most self-agreeing
/// first, `sequential::sampling_plan`) with [`TEXT_PER_PROBE`] answers of the text plan
/// (`sequential::text_plan`) after each, then the rest of the text plan.
fn plan<'a>(
    against: Against<'_>,
    set: &'a ProbeSet,
    text: TextEarlyStop<'_>,
    raw: bool,
    opts: &CompareOptions,
) -> Vec<(&'a Probe, usize)> {
    let find = |id: &str| set.probes.iter().find(|p| p.id == id);
    let share = token_share(opts, raw);
    let forms = greedy_paths(against);
    // Logit probes' answers are a few tokens each: the text signals and the fitted
    // temperature learn more from longer answers.
    let singles: Vec<&Probe> = sequential::text_plan(
        against.reference,
        sequential::TextControls {
            prints: against.controls,
            scores: text.controls,
        },
        &forms,
        raw,
        share,
        &opts.sequential,
    )
    .iter()
    .filter_map(|p| find(&p.probe_id))
    .filter(|p| p.kind != ProbeKind::Logit)
    .collect();
    let sampled: Vec<&Probe> = sequential::sampling_plan(against.reference)
        .iter()
        .filter_map(|id| find(id))
        .filter(|p| p.samples >= 2)
        .take(MAX_SAMPLED_PROBES)
        .collect();
    let mut singles = singles.into_iter();
    let mut out = Vec::new();
    for probe in sampled {
        let samples = probe.samples.min(SAMPLES_PER_PROBE);
        out.extend((0..samples).map(|sample| (probe, sample)));
        out.extend(singles.by_ref().take(TEXT_PER_PROBE).map(|p| (p, 0)));
    }
    out.extend(singles.map(|p| (p, 0)));
    out
}
