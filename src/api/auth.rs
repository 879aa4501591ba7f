//! Bearer API keys. A request's key is looked up by its SHA-256; the caller's role
//! decides what it may do (each role includes the ones below it).

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::store::Role;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub role: Role,
}

impl Caller {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// Submitters see only their own scans; analysts and admins see all.
    pub fn sees_all(&self) -> bool {
        self.role >= Role::Analyst
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let key = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let row = state
            .store
            .find_api_key(key)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        state.check_rate_limit(row.id)?;
        Ok(Caller {
            key_id: row.id,
            role: row.role,
        })
    }
}

impl AppState {
    /// Spends one request of the key's budget, or says how long to wait.
    pub fn check_rate_limit(&self, key_id: Uuid) -> Result<(), ApiError> {
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check_key(&key_id) {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Err(ApiError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }
}
