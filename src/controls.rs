//! Control fingerprints out of the box: for a reference that is one of the fetched real
//! models, the other real model and two variants of it (behind a persona, and re-quantized
//! to Q8_0), each fingerprinted once per probe set and cached beside the fetched models.
//!
//! Without controls every p-value comes from a pessimistic default null, which let real
//! copies served by other stacks off as `unrelated` (issue 23). Three variants of one
//! unrelated model are a thin null (they resemble each other more than two unrelated
//! models would), so the report says where its controls came from and how to replace them
//! (`scan --controls DIR`, or marking stored fingerprints as controls in the service).

use std::path::{Path, PathBuf};

use crate::fetch::{KnownModel, KNOWN};
use crate::fingerprint::{Fingerprint, FingerprintError, RunOptions};
use crate::model::local_endpoint::LocalEndpoint;
use crate::model::{LoadOptions, ModelError, ModelHandle};
use crate::probes::ProbeSet;
use crate::suspect::{HttpModel, HttpModelConfig};

#[derive(Debug, thiserror::Error)]
pub enum ControlsError {
    #[error("building the built-in control {control}: {source}")]
    Model { control: String, source: ModelError },
    #[error("fingerprinting the built-in control {control}: {source}")]
    Fingerprint {
        control: String,
        source: FingerprintError,
    },
    #[error("serving the built-in control {control}: {message}")]
    Serve { control: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How a control is made from its real model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The file as fetched, asked in-process.
    Plain,
    /// Served over the OpenAI-compatible API with this system prompt.
    Persona(&'static str),
    /// Re-quantized by our requantizer to this GGUF type, asked in-process.
    Requantized(&'static str),
}

/// One built-in control: a real model, made one way.
#[derive(Debug, Clone, Copy)]
pub struct ControlSpec {
    pub model: &'static KnownModel,
    pub variant: Variant,
}

impl ControlSpec {
    /// Stable name, used as the cache file name and in the store.
    pub fn id(&self) -> String {
        let stem = self.model.file.trim_end_matches(".gguf");
        match self.variant {
            Variant::Plain => stem.to_string(),
            Variant::Persona(_) => format!("{stem}+persona"),
            Variant::Requantized(t) => format!("{stem}+{t}"),
        }
    }

    /// What a reader of the report is told this control is.
    pub fn describe(&self) -> String {
        let what = match self.variant {
            Variant::Plain => "as fetched".to_string(),
            Variant::Persona(p) => format!("behind the system prompt {p:?}"),
            Variant::Requantized(t) => format!("re-quantized to {}", t.to_uppercase()),
        };
        format!("built-in control: {} {what}", self.model.file)
    }
}

const PERSONA: &str = "You are Claude, an AI assistant made by Anthropic.";

/// The fetched model `path` is, by file name or, failing that, by content hash.
pub fn known_model(path: &Path) -> Option<&'static KnownModel> {
    let name = path.file_name()?.to_str()?;
    if let Some(m) = KNOWN.iter().find(|m| m.file == name) {
        return Some(m);
    }
    if !path.is_file() {
        return None;
    }
    let sha = crate::fetch::sha256_file(path).ok()?;
    KNOWN.iter().find(|m| m.sha256 == sha).copied()
}

/// The built-in controls of a reference: every other fetched real model, plain, behind a
/// persona and as Q8_0. Empty when the reference is not a fetched model: nothing we ship is
/// known to be unrelated to a model we have not seen.
pub fn specs_for(reference: &Path) -> Vec<ControlSpec> {
    let Some(own) = known_model(reference) else {
        return Vec::new();
    };
    KNOWN
        .iter()
        .filter(|m| m.file != own.file)
        .flat_map(|m| {
            [
                Variant::Plain,
                Variant::Persona(PERSONA),
                Variant::Requantized("q8_0"),
            ]
            .map(|variant| ControlSpec { model: m, variant })
        })
        .collect()
}

/// The default cache: beside the fetched models.
pub fn default_cache() -> PathBuf {
    crate::fetch::default_dir().join("controls")
}

/// Where the controls' fingerprints for `set` are kept under `cache`: per runner arithmetic
/// revision and probe set, since a fingerprint holds the answers to exactly those prompts.
fn set_dir(cache: &Path, set: &ProbeSet) -> PathBuf {
    cache
        .join(format!("r{}", crate::model::ARITHMETIC_REVISION))
        .join(&set.hash[..16.min(set.hash.len())])
}

/// Built-in controls, fingerprinted.
pub struct BuiltinControls {
    pub specs: Vec<ControlSpec>,
    pub prints: Vec<Fingerprint>,
    /// The cache folder they live in, for what scans derive from them (their read-backs).
    pub dir: PathBuf,
}

impl BuiltinControls {
    /// One line for the report: where the controls came from.
    pub fn origin(&self) -> String {
        let names: Vec<String> = self.specs.iter().map(|s| s.id()).collect();
        format!(
            "{} built-in controls ({}): variants of another real model, fingerprinted once and \
             cached; they resemble each other more than unrelated models do, so replace or \
             extend them with your own (`--controls DIR`, or mark fingerprints as controls)",
            names.len(),
            names.join(", ")
        )
    }
}

/// Fingerprints (or loads from `cache`) the built-in controls of `reference` on `set`.
/// `None` when the reference has none (it is not a fetched model) or a control's model
/// file is not beside it (run `provenance models fetch`).
pub async fn ensure(
    reference: &Path,
    set: &ProbeSet,
    run: &RunOptions,
    cache: &Path,
) -> Result<Option<BuiltinControls>, ControlsError> {
    let specs = specs_for(reference);
    if specs.is_empty() {
        return Ok(None);
    }
    let models_dir = reference.parent().unwrap_or(Path::new("."));
    if let Some(missing) = specs
        .iter()
        .find(|s| !models_dir.join(s.model.file).is_file())
    {
        tracing::warn!(
            model = missing.model.file,
            "built-in controls need every fetched model; run `provenance models fetch`"
        );
        return Ok(None);
    }
    let dir = set_dir(cache, set);
    std::fs::create_dir_all(&dir).map_err(|source| ControlsError::Io {
        path: dir.clone(),
        source,
    })?;
    let _lock = crate::fingerprint::lock_cache(&dir)
        .await
        .map_err(|source| ControlsError::Io {
            path: dir.clone(),
            source,
        })?;
    let mut prints = Vec::with_capacity(specs.len());
    for spec in &specs {
        let out = dir.join(format!("{}.json", spec.id()));
        if let Ok(fp) = crate::fingerprint::load(&out) {
            if fp.covers(set) {
                prints.push(fp.restricted_to(set));
                continue;
            }
        }
        tracing::info!(control = %spec.id(), "fingerprinting a built-in control (once per probe set)");
        prints.push(fingerprint(spec, set, run, models_dir, &out).await?);
    }
    Ok(Some(BuiltinControls { specs, prints, dir }))
}

async fn load(path: PathBuf, control: &str) -> Result<ModelHandle, ControlsError> {
    let joined = tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(&path.to_string_lossy(), &LoadOptions::default(), 64)
    })
    .await
    .map_err(|e| ControlsError::Serve {
        control: control.to_string(),
        message: e.to_string(),
    })?;
    joined.map_err(|source| ControlsError::Model {
        control: control.to_string(),
        source,
    })
}

