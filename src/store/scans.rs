//! The scan queue. A worker claims a scan with `FOR UPDATE SKIP LOCKED` and holds it under
//! a lease it renews; every write a worker makes on a scan is conditional on still holding
//! that lease, so a worker that lost its lease (stalled, partitioned) cannot write over the
//! worker that took the scan over.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{page, Cursor, Page, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl ScanStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Queued => "queued",
            ScanStatus::Running => "running",
            ScanStatus::Done => "done",
            ScanStatus::Failed => "failed",
            ScanStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ScanStatus> {
        [
            ScanStatus::Queued,
            ScanStatus::Running,
            ScanStatus::Done,
            ScanStatus::Failed,
            ScanStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ScanStatus::Done | ScanStatus::Failed | ScanStatus::Cancelled
        )
    }
}

impl TryFrom<String> for ScanStatus {
    type Error = StoreError;
    fn try_from(s: String) -> Result<ScanStatus> {
        ScanStatus::parse(&s).ok_or_else(|| StoreError::Invalid(format!("scan status {s:?}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuspectKind {
    /// An OpenAI-compatible endpoint.
    Http,
    /// Open weights: a path or hub repo id, loaded by the worker.
    Local,
}

impl SuspectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspectKind::Http => "http",
            SuspectKind::Local => "local",
        }
    }
}

impl TryFrom<String> for SuspectKind {
    type Error = StoreError;
    fn try_from(s: String) -> Result<SuspectKind> {
        match s.as_str() {
            "http" => Ok(SuspectKind::Http),
            "local" => Ok(SuspectKind::Local),
            _ => Err(StoreError::Invalid(format!("suspect kind {s:?}"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScanRow {
    pub id: Uuid,
    /// The key that submitted the scan (None for scheduled runs).
    pub api_key_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    #[sqlx(try_from = "String")]
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    /// The NAME of the server-side secret with the suspect's API key, never the key.
    pub suspect_secret: Option<String>,
    pub reference_model_id: Uuid,
    pub probe_set_id: Uuid,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    /// Stop once the sequential test decides `identical`.
    pub early_stop: bool,
    pub schedule_id: Option<Uuid>,
    /// The identification this scan is one reference of (`store::identifications`).
    pub identification_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    pub status: ScanStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress_done: i32,
    pub progress_total: i32,
    pub verdict: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub report: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

impl ScanRow {
    fn cursor(&self) -> Cursor {
        Cursor {
            created_at: self.created_at,
            id: self.id,
        }
    }
}

/// What a new scan asks for.
#[derive(Debug, Clone)]
pub struct NewScan {
    pub api_key_id: Option<Uuid>,
    pub idempotency_key: Option<String>,
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    pub suspect_secret: Option<String>,
    pub reference_model_id: Uuid,
    pub probe_set_id: Uuid,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    pub early_stop: bool,
    pub schedule_id: Option<Uuid>,
    pub max_attempts: i32,
}

/// Browse filters; all optional.
#[derive(Debug, Clone, Default)]
pub struct ScanFilter {
    /// Only scans submitted by this key (submitters see their own).
    pub api_key_id: Option<Uuid>,
    pub status: Option<ScanStatus>,
    pub verdict: Option<String>,
    pub reference_model_id: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub cursor: Option<Cursor>,
    pub limit: i64,
}

/// A scan this worker now holds, and which attempt this is.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub scan: ScanRow,
    pub owner: String,
}

pub(super) const COLUMNS: &str =
    "id, api_key_id, idempotency_key, suspect_kind, suspect_source, suspect_model,
    suspect_secret, reference_model_id, probe_set_id, probes_per_kind, max_samples, early_stop,
    schedule_id, identification_id, status, attempts, max_attempts, lease_owner, lease_expires_at, progress_done, progress_total,
    verdict, report, error, created_at, started_at, finished_at, updated_at";

impl Store {
    /// Queues a scan. With an idempotency key already used by the same API key, returns the
    /// existing scan instead, and `false` for "created".
    pub async fn submit_scan(&self, s: &NewScan) -> Result<(ScanRow, bool)> {
        let inserted = sqlx::query_as::<_, ScanRow>(&format!(
            "INSERT INTO scans (id, api_key_id, idempotency_key, suspect_kind, suspect_source,
                 suspect_model, suspect_secret, reference_model_id, probe_set_id, probes_per_kind,
                 max_samples, schedule_id, max_attempts, early_stop)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (api_key_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
             RETURNING {COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(s.api_key_id)
        .bind(&s.idempotency_key)
        .bind(s.suspect_kind.as_str())
        .bind(&s.suspect_source)
        .bind(&s.suspect_model)
        .bind(&s.suspect_secret)
        .bind(s.reference_model_id)
        .bind(s.probe_set_id)
        .bind(s.probes_per_kind)
        .bind(s.max_samples)
        .bind(s.schedule_id)
        .bind(s.max_attempts.max(1))
        .bind(s.early_stop)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = inserted {
            return Ok((row, true));
        }
        // The key was used before: hand back that scan. A NULL api_key_id never conflicts
        // (NULLs are distinct), so the key is always present here.
        let existing = sqlx::query_as::<_, ScanRow>(&format!(
            "SELECT {COLUMNS} FROM scans WHERE api_key_id = $1 AND idempotency_key = $2"
        ))
        .bind(s.api_key_id)
        .bind(&s.idempotency_key)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::Conflict("idempotency key raced with a delete".into()))?;
        Ok((existing, false))
    }

    pub async fn get_scan(&self, id: Uuid) -> Result<ScanRow> {
        sqlx::query_as::<_, ScanRow>(&format!("SELECT {COLUMNS} FROM scans WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("scan {id}")))
    }

    pub async fn list_scans(&self, f: &ScanFilter) -> Result<Page<ScanRow>> {
        let mut q: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM scans WHERE true"));
        if let Some(key) = f.api_key_id {
            q.push(" AND api_key_id = ").push_bind(key);
        }
        if let Some(status) = f.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(verdict) = &f.verdict {
            q.push(" AND verdict = ").push_bind(verdict.clone());
        }
        if let Some(reference) = f.reference_model_id {
            q.push(" AND reference_model_id = ").push_bind(reference);
        }
        if let Some(since) = f.since {
            q.push(" AND created_at >= ").push_bind(since);
        }
        if let Some(until) = f.until {
            q.push(" AND created_at < ").push_bind(until);
        }
        if let Some(c) = f.cursor {
            q.push(" AND (created_at, id) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(f.limit + 1);
        let rows = q.build_query_as::<ScanRow>().fetch_all(&self.pool).await?;
        Ok(page(rows, f.limit, ScanRow::cursor))
    }

    /// Scans per status, for /metrics.
    pub async fn count_scans_by_status(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT status, count(*) FROM scans GROUP BY status ORDER BY status")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Cancels a queued or running scan; a running one's worker notices at its next lease
    /// renewal. Returns the scan as it now is; a finished scan is left alone.
    pub async fn cancel_scan(&self, id: Uuid) -> Result<ScanRow> {
        let cancelled = sqlx::query_as::<_, ScanRow>(&format!(
            "UPDATE scans SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                 finished_at = now(), updated_at = now()
             WHERE id = $1 AND status IN ('queued', 'running') RETURNING {COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        match cancelled {
            Some(row) => Ok(row),
            None => self.get_scan(id).await,
        }
    }

    /// Fails running scans whose lease expired on their last allowed attempt, so they do
    /// not sit in `running` for ever. Returns how many.
    pub async fn fail_exhausted_scans(&self) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE scans SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL,
                 finished_at = now(), updated_at = now(),
                 error = coalesce(error, 'worker lost') || ' (lease expired on the last of '
                         || max_attempts || ' attempts)'
             WHERE status = 'running' AND lease_expires_at < now() AND attempts >= max_attempts",
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Takes the oldest queued scan, or a running one whose lease expired (its worker died),
    /// under a lease of `lease_secs`. Rows another worker is claiming are skipped, never
    /// waited on, so two workers never get the same scan.
    pub async fn claim_scan(&self, owner: &str, lease_secs: f64) -> Result<Option<Claimed>> {
        self.fail_exhausted_scans().await?;
        let row = sqlx::query_as::<_, ScanRow>(&format!(
            "UPDATE scans SET status = 'running', attempts = attempts + 1, lease_owner = $1,
                 lease_expires_at = now() + make_interval(secs => $2),
                 started_at = coalesce(started_at, now()), updated_at = now()
             WHERE id = (
                 SELECT id FROM scans
                 WHERE (status = 'queued'
                        OR (status = 'running' AND lease_expires_at < now()))
                   AND attempts < max_attempts
                 ORDER BY created_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING {COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_secs)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|scan| Claimed {
            scan,
            owner: owner.to_string(),
        }))
    }

    /// Extends the lease. False when this worker no longer holds the scan (it expired and
    /// was taken over, or the scan was cancelled): the worker must stop.
    pub async fn renew_lease(&self, id: Uuid, owner: &str, lease_secs: f64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE scans SET lease_expires_at = now() + make_interval(secs => $3), updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(lease_secs)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records progress; false when the lease is gone.
    pub async fn set_scan_progress(
        &self,
        id: Uuid,
        owner: &str,
        done: i32,
        total: i32,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE scans SET progress_done = $3, progress_total = $4, updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(done)
        .bind(total)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Marks a held scan done with its report and verdict (None while no verdict could be
    /// reached). False when the lease is gone.
    pub async fn finish_scan(
        &self,
        id: Uuid,
        owner: &str,
        verdict: Option<&str>,
        report: &serde_json::Value,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE scans SET status = 'done', verdict = $3, report = $4, error = NULL,
                 lease_owner = NULL, lease_expires_at = NULL, finished_at = now(), updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(verdict)
        .bind(report)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records a failed attempt: back to the queue while attempts remain (`retry`), else
    /// failed for good. False when the lease is gone.
    pub async fn fail_scan(&self, id: Uuid, owner: &str, error: &str, retry: bool) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE scans SET
                 status = CASE WHEN $4 AND attempts < max_attempts THEN 'queued' ELSE 'failed' END,
                 finished_at = CASE WHEN $4 AND attempts < max_attempts THEN NULL ELSE now() END,
                 error = $3, lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
             WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
        )
        .bind(id)
        .bind(owner)
        .bind(error)
        .bind(retry)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The previous finished scan of a schedule, before `before`.
    pub async fn previous_scheduled_scan(
        &self,
        schedule_id: Uuid,
        before: Uuid,
    ) -> Result<Option<ScanRow>> {
        Ok(sqlx::query_as::<_, ScanRow>(&format!(
            "SELECT {COLUMNS} FROM scans
             WHERE schedule_id = $1 AND id <> $2 AND status = 'done'
             ORDER BY finished_at DESC LIMIT 1"
        ))
        .bind(schedule_id)
        .bind(before)
        .fetch_optional(&self.pool)
        .await?)
    }
}
