//! Health, readiness, metrics and the OpenAPI document.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::app::{AppError, AppState};

/// The process is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "alive")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", responses((status = 200, description = "ready"), (status = 503, body = super::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| AppError::Unavailable(format!("database: {e}")))?;
    Ok("ready")
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus metrics")))]
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let m = &state.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "provenance_http_requests_total",
        "HTTP requests received.",
        m.requests.load(Ordering::Relaxed),
    );
    counter(
        "provenance_http_responses_4xx_total",
        "Responses with a 4xx status.",
        m.responses_4xx.load(Ordering::Relaxed),
    );
    counter(
        "provenance_http_responses_5xx_total",
        "Responses with a 5xx status.",
        m.responses_5xx.load(Ordering::Relaxed),
    );
    counter(
        "provenance_scans_submitted_total",
        "Scans queued through the API.",
        m.scans_submitted.load(Ordering::Relaxed),
    );
    out.push_str(
        "# HELP provenance_scans Scans in the database by status.\n# TYPE provenance_scans gauge\n",
    );
    for (status, n) in state.store.count_scans_by_status().await? {
        out.push_str(&format!("provenance_scans{{status=\"{status}\"}} {n}\n"));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}

pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
