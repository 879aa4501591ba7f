//! REST API v1: thin axum handlers over the application (`crate::app`), JSON in and
//! out, errors as `application/problem+json`, bearer API keys with roles.

mod auth;
mod catalog;
mod error;
mod identifications;
mod ops;
mod scans;
mod schedules;

use axum::extract::{FromRequest, Request};
use axum::routing::{any, delete, get};
use axum::Router;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::app::{AppError, AppState};

pub use catalog::{ModelsWrite, NewComparison};
pub use error::Problem;

/// Largest page size for list endpoints.
pub const MAX_PAGE: i64 = 200;

/// JSON body extractor whose rejections come out as problem documents.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "provenance", description = "Is a suspect model a copy, derivative or distillation of a reference?"),
    paths(
        scans::submit, scans::list, scans::get_one, scans::report, scans::cancel,
        identifications::submit, identifications::list, identifications::get_one,
        identifications::cancel,
        catalog::list_fingerprints, catalog::get_fingerprint, catalog::create_comparison,
        catalog::list_models, catalog::write_models, catalog::list_probe_sets,
        schedules::list, schedules::create, schedules::remove,
        ops::healthz, ops::readyz, ops::metrics,
    ),
    components(schemas(Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API's routes over the application's state (`crate::http` serves them beside the
/// UI's, with the layers both share).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/scans", get(scans::list).post(scans::submit))
        .route("/v1/scans/{id}", get(scans::get_one).delete(scans::cancel))
        .route("/v1/scans/{id}/report", get(scans::report))
        .route(
            "/v1/identifications",
            get(identifications::list).post(identifications::submit),
        )
        .route(
            "/v1/identifications/{id}",
            get(identifications::get_one).delete(identifications::cancel),
        )
        .route("/v1/fingerprints", get(catalog::list_fingerprints))
        .route("/v1/fingerprints/{id}", get(catalog::get_fingerprint))
        .route(
            "/v1/comparisons",
            axum::routing::post(catalog::create_comparison),
        )
        .route(
            "/v1/models",
            get(catalog::list_models).post(catalog::write_models),
        )
        .route("/v1/probe-sets", get(catalog::list_probe_sets))
        .route(
            "/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route("/v1/schedules/{id}", delete(schedules::remove))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/v1", any(no_such_endpoint))
        .route("/v1/{*rest}", any(no_such_endpoint))
}

/// Unknown API paths answer a problem document like every other API error (the UI's
/// fallback serves everything outside `/v1`).
async fn no_such_endpoint() -> AppError {
    AppError::NotFound("no such API endpoint".into())
}

/// `limit` clamped to 1..=MAX_PAGE, 50 when absent.
fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, MAX_PAGE)
}
