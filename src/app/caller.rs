//! Who is asking: an API key's id and role (each role includes the ones below it), and
//! the per-key request budget.

use uuid::Uuid;

use super::{AppError, AppState};
use crate::store::Role;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: Uuid,
    pub role: Role,
}

impl Caller {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AppError::Forbidden)
        }
    }

    /// Submitters see only their own scans; analysts and admins see all.
    pub fn sees_all(&self) -> bool {
        self.role >= Role::Analyst
    }
}

impl AppState {
    /// Spends one request of the key's budget, or says how long to wait.
    pub fn check_rate_limit(&self, key_id: Uuid) -> Result<(), AppError> {
        if let Some(limiter) = &self.limiter {
            if let Err(not_until) = limiter.check_key(&key_id) {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                return Err(AppError::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
        }
        Ok(())
    }
}
