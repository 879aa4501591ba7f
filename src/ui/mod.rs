//! The analyst UI: server-rendered pages in the same axum app as the API, templates and
//! stylesheet embedded (no CDN: the service may run offline), plots drawn as SVG on the
//! server. Handlers are thin: they call the application (`crate::app`: `submit_scan`, ...), as the API does,
//! so a form and a REST call validate the same way.

mod catalog;
mod diff;
mod error;
mod identifications;
mod models;
pub mod plots;
mod report_view;
mod scans;
mod schedules;
mod session;

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;

use crate::app::AppState;

pub use error::UiError;
pub use session::{Session, SESSION_COOKIE};

/// Rows per page of the lists and the map.
pub const PAGE_ROWS: i64 = 50;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("error.html", include_str!("templates/error.html")),
    ("login.html", include_str!("templates/login.html")),
    ("scans.html", include_str!("templates/scans.html")),
    ("scan.html", include_str!("templates/scan.html")),
    ("scan_new.html", include_str!("templates/scan_new.html")),
    (
        "identifications.html",
        include_str!("templates/identifications.html"),
    ),
    (
        "identification.html",
        include_str!("templates/identification.html"),
    ),
    (
        "fingerprints.html",
        include_str!("templates/fingerprints.html"),
    ),
    ("compare.html", include_str!("templates/compare.html")),
    ("comparison.html", include_str!("templates/comparison.html")),
    ("map.html", include_str!("templates/map.html")),
    ("models.html", include_str!("templates/models.html")),
    ("schedules.html", include_str!("templates/schedules.html")),
    ("schedule.html", include_str!("templates/schedule.html")),
];

const STYLE: &str = include_str!("templates/style.css");

// A template that fails to parse is kept as its message (minijinja errors do not clone).
static ENV: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|e| format!("{e:#}"))?;
    }
    Ok(env)
});

/// Renders an embedded template (HTML-escaped by default).
pub fn render<S: serde::Serialize>(name: &str, ctx: S) -> Result<Html<String>, UiError> {
    let env = ENV.as_ref().map_err(|e| {
        UiError::Template(minijinja::Error::new(
            minijinja::ErrorKind::TemplateNotFound,
            e.clone(),
        ))
    })?;
    Ok(Html(env.get_template(name)?.render(ctx)?))
}

/// The UI's routes (state supplied by the API router they are merged into).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/scans") }))
        .route("/ui", get(|| async { Redirect::to("/ui/scans") }))
        .route("/ui/style.css", get(style))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/scans", get(scans::list).post(scans::submit))
        .route("/ui/scans/new", get(scans::new_form))
        .route("/ui/scans/{id}", get(scans::detail))
        .route("/ui/scans/{id}/cancel", post(scans::cancel))
        .route(
            "/ui/identifications",
            get(identifications::list).post(identifications::submit),
        )
        .route("/ui/identifications/{id}", get(identifications::detail))
        .route(
            "/ui/identifications/{id}/cancel",
            post(identifications::cancel),
        )
        .route("/ui/fingerprints", get(catalog::fingerprints))
        .route(
            "/ui/compare",
            get(catalog::compare_form).post(catalog::compare),
        )
        .route("/ui/comparisons/{id}", get(catalog::comparison))
        .route("/ui/map", get(catalog::map))
        .route("/ui/models", get(models::list).post(models::create))
        .route(
            "/ui/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route("/ui/schedules/{id}", get(schedules::detail))
        .fallback(|| async { UiError::NotFound("no such page".into()) })
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

/// Parses an id from a path or form, with a message a person understands.
fn parse_id(what: &str, text: &str) -> Result<uuid::Uuid, UiError> {
    uuid::Uuid::parse_str(text.trim())
        .map_err(|_| UiError::BadRequest(format!("{what} {:?} is not a valid id", text.trim())))
}

/// An optional number typed into a form ("" means not given).
fn parse_optional_int(what: &str, text: &str) -> Result<Option<i32>, UiError> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    match t.parse::<i32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(UiError::BadRequest(format!(
            "{what} must be a whole number above zero, not {t:?}"
        ))),
    }
}

/// The link to the next page of a list: its filters kept, the cursor added.
fn next_href(path: &str, filters: &[(&str, &str)], next: Option<String>) -> Option<String> {
    let next = next?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in filters.iter().filter(|(_, v)| !v.is_empty()) {
        query.append_pair(k, v);
    }
    query.append_pair("cursor", &next);
    Some(format!("{path}?{}", query.finish()))
}

/// `Some(text)` when the form field was filled in.
fn non_empty(text: &str) -> Option<String> {
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses() {
        let env = ENV.as_ref().expect("templates parse");
        for (name, _) in TEMPLATES {
            env.get_template(name).expect(name);
        }
    }

    #[test]
    fn form_numbers_are_checked() {
        assert_eq!(parse_optional_int("n", " ").expect("blank"), None);
        assert_eq!(parse_optional_int("n", "4").expect("four"), Some(4));
        assert!(parse_optional_int("n", "-1").is_err());
        assert!(parse_optional_int("n", "many").is_err());
        assert!(parse_id("scan", "nope").is_err());
        assert_eq!(
            next_href(
                "/ui/scans",
                &[("status", "done"), ("verdict", "")],
                Some("1_a".into())
            ),
            Some("/ui/scans?status=done&cursor=1_a".into())
        );
        assert_eq!(next_href("/ui/scans", &[], None), None);
    }
}
