//! Fingerprints and their raw observations.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use super::{page, Cursor, Page, Result, Store, StoreError};
use crate::fingerprint::{Fingerprint, Observation};

/// Which side of a scan a fingerprint describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Reference,
    Suspect,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Reference => "reference",
            Side::Suspect => "suspect",
        }
    }
}

impl TryFrom<String> for Side {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Side> {
        match s.as_str() {
            "reference" => Ok(Side::Reference),
            "suspect" => Ok(Side::Suspect),
            _ => Err(StoreError::Invalid(format!("side {s:?}"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct FingerprintRow {
    pub id: Uuid,
    pub scan_id: Option<Uuid>,
    #[sqlx(try_from = "String")]
    pub side: Side,
    pub model_id: Option<Uuid>,
    pub model_describe: String,
    pub probe_set_id: Uuid,
    /// `partial` while its scan runs, `complete` after.
    pub status: String,
    pub is_control: bool,
    pub observation_count: i32,
    pub error_count: i32,
    #[schema(value_type = Option<Object>)]
    pub document: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The reference this control holds for (`None`: every reference).
    pub control_for: Option<Uuid>,
    /// Which built-in control this is (`crate::controls`), for those the service made.
    pub builtin_control: Option<String>,
}

/// A built-in control's fingerprint, to be stored for one reference.
pub struct NewBuiltinControl<'a> {
    pub probe_set_id: Uuid,
    pub reference_model_id: Uuid,
    pub name: &'a str,
    pub describe: &'a str,
    /// The assembled document without its observations.
    pub document: &'a serde_json::Value,
    /// (probe id, kind, sample index, ok, observation as JSON).
    pub observations: Vec<(String, String, i32, bool, serde_json::Value)>,
}

/// One stored ask: `data` is a `fingerprint::Observation` as JSON.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ObservationRow {
    pub probe_id: String,
    pub kind: String,
    pub sample_index: i32,
    pub ok: bool,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Default)]
pub struct FingerprintFilter {
    pub model_id: Option<Uuid>,
    pub probe_set_id: Option<Uuid>,
    pub is_control: Option<bool>,
    pub status: Option<String>,
    /// Only fingerprints of scans submitted by this key.
    pub api_key_id: Option<Uuid>,
    pub cursor: Option<Cursor>,
    pub limit: i64,
    /// Leave out the assembled `document` (large) when only the listing is shown.
    pub without_document: bool,
}

const COLUMNS: &str = "f.id, f.scan_id, f.side, f.model_id, f.model_describe, f.probe_set_id,
    f.status, f.is_control, f.observation_count, f.error_count, f.document, f.created_at,
    f.completed_at, f.control_for, f.builtin_control";

impl Store {
    /// The fingerprint of one side of a scan, made on first use (a resumed scan gets the
    /// one its earlier attempt started).
    pub async fn scan_fingerprint(
        &self,
        scan_id: Uuid,
        side: Side,
        model_id: Option<Uuid>,
        model_describe: &str,
        probe_set_id: Uuid,
    ) -> Result<FingerprintRow> {
        sqlx::query(
            "INSERT INTO fingerprints (id, scan_id, side, model_id, model_describe, probe_set_id)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scan_id, side) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(scan_id)
        .bind(side.as_str())
        .bind(model_id)
        .bind(model_describe)
        .bind(probe_set_id)
        .execute(&self.pool)
        .await?;
        sqlx::query_as::<_, FingerprintRow>(&format!(
            "SELECT {COLUMNS} FROM fingerprints f WHERE f.scan_id = $1 AND f.side = $2"
        ))
        .bind(scan_id)
        .bind(side.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// The (probe id, sample index) pairs already stored for a fingerprint.
    pub async fn observed_keys(&self, fingerprint_id: Uuid) -> Result<Vec<(String, i32)>> {
        Ok(sqlx::query_as(
            "SELECT probe_id, sample_index FROM observations WHERE fingerprint_id = $1",
        )
        .bind(fingerprint_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores one observation while the worker still holds the scan's lease. Returns false
    /// when it does not (nothing is written); an observation already stored is kept as is.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_observation(
        &self,
        scan_id: Uuid,
        owner: &str,
        fingerprint_id: Uuid,
        probe_id: &str,
        kind: &str,
        sample_index: i32,
        ok: bool,
        data: &serde_json::Value,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if !holds_lease(&mut tx, scan_id, owner).await? {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO observations (fingerprint_id, probe_id, kind, sample_index, ok, data)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (fingerprint_id, probe_id, sample_index) DO NOTHING",
        )
        .bind(fingerprint_id)
        .bind(probe_id)
        .bind(kind)
        .bind(sample_index)
        .bind(ok)
        .bind(data)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            sqlx::query(
                "UPDATE fingerprints SET observation_count = observation_count + 1,
                     error_count = error_count + CASE WHEN $2 THEN 0 ELSE 1 END
                 WHERE id = $1",
            )
            .bind(fingerprint_id)
            .bind(ok)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The latest complete reference-side fingerprint of the same model (same model row and
    /// description) over the same probe set, other than `except`: a scan's reference answers
    /// are deterministic, so an earlier scan's can stand in for asking again.
    pub async fn reusable_reference(
        &self,
        model_id: Uuid,
        model_describe: &str,
        probe_set_id: Uuid,
        except: Uuid,
    ) -> Result<Option<Uuid>> {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM fingerprints
             WHERE side = 'reference' AND status = 'complete' AND model_id = $1
               AND model_describe = $2 AND probe_set_id = $3 AND id <> $4
             ORDER BY completed_at DESC LIMIT 1",
        )
        .bind(model_id)
        .bind(model_describe)
        .bind(probe_set_id)
        .bind(except)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Copies `from`'s successful observations of the given `(probe_id, sample_index)` keys
    /// into fingerprint `to`, as long as `owner` holds scan `scan_id` (like
    /// [`Store::add_observation`]); keys `to` already has are kept. Returns how many.
    pub async fn copy_observations(
        &self,
        scan_id: Uuid,
        owner: &str,
        from: Uuid,
        to: Uuid,
        keys: &[(String, i32)],
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        if !holds_lease(&mut tx, scan_id, owner).await? {
            return Ok(0);
        }
        let (probe_ids, samples): (Vec<String>, Vec<i32>) = keys.iter().cloned().unzip();
        let copied = sqlx::query(
            "INSERT INTO observations (fingerprint_id, probe_id, kind, sample_index, ok, data)
             SELECT $2, o.probe_id, o.kind, o.sample_index, o.ok, o.data
             FROM observations o
             JOIN unnest($3::text[], $4::int4[]) AS k(probe_id, sample_index)
               ON k.probe_id = o.probe_id AND k.sample_index = o.sample_index
             WHERE o.fingerprint_id = $1 AND o.ok
             ORDER BY o.id
             ON CONFLICT (fingerprint_id, probe_id, sample_index) DO NOTHING",
        )
        .bind(from)
        .bind(to)
        .bind(&probe_ids)
        .bind(&samples)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        count_copied(&mut tx, to, copied).await?;
        tx.commit().await?;
        Ok(copied)
    }

    /// Every observation of a fingerprint, in insertion order.
    pub async fn observations(&self, fingerprint_id: Uuid) -> Result<Vec<ObservationRow>> {
        Ok(sqlx::query_as::<_, ObservationRow>(
            "SELECT probe_id, kind, sample_index, ok, data FROM observations
             WHERE fingerprint_id = $1 ORDER BY id",
        )
        .bind(fingerprint_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A fingerprint's stored observations, decoded, in the order they were stored.
    pub async fn decoded_observations(&self, fingerprint_id: Uuid) -> Result<Vec<Observation>> {
        self.observations(fingerprint_id)
            .await?
            .into_iter()
            .map(|row| serde_json::from_value(row.data).map_err(StoreError::from))
            .collect()
    }

    /// A complete stored fingerprint, its observations put back.
    pub async fn load_fingerprint(&self, row: &FingerprintRow) -> Result<Fingerprint> {
        let doc = row.document.clone().ok_or_else(|| {
            StoreError::Conflict(format!("fingerprint {} is not complete", row.id))
        })?;
        let mut print: Fingerprint = serde_json::from_value(doc)?;
        print.observations = self.decoded_observations(row.id).await?;
        Ok(print)
    }

    /// One stored observation, if there is one.
    pub async fn observation(
        &self,
        fingerprint_id: Uuid,
        probe_id: &str,
        sample_index: i32,
    ) -> Result<Option<ObservationRow>> {
        Ok(sqlx::query_as::<_, ObservationRow>(
            "SELECT probe_id, kind, sample_index, ok, data FROM observations
             WHERE fingerprint_id = $1 AND probe_id = $2 AND sample_index = $3",
        )
        .bind(fingerprint_id)
        .bind(probe_id)
        .bind(sample_index)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Marks a fingerprint complete with its assembled document.
    pub async fn complete_fingerprint(&self, id: Uuid, document: &serde_json::Value) -> Result<()> {
        sqlx::query(
            "UPDATE fingerprints SET status = 'complete', document = $2, completed_at = now()
             WHERE id = $1",
        )
        .bind(id)
        .bind(document)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_fingerprint(&self, id: Uuid) -> Result<FingerprintRow> {
        sqlx::query_as::<_, FingerprintRow>(&format!(
            "SELECT {COLUMNS} FROM fingerprints f WHERE f.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("fingerprint {id}")))
    }

    pub async fn scan_fingerprints(&self, scan_id: Uuid) -> Result<Vec<FingerprintRow>> {
        Ok(sqlx::query_as::<_, FingerprintRow>(&format!(
            "SELECT {COLUMNS} FROM fingerprints f WHERE f.scan_id = $1 ORDER BY f.side"
        ))
        .bind(scan_id)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn list_fingerprints(&self, f: &FingerprintFilter) -> Result<Page<FingerprintRow>> {
        let columns = if f.without_document {
            COLUMNS.replace("f.document", "NULL::jsonb AS document")
        } else {
            COLUMNS.to_string()
        };
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "SELECT {columns} FROM fingerprints f LEFT JOIN scans s ON s.id = f.scan_id WHERE true"
        ));
        if let Some(m) = f.model_id {
            q.push(" AND f.model_id = ").push_bind(m);
        }
        if let Some(p) = f.probe_set_id {
            q.push(" AND f.probe_set_id = ").push_bind(p);
        }
        if let Some(c) = f.is_control {
            q.push(" AND f.is_control = ").push_bind(c);
        }
        if let Some(st) = &f.status {
            q.push(" AND f.status = ").push_bind(st.clone());
        }
        if let Some(k) = f.api_key_id {
            q.push(" AND s.api_key_id = ").push_bind(k);
        }
        if let Some(c) = f.cursor {
            q.push(" AND (f.created_at, f.id) < (")
                .push_bind(c.created_at)
                .push(", ")
                .push_bind(c.id)
                .push(")");
        }
        q.push(" ORDER BY f.created_at DESC, f.id DESC LIMIT ")
            .push_bind(f.limit + 1);
        let rows = q
            .build_query_as::<FingerprintRow>()
            .fetch_all(&self.pool)
            .await?;
        Ok(page(rows, f.limit, |r: &FingerprintRow| Cursor {
            created_at: r.created_at,
            id: r.id,
        }))
    }

    /// Marks a fingerprint as a control (part of the null population) or not.
    pub async fn set_fingerprint_control(&self, id: Uuid, is_control: bool) -> Result<()> {
        let r = sqlx::query("UPDATE fingerprints SET is_control = $2 WHERE id = $1")
            .bind(id)
            .bind(is_control)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("fingerprint {id}")));
        }
        Ok(())
    }

    /// Complete control fingerprints for a probe set (the null population) that hold for
    /// `reference_model_id`: those marked for every reference and those made for it.
    pub async fn control_fingerprints(
        &self,
        probe_set_id: Uuid,
        reference_model_id: Option<Uuid>,
    ) -> Result<Vec<FingerprintRow>> {
        Ok(sqlx::query_as::<_, FingerprintRow>(&format!(
            "SELECT {COLUMNS} FROM fingerprints f
             WHERE f.is_control AND f.status = 'complete' AND f.probe_set_id = $1
               AND (f.control_for IS NULL OR f.control_for = $2)
             ORDER BY f.created_at"
        ))
        .bind(probe_set_id)
        .bind(reference_model_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Stores a built-in control for one reference. An earlier one of the same name stops
    /// being a control but is kept (comparisons may cite it); the new row gets a new id, so
    /// nothing cached under the old one is mistaken for it.
    pub async fn put_builtin_control(&self, c: &NewBuiltinControl<'_>) -> Result<Uuid> {
        let mut tx = self.pool.begin().await?;
        // Two workers may make the same reference's controls at once (its first scans run
        // side by side); without this lock both retire the old row and both insert, and
        // the unique index fails the second worker's scan attempt.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "builtin-control/{}/{}/{}",
                c.probe_set_id, c.reference_model_id, c.name
            ))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE fingerprints SET is_control = false, builtin_control = NULL
             WHERE probe_set_id = $1 AND control_for = $2 AND builtin_control = $3",
        )
        .bind(c.probe_set_id)
        .bind(c.reference_model_id)
        .bind(c.name)
        .execute(&mut *tx)
        .await?;
        let id = Uuid::new_v4();
        let errors = c.observations.iter().filter(|o| !o.3).count();
        sqlx::query(
            "INSERT INTO fingerprints (id, side, model_describe, probe_set_id, status,
                 is_control, observation_count, error_count, document, completed_at,
                 control_for, builtin_control)
             VALUES ($1, 'suspect', $2, $3, 'complete', true, $4, $5, $6, now(), $7, $8)",
        )
        .bind(id)
        .bind(c.describe)
        .bind(c.probe_set_id)
        .bind(c.observations.len() as i32)
        .bind(errors as i32)
        .bind(c.document)
        .bind(c.reference_model_id)
        .bind(c.name)
        .execute(&mut *tx)
        .await?;
        // PostgreSQL takes at most 65535 bind parameters per statement.
        for chunk in c.observations.chunks(1000) {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                "INSERT INTO observations (fingerprint_id, probe_id, kind, sample_index, ok, data) ",
            );
            q.push_values(chunk, |mut b, (probe, kind, sample, ok, data)| {
                b.push_bind(id)
                    .push_bind(probe)
                    .push_bind(kind)
                    .push_bind(sample)
                    .push_bind(ok)
                    .push_bind(data);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(id)
    }
}

/// Adds `copied` answers to the fingerprint `to`'s count, in the copy's transaction.
pub(super) async fn count_copied(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    to: Uuid,
    copied: u64,
) -> Result<()> {
    sqlx::query("UPDATE fingerprints SET observation_count = observation_count + $2 WHERE id = $1")
        .bind(to)
        .bind(copied as i32)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// True when `owner` holds running scan `scan_id`; locks the scan row for the rest of the
/// transaction, so a takeover cannot interleave with the writes that follow.
pub(super) async fn holds_lease(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    scan_id: Uuid,
    owner: &str,
) -> Result<bool> {
    let held: Option<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM scans WHERE id = $1 AND lease_owner = $2 AND status = 'running'
         FOR UPDATE",
    )
    .bind(scan_id)
    .bind(owner)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(held.is_some())
}
