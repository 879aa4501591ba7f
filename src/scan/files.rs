//! The command line's [`ScanStore`]: the two fingerprints and the suspect's resumable log
//! in a work directory, read-backs cached beside them. The reference runs in-process, the
//! suspect over HTTP.

use std::path::{Path, PathBuf};

use super::{pipeline, AnswerSource, Scan, ScanOutcome, ScanStore, SuspectCaps, Whose};
use crate::compare::likelihood::AnswerScore;
use crate::compare::{self, CompareOptions};
use crate::endpoint::{Capabilities, ModelEndpoint};
use crate::fingerprint::{
    self, Fingerprint, FingerprintError, LogHeader, ModelDescription, Observation, ObservationLog,
    RunOptions,
};
use crate::probes::{Probe, ProbeSet};
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
    /// What the reference cannot provide (`super::endpoint_reference_limits`).
    pub reference_limits: Vec<String>,
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

/// Scans `suspect` against `reference` with the files in `s.work_dir`.
pub async fn run(
    reference: &dyn ModelEndpoint,
    suspect: &dyn ModelEndpoint,
    s: &ScanSettings<'_>,
) -> Result<ScanOutcome, ScanError> {
    let cache = s.work_dir.join("likelihood");
    let mut files = FileScan {
        reference,
        suspect,
        settings: s,
        controls_cache: s.controls_read_back.unwrap_or(&cache).to_path_buf(),
        cache,
        caps: SuspectCaps::default(),
        log: None,
    };
    pipeline(
        &mut files,
        &Scan {
            probes: s.probes,
            controls: s.controls,
            controls_origin: s.controls_origin.clone(),
            forms: s.forms,
            read_back: s.read_back,
            compare: &s.compare,
            early_stop: s.early_stop,
            reference_limits: s.reference_limits.clone(),
        },
    )
    .await
}

struct FileScan<'a> {
    reference: &'a dyn ModelEndpoint,
    suspect: &'a dyn ModelEndpoint,
    settings: &'a ScanSettings<'a>,
    /// The suspect's read-back.
    cache: PathBuf,
    /// The controls' read-backs, kept between scans.
    controls_cache: PathBuf,
    caps: SuspectCaps,
    /// The suspect's log, open while the sequential phase asks.
    log: Option<ObservationLog>,
}

impl FileScan<'_> {
    fn suspect_out(&self) -> PathBuf {
        self.settings.work_dir.join("suspect.json")
    }

    async fn caps(&mut self) -> Result<Capabilities, ScanError> {
        self.caps
            .of(self.suspect)
            .await
            .map_err(|e| suspect_error(FingerprintError::Capabilities(e)))
    }
}

fn suspect_error(source: FingerprintError) -> ScanError {
    ScanError::Fingerprint {
        side: "the suspect",
        source,
    }
}

#[async_trait::async_trait]
impl AnswerSource for FileScan<'_> {
    type Error = ScanError;

    /// A kept answer from an earlier attempt, or a new ask kept in the log before use.
    async fn answer(&mut self, probe: &Probe, sample: usize) -> Result<Observation, ScanError> {
        let caps = self.caps().await?;
        let mut log = match self.log.take() {
            Some(log) => log,
            None => {
                let path = ObservationLog::partial_path(&self.suspect_out());
                let mut log = ObservationLog::open(&path).map_err(suspect_error)?;
                log.bind(LogHeader {
                    model: self.suspect.describe(),
                    probe_set_hash: self.settings.probes.hash.clone(),
                })
                .map_err(suspect_error)?;
                log
            }
        };
        let obs = match log.done(&probe.id, sample) {
            Some(done) => done.clone(),
            None => {
                let obs =
                    fingerprint::observe(self.suspect, &caps, probe, sample, &self.settings.run)
                        .await;
                log.append(&obs).map_err(suspect_error)?;
                obs
            }
        };
        self.log = Some(log);
        Ok(obs)
    }
}

#[async_trait::async_trait]
impl ScanStore for FileScan<'_> {
    async fn reference_print(&mut self) -> Result<Fingerprint, ScanError> {
        let s = self.settings;
        fingerprint_to(
            s.probes,
            self.reference,
            &s.work_dir.join("reference.json"),
            &s.run,
        )
        .await
        .map_err(|source| ScanError::Fingerprint {
            side: "the reference",
            source,
        })
    }

    async fn suspect_description(&mut self) -> Result<ModelDescription, ScanError> {
        Ok(ModelDescription {
            describe: self.suspect.describe(),
            capabilities: self.caps().await?,
        })
    }

    async fn suspect_print(&mut self) -> Result<Fingerprint, ScanError> {
        // The full pass resumes from the log, so probes asked in the sequential phase are
        // not asked again; it opens the log itself.
        self.log = None;
        let s = self.settings;
        fingerprint_to(s.probes, self.suspect, &self.suspect_out(), &s.run)
            .await
            .map_err(suspect_error)
    }

    async fn read_back(
        &mut self,
        whose: Whose,
        print: &Fingerprint,
    ) -> Result<Vec<AnswerScore>, ScanError> {
        let Some(handle) = self.settings.read_back else {
            return Ok(Vec::new());
        };
        let path = match whose {
            Whose::Suspect => self.cache.join("suspect.json"),
            // Named for the reference too: one folder of controls serves several
            // references.
            Whose::Control(i) => self
                .controls_cache
                .join(format!("{}.control-{i}.json", handle.info.source_name())),
        };
        Ok(read_back::read_back(handle, print, Some(&path)).await?)
    }

    async fn suspect_done(&mut self, print: &Fingerprint, early: bool) -> Result<(), ScanError> {
        if early {
            print.save(&self.suspect_out()).map_err(suspect_error)?;
            if let Some(log) = self.log.take() {
                log.remove().map_err(suspect_error)?;
            }
        }
        Ok(())
    }
}
