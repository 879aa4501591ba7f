//! PostgreSQL access. Only this module writes SQL; everything else goes through [`Store`].
//!
//! Queries use sqlx's runtime API (no compile-time checking: there is no database at
//! build time), one file per table family. The schema lives in `migrations/` and is
//! applied by [`Store::migrate`].

mod comparisons;
mod fingerprints;
mod identifications;
mod keys;
mod models;
mod probe_sets;
mod scans;
mod schedules;
mod sessions;
mod views;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgPool, PgPoolOptions};
use uuid::Uuid;

pub use comparisons::{ComparisonRow, NewVerdict};
pub use fingerprints::{
    FingerprintFilter, FingerprintRow, NewBuiltinControl, ObservationRow, Side,
};
pub use identifications::{IdentificationRow, NewIdentification};
pub use keys::{hash_key, ApiKeyRow, AuditEntry, Role};
pub use models::{ModelKind, ModelRole, ModelRow, NewModel};
pub use probe_sets::ProbeSetRow;
pub use scans::{Claimed, NewScan, ScanFilter, ScanRow, ScanStatus, SuspectKind};
pub use schedules::{NewSchedule, ScheduleRow};
pub use sessions::{random_token, SessionRow};
pub use views::{HistoryPoint, MapCell};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("cannot encode or decode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl StoreError {
    /// Maps a unique-constraint violation to `Conflict`, leaving other errors alone.
    fn conflict_on_unique(err: sqlx::Error, what: &str) -> StoreError {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(format!("{what} already exists"))
            }
            _ => StoreError::Db(err),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The service's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects (without migrating).
    pub async fn connect(url: &str) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await?;
        Ok(Store { pool })
    }

    pub fn from_pool(pool: PgPool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the migrations embedded from `migrations/`.
    pub async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations").run(&self.pool).await?;
        Ok(())
    }

    /// True when the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A position in a list ordered by `(created_at DESC, id DESC)`: the last row of a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    /// An opaque token: microseconds since the epoch and the id.
    pub fn encode(&self) -> String {
        format!(
            "{}_{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    pub fn decode(token: &str) -> Result<Cursor> {
        let bad = || StoreError::Invalid(format!("malformed cursor {token:?}"));
        let (micros, id) = token.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        let created_at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(Cursor { created_at, id })
    }
}

/// One page of a list and the cursor of the next page, if there is one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// Cuts `limit + 1` fetched rows to a page, with a cursor when there was more.
fn page<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let limit = limit.max(0) as usize;
    let next = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| key(r).encode())
    } else {
        None
    };
    Page { items: rows, next }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid"),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).expect("decodes"), c);
        assert!(Cursor::decode("nope").is_err());
        assert!(Cursor::decode("12_notauuid").is_err());
    }
}
