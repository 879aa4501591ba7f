//! One scan from the command line: fingerprint the reference (in-process) and the suspect
//! (over HTTP) with the same probes, then compare. The service's workers do the same
//! through the store; this is the path without a database.
//!
//! With early stopping (the default) the suspect is first asked the logit probes that
//! tell most, one at a time, under the sequential test (`compare::sequential`); once the
//! test and the comparison of what was asked both say `identical`, the scan stops there.
//! Otherwise it goes on to the whole probe set, reusing the answers it already has, since
//! telling derived, distilled and unrelated apart takes every kind of probe.

use std::path::Path;

use crate::compare::sequential::{self, SequentialDecision, SequentialTest};
use crate::compare::{self, CompareOptions, Report, Verdict};
use crate::endpoint::{Capabilities, ModelEndpoint};
use crate::fingerprint::{
    self, Fingerprint, FingerprintError, LogHeader, ModelDescription, Observation, ObservationLog,
    ProbeSetRef, RunOptions,
};
use crate::probes::{Probe, ProbeForm, ProbeSet};
use crate::read_back;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("fingerprinting {side}: {source}")]
    Fingerprint {
        side: &'static str,
        source: FingerprintError,
    },
    #[error("reading answers back through the reference: {0}")]
    ReadBack(#[from] crate::read_back::ReadBackError),
}

pub struct ScanSettings<'a> {
    pub probes: &'a ProbeSet,
    /// Control fingerprints (models known to be unrelated); empty for none.
    pub controls: &'a [Fingerprint],
    /// Where they came from, for the report.
    pub controls_origin: Option<String>,
    /// Where the two fingerprints (and, while running, their resumable logs) are kept.
    pub work_dir: &'a Path,
    pub run: RunOptions,
    pub compare: CompareOptions,
    /// Stop as soon as the sequential test decides `identical`.
    pub early_stop: bool,
    /// The reference in quantized forms (`crate::quantized_forms`); empty for none.
    pub forms: &'a [compare::QuantizedForm],
    /// The reference's model thread, to read the suspect's and the controls' answers back
    /// for the likelihood signal (`crate::read_back`); `None` leaves that signal out.
    pub read_back: Option<&'a crate::model::ModelHandle>,
    /// Where the controls' read-backs are kept between scans (beside the built-in
    /// controls); `None` keeps them in `work_dir`.
    pub controls_read_back: Option<&'a Path>,
}

pub struct ScanOutcome {
    pub reference: Fingerprint,
    pub suspect: Fingerprint,
    pub report: Report,
    /// Whether the scan stopped before asking the whole probe set.
    pub stopped_early: bool,
}

/// Fingerprints one side, resuming from its log when a previous run was cut short.
pub async fn fingerprint_to(
    set: &ProbeSet,
    endpoint: &dyn ModelEndpoint,
    out: &Path,
    opts: &RunOptions,
) -> Result<Fingerprint, FingerprintError> {
    let mut log = ObservationLog::open(&ObservationLog::partial_path(out))?;
    let fp = fingerprint::run(set, endpoint, opts, &mut log).await?;
    fp.save(out)?;
    log.remove()?;
    Ok(fp)
}

pub async fn run(
    reference: &dyn ModelEndpoint,
    suspect: &dyn ModelEndpoint,
    s: &ScanSettings<'_>,
) -> Result<ScanOutcome, ScanError> {
    let controls = s.controls;
    let reference = fingerprint_to(
        s.probes,
        reference,
        &s.work_dir.join("reference.json"),
        &s.run,
    )
    .await
    .map_err(|source| ScanError::Fingerprint {
        side: "the reference",
        source,
    })?;
    let out = s.work_dir.join("suspect.json");
    let suspect_error = |source| ScanError::Fingerprint {
        side: "the suspect",
        source,
    };
    // The controls' answers read back by the reference, for the likelihood signals and for
    // the early stop of a suspect without log-probabilities; a suspect with
    // log-probabilities that stops early never needs them, so they are read back only then.
    let cache = s.work_dir.join("likelihood");
    let controls_cache = s.controls_read_back.unwrap_or(&cache);
    let mut control_scores = None;
    if s.early_stop {
        let caps = suspect
            .capabilities()
            .await
            .map_err(|e| suspect_error(FingerprintError::Capabilities(e)))?;
        if let (Some(handle), 0) = (s.read_back, caps.max_top_logprobs) {
            control_scores = Some(read_back_controls(handle, controls, controls_cache).await?);
        }
        let text = match (s.read_back, &control_scores) {
            (Some(handle), Some(scores)) => Some(TextEarlyStop {
                reference: handle,
                controls: scores,
            }),
            _ => None,
        };
        let early = sequential_to_log(&reference, suspect, controls, &out, s, text)
            .await
            .map_err(suspect_error)?;
        if let Some((suspect, mut report)) = early {
            report.controls_origin = s.controls_origin.clone();
            return Ok(ScanOutcome {
                reference,
                suspect,
                report,
                stopped_early: true,
            });
        }
    }
    // Resumes from the log, so probes asked in the sequential phase are not asked again.
    let suspect = fingerprint_to(s.probes, suspect, &out, &s.run)
        .await
        .map_err(suspect_error)?;
    let mut read_back = None;
    if let Some(handle) = s.read_back {
        let theirs =
            read_back::read_back(handle, &suspect, Some(&cache.join("suspect.json"))).await?;
        let controls = match control_scores {
            Some(scores) => scores,
            None => read_back_controls(handle, controls, controls_cache).await?,
        };
        read_back = Some((theirs, controls));
    }
    let mut report = compare::compare_calibrated(
        &reference,
        &suspect,
        &compare::Calibration {
            controls,
            known_same: &[],
            forms: s.forms,
            likelihood: read_back
                .as_ref()
                .map(|(suspect, controls)| compare::Likelihoods { suspect, controls }),
        },
        &s.compare,
    );
    report.controls_origin = s.controls_origin.clone();
    Ok(ScanOutcome {
        reference,
        suspect,
        report,
        stopped_early: false,
    })
}

