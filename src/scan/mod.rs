//! One scan, written once: the reference fingerprinted, the suspect asked the probes that
//! tell most under the sequential test (`sequential_phase`), then, unless that decided
//! `identical`, the whole probe set, and the two prints compared against the controls,
//! the reference's quantized forms and the read-back. Where answers, prints and
//! read-backs are kept is a [`ScanStore`]: files for the command line ([`files`]),
//! PostgreSQL for the service's workers (`crate::jobs::scan`). Both roads give the same
//! verdict on the same pair because they are the same road.
//!
//! The comparison is CPU work (bootstraps, permutations, every control scored), so it
//! runs on the blocking pool ([`judge`]), never on the runtime that serves HTTP and
//! renews leases.

mod early_stop;
pub mod files;
mod sampled_phase;
pub mod sequential_phase;

pub use early_stop::early_stop;
pub use files::{fingerprint_to, run, ScanError, ScanSettings};
pub use sequential_phase::{Against, AnswerSource, EarlyStop, TextEarlyStop, Unconfirmed};

use crate::compare::likelihood::AnswerScore;
use crate::compare::{self, CompareOptions, Likelihoods, QuantizedForm, Report, Verdict};
use crate::endpoint::{Capabilities, EndpointError, ModelEndpoint};
use crate::fingerprint::{Fingerprint, ModelDescription};
use crate::probes::ProbeSet;

/// Whose answers a read-back is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whose {
    Suspect,
    /// The control at this index of [`Scan::controls`].
    Control(usize),
}

/// Where a scan keeps what it learns. The sequential phase's answers go through
/// [`AnswerSource::answer`], kept before they are used, so the full pass reuses them and
/// a resumed scan never asks twice.
#[async_trait::async_trait]
pub trait ScanStore: AnswerSource {
    /// The reference's fingerprint on the scan's probes (asked, or reused).
    async fn reference_print(&mut self) -> Result<Fingerprint, Self::Error>;
    /// The suspect as the report names it, with what its API offers.
    async fn suspect_description(&mut self) -> Result<ModelDescription, Self::Error>;
    /// The suspect asked every probe it has not answered yet.
    async fn suspect_print(&mut self) -> Result<Fingerprint, Self::Error>;
    /// `print`'s answers read back by the reference (`crate::read_back`), cached where
    /// the store keeps such things.
    async fn read_back(
        &mut self,
        whose: Whose,
        print: &Fingerprint,
    ) -> Result<Vec<AnswerScore>, Self::Error>;
    /// The suspect's print is final (after an early stop, or the whole set).
    async fn suspect_done(&mut self, print: &Fingerprint, early: bool) -> Result<(), Self::Error>;
}

/// The suspect's capabilities, detected on first use and kept: every store asks them of
/// the suspect once per scan.
#[derive(Debug, Default)]
pub struct SuspectCaps(Option<Capabilities>);

impl SuspectCaps {
    pub async fn of(&mut self, suspect: &dyn ModelEndpoint) -> Result<Capabilities, EndpointError> {
        if let Some(caps) = &self.0 {
            return Ok(caps.clone());
        }
        let caps = suspect.capabilities().await?;
        self.0 = Some(caps.clone());
        Ok(caps)
    }
}

/// What one scan is judged with.
pub struct Scan<'a> {
    pub probes: &'a ProbeSet,
    /// Models known to be unrelated to the reference; empty for none.
    pub controls: &'a [Fingerprint],
    /// Where they came from, for the report.
    pub controls_origin: Option<String>,
    /// The reference in quantized forms (`crate::quantized_forms`); empty for none.
    pub forms: &'a [QuantizedForm],
    /// The reference's model thread: for the read-back (likelihood signals) and the early
    /// stop of a suspect without log-probabilities. `None` leaves both out.
    pub read_back: Option<&'a crate::model::ModelHandle>,
    pub compare: &'a CompareOptions,
    /// Stop as soon as the sequential test decides `identical`.
    pub early_stop: bool,
    /// What the reference as given cannot provide, for the report
    /// ([`endpoint_reference_limits`]); empty for a local reference.
    pub reference_limits: Vec<String>,
}

/// What a scan loses when the reference is an endpoint (the owner's own serving stack)
/// rather than weights on this machine, and what that endpoint itself does not offer.
pub fn endpoint_reference_limits(caps: &Capabilities) -> Vec<String> {
    let mut out = vec![
        "a reference behind an endpoint: no quantized forms (copies served quantized are \
         judged against the reference as served, so a heavy re-quantization may read derived) \
         and no likelihood read-back (suspects without log-probabilities are judged on their \
         text's overlap alone, with no early stop); both need the weights on this machine"
            .to_string(),
    ];
    out.extend(
        caps.limits()
            .into_iter()
            .map(|l| format!("the reference endpoint: {l}")),
    );
    out
}

