//! Scans: submit, browse, read, report, cancel.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{page_limit, ApiJson};
use crate::app::{cancel_scan, submit_scan, visible_scan, AppError, AppState, Caller, SubmitScan};
use crate::store::{ComparisonRow, Cursor, FingerprintRow, Role, ScanFilter, ScanRow, ScanStatus};

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 200;

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
) -> Result<impl IntoResponse, AppError> {
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| AppError::BadRequest("Idempotency-Key is not text".into()))?;
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
                return Err(AppError::BadRequest(format!(
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

/// Browse scans (submitters see their own).
#[utoipa::path(get, path = "/v1/scans", params(ScanQuery),
    responses((status = 200, body = ScanPage)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ScanQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ScanPage>, AppError> {
    caller.require(Role::Submitter)?;
    let Query(q) = query?;
    let status = q
        .status
        .as_deref()
        .map(|s| {
            ScanStatus::parse(s)
                .ok_or_else(|| AppError::BadRequest(format!("unknown status {s:?}")))
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

/// Status, progress and verdict of one scan.
#[utoipa::path(get, path = "/v1/scans/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = ScanRow), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScanRow>, AppError> {
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
) -> Result<Json<ScanReport>, AppError> {
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
) -> Result<Json<ScanRow>, AppError> {
    let Path(id) = id?;
    Ok(Json(cancel_scan(&state, &caller, id).await?))
}
