//! Which models a service user may have loaded: files inside the operator's model
//! directories, and hub repos only where the operator allows downloads.
//!
//! A path that users type is resolved here and nowhere else, so every error names the
//! model as typed: whether a path outside exists, is a directory or holds anything is
//! never told, and no server path comes back.

use std::path::{Path, PathBuf};

use super::source::HubRef;

/// Longest model name accepted.
const MAX_SPEC_LEN: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelAccessError {
    #[error("model {0:?} is not in the service's model directories")]
    Outside(String),
    #[error(
        "model {0:?} looks like a hub repo id, but this service does not download from the hub"
    )]
    HubDisabled(String),
    #[error("model name {0:?} is empty, too long or holds a control character")]
    Invalid(String),
}

/// The directories users' model paths must lie in (canonical), and whether hub ids are
/// allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelAccess {
    dirs: Vec<PathBuf>,
    allow_hub: bool,
}

impl ModelAccess {
    /// Directories that do not exist are left out (nothing can be inside them).
    pub fn new(dirs: &[PathBuf], allow_hub: bool) -> Self {
        let dirs = dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .filter(|d| d.is_dir())
            .collect();
        Self { dirs, allow_hub }
    }

    pub fn allow_hub(&self) -> bool {
        self.allow_hub
    }

    /// The model `typed` stands for, as a spec the loader takes: the canonical path of a
    /// file or directory inside one of the model directories (a relative name is looked up
    /// in each directory in turn; symbolic links that lead out are refused), or a hub id
    /// where hub downloads are allowed.
    pub fn resolve(&self, typed: &str) -> Result<String, ModelAccessError> {
        let spec = typed.trim();
        if spec.is_empty() || spec.len() > MAX_SPEC_LEN || spec.chars().any(char::is_control) {
            return Err(ModelAccessError::Invalid(excerpt(typed)));
        }
        if let Some(found) = self.find(Path::new(spec)) {
            return Ok(found.to_string_lossy().into_owned());
        }
        match HubRef::parse(spec) {
            Some(_) if self.allow_hub => Ok(spec.to_string()),
            Some(_) => Err(ModelAccessError::HubDisabled(spec.to_string())),
            None => Err(ModelAccessError::Outside(spec.to_string())),
        }
    }

    fn find(&self, path: &Path) -> Option<PathBuf> {
        let candidates: Vec<PathBuf> = if path.is_absolute() {
            vec![path.to_path_buf()]
        } else {
            self.dirs.iter().map(|d| d.join(path)).collect()
        };
        candidates.into_iter().find_map(|c| {
            let real = std::fs::canonicalize(&c).ok()?;
            self.dirs
                .iter()
                .any(|d| real.starts_with(d) && real != *d)
                .then_some(real)
        })
    }
}

fn excerpt(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_inside_the_directories_resolve() {
        let root = tempfile::tempdir().unwrap();
        let models = root.path().join("models");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(models.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(models.join("a.gguf"), b"x").unwrap();
        std::fs::write(models.join("sub/b.gguf"), b"x").unwrap();
        std::fs::write(outside.join("secret.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), models.join("link.gguf")).unwrap();
        std::os::unix::fs::symlink(models.join("a.gguf"), models.join("inner.gguf")).unwrap();
        let access = ModelAccess::new(&[models.clone(), root.path().join("missing")], false);
        let real = std::fs::canonicalize(&models).unwrap();

        assert_eq!(
            access.resolve("a.gguf").unwrap(),
            real.join("a.gguf").to_string_lossy()
        );
        assert_eq!(
            access.resolve("sub/b.gguf").unwrap(),
            real.join("sub/b.gguf").to_string_lossy()
        );
        let abs = models.join("a.gguf").to_string_lossy().into_owned();
        assert!(access.resolve(&abs).is_ok());
        assert!(
            access.resolve("inner.gguf").is_ok(),
            "a link inside stays inside"
        );

        let secret = outside.join("secret.txt").to_string_lossy().into_owned();
        for bad in [
            "/etc/shadow",
            "/proc/self/environ",
            "../outside/secret.txt",
            "sub/../../outside/secret.txt",
            secret.as_str(),
            "link.gguf",
            "missing.gguf",
            "/",
            ".",
        ] {
            let err = access.resolve(bad).unwrap_err();
            // Only what was typed comes back, whatever lies behind it.
            assert_eq!(err, ModelAccessError::Outside(bad.to_string()), "{bad}");
        }
        assert_eq!(
            access.resolve("owner/name").unwrap_err(),
            ModelAccessError::HubDisabled("owner/name".into())
        );
        assert!(matches!(
            access.resolve("a\u{0}b"),
            Err(ModelAccessError::Invalid(_))
        ));
        assert!(matches!(
            access.resolve(" "),
            Err(ModelAccessError::Invalid(_))
        ));
    }

    #[test]
    fn hub_ids_pass_only_when_allowed() {
        let access = ModelAccess::new(&[], true);
        assert_eq!(access.resolve("owner/name").unwrap(), "owner/name");
        assert_eq!(
            access.resolve("/etc/passwd").unwrap_err(),
            ModelAccessError::Outside("/etc/passwd".into())
        );
    }
}
