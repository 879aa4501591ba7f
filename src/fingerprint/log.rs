//! The partial log of a run: one JSON line per observation, written as it arrives, so an
//! interrupted run (crash, Ctrl-C, rate limit) resumes without asking again what was
//! already answered.
//!
//! The first line is a header naming the model and the probe set; a log written for
//! another model or set is refused rather than silently mixed in.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{sibling, FingerprintError, Observation};

/// An exclusive lock on the cache folder `dir` (the file `<dir>.lock` beside it, so the
/// folder holds only what is cached), held until the returned file is dropped. Scans,
/// workers and tests may build the same cached prints at once, and each build starts by
/// removing a stale partial log: one builds, the others wait and then read what it wrote.
pub async fn lock_cache(dir: &Path) -> std::io::Result<File> {
    let path = sibling(dir, ".lock");
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
}

/// Identifies the run a log belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHeader {
    pub model: String,
    pub probe_set_hash: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Line {
    Header(LogHeader),
    Observation(Box<Observation>),
}

/// Observations of a run, in memory and (unless in-memory) appended to a JSONL file.
pub struct ObservationLog {
    path: Option<PathBuf>,
    file: Option<File>,
    header: Option<LogHeader>,
    /// The latest observation per (probe id, sample index).
    latest: BTreeMap<(String, usize), Observation>,
    /// Lines that could not be read back (a write cut short by a crash).
    skipped_lines: usize,
}

impl ObservationLog {
    /// `<out>.partial.jsonl` for a fingerprint written to `out`.
    pub fn partial_path(out: &Path) -> PathBuf {
        sibling(out, ".partial.jsonl")
    }

    /// A log kept in memory only (nothing to resume from).
    pub fn in_memory() -> ObservationLog {
        ObservationLog {
            path: None,
            file: None,
            header: None,
            latest: BTreeMap::new(),
            skipped_lines: 0,
        }
    }

    /// Opens (or creates) the log at `path` and reads what an earlier run left there.
    pub fn open(path: &Path) -> Result<ObservationLog, FingerprintError> {
        let io = |source| FingerprintError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io)?;

        let mut log = ObservationLog::in_memory();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<Line>(line) {
                Ok(Line::Header(header)) => log.header = Some(header),
                Ok(Line::Observation(obs)) => log.remember(*obs),
                Err(err) => {
                    // Only the last line can be cut short by a crash; anything unreadable
                    // is simply asked again.
                    tracing::warn!("{}: skipping an unreadable line: {err}", path.display());
                    log.skipped_lines += 1;
                }
            }
        }
        // A write cut short leaves no newline: start the next line on a fresh one.
        if !text.is_empty() && !text.ends_with('\n') {
            file.seek(SeekFrom::End(0)).map_err(io)?;
            file.write_all(b"\n").map_err(io)?;
        }
        log.path = Some(path.to_path_buf());
        log.file = Some(file);
        Ok(log)
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn header(&self) -> Option<&LogHeader> {
        self.header.as_ref()
    }

    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }

    /// Checks that the log belongs to this run, writing the header into a fresh log.
    pub fn bind(&mut self, header: LogHeader) -> Result<(), FingerprintError> {
        match &self.header {
            Some(existing) if *existing == header => Ok(()),
            Some(existing) => {
                let what = if existing.model != header.model {
                    format!("model {:?}, not {:?}", existing.model, header.model)
                } else {
                    format!(
                        "probe set {}, not {}",
                        existing.probe_set_hash, header.probe_set_hash
                    )
                };
                Err(FingerprintError::LogMismatch {
                    path: self.path.clone().unwrap_or_default(),
                    what,
                })
            }
            None => {
                self.write_line(&Line::Header(header.clone()))?;
                self.header = Some(header);
                Ok(())
            }
        }
    }

    /// Records an observation, on disk first so a crash right after loses nothing.
    pub fn append(&mut self, obs: &Observation) -> Result<(), FingerprintError> {
        self.write_line(&Line::Observation(Box::new(obs.clone())))?;
        self.remember(obs.clone());
        Ok(())
    }

    /// The answered observation for (probe, sample), if an earlier run got one.
    pub fn done(&self, probe_id: &str, sample_index: usize) -> Option<&Observation> {
        self.latest
            .get(&(probe_id.to_string(), sample_index))
            .filter(|o| o.is_ok())
    }

    /// The latest observation for (probe, sample), answered or not.
    pub fn latest(&self, probe_id: &str, sample_index: usize) -> Option<&Observation> {
        self.latest.get(&(probe_id.to_string(), sample_index))
    }

    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Deletes the log file once the fingerprint is safely written.
    pub fn remove(self) -> Result<(), FingerprintError> {
        drop(self.file);
        match self.path {
            Some(path) => std::fs::remove_file(&path).map_err(|source| FingerprintError::Io {
                path: path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn remember(&mut self, obs: Observation) {
        let key = (obs.probe_id.clone(), obs.sample_index);
        // A later failure must not hide an earlier success of the same ask.
        let keep_old = self
            .latest
            .get(&key)
            .is_some_and(|old| old.is_ok() && !obs.is_ok());
        if !keep_old {
            self.latest.insert(key, obs);
        }
    }

    fn write_line(&mut self, line: &Line) -> Result<(), FingerprintError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut json = serde_json::to_string(line).map_err(FingerprintError::Encode)?;
        json.push('\n');
        let io = |source| FingerprintError::Io {
            path: self.path.clone().unwrap_or_default(),
            source,
        };
        file.write_all(json.as_bytes()).map_err(io)?;
        file.flush().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cache_lock_waits_for_its_holder_and_not_for_other_caches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let held = lock_cache(&a).await.expect("lock");
        // Another cache beside it is not held up.
        let other = tokio::time::timeout(std::time::Duration::from_secs(10), lock_cache(&b))
            .await
            .expect("another cache's lock is free")
            .expect("lock");
        drop(other);
        let waiting = tokio::spawn(async move { lock_cache(&a).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the second lock did not wait");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
            .await
            .expect("the lock is taken once released")
            .expect("task")
            .expect("lock");
    }
}
