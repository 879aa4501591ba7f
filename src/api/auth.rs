//! Bearer API keys: a request's key is looked up by its SHA-256 and becomes its
//! [`Caller`].

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::app::{AppError, AppState, Caller};

impl FromRequestParts<AppState> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AppError::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AppError::Unauthorized)?;
        let row = state
            .store
            .find_api_key(key)
            .await?
            .ok_or(AppError::Unauthorized)?;
        state.check_rate_limit(row.id)?;
        Ok(Caller {
            key_id: row.id,
            role: row.role,
        })
    }
}
