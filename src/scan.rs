//! One scan from the command line: fingerprint the reference (in-process) and the suspect
//! (over HTTP) with the same probes, then compare. The service's workers do the same
//! through the store; this is the path without a database.

use std::path::{Path, PathBuf};

use crate::compare::{self, CompareOptions, Report};
use crate::endpoint::ModelEndpoint;
use crate::fingerprint::{self, Fingerprint, FingerprintError, ObservationLog, RunOptions};
use crate::probes::ProbeSet;

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("fingerprinting {side}: {source}")]
    Fingerprint {
        side: &'static str,
        source: FingerprintError,
    },
    #[error("loading controls from {path}: {source}")]
    Controls {
        path: PathBuf,
        source: FingerprintError,
    },
}

pub struct ScanSettings<'a> {
    pub probes: &'a ProbeSet,
    /// Directory of control fingerprints (models known to be unrelated), if any.
    pub controls: Option<&'a Path>,
    /// Where the two fingerprints (and, while running, their resumable logs) are kept.
    pub work_dir: &'a Path,
    pub run: RunOptions,
}

pub struct ScanOutcome {
    pub reference: Fingerprint,
    pub suspect: Fingerprint,
    pub report: Report,
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
    let controls = match s.controls {
        Some(dir) => fingerprint::load_dir(dir).map_err(|source| ScanError::Controls {
            path: dir.to_path_buf(),
            source,
        })?,
        None => Vec::new(),
    };
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
    let suspect = fingerprint_to(s.probes, suspect, &s.work_dir.join("suspect.json"), &s.run)
        .await
        .map_err(|source| ScanError::Fingerprint {
            side: "the suspect",
            source,
        })?;
    let report = compare::compare(&reference, &suspect, &controls, &CompareOptions::default());
    Ok(ScanOutcome {
        reference,
        suspect,
        report,
    })
}
