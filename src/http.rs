//! The service's HTTP surface: the REST API and the analyst UI side by side over one
//! application state, with the layers both share (body limit, security headers,
//! request counters, tracing).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;

use crate::app::{AppConfig, AppState, Metrics};
use crate::store::Store;

/// Largest request body accepted (scan submissions and forms are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The whole service: the API, and the analyst UI beside it.
pub fn router(store: Store, config: AppConfig) -> Router {
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
    crate::api::router()
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
