//! Read-only views for the analyst UI: the similarity map of stored fingerprints against
//! each reference, and the history of a schedule. Scores are pulled out of the stored
//! report JSON in SQL so a page never ships whole reports to the service.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{page, Cursor, Page, Result, Store};

/// The logit signal's score inside a report at `$col` (the map's and history's measure).
fn logit_score(col: &str) -> String {
    format!(
        "(SELECT (sig->>'score')::float8 FROM jsonb_array_elements({col}->'signals') sig
          WHERE sig->>'name' = 'logits' LIMIT 1)"
    )
}

/// One cell of the similarity map: the latest comparison of a fingerprint with a reference.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MapCell {
    pub fingerprint_id: Uuid,
    pub model_describe: String,
    pub fingerprint_created_at: DateTime<Utc>,
    pub reference_model_id: Uuid,
    pub reference_name: String,
    pub comparison_id: Uuid,
    pub score: Option<f64>,
    pub verdict: Option<String>,
}

/// One run of a schedule.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryPoint {
    pub scan_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub status: String,
    pub verdict: Option<String>,
    pub score: Option<f64>,
    pub confidence: Option<f64>,
}

impl Store {
    /// A page of the similarity map: compared fingerprints, newest first, each with its
    /// latest comparison against every reference model it was compared with.
    pub async fn similarity_map(
        &self,
        cursor: Option<Cursor>,
        limit: i64,
    ) -> Result<Page<Vec<MapCell>>> {
        let rows = sqlx::query_as::<_, MapCell>(&format!(
            "WITH rows AS (
                SELECT f.id, f.model_describe, f.created_at FROM fingerprints f
                WHERE EXISTS (SELECT 1 FROM comparisons c WHERE c.suspect_fingerprint_id = f.id)
                  AND ($1::timestamptz IS NULL OR (f.created_at, f.id) < ($1, $2))
                ORDER BY f.created_at DESC, f.id DESC
                LIMIT $3
             )
             SELECT DISTINCT ON (r.created_at, r.id, rf.model_id)
                r.id AS fingerprint_id, r.model_describe, r.created_at AS fingerprint_created_at,
                m.id AS reference_model_id, m.name AS reference_name, c.id AS comparison_id,
                {score} AS score, v.verdict
             FROM rows r
             JOIN comparisons c ON c.suspect_fingerprint_id = r.id
             JOIN fingerprints rf ON rf.id = c.reference_fingerprint_id
             JOIN models m ON m.id = rf.model_id
             LEFT JOIN verdicts v ON v.comparison_id = c.id
             ORDER BY r.created_at DESC, r.id DESC, rf.model_id, c.created_at DESC",
            score = logit_score("c.report")
        ))
        .bind(cursor.map(|c| c.created_at))
        .bind(cursor.map(|c| c.id))
        .bind(limit + 1)
        .fetch_all(&self.pool)
        .await?;
        // Group the cells into rows (they arrive ordered by fingerprint).
        let mut grouped: Vec<Vec<MapCell>> = Vec::new();
        for cell in rows {
            match grouped.last_mut() {
                Some(row) if row[0].fingerprint_id == cell.fingerprint_id => row.push(cell),
                _ => grouped.push(vec![cell]),
            }
        }
        Ok(page(grouped, limit, |row: &Vec<MapCell>| Cursor {
            created_at: row[0].fingerprint_created_at,
            id: row[0].fingerprint_id,
        }))
    }

    /// The latest `limit` runs of a schedule, oldest first.
    pub async fn schedule_history(
        &self,
        schedule_id: Uuid,
        limit: i64,
    ) -> Result<Vec<HistoryPoint>> {
        let mut points = sqlx::query_as::<_, HistoryPoint>(&format!(
            "SELECT s.id AS scan_id, s.created_at, s.status, s.verdict, {score} AS score,
                    (s.report->>'confidence')::float8 AS confidence
             FROM scans s WHERE s.schedule_id = $1
             ORDER BY s.created_at DESC LIMIT $2",
            score = logit_score("s.report")
        ))
        .bind(schedule_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        points.reverse();
        Ok(points)
    }
}
