//! Scans: submit, browse, read, report, cancel.

use std::sync::atomic::Ordering;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::suspect::{check_suspect, SuspectFields};
use super::{page_limit, ApiError, ApiJson, AppState, Caller};
use crate::store::{
    ComparisonRow, Cursor, FingerprintRow, ModelRole, NewScan, Role, ScanFilter, ScanRow,
    ScanStatus,
};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanAccepted {
    pub id: Uuid,
    pub status: ScanStatus,
    /// False when an earlier request with the same Idempotency-Key made this scan.
    pub created: bool,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ScanQuery {
    pub status: Option<String>,
    pub verdict: Option<String>,
    /// Reference model id.
    pub reference: Option<Uuid>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Created before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanPage {
    pub items: Vec<ScanRow>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScanReport {
    pub scan: ScanRow,
    pub fingerprints: Vec<FingerprintRow>,
    pub comparisons: Vec<ComparisonRow>,
}

/// Queue a scan.
#[utoipa::path(post, path = "/v1/scans", request_body = SubmitScan,
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe submission")),
    responses((status = 202, body = ScanAccepted), (status = 400, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SubmitScan>,
) -> Result<impl IntoResponse, ApiError> {
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("Idempotency-Key is not text".into()))?;
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(ApiError::BadRequest(format!(
                    "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
                )));
            }
            Some(key.to_string())
        }
        None => None,
    };
    let (scan, created) = submit_scan(&state, &caller, &req, idempotency_key).await?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/scans/{}", scan.id))],
        Json(ScanAccepted {
            id: scan.id,
            status: scan.status,
            created,
        }),
    ))
}

/// Validates and queues a scan for `caller` (shared by the API and the UI's form).
pub async fn submit_scan(
    state: &AppState,
    caller: &Caller,
    req: &SubmitScan,
    idempotency_key: Option<String>,
) -> Result<(ScanRow, bool), ApiError> {
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
    let reference = state.store.find_model(&req.reference).await?;
    if reference.role != ModelRole::Reference {
        return Err(ApiError::BadRequest(format!(
            "{} is not a reference model",
            reference.name
        )));
    }
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

/// Browse scans (submitters see their own).
#[utoipa::path(get, path = "/v1/scans", params(ScanQuery),
    responses((status = 200, body = ScanPage)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ScanPage>, ApiError> {
    caller.require(Role::Submitter)?;
    let Query(q) = query?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            ScanStatus::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("unknown status {s:?}")))
        })
        .transpose()?;
    let page = state
        .store
        .list_scans(&ScanFilter {
            api_key_id: (!caller.sees_all()).then_some(caller.key_id),
            status,
            verdict: q.verdict,
            reference_model_id: q.reference,
            since: q.since,
            until: q.until,
            cursor: q.cursor.as_deref().map(Cursor::decode).transpose()?,
            limit: page_limit(q.limit),
        })
        .await?;
    Ok(Json(ScanPage {
        items: page.items,
        next_cursor: page.next,
    }))
}

/// The scan if the caller may see it; otherwise "not found" (its existence is not told).
pub async fn visible_scan(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<ScanRow, ApiError> {
    let scan = state.store.get_scan(id).await?;
    if !caller.sees_all() && scan.api_key_id != Some(caller.key_id) {
        return Err(ApiError::NotFound(format!("scan {id} not found")));
    }
    Ok(scan)
}

/// Status, progress and verdict of one scan.
#[utoipa::path(get, path = "/v1/scans/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScanRow), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScanRow>, ApiError> {
    caller.require(Role::Submitter)?;
    let Path(id) = id?;
    Ok(Json(visible_scan(&state, &caller, id).await?))
}

/// The evidence: the scan, its fingerprints and the comparison report.
#[utoipa::path(get, path = "/v1/scans/{id}/report", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScanReport), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScanReport>, ApiError> {
    caller.require(Role::Submitter)?;
    let Path(id) = id?;
    let scan = visible_scan(&state, &caller, id).await?;
    let fingerprints = state.store.scan_fingerprints(id).await?;
    let comparisons = state.store.scan_comparisons(id).await?;
    Ok(Json(ScanReport {
        scan,
        fingerprints,
        comparisons,
    }))
}

/// Cancel a queued or running scan.
#[utoipa::path(delete, path = "/v1/scans/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScanRow), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScanRow>, ApiError> {
    let Path(id) = id?;
    Ok(Json(cancel_scan(&state, &caller, id).await?))
}

/// Cancels a scan the caller may see (shared by the API and the UI).
pub async fn cancel_scan(state: &AppState, caller: &Caller, id: Uuid) -> Result<ScanRow, ApiError> {
    caller.require(Role::Submitter)?;
    visible_scan(state, caller, id).await?;
    let scan = state.store.cancel_scan(id).await?;
    state
        .audit(caller, "scan.cancel", format!("scan/{id}"), None)
        .await?;
    Ok(scan)
}
