//! Scheduled re-scans (admins only).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::suspect::{check_suspect, SuspectFields};
use super::{ApiError, ApiJson, AppState, Caller};
use crate::jobs::{next_run, validate_cron};
use crate::secrets::valid_secret_name;
use crate::store::{ModelRole, NewSchedule, Role, ScheduleRow};
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

#[utoipa::path(get, path = "/v1/schedules",
    responses((status = 200, body = Vec<ScheduleRow>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ScheduleRow>>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(Json(state.store.list_schedules().await?))
}

#[utoipa::path(post, path = "/v1/schedules", request_body = CreateSchedule,
    responses((status = 201, body = ScheduleRow), (status = 400, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleRow>), ApiError> {
    let row = create_schedule(&state, &caller, req).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// Validates and stores a schedule for `caller` (shared by the API and the UI's form).
pub async fn create_schedule(
    state: &AppState,
    caller: &Caller,
    req: CreateSchedule,
) -> Result<ScheduleRow, ApiError> {
    caller.require(Role::Admin)?;
    validate_cron(&req.cron).map_err(ApiError::BadRequest)?;
    let next_run_at = next_run(&req.cron, Utc::now())
        .ok_or_else(|| ApiError::BadRequest("the cron expression never fires again".into()))?;
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
            .map_err(|e| ApiError::BadRequest(format!("webhook_url: {e}")))?;
    }
    if let Some(secret) = &req.webhook_secret {
        if !valid_secret_name(secret) {
            return Err(ApiError::BadRequest(format!(
                "{secret:?} is not a secret name (letters, digits, single underscores)"
            )));
        }
    }
    let reference = state.store.find_model(&req.reference).await?;
    if reference.role != ModelRole::Reference {
        return Err(ApiError::BadRequest(format!(
            "{} is not a reference model",
            reference.name
        )));
    }
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

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = super::Problem)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, ApiError> {
    caller.require(Role::Admin)?;
    let Path(id) = id?;
    state.store.delete_schedule(id).await?;
    state
        .audit(&caller, "schedule.delete", format!("schedule/{id}"), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
