//! Re-quantizing a GGUF file to another weight type (`provenance models requantize`): the
//! same weights as another quantization, which a scan must still call identical. Also a
//! building block of the ground-truth zoo.

use std::path::Path;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;

use super::gguf::GgufFile;
use super::ModelError;

pub fn parse_type(s: &str) -> Result<GgmlDType, ModelError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "q8_0" => GgmlDType::Q8_0,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q5_1" => GgmlDType::Q5_1,
        "q4_k" => GgmlDType::Q4K,
        "q5_k" => GgmlDType::Q5K,
        "q6_k" => GgmlDType::Q6K,
        other => {
            return Err(ModelError::BadInput(format!(
                "unknown weight type `{other}` (f32, f16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k)"
            )))
        }
    })
}

/// Writes `input` with every 2-D weight matrix converted to `dtype` (matrices whose rows
/// do not divide into that type's blocks keep their type); metadata is copied unchanged.
/// Returns how many tensors were converted.
pub fn requantize(input: &Path, output: &Path, dtype: GgmlDType) -> Result<usize, ModelError> {
    let mut converted = 0;
    rewrite(
        input,
        output,
        |_, t| {
            let dims = t.shape().dims().to_vec();
            let fits = dims.len() == 2 && dims[1].is_multiple_of(dtype.block_size());
            if fits && t.dtype() != dtype {
                let dense = t.dequantize(&Device::Cpu)?;
                converted += 1;
                return Ok(Some(quantize_as_ggml(&dense, dtype)?));
            }
            Ok(Some(t))
        },
        |name| name.to_string(),
        |_| {},
    )?;
    Ok(converted)
}

/// Writes `input` as llama.cpp's `llama-quantize --allow-requantize` would for file type
/// `ftype`: each tensor to the type it chooses (`super::llama_quant`), from the stored
/// weights dequantized; a tensor already of that type is copied. Returns how many
/// tensors were converted.
pub fn requantize_like_llama_cpp(
    input: &Path,
    output: &Path,
    ftype: super::llama_quant::Ftype,
) -> Result<usize, ModelError> {
    let g = GgufFile::open(input)?;
    let arch = g.architecture().ok_or_else(|| {
        ModelError::BadInput(format!("{}: no general.architecture", input.display()))
    })?;
    let key = |k: &str| g.u32(&format!("{arch}.{k}")).unwrap_or(0) as usize;
    let heads = key("attention.head_count");
    let kv_heads = key("attention.head_count_kv").max(1);
    let shape = super::llama_quant::ModelShape {
        n_layers: key("block_count"),
        n_gqa: (heads / kv_heads).max(1),
        tied_embeddings: !g.content.tensor_infos.contains_key("output.weight"),
    };
    drop(g);
    let mut converted = 0;
    rewrite(
        input,
        output,
        |name, t| {
            let dims = t.shape().dims().to_vec();
            let row_len = dims.last().copied().unwrap_or(0);
            match super::llama_quant::tensor_type(ftype, &shape, name, dims.len(), row_len) {
                Some(want) if want != t.dtype() => {
                    let dense = t.dequantize(&Device::Cpu)?;
                    converted += 1;
                    Ok(Some(quantize_as_ggml(&dense, want)?))
                }
                _ => Ok(Some(t)),
            }
        },
        |name| name.to_string(),
        |_| {},
    )?;
    Ok(converted)
}

/// `dense` in `dtype` with the bytes ggml's reference quantizers give (what llama-quantize
/// writes without an importance matrix): K types through [`super::ggml_quants`], the
/// legacy types through candle, whose quantizers for them already agree with ggml's.
fn quantize_as_ggml(dense: &candle_core::Tensor, dtype: GgmlDType) -> Result<QTensor, ModelError> {
    let k_type = matches!(
        dtype,
        GgmlDType::Q2K | GgmlDType::Q3K | GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K
    );
    if !k_type {
        return Ok(QTensor::quantize(dense, dtype)?);
    }
    let values: Vec<f32> = dense.flatten_all()?.to_vec1()?;
    match super::ggml_quants::quantize(dtype, &values) {
        Some(bytes) => Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
            dtype,
            &bytes,
            dense.dims().to_vec(),
            &Device::Cpu,
        )?),
        None => Ok(QTensor::quantize(dense, dtype)?),
    }
}

/// Metadata of a GGUF file, by key.
pub type Metadata = std::collections::HashMap<String, gguf_file::Value>;

/// Copies a GGUF file tensor by tensor through `tensor` (which may change a tensor or drop
/// it with `None`), storing each under `rename(name)` and letting `meta` edit the metadata. Tensors are visited in name order, so
/// a seeded transformation is deterministic. The file appears only once complete.
pub fn rewrite<T, N, M>(
    input: &Path,
    output: &Path,
    mut tensor: T,
    rename: N,
    meta: M,
) -> Result<(), ModelError>
where
    T: FnMut(&str, QTensor) -> Result<Option<QTensor>, ModelError>,
    N: Fn(&str) -> String,
    M: FnOnce(&mut Metadata),
{
    let mut g = GgufFile::open(input)?;
    let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let t = g.raw_tensor(&name)?;
        if let Some(t) = tensor(&name, t)? {
            tensors.push((rename(&name), t));
        }
    }
    let mut metadata = g.content.metadata.clone();
    meta(&mut metadata);
    write_gguf(output, metadata.into_iter().collect(), tensors)
}

/// Writes a GGUF file whole or not at all (to `.gguf.partial`, then renamed), metadata
/// and tensors in name order so that the same content gives the same bytes.
pub fn write_gguf(
    output: &Path,
    mut metadata: Vec<(String, gguf_file::Value)>,
    mut tensors: Vec<(String, QTensor)>,
) -> Result<(), ModelError> {
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let metadata: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let io = |e: std::io::Error| ModelError::Io {
        path: output.to_path_buf(),
        source: e,
    };
    let tmp = output.with_extension("gguf.partial");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
    gguf_file::write(&mut file, &metadata, &refs)?;
    drop(file);
    std::fs::rename(&tmp, output).map_err(io)?;
    Ok(())
}

/// A trained or perturbed matrix as Q8_0 (finer than 4-bit originals, and what the runner
/// computes with anyway) where its rows fit Q8_0 blocks; vectors and odd rows as F32.
pub fn quantize_q8(t: &candle_core::Tensor) -> Result<QTensor, ModelError> {
    let rows_fit = t.rank() == 2 && t.dim(1)?.is_multiple_of(GgmlDType::Q8_0.block_size());
    let dtype = if rows_fit {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F32
    };
    Ok(QTensor::quantize(t, dtype)?)
}
