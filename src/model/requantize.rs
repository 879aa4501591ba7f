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
        "q4_k" => GgmlDType::Q4K,
        "q6_k" => GgmlDType::Q6K,
        other => {
            return Err(ModelError::BadInput(format!(
                "unknown weight type `{other}` (f32, f16, q8_0, q4_0, q4_1, q5_0, q4_k, q6_k)"
            )))
        }
    })
}

/// Writes `input` with every 2-D weight matrix converted to `dtype` (matrices whose rows
/// do not divide into that type's blocks keep their type); metadata is copied unchanged.
/// Returns how many tensors were converted.
pub fn requantize(input: &Path, output: &Path, dtype: GgmlDType) -> Result<usize, ModelError> {
    let mut g = GgufFile::open(input)?;
    let mut names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = Vec::with_capacity(names.len());
    let mut converted = 0;
    for name in names {
        let t = g.raw_tensor(&name)?;
        let dims = t.shape().dims().to_vec();
        let fits = dims.len() == 2 && dims[1].is_multiple_of(dtype.block_size());
        if fits && t.dtype() != dtype {
            let dense = t.dequantize(&Device::Cpu)?;
            tensors.push((name, QTensor::quantize(&dense, dtype)?));
            converted += 1;
        } else {
            tensors.push((name, t));
        }
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = g
        .content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
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
    Ok(converted)
}