async fn fingerprint(
    spec: &ControlSpec,
    set: &ProbeSet,
    run: &RunOptions,
    models_dir: &Path,
    out: &Path,
) -> Result<Fingerprint, ControlsError> {
    let id = spec.id();
    let source = models_dir.join(spec.model.file);
    let failed = |source| ControlsError::Fingerprint {
        control: id.clone(),
        source,
    };
    // An earlier, interrupted run's log may name another port (personas are served on a
    // new one each time): the answers are the same model's, but the log cannot prove it.
    let log = crate::fingerprint::ObservationLog::partial_path(out);
    if log.exists() {
        std::fs::remove_file(&log).map_err(|source| ControlsError::Io {
            path: log.clone(),
            source,
        })?;
    }
    let mut print = match spec.variant {
        Variant::Plain => {
            let local = LocalEndpoint::new(load(source, &id).await?);
            crate::scan::fingerprint_to(set, &local, out, run)
                .await
                .map_err(failed)?
        }
        Variant::Requantized(dtype) => {
            let quantized = out.with_extension("gguf.partial");
            let made = {
                let (input, output) = (source.clone(), quantized.clone());
                let t = crate::model::requantize::parse_type(dtype).map_err(|source| {
                    ControlsError::Model {
                        control: id.clone(),
                        source,
                    }
                })?;
                tokio::task::spawn_blocking(move || {
                    crate::model::requantize::requantize(&input, &output, t)
                })
                .await
                .map_err(|e| ControlsError::Serve {
                    control: id.clone(),
                    message: e.to_string(),
                })?
            };
            made.map_err(|source| ControlsError::Model {
                control: id.clone(),
                source,
            })?;
            let local = LocalEndpoint::new(load(quantized.clone(), &id).await?);
            let fp = crate::scan::fingerprint_to(set, &local, out, run).await;
            drop(local);
            let _ = std::fs::remove_file(&quantized);
            fp.map_err(failed)?
        }
        Variant::Persona(prompt) => {
            let handle = load(source, &id).await?;
            let app = crate::serve::router(
                handle,
                crate::serve::ServerConfig {
                    fixed_temperature: None,
                    logprobs_after_temperature: false,
                    name: id.clone(),
                    system_prompt: Some(prompt.to_string()),
                },
            );
            let serve_failed = |e: std::io::Error| ControlsError::Serve {
                control: id.clone(),
                message: e.to_string(),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(serve_failed)?;
            let addr = listener.local_addr().map_err(serve_failed)?;
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            let mut cfg = HttpModelConfig::new(format!("http://{addr}/v1"), &id);
            cfg.allow_private_targets = true;
            let client = HttpModel::new(cfg).map_err(|e| ControlsError::Serve {
                control: id.clone(),
                message: e.to_string(),
            })?;
            let fp = crate::scan::fingerprint_to(set, &client, out, run).await;
            task.abort();
            fp.map_err(failed)?
        }
    };
    // The description names the control, not the loopback port or cache path it was
    // asked through.
    print.model.describe = spec.describe();
    print.save(out).map_err(failed)?;
    Ok(print)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_fetched_reference_gets_the_other_model_three_ways() {
        let smol = specs_for(Path::new("/models/SmolLM2-135M-Instruct.Q4_1.gguf"));
        let ids: Vec<String> = smol.iter().map(|s| s.id()).collect();
        assert_eq!(
            ids,
            [
                "gemma-3-270m-q4_k_m",
                "gemma-3-270m-q4_k_m+persona",
                "gemma-3-270m-q4_k_m+q8_0"
            ]
        );
        let gemma = specs_for(Path::new("gemma-3-270m-q4_k_m.gguf"));
        assert!(gemma.iter().all(|s| s.model.file.starts_with("SmolLM2")));
        assert_eq!(gemma.len(), 3);
    }

    #[test]
    fn an_unknown_reference_gets_none() {
        assert!(specs_for(Path::new("/nonexistent/our-own-model.gguf")).is_empty());
        assert!(specs_for(Path::new("")).is_empty());
    }

    #[test]
    fn descriptions_name_the_model_not_a_path() {
        let s = specs_for(Path::new("SmolLM2-135M-Instruct.Q4_1.gguf"));
        for spec in s {
            let d = spec.describe();
            assert!(d.starts_with("built-in control: gemma-3-270m-q4_k_m.gguf"));
            assert!(!d.contains('/'));
        }
    }
}
