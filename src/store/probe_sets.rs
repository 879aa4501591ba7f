//! Probe sets, stored whole so a scan always runs exactly the prompts its hash names.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::{Result, Store, StoreError};
use crate::probes::ProbeSet;

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ProbeSetRow {
    pub id: Uuid,
    pub name: String,
    pub version: String,
    pub hash: String,
    pub probe_count: i32,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, name, version, hash, probe_count, created_at";

impl Store {
    /// Registers a set; registering the same (name, version, hash) again returns the row.
    pub async fn upsert_probe_set(&self, set: &ProbeSet) -> Result<ProbeSetRow> {
        let content = serde_json::to_value(set)?;
        Ok(sqlx::query_as::<_, ProbeSetRow>(&format!(
            "INSERT INTO probe_sets (id, name, version, hash, probe_count, content)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (name, version, hash) DO UPDATE SET name = EXCLUDED.name
             RETURNING {COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(&set.name)
        .bind(&set.version)
        .bind(&set.hash)
        .bind(set.probes.len() as i32)
        .bind(content)
        .fetch_one(&self.pool)
        .await?)
    }

    pub async fn list_probe_sets(&self) -> Result<Vec<ProbeSetRow>> {
        Ok(sqlx::query_as::<_, ProbeSetRow>(&format!(
            "SELECT {COLUMNS} FROM probe_sets ORDER BY name, created_at DESC"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// By id, or the newest set with this name (optionally `name@version`).
    pub async fn find_probe_set(&self, spec: &str) -> Result<ProbeSetRow> {
        let row = if let Ok(id) = Uuid::parse_str(spec) {
            sqlx::query_as::<_, ProbeSetRow>(&format!(
                "SELECT {COLUMNS} FROM probe_sets WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
        } else {
            let (name, version) = match spec.split_once('@') {
                Some((n, v)) => (n, Some(v)),
                None => (spec, None),
            };
            sqlx::query_as::<_, ProbeSetRow>(&format!(
                "SELECT {COLUMNS} FROM probe_sets WHERE name = $1 AND ($2::text IS NULL OR version = $2)
                 ORDER BY created_at DESC LIMIT 1"
            ))
            .bind(name)
            .bind(version)
            .fetch_optional(&self.pool)
            .await?
        };
        row.ok_or_else(|| StoreError::NotFound(format!("probe set {spec:?}")))
    }

    /// The set's probes, as registered.
    pub async fn probe_set_content(&self, id: Uuid) -> Result<ProbeSet> {
        let (content,): (serde_json::Value,) =
            sqlx::query_as("SELECT content FROM probe_sets WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("probe set {id}")))?;
        Ok(serde_json::from_value(content)?)
    }
}
