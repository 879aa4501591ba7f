//! Every failure of a UI page, mapped once to a page a person can read: a sign-in
//! redirect, or the error page with a plain message (never a stack trace).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::app::AppError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("sign in first")]
    SignIn,
    #[error("this form has expired or came from another page; reload the page and try again")]
    Csrf,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    App(#[from] AppError),
    #[error("a page template failed: {0}")]
    Template(#[from] minijinja::Error),
}

impl From<StoreError> for UiError {
    fn from(err: StoreError) -> Self {
        UiError::App(err.into())
    }
}

impl From<axum::extract::rejection::FormRejection> for UiError {
    fn from(rejection: axum::extract::rejection::FormRejection) -> Self {
        UiError::BadRequest(rejection.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for UiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        UiError::BadRequest(rejection.body_text())
    }
}

impl UiError {
    pub fn status(&self) -> StatusCode {
        match self {
            UiError::SignIn => StatusCode::SEE_OTHER,
            UiError::Csrf => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::App(e) => e.status(),
            UiError::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// True for a problem with what was typed into a form (shown on the form, filled in
    /// again), false for one of the session or the server (its own page or a redirect).
    pub fn belongs_on_form(&self) -> bool {
        match self {
            UiError::BadRequest(_) | UiError::NotFound(_) => true,
            UiError::App(AppError::Unauthorized) => false,
            UiError::App(e) => !e.status().is_server_error(),
            _ => false,
        }
    }

    /// What the page says: internals stay in the log.
    pub fn message(&self) -> String {
        match self {
            UiError::Template(_) => "internal error".into(),
            UiError::App(AppError::Forbidden) => {
                "your API key's role may not do that; sign in with a key of a higher role".into()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if let UiError::SignIn = self {
            return Redirect::to("/ui/login").into_response();
        }
        if let UiError::App(AppError::Unauthorized) = self {
            return Redirect::to("/ui/login").into_response();
        }
        match &self {
            UiError::Template(e) => tracing::error!(error = %e, "UI template failed"),
            UiError::App(AppError::Internal(detail)) => {
                tracing::error!(error = %detail, "UI internal error")
            }
            _ => {}
        }
        let status = self.status();
        let body = super::render(
            "error.html",
            minijinja::context! {
                status => status.as_u16(),
                reason => status.canonical_reason().unwrap_or("Error"),
                message => self.message(),
            },
        )
        .unwrap_or_else(|_| {
            Html(format!(
                "<!doctype html><title>Error</title><p>{}</p>",
                status
            ))
        });
        let mut resp = (status, body).into_response();
        if let UiError::App(AppError::RateLimited { retry_after_secs }) = &self {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        resp
    }
}
