//! The application: what the REST API and the analyst UI both do (submit, see and cancel
//! scans and identifications, create schedules, compare fingerprints), with their validation written once,
//! over the store. The two adapters translate requests into these calls and their
//! [`AppError`]s into problem documents or pages.

mod caller;
mod comparisons;
mod error;
mod identifications;
mod models;
mod scans;
mod schedules;
mod suspect;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::store::{ModelRole, ModelRow, Store};

pub use caller::Caller;
pub use comparisons::compare_fingerprints;
pub use error::AppError;
pub use identifications::{
    cancel_identification, identification_view, list_identifications, submit_identification,
    IdentificationView, MemberScan, SubmitIdentification,
};
pub use models::register_model;
pub use scans::{cancel_scan, submit_scan, visible_scan, SubmitScan};
pub use schedules::{create_schedule, CreateSchedule};

/// Settings of the API.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// Accept suspect and webhook URLs on loopback/private networks (tests, demos).
    pub allow_private_targets: bool,
    /// Probe set used when a submission names none.
    pub default_probe_set: String,
    /// Requests per second each API key may make (bursts up to twice that); `None` for
    /// no limit.
    pub rate_limit_per_key: Option<std::num::NonZeroU32>,
    /// Mark the UI's cookies `Secure` (when the service sits behind TLS).
    pub secure_cookies: bool,
    /// Where `suspect_path` and local models registered through the API may come from.
    pub models: crate::model::allowed::ModelAccess,
}

/// Per-key request budget (governor's keyed GCRA limiter, in memory per process).
pub type KeyLimiter = governor::DefaultKeyedRateLimiter<uuid::Uuid>;

/// Hand-rolled Prometheus counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub scans_submitted: AtomicU64,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<AppConfig>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<KeyLimiter>>,
}

impl AppState {
    /// Records a write in the audit log.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: String,
        detail: Option<serde_json::Value>,
    ) -> Result<(), AppError> {
        Ok(self
            .store
            .audit(Some(caller.key_id), action, &target, detail)
            .await?)
    }
}

/// The model named `name` (or its id), which must be a reference.
async fn reference_model(state: &AppState, name: &str) -> Result<ModelRow, AppError> {
    let reference = state.store.find_model(name).await?;
    if reference.role != ModelRole::Reference {
        return Err(AppError::BadRequest(format!(
            "{} is not a reference model",
            reference.name
        )));
    }
    Ok(reference)
}
