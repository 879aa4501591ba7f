//! Where a model comes from: a local GGUF file, a local safetensors directory, or a
//! Hugging Face hub repo fetched through `hf-hub` (which honours `HF_ENDPOINT` and
//! `HF_HOME`, so a mirror or a local stand-in works the same way).

use std::path::{Path, PathBuf};

use super::ModelError;

pub enum Resolved {
    Gguf(PathBuf),
    Safetensors(PathBuf),
}

/// A hub reference: `owner/name`, optionally `owner/name:file.gguf`.
#[derive(Debug, PartialEq, Eq)]
pub struct HubRef {
    pub repo: String,
    pub file: Option<String>,
}

impl HubRef {
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, file) = match spec.split_once(':') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return None,
            None => (spec, None),
        };
        let mut parts = repo.split('/');
        let (owner, name) = (parts.next()?, parts.next()?);
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !s.starts_with('.')
        };
        if parts.next().is_some() || !ok(owner) || !ok(name) {
            return None;
        }
        Some(Self {
            repo: repo.to_string(),
            file,
        })
    }
}

pub fn resolve(spec: &str) -> Result<Resolved, ModelError> {
    let path = Path::new(spec);
    if path.exists() {
        return resolve_path(path);
    }
    match HubRef::parse(spec) {
        Some(hub) => fetch_from_hub(&hub),
        None => Err(ModelError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such file, and not a hub repo id (owner/name[:file.gguf])",
            ),
        }),
    }
}

fn resolve_path(path: &Path) -> Result<Resolved, ModelError> {
    if path.is_dir() {
        let has = |f: &str| path.join(f).exists();
        if has("config.json") && has("tokenizer.json") {
            return Ok(Resolved::Safetensors(path.to_path_buf()));
        }
        let ggufs = list_with_ext(path, "gguf");
        return match ggufs.as_slice() {
            [one] => Ok(Resolved::Gguf(one.clone())),
            [] => Err(ModelError::Format {
                path: path.to_path_buf(),
                message: "directory holds neither config.json + tokenizer.json + *.safetensors nor a .gguf file".into(),
            }),
            _ => Err(ModelError::Format {
                path: path.to_path_buf(),
                message: "directory holds several .gguf files: name one".into(),
            }),
        };
    }
    Ok(Resolved::Gguf(path.to_path_buf()))
}

fn list_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    out.sort();
    out
}

/// Downloads what a model needs from the hub (or the endpoint in `HF_ENDPOINT`) into the
/// hf-hub cache and returns the local paths.
pub fn fetch_from_hub(hub: &HubRef) -> Result<Resolved, ModelError> {
    // hf-hub's async client needs a runtime; loading happens on a model thread, never
    // inside an async handler, so a small private runtime is fine here.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ModelError::Hub(e.to_string()))?;
    rt.block_on(fetch_async(hub))
}

async fn fetch_async(hub: &HubRef) -> Result<Resolved, ModelError> {
    let api = hf_hub::api::tokio::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .map_err(|e| ModelError::Hub(e.to_string()))?;
    let repo = api.model(hub.repo.clone());
    let err = |what: &str, e: hf_hub::api::tokio::ApiError| {
        ModelError::Hub(format!("{} ({what}): {e}", hub.repo))
    };
    if let Some(file) = &hub.file {
        let path = repo.get(file).await.map_err(|e| err(file, e))?;
        return Ok(Resolved::Gguf(path));
    }
    let info = repo.info().await.map_err(|e| err("repo info", e))?;
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let ggufs: Vec<&String> = files.iter().filter(|f| f.ends_with(".gguf")).collect();
    let safetensors: Vec<&String> = files
        .iter()
        .filter(|f| f.ends_with(".safetensors"))
        .collect();
    if !safetensors.is_empty() {
        let mut dir = None;
        for f in ["config.json", "tokenizer.json"]
            .iter()
            .copied()
            .chain(
                ["tokenizer_config.json", "generation_config.json"]
                    .into_iter()
                    .filter(|f| files.iter().any(|x| x == f)),
            )
            .chain(safetensors.iter().map(|s| s.as_str()))
        {
            let p = repo.get(f).await.map_err(|e| err(f, e))?;
            dir = p.parent().map(Path::to_path_buf);
        }
        return dir
            .map(Resolved::Safetensors)
            .ok_or_else(|| ModelError::Hub(format!("{}: nothing downloaded", hub.repo)));
    }
    match ggufs.as_slice() {
        [one] => {
            let path = repo.get(one).await.map_err(|e| err(one, e))?;
            Ok(Resolved::Gguf(path))
        }
        [] => Err(ModelError::Hub(format!(
            "{}: no .gguf or .safetensors files in the repo",
            hub.repo
        ))),
        many => Err(ModelError::Hub(format!(
            "{}: several GGUF files ({}); name one as {}:FILE",
            hub.repo,
            many.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            hub.repo
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_refs() {
        assert_eq!(
            HubRef::parse("HuggingFaceTB/SmolLM2-135M-Instruct"),
            Some(HubRef {
                repo: "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
                file: None
            })
        );
        assert_eq!(
            HubRef::parse("a/b:m.Q4_1.gguf").and_then(|h| h.file),
            Some("m.Q4_1.gguf".into())
        );
        assert!(HubRef::parse("no-slash").is_none());
        assert!(HubRef::parse("a/b/c").is_none());
        assert!(HubRef::parse("../etc").is_none());
        assert!(HubRef::parse("a/b:").is_none());
    }
}
