//! Browser sessions of the analyst UI. The token handed to the browser is stored only as
//! its SHA-256, like API keys; a session dies with its key (revocation) or at expiry.

use chrono::{DateTime, Utc};
use rand::Rng;
use uuid::Uuid;

use super::keys::hash_key;
use super::{Result, Role, Store};

/// A live session and who it belongs to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub api_key_id: Uuid,
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// Key name, shown in the page header.
    pub key_name: String,
    /// Every form of the session carries this token back.
    pub csrf_token: String,
    pub expires_at: DateTime<Utc>,
}

/// A random token of 32 bytes, hex-encoded.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

impl Store {
    /// Opens a session for `api_key_id`; returns the token for the cookie (seen only here).
    pub async fn create_session(&self, api_key_id: Uuid, ttl: chrono::Duration) -> Result<String> {
        let token = random_token();
        sqlx::query(
            "INSERT INTO ui_sessions (token_hash, api_key_id, csrf_token, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_key(&token))
        .bind(api_key_id)
        .bind(random_token())
        .bind(Utc::now() + ttl)
        .execute(&self.pool)
        .await?;
        // Expired sessions are swept here rather than by a timer: sign-ins are rare.
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at < now()")
            .execute(&self.pool)
            .await?;
        Ok(token)
    }

    /// The live session with this token, if any (unexpired, key not revoked).
    pub async fn find_session(&self, token: &str) -> Result<Option<SessionRow>> {
        Ok(sqlx::query_as::<_, SessionRow>(
            "SELECT s.api_key_id, k.role, k.name AS key_name, s.csrf_token, s.expires_at
             FROM ui_sessions s JOIN api_keys k ON k.id = s.api_key_id
             WHERE s.token_hash = $1 AND s.expires_at > now() AND NOT k.revoked",
        )
        .bind(hash_key(token))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Ends a session (sign-out). Unknown tokens are fine: the result is the same.
    pub async fn delete_session(&self, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE token_hash = $1")
            .bind(hash_key(token))
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
