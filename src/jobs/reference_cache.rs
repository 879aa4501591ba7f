//! Building the two endpoints of a scan: the reference (a local model, loaded once per
//! process and shared) and the suspect (an OpenAI-compatible URL, or open weights).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{JobError, WorkerConfig};
use crate::compare::likelihood::AnswerScore;
use crate::compare::QuantizedForm;
use crate::endpoint::ModelEndpoint;
use crate::fingerprint::{Fingerprint, RunOptions};
use crate::model::local_endpoint::LocalEndpoint;
use crate::model::{LoadOptions, ModelHandle};
use crate::probes::ProbeSet;
use crate::quantized_forms::FormsError;
use crate::secrets;
use crate::suspect::{HttpModel, HttpModelConfig};

/// Loaded local models by path, shared by the workers of one process: loading takes
/// seconds and memory, so a model is loaded once.
#[derive(Clone, Default)]
pub struct ReferenceCache {
    models: Arc<Mutex<HashMap<String, ModelHandle>>>,
    /// One lock per (reference, probe set): concurrent scans of the same reference take
    /// turns at its fingerprint, so all but the first reuse its answers.
    fingerprinting: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Quantized forms by (reference, probe set, types); one scan makes them while the
    /// others wait, since each takes a fingerprint of the reference.
    forms: Arc<Mutex<HashMap<String, Arc<Vec<QuantizedForm>>>>>,
    /// Stored fingerprints' answers read back by a reference (`crate::read_back`), by
    /// (reference, fingerprint id): each control is read once per worker, not per scan.
    read_backs: Arc<Mutex<ReadBacks>>,
}

type ReadBacks = HashMap<(String, uuid::Uuid), Arc<Vec<AnswerScore>>>;

impl ReferenceCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an already loaded model in the cache under `spec` (the service's reference).
    pub async fn insert(&self, spec: &str, handle: ModelHandle) {
        self.models.lock().await.insert(spec.to_string(), handle);
    }

    pub async fn get(&self, spec: &str) -> Result<ModelHandle, JobError> {
        let mut models = self.models.lock().await;
        if let Some(h) = models.get(spec) {
            return Ok(h.clone());
        }
        let owned = spec.to_string();
        // The loader's errors name server paths and, for a file that is not a model, its
        // first bytes: they go to the operator's log, and the scan says only which model.
        let refused = |detail: String| {
            tracing::warn!(model = spec, error = %detail, "loading a model failed");
            JobError::Permanent(format!(
                "model {:?} could not be loaded: not a model file this service reads",
                crate::model::public_source(spec)
            ))
        };
        let handle = tokio::task::spawn_blocking(move || {
            ModelHandle::spawn(&owned, &LoadOptions::default(), 16)
        })
        .await
        .map_err(|e| refused(e.to_string()))?
        .map_err(|e| refused(e.to_string()))?;
        models.insert(spec.to_string(), handle.clone());
        Ok(handle)
    }

    /// The lock held while the reference fingerprint keyed `key` is being taken.
    pub async fn fingerprint_lock(&self, key: &str) -> Arc<Mutex<()>> {
        self.fingerprinting
            .lock()
            .await
            .entry(key.to_string())
            .or_default()
            .clone()
    }

    /// `print`'s answers read back by the reference `spec` on its model thread; kept
    /// when `id` names a stored fingerprint (a control).
    pub async fn read_back(
        &self,
        spec: &str,
        id: Option<uuid::Uuid>,
        print: &Fingerprint,
    ) -> Result<Arc<Vec<AnswerScore>>, JobError> {
        let key = id.map(|id| (spec.to_string(), id));
        if let Some(key) = &key {
            if let Some(hit) = self.read_backs.lock().await.get(key) {
                return Ok(hit.clone());
            }
        }
        let handle = self.get(spec).await?;
        let scores = crate::read_back::read_back(&handle, print, None)
            .await
            .map(Arc::new)
            .map_err(|e| {
                tracing::warn!(reference = spec, error = %e, "reading answers back failed");
                JobError::Transient(format!(
                    "reading answers back through {:?} failed",
                    crate::model::public_source(spec)
                ))
            })?;
        if let Some(key) = key {
            self.read_backs.lock().await.insert(key, scores.clone());
        }
        Ok(scores)
    }

    pub async fn endpoint(&self, spec: &str) -> Result<Arc<dyn ModelEndpoint>, JobError> {
        Ok(Arc::new(LocalEndpoint::new(self.get(spec).await?)))
    }

    /// The reference `spec` in the quantized forms `config` asks for, made on first use
    /// and cached. A reference that is not a local GGUF file has none (logged, not an
    /// error: the scan goes on without them).
    pub async fn forms(
        &self,
        spec: &str,
        set: &ProbeSet,
        config: &WorkerConfig,
    ) -> Result<Arc<Vec<QuantizedForm>>, JobError> {
        if config.forms.is_empty() {
            return Ok(Arc::default());
        }
        let key = format!("{spec}\n{}\n{}", set.hash, config.forms.join(","));
        let mut forms = self.forms.lock().await;
        if let Some(made) = forms.get(&key) {
            return Ok(made.clone());
        }
        let made = match crate::quantized_forms::fingerprint_forms(
            Path::new(spec),
            &config.forms,
            set,
            &RunOptions {
                progress: false,
                ..RunOptions::default()
            },
            &config.forms_dir,
        )
        .await
        {
            Ok(made) => made,
            Err(e @ FormsError::NotGguf(_)) => {
                tracing::warn!(reference = spec, "no quantized forms: {e}");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(reference = spec, error = %e, "making quantized forms failed");
                return Err(JobError::Transient(format!(
                    "making quantized forms of {:?} failed",
                    crate::model::public_source(spec)
                )));
            }
        };
        let made = Arc::new(made);
        forms.insert(key, made.clone());
        Ok(made)
    }
}

/// A suspect, or a reference its owner serves, behind an OpenAI-compatible URL. Its key,
/// when it has one, is read from the named server-side secret by the client itself and
/// never leaves it; a secret is sent only under the URL prefix it is bound to
/// (`crate::secrets`).
pub fn http_endpoint(
    url: &str,
    model: &str,
    secret: Option<&str>,
    allow_private: bool,
) -> Result<Arc<dyn ModelEndpoint>, JobError> {
    let mut cfg = HttpModelConfig::new(url, model);
    if let Some(name) = secret {
        let bound = secrets::bound_secret(name).map_err(|e| JobError::Permanent(e.to_string()))?;
        let target = url::Url::parse(url.trim())
            .map_err(|e| JobError::Permanent(format!("endpoint URL: {e}")))?;
        bound
            .check_target(&target)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        cfg.api_key_env = Some(bound.env_var.clone());
        cfg.api_key_scope = Some(bound.allowed.clone());
    }
    cfg.allow_private_targets = allow_private;
    let client = HttpModel::new(cfg).map_err(|e| JobError::Permanent(e.to_string()))?;
    Ok(Arc::new(client))
}
