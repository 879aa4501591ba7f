//! The reference in the quantized forms a copy is commonly served in.
//!
//! A lab that copies a model usually serves it quantized (GGUF Q8_0, Q6_K, Q4_K, ...), and
//! for a small model re-rounding its weights moves log-probabilities as far as damaging
//! them would (SmolLM2's 4-bit weights re-rounded to Q4_0 differ by a nat on average).
//! From outputs alone that copy looks like a derivative. But quantization is
//! deterministic: ggml's reference quantizers (which candle ports, and which llama.cpp
//! uses without an importance matrix) give the same bits for the same weights. So the
//! engine quantizes the reference itself to each type of a ladder, fingerprints every
//! form, and a suspect inside the identical band of any form is the reference served
//! quantized (`compare::Calibration::forms`).

use std::path::{Path, PathBuf};

use crate::compare::QuantizedForm;
use crate::fingerprint::{Fingerprint, FingerprintError, RunOptions};
use crate::model::local_endpoint::LocalEndpoint;
use crate::model::requantize::{parse_type, requantize};
use crate::model::rope::RopeScaling;
use crate::model::{LoadOptions, ModelError, ModelHandle};
use crate::probes::{ProbeKind, ProbeSet};

/// The forms copies are most often published in, from 8 bits down to 2: every matrix in
/// one type (our requantizer), and llama-quantize's file types (`lq-` prefix: its own
/// type per tensor, `crate::model::llama_quant`), which is what most GGUF copies are.
/// Last, the ways of serving that move every distribution without touching a weight:
/// `no-bos`, asked as a stack that adds no BOS token to a raw prompt does (Gemma 3 so
/// served reads as another model; made only for a reference whose file asks for one), and
/// the context stretched two- and fourfold (`crate::model::rope`): by YaRN, the settings
/// Qwen's model cards give operators for 64K and 128K inputs, and linearly (position
/// interpolation: llama.cpp's `--rope-scaling linear`, a `rope_scaling` of type `linear`
/// in vLLM or transformers).
pub const LADDER: [&str; 17] = [
    "q8_0",
    "q6_k",
    "q5_k",
    "q5_0",
    "q4_k",
    "q4_0",
    "lq-q6_k",
    "lq-q5_k_m",
    "lq-q4_k_m",
    "lq-q4_0",
    "lq-q3_k_m",
    "lq-q2_k",
    NO_BOS,
    "yarn-2",
    "yarn-4",
    "linear-2",
    "linear-4",
];

/// The serving form without a BOS token.
pub const NO_BOS: &str = crate::compare::verdict::NO_BOS_FORM;

/// Changes when a form's bytes would: 2 since the K types follow ggml's current reference
/// quantizers byte for byte (`crate::model::ggml_quants`).
const QUANTIZER_REVISION: u32 = 2;

/// A form name: `lq-<file type>` for llama-quantize's mix, else one weight type for every
/// matrix.
enum FormKind {
    Uniform(candle_core::quantized::GgmlDType),
    LlamaCpp(crate::model::llama_quant::Ftype),
    NoBos,
    Stretched(RopeScaling),
}

fn form_kind(name: &str) -> Result<FormKind, ModelError> {
    if name == NO_BOS {
        return Ok(FormKind::NoBos);
    }
    if crate::compare::verdict::stretched_form(name).is_some() {
        return RopeScaling::parse(&name.replacen('-', ":", 1))
            .map(FormKind::Stretched)
            .map_err(|e| ModelError::BadInput(e.to_string()));
    }
    match name.strip_prefix("lq-") {
        Some(ftype) => crate::model::llama_quant::Ftype::parse(ftype)
            .map(FormKind::LlamaCpp)
            .ok_or_else(|| {
                ModelError::BadInput(format!(
                    "unknown llama-quantize file type `{ftype}` ({})",
                    crate::model::llama_quant::Ftype::NAMES.join(", ")
                ))
            }),
        None => parse_type(name).map(FormKind::Uniform),
    }
}

