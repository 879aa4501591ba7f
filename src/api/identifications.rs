//! Identifications: which registered reference, if any, is behind a suspect.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{page_limit, ApiJson};
use crate::app::{
    cancel_identification, identification_view, list_identifications, submit_identification,
    AppError, AppState, Caller, IdentificationView, SubmitIdentification,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentificationAccepted {
    pub id: Uuid,
    /// One scan per reference, queued.
    pub scans: usize,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct IdentificationQuery {
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IdentificationList {
    pub items: Vec<IdentificationView>,
}

/// Queue an identification: the suspect against every registered reference (or those
/// named), one scan each, sharing the suspect's answers.
#[utoipa::path(post, path = "/v1/identifications", request_body = SubmitIdentification,
    responses((status = 202, body = IdentificationAccepted), (status = 400, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SubmitIdentification>,
) -> Result<impl IntoResponse, AppError> {
    let (row, scans) = submit_identification(&state, &caller, &req).await?;
    let scans = scans.len();
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/v1/identifications/{}", row.id))],
        Json(IdentificationAccepted { id: row.id, scans }),
    ))
}

/// The caller's identifications (everyone's for analysts), newest first.
#[utoipa::path(get, path = "/v1/identifications", params(IdentificationQuery),
    responses((status = 200, body = IdentificationList)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<IdentificationQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<IdentificationList>, AppError> {
    let Query(q) = query?;
    let items = list_identifications(&state, &caller, page_limit(q.limit)).await?;
    Ok(Json(IdentificationList { items }))
}

/// The ranking so far, and the answer once every reference's scan is done.
#[utoipa::path(get, path = "/v1/identifications/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = IdentificationView), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<IdentificationView>, AppError> {
    let Path(id) = id?;
    Ok(Json(identification_view(&state, &caller, id).await?))
}

/// Cancel the identification's unfinished scans.
#[utoipa::path(delete, path = "/v1/identifications/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = IdentificationView), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<Json<IdentificationView>, AppError> {
    let Path(id) = id?;
    Ok(Json(cancel_identification(&state, &caller, id).await?))
}
