//! The scan queue's workers and the scheduler.
//!
//! A worker claims a scan (see `store::scans`), renews its lease in the background while
//! it runs, and stops at once when the lease is lost (taken over after a stall, or the
//! scan was cancelled). Observations are stored as they arrive, so a scan picked up again
//! after a crash only asks what is still missing.

mod reference_cache;
mod scan;
mod schedule;
pub mod webhook;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::store::{Claimed, Store, StoreError};

pub use reference_cache::ReferenceCache;
pub use schedule::{answer_drift, next_run, run_scheduler, validate_cron};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another worker holds the scan now, or it was cancelled: stop without writing.
    #[error("the scan's lease was lost (taken over or cancelled)")]
    LeaseLost,
    /// Will not work on a retry (bad configuration, refused target).
    #[error("{0}")]
    Permanent(String),
    /// May work on a retry (endpoint down, model failed to load).
    #[error("{0}")]
    Transient(String),
}

impl JobError {
    /// A failed capability check of `endpoint`: a refusal by the outbound policy (a
    /// refused address, a redirect) fails the scan at once, since no retry can pass it.
    pub fn endpoint(
        endpoint: &dyn crate::endpoint::ModelEndpoint,
        err: crate::endpoint::EndpointError,
    ) -> Self {
        let message = format!("{}: {err}", endpoint.describe());
        match err {
            crate::endpoint::EndpointError::Forbidden(_) => Self::Permanent(message),
            _ => Self::Transient(message),
        }
    }

    /// The message a scan records and the log shows: configured secrets scrubbed, one
    /// line (a backtrace stays out), a few hundred characters at most.
    pub fn public_message(&self) -> String {
        crate::secrets::excerpt(&crate::secrets::scrub(&self.to_string()), 500)
    }
}

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease length; renewed every third of it.
    pub lease: Duration,
    /// Wait between polls of an empty queue.
    pub poll: Duration,
    /// Suspect URLs on loopback and private networks are reachable (tests, local demos).
    pub allow_private_targets: bool,
    /// Asks in flight at once per side of a scan.
    pub concurrency: usize,
    /// Weight types a GGUF reference is also quantized to (`crate::quantized_forms`); empty for none.
    pub forms: Vec<String>,
    /// Where the forms' fingerprints are cached between scans and restarts.
    pub forms_dir: std::path::PathBuf,
    /// Where a local suspect (`suspect_path`) may be loaded from.
    pub models: crate::model::allowed::ModelAccess,
    /// Where built-in controls (`crate::controls`) are cached; `None` makes none, and a
    /// reference is then calibrated only against the fingerprints marked as controls.
    pub builtin_controls: Option<std::path::PathBuf>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(1),
            allow_private_targets: false,
            concurrency: 4,
            forms: Vec::new(),
            forms_dir: crate::fetch::default_dir().join("forms"),
            models: crate::model::allowed::ModelAccess::new(&[crate::fetch::default_dir()], false),
            builtin_controls: None,
        }
    }
}

/// A unique name for one worker: host, process and a random part.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Runs one worker until `shutdown` turns true.
pub async fn run_worker(
    store: Store,
    config: WorkerConfig,
    references: ReferenceCache,
    mut shutdown: watch::Receiver<bool>,
) {
    let owner = worker_id();
    tracing::info!(worker = %owner, "worker started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        match store.claim_scan(&owner, config.lease.as_secs_f64()).await {
            Ok(Some(claimed)) => {
                run_claimed(&store, &config, &references, claimed).await;
                continue;
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "claiming a scan failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(config.poll) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!(worker = %owner, "worker stopped");
}

/// Runs a claimed scan with its lease renewed in the background, and records the outcome.
pub async fn run_claimed(
    store: &Store,
    config: &WorkerConfig,
    references: &ReferenceCache,
    claimed: Claimed,
) {
    let scan_id = claimed.scan.id;
    let owner = claimed.owner.clone();
    tracing::info!(scan = %scan_id, attempt = claimed.scan.attempts, "scan claimed");
    let lost = Arc::new(AtomicBool::new(false));
    let renewer = tokio::spawn(renew_lease(
        store.clone(),
        scan_id,
        owner.clone(),
        config.lease,
        lost.clone(),
    ));
    let result = scan::run(store, config, references, &claimed, &lost).await;
    renewer.abort();
    match result {
        Ok(()) => tracing::info!(scan = %scan_id, "scan done"),
        Err(JobError::LeaseLost) => {
            tracing::warn!(scan = %scan_id, "lease lost; leaving the scan to its new owner")
        }
        Err(err) => {
            let retry = !matches!(err, JobError::Permanent(_));
            let message = err.public_message();
            tracing::warn!(scan = %scan_id, error = %message, retry, "scan attempt failed");
            if let Err(e) = store.fail_scan(scan_id, &owner, &message, retry).await {
                tracing::warn!(scan = %scan_id, error = %e, "recording the failure failed");
            }
        }
    }
}

/// Renews every third of the lease; flags `lost` and stops when the lease is gone.
async fn renew_lease(
    store: Store,
    scan_id: Uuid,
    owner: String,
    lease: Duration,
    lost: Arc<AtomicBool>,
) {
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match store
            .renew_lease(scan_id, &owner, lease.as_secs_f64())
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                lost.store(true, Ordering::SeqCst);
                return;
            }
            // A blip in the database: try again; the lease has slack for two misses.
            Err(err) => tracing::warn!(scan = %scan_id, error = %err, "lease renewal failed"),
        }
    }
}