/// Writes `reference` in the quantized form `name` (a [`LADDER`] name: `lq-<file type>` or
/// one weight type) to `out`; returns how many tensors were converted. Blocking.
pub fn write_form(reference: &Path, out: &Path, name: &str) -> Result<usize, ModelError> {
    write_kind(reference, out, form_kind(name)?)
}

fn write_kind(reference: &Path, out: &Path, kind: FormKind) -> Result<usize, ModelError> {
    match kind {
        FormKind::Uniform(t) => requantize(reference, out, t),
        FormKind::LlamaCpp(f) => {
            crate::model::requantize::requantize_like_llama_cpp(reference, out, f)
        }
        FormKind::NoBos => Err(ModelError::BadInput(format!(
            "`{NO_BOS}` is a way of asking the reference, not a file to write"
        ))),
        FormKind::Stretched(s) => Err(ModelError::BadInput(format!(
            "`{}` is a way of serving the reference, not a file to write",
            s.name()
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormsError {
    #[error("quantized forms need a local GGUF reference, not `{0}`")]
    NotGguf(String),
    #[error("making the {dtype} form of the reference: {source}")]
    Model { dtype: String, source: ModelError },
    #[error("fingerprinting the {dtype} form of the reference: {source}")]
    Fingerprint {
        dtype: String,
        source: FingerprintError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Parses a comma-separated list of weight types (`ladder` for [`LADDER`], `none` for
/// none), checking each is one the requantizer can write.
pub fn parse_list(s: &str) -> Result<Vec<String>, ModelError> {
    let s = s.trim();
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    if s.eq_ignore_ascii_case("ladder") {
        return Ok(LADDER.iter().map(|t| t.to_string()).collect());
    }
    let mut out = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        form_kind(&t.to_ascii_lowercase())?;
        let t = t.to_ascii_lowercase();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// Fingerprints `reference` (a GGUF file) quantized to each of `dtypes`, on the set's logit
/// probes. Each form's fingerprint is cached at
/// `cache/<stem>-<size>-<mtime>-<dtype>-r<arithmetic revision>-q<quantizer revision>.json`
/// and reused while it covers the set; the quantized file lives only as long as its
/// fingerprinting.
pub async fn fingerprint_forms(
    reference: &Path,
    dtypes: &[String],
    set: &ProbeSet,
    run: &RunOptions,
    cache: &Path,
) -> Result<Vec<QuantizedForm>, FormsError> {
    if dtypes.is_empty() {
        return Ok(Vec::new());
    }
    let is_gguf = reference.is_file()
        && reference
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if !is_gguf {
        return Err(FormsError::NotGguf(reference.display().to_string()));
    }
    std::fs::create_dir_all(cache).map_err(|source| FormsError::Io {
        path: cache.to_path_buf(),
        source,
    })?;
    let _lock = crate::fingerprint::lock_cache(cache)
        .await
        .map_err(|source| FormsError::Io {
            path: cache.to_path_buf(),
            source,
        })?;
    // Keyed on the file's name, size and modification time as well as the probe set, so a
    // replaced reference is fingerprinted again (hashing hundreds of MiB each time is not
    // worth it).
    let meta = std::fs::metadata(reference).map_err(|source| FormsError::Io {
        path: reference.to_path_buf(),
        source,
    })?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    let stem = format!(
        "{}-{}-{modified}",
        reference
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "reference".to_string()),
        meta.len()
    );
    // Only the logit probes: a form is compared on next-token distributions alone (it
    // shares the reference's tokenizer, text and refusals by construction).
    let logit_only = ProbeSet {
        probes: set
            .probes
            .iter()
            .filter(|p| p.kind == ProbeKind::Logit)
            .cloned()
            .collect(),
        name: set.name.clone(),
        version: set.version.clone(),
        hash: set.hash.clone(),
    };
    let mut forms = Vec::new();
    for dtype in dtypes {
        let out = cache.join(format!(
            "{stem}-{dtype}-r{}-q{QUANTIZER_REVISION}.json",
            crate::model::ARITHMETIC_REVISION
        ));
        let fingerprint = match crate::fingerprint::load(&out) {
            Ok(fp) if fp.covers(&logit_only) => fp.restricted_to(&logit_only),
            // Reading the tokenizer only on a miss: a file that asks for no BOS token has
            // no such form, and is read again each scan (a vocabulary, not a model).
            _ if dtype == NO_BOS && !asks_for_bos(reference).await => continue,
            _ => fingerprint_one(reference, dtype, &logit_only, run, &out).await?,
        };
        forms.push(QuantizedForm {
            dtype: dtype.clone(),
            fingerprint,
        });
    }
    Ok(forms)
}

async fn fingerprint_one(
    reference: &Path,
    dtype: &str,
    set: &ProbeSet,
    run: &RunOptions,
    out: &Path,
) -> Result<Fingerprint, FormsError> {
    let model_err = |source| FormsError::Model {
        dtype: dtype.to_string(),
        source,
    };
    let kind = form_kind(dtype).map_err(model_err)?;
    let dir = tempfile::tempdir().map_err(|source| FormsError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let file = dir.path().join(format!("reference-{dtype}.gguf"));
    tracing::info!(dtype, "making the reference's form");
    let (input, output) = (reference.to_path_buf(), file.clone());
    let handle = tokio::task::spawn_blocking(move || match kind {
        FormKind::NoBos => {
            let opts = LoadOptions {
                add_bos: Some(false),
                ..LoadOptions::default()
            };
            ModelHandle::spawn(&input.to_string_lossy(), &opts, 64)
        }
        FormKind::Stretched(scaling) => {
            let opts = LoadOptions {
                rope_scaling: Some(scaling),
                ..LoadOptions::default()
            };
            ModelHandle::spawn(&input.to_string_lossy(), &opts, 64)
        }
        kind => {
            write_kind(&input, &output, kind)?;
            ModelHandle::spawn(&output.to_string_lossy(), &LoadOptions::default(), 64)
        }
    })
    .await
    .map_err(|e| model_err(ModelError::BadInput(e.to_string())))?
    .map_err(model_err)?;
    let endpoint = LocalEndpoint::new(handle);
    crate::scan::fingerprint_to(set, &endpoint, out, run)
        .await
        .map_err(|source| FormsError::Fingerprint {
            dtype: dtype.to_string(),
            source,
        })
}

/// Whether the reference's GGUF file asks for a BOS token before each prompt; a file that
/// cannot be read says no (loading it as the reference fails louder).
async fn asks_for_bos(reference: &Path) -> bool {
    let path = reference.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let g = crate::model::gguf::GgufFile::open(&path).ok()?;
        let tokenizer = crate::model::tokenizer::Tokenizer::from_gguf(&g).ok()?;
        Some(tokenizer.add_bos && tokenizer.bos.is_some())
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_to_known_types() {
        assert_eq!(parse_list("none").unwrap(), Vec::<String>::new());
        assert_eq!(parse_list("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_list("ladder").unwrap().len(), LADDER.len());
        assert_eq!(
            parse_list("Q8_0, q4_k,q8_0").unwrap(),
            vec!["q8_0".to_string(), "q4_k".to_string()]
        );
        let err = parse_list("q8_0,q9_9").unwrap_err().to_string();
        assert!(err.contains("q9_9"), "{err}");
        for t in LADDER {
            form_kind(t).unwrap();
        }
        assert_eq!(
            parse_list("LQ-Q4_K_M").unwrap(),
            vec!["lq-q4_k_m".to_string()]
        );
        let err = parse_list("lq-q9_k").unwrap_err().to_string();
        assert!(err.contains("q9_k"), "{err}");
        assert_eq!(parse_list("no-bos").unwrap(), vec![NO_BOS.to_string()]);
        assert_eq!(parse_list("YaRN-8").unwrap(), vec!["yarn-8".to_string()]);
        assert!(parse_list("yarn-0.5").is_err());
        assert!(parse_list("dynamic-2").is_err());
    }

    #[test]
    fn serving_forms_are_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_form(
            &dir.path().join("in.gguf"),
            &dir.path().join("out.gguf"),
            NO_BOS,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a file to write"), "{err}");
        let err = write_form(
            &dir.path().join("in.gguf"),
            &dir.path().join("out.gguf"),
            "yarn-4",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a file to write"), "{err}");
    }
}
