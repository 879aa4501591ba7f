//! Identifications: one suspect set against several references, stored as one scan per
//! reference under a common id. The scans carry status, leases and verdicts; this table
//! holds only what the request named, so the two can never disagree.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::scans::{ScanRow, SuspectKind, COLUMNS as SCAN_COLUMNS};
use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct IdentificationRow {
    pub id: Uuid,
    pub api_key_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    /// The NAME of the server-side secret with the suspect's API key, never the key.
    pub suspect_secret: Option<String>,
    pub probe_set_id: Uuid,
    pub created_at: DateTime<Utc>,
}

/// What a new identification asks for: the suspect, and the references to hold it
/// against (one scan each).
#[derive(Debug, Clone)]
pub struct NewIdentification {
    pub api_key_id: Option<Uuid>,
    pub suspect_kind: SuspectKind,
    pub suspect_source: String,
    pub suspect_model: String,
    pub suspect_secret: Option<String>,
    pub probe_set_id: Uuid,
    pub probes_per_kind: Option<i32>,
    pub max_samples: Option<i32>,
    pub reference_model_ids: Vec<Uuid>,
}

const COLUMNS: &str = "id, api_key_id, suspect_kind, suspect_source, suspect_model, \
                       suspect_secret, probe_set_id, created_at";

impl Store {
    /// Stores the identification and queues its scans, all or nothing.
    pub async fn create_identification(
        &self,
        new: &NewIdentification,
    ) -> Result<(IdentificationRow, Vec<ScanRow>)> {
        if new.reference_model_ids.is_empty() {
            return Err(StoreError::Invalid(
                "an identification needs at least one reference".into(),
            ));
        }
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query_as::<_, IdentificationRow>(&format!(
            "INSERT INTO identifications (id, api_key_id, suspect_kind, suspect_source,
                 suspect_model, suspect_secret, probe_set_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(new.api_key_id)
        .bind(new.suspect_kind.as_str())
        .bind(&new.suspect_source)
        .bind(&new.suspect_model)
        .bind(&new.suspect_secret)
        .bind(new.probe_set_id)
        .fetch_one(&mut *tx)
        .await?;
        let mut scans = Vec::with_capacity(new.reference_model_ids.len());
        // Workers claim by `created_at`, which these rows share: whichever runs first,
        // the others reuse its answers, and the ranking does not depend on the order.
        for reference in &new.reference_model_ids {
            let scan = sqlx::query_as::<_, ScanRow>(&format!(
                "INSERT INTO scans (id, api_key_id, suspect_kind, suspect_source, suspect_model,
                     suspect_secret, reference_model_id, probe_set_id, probes_per_kind,
                     max_samples, identification_id, early_stop)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true)
                 RETURNING {SCAN_COLUMNS}"
            ))
            .bind(Uuid::new_v4())
            .bind(new.api_key_id)
            .bind(new.suspect_kind.as_str())
            .bind(&new.suspect_source)
            .bind(&new.suspect_model)
            .bind(&new.suspect_secret)
            .bind(reference)
            .bind(new.probe_set_id)
            .bind(new.probes_per_kind)
            .bind(new.max_samples)
            .bind(row.id)
            .fetch_one(&mut *tx)
            .await?;
            scans.push(scan);
        }
        tx.commit().await?;
        Ok((row, scans))
    }

    pub async fn get_identification(&self, id: Uuid) -> Result<IdentificationRow> {
        sqlx::query_as::<_, IdentificationRow>(&format!(
            "SELECT {COLUMNS} FROM identifications WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("identification {id}")))
    }

    /// The newest identifications first; only `api_key_id`'s when given.
    pub async fn list_identifications(
        &self,
        api_key_id: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<IdentificationRow>> {
        Ok(sqlx::query_as::<_, IdentificationRow>(&format!(
            "SELECT {COLUMNS} FROM identifications
             WHERE $1::uuid IS NULL OR api_key_id = $1
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(api_key_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The identification's scans, one per reference.
    pub async fn identification_scans(&self, id: Uuid) -> Result<Vec<ScanRow>> {
        Ok(sqlx::query_as::<_, ScanRow>(&format!(
            "SELECT {SCAN_COLUMNS} FROM scans WHERE identification_id = $1
             ORDER BY created_at, id"
        ))
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Distinct probes (and samples) the suspect of an identification has answered,
    /// over all its scans: what it was asked, each answer counted once.
    pub async fn identification_queries(&self, id: Uuid) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT count(DISTINCT (o.probe_id, o.sample_index))
             FROM observations o
             JOIN fingerprints f ON f.id = o.fingerprint_id
             JOIN scans s ON s.id = f.scan_id
             WHERE s.identification_id = $1 AND f.side = 'suspect'",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n)
    }

    /// Copies into `to` (the suspect fingerprint of `scan_id`) the answers the other
    /// scans of the same identification already got for `keys`, as long as `owner` still
    /// holds `scan_id`; the suspect is then never asked one probe twice. Returns how many.
    pub async fn copy_sibling_answers(
        &self,
        scan_id: Uuid,
        owner: &str,
        identification_id: Uuid,
        to: Uuid,
        keys: &[(String, i32)],
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        if !super::fingerprints::holds_lease(&mut tx, scan_id, owner).await? {
            return Ok(0);
        }
        let (probe_ids, samples): (Vec<String>, Vec<i32>) = keys.iter().cloned().unzip();
        let copied = sqlx::query(
            "INSERT INTO observations (fingerprint_id, probe_id, kind, sample_index, ok, data)
             SELECT DISTINCT ON (o.probe_id, o.sample_index)
                    $2::uuid, o.probe_id, o.kind, o.sample_index, o.ok, o.data
             FROM observations o
             JOIN fingerprints f ON f.id = o.fingerprint_id AND f.side = 'suspect'
             JOIN scans s ON s.id = f.scan_id
             JOIN unnest($4::text[], $5::int4[]) AS k(probe_id, sample_index)
               ON k.probe_id = o.probe_id AND k.sample_index = o.sample_index
             WHERE s.identification_id = $1 AND s.id <> $3 AND o.ok
             ORDER BY o.probe_id, o.sample_index, o.id
             ON CONFLICT (fingerprint_id, probe_id, sample_index) DO NOTHING",
        )
        .bind(identification_id)
        .bind(to)
        .bind(scan_id)
        .bind(&probe_ids)
        .bind(&samples)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        super::fingerprints::count_copied(&mut tx, to, copied).await?;
        tx.commit().await?;
        Ok(copied)
    }
}
