//! Comparisons of two stored fingerprints, and the verdicts drawn from them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ComparisonRow {
    pub id: Uuid,
    pub reference_fingerprint_id: Uuid,
    pub suspect_fingerprint_id: Uuid,
    pub scan_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    pub verdict: Option<String>,
    pub confidence: Option<f64>,
    pub p_value: Option<f64>,
    pub created_at: DateTime<Utc>,
}

/// The verdict part of a comparison, as the compare engine states it.
#[derive(Debug, Clone)]
pub struct NewVerdict {
    /// identical, derived, distilled, unrelated or inconclusive.
    pub verdict: String,
    pub confidence: Option<f64>,
    pub p_value: Option<f64>,
}

const SELECT: &str = "SELECT c.id, c.reference_fingerprint_id, c.suspect_fingerprint_id, c.scan_id,
    c.report, v.verdict, v.confidence, v.p_value, c.created_at
    FROM comparisons c LEFT JOIN verdicts v ON v.comparison_id = c.id";

impl Store {
    /// Stores a comparison report and, when there is one, its verdict, in one transaction.
    pub async fn add_comparison(
        &self,
        reference_fingerprint_id: Uuid,
        suspect_fingerprint_id: Uuid,
        scan_id: Option<Uuid>,
        report: &serde_json::Value,
        verdict: Option<&NewVerdict>,
    ) -> Result<ComparisonRow> {
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO comparisons (id, reference_fingerprint_id, suspect_fingerprint_id, scan_id, report)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(reference_fingerprint_id)
        .bind(suspect_fingerprint_id)
        .bind(scan_id)
        .bind(report)
        .execute(&mut *tx)
        .await?;
        if let Some(v) = verdict {
            sqlx::query(
                "INSERT INTO verdicts (id, comparison_id, verdict, confidence, p_value)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(Uuid::new_v4())
            .bind(id)
            .bind(&v.verdict)
            .bind(v.confidence)
            .bind(v.p_value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.get_comparison(id).await
    }

    pub async fn get_comparison(&self, id: Uuid) -> Result<ComparisonRow> {
        sqlx::query_as::<_, ComparisonRow>(&format!("{SELECT} WHERE c.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("comparison {id}")))
    }

    pub async fn scan_comparisons(&self, scan_id: Uuid) -> Result<Vec<ComparisonRow>> {
        Ok(sqlx::query_as::<_, ComparisonRow>(&format!(
            "{SELECT} WHERE c.scan_id = $1 ORDER BY c.created_at"
        ))
        .bind(scan_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The latest comparisons of one fingerprint pair, newest first.
    pub async fn comparisons_between(
        &self,
        reference_fingerprint_id: Uuid,
        suspect_fingerprint_id: Uuid,
        limit: i64,
    ) -> Result<Vec<ComparisonRow>> {
        Ok(sqlx::query_as::<_, ComparisonRow>(&format!(
            "{SELECT} WHERE c.reference_fingerprint_id = $1 AND c.suspect_fingerprint_id = $2
             ORDER BY c.created_at DESC LIMIT $3"
        ))
        .bind(reference_fingerprint_id)
        .bind(suspect_fingerprint_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
