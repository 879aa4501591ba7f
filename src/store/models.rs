//! Registered models: references (held locally or behind their owner's endpoint),
//! suspects and controls.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Result, Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    Reference,
    Suspect,
    /// Known to be unrelated to the references: part of the null population.
    Control,
}

impl ModelRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelRole::Reference => "reference",
            ModelRole::Suspect => "suspect",
            ModelRole::Control => "control",
        }
    }
}

impl TryFrom<String> for ModelRole {
    type Error = StoreError;
    fn try_from(s: String) -> Result<ModelRole> {
        match s.as_str() {
            "reference" => Ok(ModelRole::Reference),
            "suspect" => Ok(ModelRole::Suspect),
            "control" => Ok(ModelRole::Control),
            _ => Err(StoreError::Invalid(format!("model role {s:?}"))),
        }
    }
}

/// Where a model lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A GGUF or safetensors path, or a hub repo id, loaded in-process.
    Local,
    /// An OpenAI-compatible endpoint.
    Http,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Local => "local",
            ModelKind::Http => "http",
        }
    }
}

impl TryFrom<String> for ModelKind {
    type Error = StoreError;
    fn try_from(s: String) -> Result<ModelKind> {
        match s.as_str() {
            "local" => Ok(ModelKind::Local),
            "http" => Ok(ModelKind::Http),
            _ => Err(StoreError::Invalid(format!("model kind {s:?}"))),
        }
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ModelRow {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: ModelRole,
    #[sqlx(try_from = "String")]
    pub kind: ModelKind,
    pub source: String,
    pub description: String,
    /// The model name an `http` model's endpoint serves.
    pub served_model: String,
    /// The NAME of the server-side secret with an `http` model's API key, never the key.
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct NewModel {
    pub name: String,
    pub role: ModelRole,
    pub kind: ModelKind,
    pub source: String,
    #[serde(default)]
    pub description: String,
    /// For `http`: the model name the endpoint serves (required for a reference).
    #[serde(default)]
    pub served_model: String,
    /// For `http`: the name of the server-side secret with its API key.
    #[serde(default)]
    pub secret: Option<String>,
}

const COLUMNS: &str = "id, name, role, kind, source, description, served_model, secret, created_at";

impl Store {
    pub async fn create_model(&self, m: &NewModel) -> Result<ModelRow> {
        sqlx::query_as::<_, ModelRow>(&format!(
            "INSERT INTO models (id, name, role, kind, source, description, served_model, secret)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {COLUMNS}"
        ))
        .bind(Uuid::new_v4())
        .bind(&m.name)
        .bind(m.role.as_str())
        .bind(m.kind.as_str())
        .bind(&m.source)
        .bind(&m.description)
        .bind(&m.served_model)
        .bind(&m.secret)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_on_unique(e, &format!("model {:?}", m.name)))
    }

    pub async fn list_models(&self, role: Option<ModelRole>) -> Result<Vec<ModelRow>> {
        Ok(sqlx::query_as::<_, ModelRow>(&format!(
            "SELECT {COLUMNS} FROM models WHERE $1::text IS NULL OR role = $1 ORDER BY name"
        ))
        .bind(role.map(ModelRole::as_str))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn get_model(&self, id: Uuid) -> Result<ModelRow> {
        sqlx::query_as::<_, ModelRow>(&format!("SELECT {COLUMNS} FROM models WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model {id}")))
    }

    /// By name, or by id when `name_or_id` parses as one.
    pub async fn find_model(&self, name_or_id: &str) -> Result<ModelRow> {
        if let Ok(id) = Uuid::parse_str(name_or_id) {
            return self.get_model(id).await;
        }
        sqlx::query_as::<_, ModelRow>(&format!("SELECT {COLUMNS} FROM models WHERE name = $1"))
            .bind(name_or_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("model {name_or_id:?}")))
    }
}
