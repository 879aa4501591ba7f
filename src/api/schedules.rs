//! Scheduled re-scans (admins only).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use uuid::Uuid;

use super::ApiJson;
use crate::app::{create_schedule, AppError, AppState, Caller, CreateSchedule};
use crate::store::{Role, ScheduleRow};

#[utoipa::path(get, path = "/v1/schedules",
    responses((status = 200, body = Vec<ScheduleRow>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ScheduleRow>>, AppError> {
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
) -> Result<(StatusCode, Json<ScheduleRow>), AppError> {
    let row = create_schedule(&state, &caller, req).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[utoipa::path(delete, path = "/v1/schedules/{id}", params(("id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = super::Problem)), security(("bearer" = [])))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    id: Result<Path<Uuid>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, AppError> {
    caller.require(Role::Admin)?;
    let Path(id) = id?;
    state.store.delete_schedule(id).await?;
    state
        .audit(&caller, "schedule.delete", format!("schedule/{id}"), None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
