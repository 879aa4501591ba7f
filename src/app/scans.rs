//! Scans: submit, see and cancel, for the API and the UI alike.

use std::sync::atomic::Ordering;

use serde::Deserialize;
use uuid::Uuid;

use super::suspect::{check_suspect, SuspectFields};
use super::{reference_model, AppError, AppState, Caller};
use crate::store::{NewScan, Role, ScanRow};

/// A scan request. Give `suspect_url` (an OpenAI-compatible base URL) or `suspect_path`
/// (open weights the service loads: analysts and admins only).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitScan {
    pub suspect_url: Option<String>,
    pub suspect_path: Option<String>,
    /// Model name sent to the suspect endpoint.
    #[serde(default)]
    pub suspect_model: String,
    /// Name of the server-side secret holding the suspect's API key (never the key).
    pub suspect_secret: Option<String>,
    /// Reference model, by name or id.
    pub reference: String,
    /// Probe set, by name (`name@version`) or id; the service's default when absent.
    pub probe_set: Option<String>,
    /// Ask only the first N probes of each kind (quick scans).
    pub probes_per_kind: Option<i32>,
    /// At most this many samples per sampling probe.
    pub max_samples: Option<i32>,
    /// Stop once the sequential test decides `identical` (default true); false asks
    /// every probe.
    pub early_stop: Option<bool>,
}

/// Validates and queues a scan for `caller` (shared by the API and the UI's form).
pub async fn submit_scan(
    state: &AppState,
    caller: &Caller,
    req: &SubmitScan,
    idempotency_key: Option<String>,
) -> Result<(ScanRow, bool), AppError> {
    caller.require(Role::Submitter)?;
    let (suspect_kind, suspect_source) = check_suspect(
        state,
        caller,
        &SuspectFields {
            url: req.suspect_url.as_deref(),
            path: req.suspect_path.as_deref(),
            model: &req.suspect_model,
            secret: req.suspect_secret.as_deref(),
        },
    )?;
    let reference = reference_model(state, &req.reference).await?;
    let probe_set_spec = req
        .probe_set
        .clone()
        .unwrap_or_else(|| state.config.default_probe_set.clone());
    let probe_set = state.store.find_probe_set(&probe_set_spec).await?;
    let (scan, created) = state
        .store
        .submit_scan(&NewScan {
            api_key_id: Some(caller.key_id),
            idempotency_key,
            suspect_kind,
            suspect_source,
            suspect_model: req.suspect_model.trim().to_string(),
            suspect_secret: req.suspect_secret.clone(),
            reference_model_id: reference.id,
            probe_set_id: probe_set.id,
            probes_per_kind: req.probes_per_kind.filter(|n| *n > 0),
            max_samples: req.max_samples.filter(|n| *n > 0),
            early_stop: req.early_stop.unwrap_or(true),
            schedule_id: None,
            max_attempts: 3,
        })
        .await?;
    if created {
        state
            .metrics
            .scans_submitted
            .fetch_add(1, Ordering::Relaxed);
        state
            .audit(caller, "scan.submit", format!("scan/{}", scan.id), None)
            .await?;
    }
    Ok((scan, created))
}

/// The scan if the caller may see it; otherwise "not found" (its existence is not told).
pub async fn visible_scan(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ScanRow, AppError> {
    let scan = state.store.get_scan(id).await?;
    if !caller.sees_all() && scan.api_key_id != Some(caller.key_id) {
        return Err(AppError::NotFound(format!("scan {id} not found")));
    }
    Ok(scan)
}

/// Cancels a scan the caller may see (shared by the API and the UI).
pub async fn cancel_scan(state: &AppState, caller: &Caller, id: Uuid) -> Result<ScanRow, AppError> {
    caller.require(Role::Submitter)?;
    visible_scan(state, caller, id).await?;
    let scan = state.store.cancel_scan(id).await?;
    state
        .audit(caller, "scan.cancel", format!("scan/{id}"), None)
        .await?;
    Ok(scan)
}
