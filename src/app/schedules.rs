//! Schedules: re-scans of a suspect on a cron, for the API and the UI alike.

use chrono::Utc;
use serde::Deserialize;

use super::suspect::{check_suspect, SuspectFields};
use super::{reference_model, AppError, AppState, Caller};
use crate::jobs::{next_run, validate_cron};
use crate::secrets::valid_secret_name;
use crate::store::{NewSchedule, Role, ScheduleRow};
use crate::suspect::UrlGuard;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    pub name: String,
    /// Cron expression: 5 fields, or 6 with seconds first.
    pub cron: String,
    pub suspect_url: Option<String>,
    /// Open weights (path or hub repo id) re-scanned on each run.
    pub suspect_path: Option<String>,
    #[serde(default)]
    pub suspect_model: String,
    pub suspect_secret: Option<String>,
    pub reference: String,
    pub probe_set: Option<String>,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    pub webhook_url: Option<String>,
    /// Name of the secret holding the webhook's HMAC key.
    pub webhook_secret: Option<String>,
    /// Share of greedy answers that may change between runs before the webhook fires.
    pub drift_threshold: Option<f64>,
}

/// Validates and stores a schedule for `caller` (shared by the API and the UI's form).
pub async fn create_schedule(
    state: &AppState,
    caller: &Caller,
    req: CreateSchedule,
) -> Result<ScheduleRow, AppError> {
    caller.require(Role::Admin)?;
    validate_cron(&req.cron).map_err(AppError::BadRequest)?;
    let next_run_at = next_run(&req.cron, Utc::now())
        .ok_or_else(|| AppError::BadRequest("the cron expression never fires again".into()))?;
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
    if let Some(url) = &req.webhook_url {
        UrlGuard::new(state.config.allow_private_targets)
            .check_url(url)
            .map_err(|e| AppError::BadRequest(format!("webhook_url: {e}")))?;
    }
    if let Some(secret) = &req.webhook_secret {
        if !valid_secret_name(secret) {
            return Err(AppError::BadRequest(format!(
                "{secret:?} is not a secret name (letters, digits, single underscores)"
            )));
        }
    }
    let reference = reference_model(state, &req.reference).await?;
    let probe_set = state
        .store
        .find_probe_set(
            req.probe_set
                .as_deref()
                .unwrap_or(&state.config.default_probe_set),
        )
        .await?;
    let row = state
        .store
        .create_schedule(&NewSchedule {
            name: req.name,
            cron: req.cron,
            suspect_kind,
            suspect_source,
            suspect_model: req.suspect_model.trim().to_string(),
            suspect_secret: req.suspect_secret,
            reference_model_id: reference.id,
            probe_set_id: probe_set.id,
            probes_per_kind: req.probes_per_kind.filter(|n| *n > 0),
            max_samples: req.max_samples.filter(|n| *n > 0),
            webhook_url: req.webhook_url,
            webhook_secret_name: req.webhook_secret,
            drift_threshold: req.drift_threshold.unwrap_or(0.2).clamp(0.0, 1.0),
            next_run_at,
            created_by: Some(caller.key_id),
        })
        .await?;
    state
        .audit(
            caller,
            "schedule.create",
            format!("schedule/{}", row.id),
            None,
        )
        .await?;
    Ok(row)
}
