//! Fingerprints, comparisons, models and probe sets.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{page_limit, ApiJson};
use crate::app::{compare_fingerprints, AppError, AppState, Caller};
use crate::store::{
    ComparisonRow, Cursor, FingerprintFilter, FingerprintRow, ModelKind, ModelRole, ModelRow,
    NewModel, ObservationRow, ProbeSetRow, Role,
};

type PathId = Result<Path<Uuid>, axum::extract::rejection::PathRejection>;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct FingerprintQuery {
    pub model: Option<Uuid>,
    pub probe_set: Option<Uuid>,
    pub control: Option<bool>,
    /// `partial` or `complete`.
    pub status: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FingerprintPage {
    pub items: Vec<FingerprintRow>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FingerprintDetail {
    pub fingerprint: FingerprintRow,
    pub observations: Vec<ObservationRow>,
}

/// Browse fingerprints.
#[utoipa::path(get, path = "/v1/fingerprints", params(FingerprintQuery),
    responses((status = 200, body = FingerprintPage)), security(("bearer" = [])))]
pub async fn list_fingerprints(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<FingerprintQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FingerprintPage>, AppError> {
    caller.require(Role::Analyst)?;
    let Query(q) = query?;
    let page = state
        .store
        .list_fingerprints(&FingerprintFilter {
            model_id: q.model,
            probe_set_id: q.probe_set,
            is_control: q.control,
            status: q.status,
            api_key_id: None,
            cursor: q.cursor.as_deref().map(Cursor::decode).transpose()?,
            limit: page_limit(q.limit),
            without_document: false,
        })
        .await?;
    Ok(Json(FingerprintPage {
        items: page.items,
        next_cursor: page.next,
    }))
}

/// One fingerprint with its raw observations.
#[utoipa::path(get, path = "/v1/fingerprints/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = FingerprintDetail), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn get_fingerprint(
    State(state): State<AppState>,
    caller: Caller,
    id: PathId,
) -> Result<Json<FingerprintDetail>, AppError> {
    caller.require(Role::Analyst)?;
    let Path(id) = id?;
    let fingerprint = state.store.get_fingerprint(id).await?;
    let observations = state.store.observations(id).await?;
    Ok(Json(FingerprintDetail {
        fingerprint,
        observations,
    }))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComparison {
    pub reference_fingerprint_id: Uuid,
    pub suspect_fingerprint_id: Uuid,
}

/// Compare two stored fingerprints (no model is queried).
#[utoipa::path(post, path = "/v1/comparisons", request_body = NewComparison,
    responses((status = 201, body = ComparisonRow), (status = 404, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn create_comparison(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewComparison>,
) -> Result<(StatusCode, Json<ComparisonRow>), AppError> {
    let row = compare_fingerprints(
        &state,
        &caller,
        req.reference_fingerprint_id,
        req.suspect_fingerprint_id,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ModelQuery {
    /// reference, suspect or control.
    pub role: Option<ModelRole>,
}

/// Registered models.
#[utoipa::path(get, path = "/v1/models", params(ModelQuery),
    responses((status = 200, body = Vec<ModelRow>)), security(("bearer" = [])))]
pub async fn list_models(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ModelQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<ModelRow>>, AppError> {
    caller.require(Role::Submitter)?;
    let Query(q) = query?;
    let models = state.store.list_models(q.role).await?;
    Ok(Json(models.into_iter().map(public_model).collect()))
}

/// A model as users see it: a local model's source without the server's directories.
fn public_model(mut row: ModelRow) -> ModelRow {
    if row.kind == ModelKind::Local {
        row.source = crate::model::public_source(&row.source);
    }
    row
}

/// Register a model, or mark a stored fingerprint as a control (or not).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ModelsWrite {
    MarkControl { fingerprint_id: Uuid, control: bool },
    Register(NewModel),
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ModelsWritten {
    Model(ModelRow),
    Fingerprint(FingerprintRow),
}

#[utoipa::path(post, path = "/v1/models", request_body = ModelsWrite,
    responses((status = 201, body = ModelsWritten), (status = 409, body = super::Problem)),
    security(("bearer" = [])))]
pub async fn write_models(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ModelsWrite>,
) -> Result<(StatusCode, Json<ModelsWritten>), AppError> {
    caller.require(Role::Analyst)?;
    match req {
        ModelsWrite::MarkControl {
            fingerprint_id,
            control,
        } => {
            state
                .store
                .set_fingerprint_control(fingerprint_id, control)
                .await?;
            state
                .audit(
                    &caller,
                    "fingerprint.control",
                    format!("fingerprint/{fingerprint_id}"),
                    Some(serde_json::json!({ "control": control })),
                )
                .await?;
            let row = state.store.get_fingerprint(fingerprint_id).await?;
            Ok((StatusCode::OK, Json(ModelsWritten::Fingerprint(row))))
        }
        ModelsWrite::Register(model) => {
            let row = crate::app::register_model(&state, &caller, model).await?;
            Ok((
                StatusCode::CREATED,
                Json(ModelsWritten::Model(public_model(row))),
            ))
        }
    }
}

/// Registered probe sets.
#[utoipa::path(get, path = "/v1/probe-sets",
    responses((status = 200, body = Vec<ProbeSetRow>)), security(("bearer" = [])))]
pub async fn list_probe_sets(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ProbeSetRow>>, AppError> {
    caller.require(Role::Submitter)?;
    Ok(Json(state.store.list_probe_sets().await?))
}