pub struct ScanOutcome {
    pub reference: Fingerprint,
    pub suspect: Fingerprint,
    pub report: Report,
    /// Whether the scan stopped before asking the whole probe set.
    pub stopped_early: bool,
}

/// Runs one scan through `store`.
pub async fn pipeline<S: ScanStore>(
    store: &mut S,
    scan: &Scan<'_>,
) -> Result<ScanOutcome, S::Error> {
    let reference = store.reference_print().await?;
    let suspect = store.suspect_description().await?;
    let against = Against {
        reference: &reference,
        controls: scan.controls,
        forms: scan.forms,
    };
    // The controls' read-backs are needed early only where the early stop reads answers
    // back: a suspect without log-probabilities, or one with chat only (its hidden system
    // prompt moves the logit probes); a suspect with raw completions never needs them.
    let mut control_scores = None;
    let mut unconfirmed = None;
    if scan.early_stop {
        let caps = &suspect.capabilities;
        if scan.read_back.is_some() && (caps.max_top_logprobs == 0 || !caps.raw_completion) {
            control_scores = Some(read_back_controls(store, scan.controls).await?);
        }
        let text = match (scan.read_back, &control_scores) {
            (Some(handle), Some(scores)) => Some(TextEarlyStop {
                reference: handle,
                controls: scores,
            }),
            _ => None,
        };
        let early = early_stop(
            against,
            scan.probes,
            suspect.clone(),
            scan.compare,
            store,
            text,
        )
        .await?;
        unconfirmed = early.unconfirmed;
        if let Some((print, mut report)) = early.stopped {
            store.suspect_done(&print, true).await?;
            report.controls_origin = scan.controls_origin.clone();
            report.reference_limits = scan.reference_limits.clone();
            return Ok(ScanOutcome {
                reference,
                suspect: print,
                report,
                stopped_early: true,
            });
        }
    }
    let print = store.suspect_print().await?;
    let mut read_back = None;
    if scan.read_back.is_some() {
        let theirs = store.read_back(Whose::Suspect, &print).await?;
        let controls = match control_scores {
            Some(scores) => scores,
            None => read_back_controls(store, scan.controls).await?,
        };
        read_back = Some((theirs, controls));
    }
    let likelihood = read_back
        .as_ref()
        .map(|(suspect, controls)| Likelihoods { suspect, controls });
    let mut report = judge(against, &print, likelihood, scan.compare).await;
    if let Some(early) = unconfirmed {
        say_overturned(&mut report, early);
    }
    report.controls_origin = scan.controls_origin.clone();
    report.reference_limits = scan.reference_limits.clone();
    store.suspect_done(&print, false).await?;
    Ok(ScanOutcome {
        reference,
        suspect: print,
        report,
        stopped_early: false,
    })
}

/// The full set's report keeps the sequential test that said `identical` early, and says
/// why the scan went on where the whole set reads otherwise: one answer per pair, never an
/// early call silently overturned.
fn say_overturned(report: &mut Report, early: Unconfirmed) {
    if report.verdict != Verdict::Identical {
        report.reasons.push(format!(
            "the sequential test said identical after {} suspect queries, but the comparison \
             of those answers read {} (too few answers, or a signal outside the identical \
             band), so the scan asked the whole probe set, which reads {}",
            early.outcome.queries,
            early.partial_verdict.as_str(),
            report.verdict.as_str()
        ));
    }
    report.sequential = Some(early.outcome);
}

async fn read_back_controls<S: ScanStore>(
    store: &mut S,
    controls: &[Fingerprint],
) -> Result<Vec<Vec<AnswerScore>>, S::Error> {
    let mut scores = Vec::with_capacity(controls.len());
    for (i, c) in controls.iter().enumerate() {
        scores.push(store.read_back(Whose::Control(i), c).await?);
    }
    Ok(scores)
}

/// [`compare::compare_calibrated`] on the blocking pool. What it reads is copied there:
/// a few prints, small beside the seconds of CPU a comparison with controls takes.
pub async fn judge(
    against: Against<'_>,
    suspect: &Fingerprint,
    likelihood: Option<Likelihoods<'_>>,
    opts: &CompareOptions,
) -> Report {
    let reference = against.reference.clone();
    let controls = against.controls.to_vec();
    let forms = against.forms.to_vec();
    let suspect = suspect.clone();
    let likelihood = likelihood.map(|l| (l.suspect.to_vec(), l.controls.to_vec()));
    let opts = opts.clone();
    let work = tokio::task::spawn_blocking(move || {
        compare::compare_calibrated(
            &reference,
            &suspect,
            &compare::Calibration {
                controls: &controls,
                known_same: &[],
                forms: &forms,
                likelihood: likelihood
                    .as_ref()
                    .map(|(suspect, controls)| Likelihoods { suspect, controls }),
            },
            &opts,
        )
    });
    // A panic in the comparison is the comparison's, and goes on unwinding here.
    work.await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}