/// Each control's answers read back by the reference, cached in `dir` (a cached read-back
/// names the reference and the print it was made from, so a stale one is made again).
async fn read_back_controls(
    handle: &crate::model::ModelHandle,
    controls: &[Fingerprint],
    dir: &Path,
) -> Result<Vec<Vec<crate::compare::likelihood::AnswerScore>>, ScanError> {
    // Named for the reference too: one folder of controls serves several references.
    let reference = handle.info.source_name();
    let mut scores = Vec::with_capacity(controls.len());
    for (i, c) in controls.iter().enumerate() {
        let path = dir.join(format!("{reference}.control-{i}.json"));
        scores.push(read_back::read_back(handle, c, Some(&path)).await?);
    }
    Ok(scores)
}

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
            Some(text) => {
                text_sequential_phase(
                    Against {
                        reference,
                        controls,
                        forms,
                    },
                    set,
                    suspect,
                    opts,
                    source,
                    text,
                )
                .await
            }
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
    let report = compare::compare_calibrated(
        reference,
        &print,
        &compare::Calibration {
            controls,
            known_same: &[],
            forms,
            likelihood: None,
        },
        opts,
    );
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
        let read = match read_back::read_back(text.reference, &one, None).await {
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
    let mut report = compare::compare_calibrated(
        reference,
        &print,
        &compare::Calibration {
            controls,
            known_same: &[],
            forms,
            likelihood: Some(compare::Likelihoods {
                suspect: &scores,
                controls: text.controls,
            }),
        },
        opts,
    );
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

/// Answers kept in the suspect's resumable log file.
struct LogSource<'a> {
    log: ObservationLog,
    endpoint: &'a dyn ModelEndpoint,
    caps: Capabilities,
    run: &'a RunOptions,
}

#[async_trait::async_trait]
impl AnswerSource for LogSource<'_> {
    type Error = FingerprintError;

    async fn answer(&mut self, probe: &Probe) -> Result<Observation, FingerprintError> {
        if let Some(done) = self.log.done(&probe.id, 0) {
            return Ok(done.clone());
        }
        let obs = fingerprint::observe(self.endpoint, &self.caps, probe, 0, self.run).await;
        self.log.append(&obs)?;
        Ok(obs)
    }
}

/// The command line's sequential phase, kept in the log next to `out`.
async fn sequential_to_log(
    reference: &Fingerprint,
    suspect: &dyn ModelEndpoint,
    controls: &[Fingerprint],
    out: &Path,
    s: &ScanSettings<'_>,
    text: Option<TextEarlyStop<'_>>,
) -> Result<Option<(Fingerprint, Report)>, FingerprintError> {
    let caps = suspect
        .capabilities()
        .await
        .map_err(FingerprintError::Capabilities)?;
    let mut log = ObservationLog::open(&ObservationLog::partial_path(out))?;
    log.bind(LogHeader {
        model: suspect.describe(),
        probe_set_hash: s.probes.hash.clone(),
    })?;
    let description = ModelDescription {
        describe: suspect.describe(),
        capabilities: caps.clone(),
    };
    let mut source = LogSource {
        log,
        endpoint: suspect,
        caps,
        run: &s.run,
    };
    let early = sequential_phase(
        Against {
            reference,
            controls,
            forms: s.forms,
        },
        s.probes,
        description,
        &s.compare,
        &mut source,
        text,
    )
    .await?;
    if let Some((print, _)) = &early {
        print.save(out)?;
        source.log.remove()?;
    }
    Ok(early)
}
