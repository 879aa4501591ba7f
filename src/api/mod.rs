//! REST API v1: thin axum handlers over [`Store`], JSON in and out, errors as
//! `application/problem+json`, bearer API keys with roles, every write audited.

mod auth;
mod catalog;
mod error;
mod ops;
mod scans;
mod schedules;
mod suspect;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{any, delete, get};
use axum::Router;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::store::Store;

pub use auth::Caller;
pub use catalog::{compare_fingerprints, ModelsWrite, NewComparison};
pub use error::{ApiError, Problem};
pub use scans::{cancel_scan, submit_scan, visible_scan, SubmitScan};
pub use schedules::{create_schedule, CreateSchedule};

/// Largest request body accepted (scan submissions are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest page size for list endpoints.
pub const MAX_PAGE: i64 = 200;

/// Settings of the API.
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Accept suspect and webhook URLs on loopback/private networks (tests, demos).
    pub allow_private_targets: bool,
    /// Probe set used when a submission names none.
    pub default_probe_set: String,
    /// Requests per second each API key may make (bursts up to twice that); `None` for
    /// no limit.
    pub rate_limit_per_key: Option<std::num::NonZeroU32>,
    /// Mark the UI's cookies `Secure` (when the service sits behind TLS).
    pub secure_cookies: bool,
    /// Where `suspect_path` and local models registered through the API may come from.
    pub models: crate::model::allowed::ModelAccess,
}

/// Per-key request budget (governor's keyed GCRA limiter, in memory per process).
pub type KeyLimiter = governor::DefaultKeyedRateLimiter<uuid::Uuid>;

/// Hand-rolled Prometheus counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
    pub scans_submitted: AtomicU64,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ApiConfig>,
    pub metrics: Arc<Metrics>,
    pub limiter: Option<Arc<KeyLimiter>>,
}

impl AppState {
    /// Records a write in the audit log.
    async fn audit(
        &self,
        caller: &Caller,
        action: &str,
        target: String,
        detail: Option<serde_json::Value>,
    ) -> Result<(), ApiError> {
        Ok(self
            .store
            .audit(Some(caller.key_id), action, &target, detail)
            .await?)
    }
}

/// JSON body extractor whose rejections come out as problem documents.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
        Ok(ApiJson(value))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "provenance", description = "Is a suspect model a copy, derivative or distillation of a reference?"),
    paths(
        scans::submit, scans::list, scans::get_one, scans::report, scans::cancel,
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

/// The whole API, and the analyst UI beside it.
pub fn router(store: Store, config: ApiConfig) -> Router {
    let limiter = config.rate_limit_per_key.map(|per_second| {
        let burst = per_second.saturating_mul(std::num::NonZeroU32::MIN.saturating_add(1));
        Arc::new(governor::RateLimiter::keyed(
            governor::Quota::per_second(per_second).allow_burst(burst),
        ))
    });
    let state = AppState {
        store,
        config: Arc::new(config),
        metrics: Arc::new(Metrics::default()),
        limiter,
    };
    Router::new()
        .route("/v1/scans", get(scans::list).post(scans::submit))
        .route("/v1/scans/{id}", get(scans::get_one).delete(scans::cancel))
        .route("/v1/scans/{id}/report", get(scans::report))
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
        .merge(crate::ui::router())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn_with_state(state.clone(), count))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn count(State(state): State<AppState>, req: Request, next: Next) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let resp = next.run(req).await;
    if resp.status().is_client_error() {
        state.metrics.responses_4xx.fetch_add(1, Ordering::Relaxed);
    } else if resp.status().is_server_error() {
        state.metrics.responses_5xx.fetch_add(1, Ordering::Relaxed);
    }
    resp
}

/// Unknown API paths answer a problem document like every other API error (the UI's
/// fallback serves everything outside `/v1`).
async fn no_such_endpoint() -> ApiError {
    ApiError::NotFound("no such API endpoint".into())
}

/// The UI's pages load nothing but their own stylesheet: no scripts, no frames, forms
/// posting only back here.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Headers that keep browsers from framing, sniffing or running anything on our pages.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// `limit` clamped to 1..=MAX_PAGE, 50 when absent.
fn page_limit(limit: Option<i64>) -> i64 {
    limit.unwrap_or(50).clamp(1, MAX_PAGE)
}
