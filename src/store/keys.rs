//! API keys (only their SHA-256 is stored) and the audit log.

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Result, Store, StoreError};

/// What a key may do. Each role can do everything the one before it can.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Submits scans and reads its own.
    Submitter,
    /// Reads everything, compares fingerprints, manages models and controls.
    Analyst,
    /// Keys, schedules and secrets.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submitter => "submitter",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "submitter" => Some(Role::Submitter),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl TryFrom<String> for Role {
    type Error = StoreError;
    fn try_from(s: String) -> Result<Role> {
        Role::parse(&s).ok_or_else(|| StoreError::Invalid(format!("role {s:?}")))
    }
}

impl std::str::FromStr for Role {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Role> {
        Role::try_from(s.to_string())
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiKeyRow {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub api_key_id: Option<Uuid>,
    pub action: String,
    pub target: String,
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// Hex SHA-256 of a key as presented.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

const KEY_COLUMNS: &str = "id, name, prefix, role, created_at, revoked";

impl Store {
    /// Makes a new key and returns it in plain text: the only time it is ever seen.
    pub async fn create_api_key(&self, role: Role, name: &str) -> Result<(ApiKeyRow, String)> {
        let secret: [u8; 24] = rand::rng().random();
        let key = format!("pvk_{}", hex::encode(secret));
        let row = sqlx::query_as::<_, ApiKeyRow>(&format!(
            "INSERT INTO api_keys (id, name, key_hash, prefix, role) VALUES ($1, $2, $3, $4, $5)
             RETURNING {KEY_COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(hash_key(&key))
        .bind(&key[..12])
        .bind(role.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row, key))
    }

    /// The live (not revoked) key with this plain-text value, if any.
    pub async fn find_api_key(&self, key: &str) -> Result<Option<ApiKeyRow>> {
        Ok(sqlx::query_as::<_, ApiKeyRow>(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND NOT revoked"
        ))
        .bind(hash_key(key))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn revoke_api_key(&self, id: Uuid) -> Result<()> {
        let done = sqlx::query("UPDATE api_keys SET revoked = true WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("api key {id}")));
        }
        Ok(())
    }

    /// Records a write. `key` is None for writes made by the service itself (schedules).
    pub async fn audit(
        &self,
        key: Option<Uuid>,
        action: &str,
        target: &str,
        detail: Option<serde_json::Value>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (api_key_id, action, target, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(key)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The most recent audit entries, newest first.
    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        Ok(sqlx::query_as::<_, AuditEntry>(
            "SELECT id, api_key_id, action, target, detail, at FROM audit_log ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}
