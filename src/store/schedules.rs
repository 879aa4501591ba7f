//! Scheduled re-scans.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::scans::SuspectKind;
use super::{Result, ScanRow, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub name: String,
    pub cron: String,
    #[sqlx(try_from = "String")]
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    pub suspect_secret: Option<String>,
    pub reference_model_id: Uuid,
    pub probe_set_id: Uuid,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    pub webhook_url: Option<String>,
    /// NAME of the secret holding the webhook's HMAC key.
    pub webhook_secret_name: Option<String>,
    pub drift_threshold: f64,
    pub enabled: bool,
    pub last_run_at: Option<DateTime<Utc>>,
    pub next_run_at: DateTime<Utc>,
    pub last_scan_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NewSchedule {
    pub name: String,
    pub cron: String,
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    pub suspect_secret: Option<String>,
    pub reference_model_id: Uuid,
    pub probe_set_id: Uuid,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    pub webhook_url: Option<String>,
    pub webhook_secret_name: Option<String>,
    pub drift_threshold: f64,
    pub next_run_at: DateTime<Utc>,
    pub created_by: Option<Uuid>,
}

const COLUMNS: &str = "id, name, cron, suspect_kind, suspect_source, suspect_model, suspect_secret,
    reference_model_id, probe_set_id, probes_per_kind, max_samples, webhook_url,
    webhook_secret_name, drift_threshold, enabled, last_run_at, next_run_at, last_scan_id,
    created_by, created_at";

impl Store {
    pub async fn create_schedule(&self, s: &NewSchedule) -> Result<ScheduleRow> {
        Ok(sqlx::query_as::<_, ScheduleRow>(&format!(
            "INSERT INTO schedules (id, name, cron, suspect_kind, suspect_source, suspect_model,
                 suspect_secret, reference_model_id, probe_set_id, probes_per_kind, max_samples,
                 webhook_url, webhook_secret_name, drift_threshold, next_run_at, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             RETURNING {COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(&s.name)
        .bind(&s.cron)
        .bind(s.suspect_kind.as_str())
        .bind(&s.suspect_source)
        .bind(&s.suspect_model)
        .bind(&s.suspect_secret)
        .bind(s.reference_model_id)
        .bind(s.probe_set_id)
        .bind(s.probes_per_kind)
        .bind(s.max_samples)
        .bind(&s.webhook_url)
        .bind(&s.webhook_secret_name)
        .bind(s.drift_threshold)
        .bind(s.next_run_at)
        .bind(s.created_by)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRow>> {
        Ok(sqlx::query_as::<_, ScheduleRow>(&format!(
            "SELECT {COLUMNS} FROM schedules ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_schedule(&self, id: Uuid) -> Result<ScheduleRow> {
        sqlx::query_as::<_, ScheduleRow>(&format!("SELECT {COLUMNS} FROM schedules WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("schedule {id}")))
    }

    pub async fn delete_schedule(&self, id: Uuid) -> Result<()> {
        let r = sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("schedule {id}")));
        }
        Ok(())
    }

    /// Fires one due schedule: queues its scan and moves its next run on, in one
    /// transaction, so with several service processes each run is queued exactly once.
    /// `next_run` gives the schedule's next time after now (from its cron expression).
    pub async fn fire_due_schedule(
        &self,
        next_run: impl Fn(&ScheduleRow) -> Option<DateTime<Utc>>,
    ) -> Result<Option<(ScheduleRow, ScanRow)>> {
        let mut tx = self.pool.begin().await?;
        let due = sqlx::query_as::<_, ScheduleRow>(&format!(
            "SELECT {COLUMNS} FROM schedules WHERE enabled AND next_run_at <= now()
             ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED"
        ))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(schedule) = due else {
            return Ok(None);
        };
        let scan_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO scans (id, suspect_kind, suspect_source, suspect_model, suspect_secret,
                 reference_model_id, probe_set_id, probes_per_kind, max_samples, schedule_id,
                 early_stop)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, false)",
        )
        .bind(scan_id)
        .bind(schedule.suspect_kind.as_str())
        .bind(&schedule.suspect_source)
        .bind(&schedule.suspect_model)
        .bind(&schedule.suspect_secret)
        .bind(schedule.reference_model_id)
        .bind(schedule.probe_set_id)
        .bind(schedule.probes_per_kind)
        .bind(schedule.max_samples)
        .bind(schedule.id)
        .execute(&mut *tx)
        .await?;
        // A cron with no future time (e.g. a past date) disables the schedule.
        let next = next_run(&schedule);
        sqlx::query(
            "UPDATE schedules SET last_run_at = now(), last_scan_id = $2,
                 next_run_at = coalesce($3, next_run_at), enabled = $3 IS NOT NULL
             WHERE id = $1",
        )
        .bind(schedule.id)
        .bind(scan_id)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let scan = self.get_scan(scan_id).await?;
        Ok(Some((schedule, scan)))
    }
}
