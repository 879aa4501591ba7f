//! What the application's operations can fail with, for both adapters (the REST API's
//! problem documents and the UI's pages), and the one mapping of each failure to an HTTP
//! status that both use.

use axum::http::StatusCode;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("this key's role may not do that")]
    Forbidden,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    /// A rejected body: too large, not JSON, wrong shape.
    #[error("{message}")]
    Body { status: StatusCode, message: String },
    #[error("internal error")]
    Internal(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("too many requests for this API key; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Body { status, .. } => *status,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(what) => AppError::NotFound(format!("{what} not found")),
            StoreError::Conflict(what) => AppError::Conflict(what),
            StoreError::Invalid(what) => AppError::BadRequest(what),
            other => AppError::Internal(other.to_string()),
        }
    }
}

impl From<crate::jobs::JobError> for AppError {
    fn from(err: crate::jobs::JobError) -> Self {
        match err {
            crate::jobs::JobError::Store(e) => e.into(),
            other => AppError::Conflict(other.to_string()),
        }
    }
}
