//! Reading GGUF files: metadata, the transformer config and weights.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::Device;

use super::qlinear::{Builder, Q8Matrix};
use super::rope::{RopeScaling, Yarn};
use super::weights::{Config, Embedding, Family, Layer, Linear, RmsNorm, Weights};
use super::ModelError;

/// What to do with weight types that candle only has scalar kernels for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requantize {
    /// Our kernels (`qlinear.rs`): Q4_1, Q4_K, Q5_0, Q6_K and Q8_0 held exactly as stored;
    /// any other type re-quantized to Q8_0 (8-bit blocks of 32), which adds a fraction of
    /// the original quantization's error.
    #[default]
    Auto,
    /// Keep every tensor as stored, on candle's kernels (exact, but ~10x slower on Q4_1 /
    /// Q5_0, which candle only has scalar kernels for).
    Off,
}

impl std::str::FromStr for Requantize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "off" | "none" => Ok(Self::Off),
            other => Err(format!("unknown requantize mode `{other}` (auto|off)")),
        }
    }
}

pub struct GgufFile {
    pub content: Content,
    file: std::fs::File,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let mut file = std::fs::File::open(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let format = |message: String| ModelError::Format {
            path: path.to_path_buf(),
            message,
        };
        if super::gguf_alignment::declared_alignment(&mut std::io::BufReader::new(&mut file))
            == Some(0)
        {
            return Err(format(
                "not a readable GGUF file: general.alignment is 0".into(),
            ));
        }
        file.rewind().map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let content = Content::read(&mut file)
            .map_err(|e| format(format!("not a readable GGUF file: {e}")))?;
        Ok(Self { content, file })
    }

    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        self.meta(key).and_then(|v| v.to_string().ok()).cloned()
    }

    pub fn u32(&self, key: &str) -> Option<u32> {
        self.meta(key).and_then(|v| match v {
            Value::U32(x) => Some(*x),
            Value::I32(x) => u32::try_from(*x).ok(),
            Value::U64(x) => u32::try_from(*x).ok(),
            Value::I64(x) => u32::try_from(*x).ok(),
            Value::U16(x) => Some(u32::from(*x)),
            Value::U8(x) => Some(u32::from(*x)),
            _ => None,
        })
    }

    pub fn f32(&self, key: &str) -> Option<f32> {
        self.meta(key).and_then(|v| match v {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            _ => None,
        })
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.meta(key).and_then(|v| v.to_bool().ok())
    }

    pub fn strings(&self, key: &str) -> Option<Vec<String>> {
        let arr = self.meta(key)?.to_vec().ok()?;
        arr.iter()
            .map(|v| v.to_string().ok().cloned())
            .collect::<Option<Vec<_>>>()
    }

    pub fn f32s(&self, key: &str) -> Option<Vec<f32>> {
        let arr = self.meta(key)?.to_vec().ok()?;
        arr.iter()
            .map(|v| v.to_f32().ok())
            .collect::<Option<Vec<_>>>()
    }

    pub fn u32s(&self, key: &str) -> Option<Vec<u32>> {
        let arr = self.meta(key)?.to_vec().ok()?;
        arr.iter()
            .map(|v| match v {
                Value::I32(x) => u32::try_from(*x).ok(),
                Value::U32(x) => Some(*x),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
    }

    pub fn architecture(&self) -> Option<String> {
        self.string("general.architecture")
    }

    fn tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        self.content
            .tensor(&mut self.file, name, &Device::Cpu)
            .map_err(|e| ModelError::MissingTensor {
                name: name.to_string(),
                message: e.to_string(),
            })
    }

    /// A matrix for our kernels, read from the file a few MiB of rows at a time into the
    /// grouped layout (the whole tensor in memory beside its converted copy would add the
    /// largest matrix to peak memory); types without a layout of their own are read whole
    /// and re-quantized.
    fn q8_matrix(&mut self, name: &str) -> Result<Q8Matrix, ModelError> {
        self.q8_matrix_in_chunks(name, 4 << 20)
    }

    fn q8_matrix_in_chunks(
        &mut self,
        name: &str,
        chunk_bytes: usize,
    ) -> Result<Q8Matrix, ModelError> {
        let err = |message: String| ModelError::MissingTensor {
            name: name.to_string(),
            message,
        };
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| err("not in the file".into()))?;
        let (rows, cols) = info.shape.dims2()?;
        let dtype = info.ggml_dtype;
        let start = self.content.tensor_data_offset.saturating_add(info.offset);
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        // A header that claims more rows than the file holds is refused before any memory
        // is set aside for them.
        let len = self.file.metadata().map_err(|e| err(e.to_string()))?.len();
        let total = (rows as u64).saturating_mul(row_bytes as u64);
        if start.saturating_add(total) > len {
            return Err(err(format!(
                "{total} bytes at offset {start} run past the end of the file ({len} bytes)"
            )));
        }
        let Some(mut builder) = Builder::new(dtype, rows, cols)? else {
            return Ok(Q8Matrix::from_qtensor(&self.tensor(name)?)?);
        };
        self.file
            .seek(SeekFrom::Start(start))
            .map_err(|e| err(e.to_string()))?;
        let per_chunk = (chunk_bytes / row_bytes.max(1)).max(1);
        let mut buf = vec![0u8; per_chunk.min(rows) * row_bytes];
        let mut done = 0;
        while done < rows {
            let n = per_chunk.min(rows - done);
            let chunk = &mut buf[..n * row_bytes];
            self.file
                .read_exact(chunk)
                .map_err(|e| err(e.to_string()))?;
            builder.push_rows(chunk)?;
            done += n;
        }
        Ok(builder.finish()?)
    }

    /// A tensor as stored.
    pub fn raw_tensor(&mut self, name: &str) -> Result<QTensor, ModelError> {
        self.tensor(name)
    }

    /// A tensor dequantized to f32, in the layout candle uses (rows = outputs).
    pub fn raw_dequantized(&mut self, name: &str) -> Result<candle_core::Tensor, ModelError> {
        Ok(self.tensor(name)?.dequantize(&Device::Cpu)?)
    }

    fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// The RoPE scaling the file declares, read as llama.cpp reads it: a factor without a
    /// type is linear, and YaRN's original context is the trained one unless given.
    fn rope_scaling(&self, arch: &str, trained_ctx: usize) -> Result<RopeScaling, ModelError> {
        let key = |k: &str| format!("{arch}.rope.scaling.{k}");
        let factor = self
            .f32(&key("factor"))
            .or_else(|| self.f32(&format!("{arch}.rope.scale_linear")))
            .filter(|f| *f != 0.0 && *f != 1.0);
        let kind = self.string(&key("type"));
        if let Some(a) = self.f32(&key("attn_factor")).filter(|a| *a != 1.0) {
            return Err(ModelError::Unsupported(format!(
                "GGUF metadata: RoPE attention factor {a} (only 1 is supported)"
            )));
        }
        if self
            .f32(&key("yarn_log_multiplier"))
            .is_some_and(|m| m != 0.0)
        {
            return Err(ModelError::Unsupported(
                "GGUF metadata: YaRN with a log multiplier (DeepSeek's)".into(),
            ));
        }
        match (kind.as_deref().unwrap_or("linear"), factor) {
            ("none", _) | (_, None) => Ok(RopeScaling::None),
            ("linear", Some(factor)) => Ok(RopeScaling::Linear { factor }),
            ("yarn", Some(factor)) => {
                let mut yarn = Yarn::new(
                    factor,
                    self.u32(&key("original_context_length"))
                        .map_or(trained_ctx, |v| v as usize),
                );
                if let Some(b) = self.f32(&key("yarn_beta_fast")) {
                    yarn.beta_fast = b;
                }
                if let Some(b) = self.f32(&key("yarn_beta_slow")) {
                    yarn.beta_slow = b;
                }
                Ok(RopeScaling::Yarn(yarn))
            }
            (other, _) => Err(ModelError::Unsupported(format!(
                "GGUF metadata: RoPE scaling `{other}` (supported: none, linear, yarn)"
            ))),
        }
    }

    /// Reads the config of a supported architecture (`Family::SUPPORTED`).
    pub fn config(&self, max_context: usize) -> Result<Config, ModelError> {
        let arch = self.architecture().unwrap_or_default();
        let family = Family::from_architecture(&arch).ok_or_else(|| {
            ModelError::Unsupported(format!(
                "GGUF architecture `{arch}` (supported: {})",
                Family::SUPPORTED
            ))
        })?;
        let need = |k: &str| {
            self.u32(&format!("{arch}.{k}"))
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Unsupported(format!("GGUF metadata lacks {arch}.{k}")))
        };
        // Sizes are divisors and loop bounds below and in the model: zero is a broken file.
        let need = |k: &str| {
            need(k).and_then(|v| {
                if v == 0 {
                    Err(ModelError::Unsupported(format!(
                        "GGUF metadata {arch}.{k} is 0"
                    )))
                } else {
                    Ok(v)
                }
            })
        };
        let hidden = need("embedding_length")?;
        let n_heads = need("attention.head_count")?;
        let n_kv_heads = self
            .u32(&format!("{arch}.attention.head_count_kv"))
            .map(|v| v as usize)
            .unwrap_or(n_heads);
        let head_dim = self
            .u32(&format!("{arch}.attention.key_length"))
            .map(|v| v as usize)
            .unwrap_or(hidden / n_heads);
        let rope_base = self
            .f32(&format!("{arch}.rope.freq_base"))
            .unwrap_or(10_000.0);
        let vocab_size = self
            .strings("tokenizer.ggml.tokens")
            .map(|t| t.len())
            .unwrap_or(0);
        let trained_ctx = need("context_length")?;
        let (sliding_window, rope_base_local, sliding_pattern) = match family {
            // llama.cpp hard-codes the local base for Gemma 3 as well; metadata may override.
            Family::Gemma3 => (
                self.u32("gemma3.attention.sliding_window")
                    .map(|v| v as usize),
                self.f32("gemma3.rope.local_freq_base").unwrap_or(10_000.0),
                self.u32("gemma3.attention.sliding_window_type")
                    .map(|v| v as usize)
                    .unwrap_or(6),
            ),
            // Local and global layers in turn (the first local), one RoPE base.
            Family::Gemma2 => (
                self.u32("gemma2.attention.sliding_window")
                    .map(|v| v as usize),
                rope_base,
                2,
            ),
            // Mistral-style: every layer attends to the last `sliding_window` positions
            // (a pattern longer than the stack makes no layer global).
            _ => {
                let window = self
                    .u32(&format!("{arch}.attention.sliding_window"))
                    .map(|v| v as usize)
                    .filter(|&w| w > 0);
                (window, rope_base, usize::MAX)
            }
        };
        if self.has_tensor("rope_factors_long.weight") {
            return Err(ModelError::Unsupported(
                "long-context RoPE scaling (rope_factors_long/short: Phi-3 128k); the 4k variants run".into(),
            ));
        }
        let rope_scaling = self.rope_scaling(&arch, trained_ctx)?;
        if let Some(rot) = self.u32(&format!("{arch}.rope.dimension_count")) {
            if rot as usize != head_dim {
                return Err(ModelError::Unsupported(format!(
                    "GGUF metadata: rotary embedding over {rot} of {head_dim} head dimensions (partial rotary is not supported)"
                )));
            }
        }
        if n_kv_heads == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(ModelError::Unsupported(format!(
                "GGUF metadata: {n_heads} attention heads cannot share {n_kv_heads} key/value heads"
            )));
        }
        if head_dim == 0 || sliding_pattern == 0 {
            return Err(ModelError::Unsupported(
                "GGUF metadata: head size and sliding-window pattern must be positive".into(),
            ));
        }
        Ok(Config {
            family,
            hidden,
            n_layers: need("block_count")?,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps: self
                .f32(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-6) as f64,
            rope_base,
            rope_base_local,
            rope_scaling,
            // llama.cpp's converter permutes llama's Q and K for interleaved RoPE; Qwen, Phi-3
            // and Gemma keep the halves layout (NEOX).
            rope_interleaved: family == Family::Llama,
            sliding_window,
            sliding_pattern,
            attn_scale_base: head_dim as f64,
            // llama.cpp's defaults where a Gemma 2 file does not say (50 and 30).
            attn_softcap: (family == Family::Gemma2)
                .then(|| self.f32("gemma2.attn_logit_softcapping").unwrap_or(50.0)),
            final_softcap: (family == Family::Gemma2)
                .then(|| self.f32("gemma2.final_logit_softcapping").unwrap_or(30.0)),
            context_length: trained_ctx.min(max_context),
            trained_context: trained_ctx,
            vocab_size,
            kv_cache: Default::default(),
        })
    }

    /// Loads all weights; with `Requantize::Auto` every matrix moves to our Q8 kernel.
    pub fn weights(&mut self, cfg: &Config, requantize: Requantize) -> Result<Weights, ModelError> {
        let tied = !self.has_tensor("output.weight");
        let (embedding, lm_head) = match requantize {
            Requantize::Auto => {
                let m = Arc::new(self.q8_matrix("token_embd.weight")?);
                let head = if tied {
                    // Tied embeddings: one table serves both, no copy.
                    Linear::Q8(m.clone())
                } else {
                    self.matmul("output.weight", requantize)?
                };
                (Embedding::Q8(m), head)
            }
            Requantize::Off => {
                let embd = Arc::new(self.tensor("token_embd.weight")?);
                let head = if tied {
                    Linear::Candle(QMatMul::from_arc(embd.clone())?)
                } else {
                    self.matmul("output.weight", requantize)?
                };
                let embedding = if embd.dtype().block_size() > 1
                    && cfg.hidden.is_multiple_of(embd.dtype().block_size())
                {
                    Embedding::Quantized(embd)
                } else {
                    Embedding::Dense(embd.dequantize(&Device::Cpu)?)
                };
                (embedding, head)
            }
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = format!("blk.{i}");
            let gemma = cfg.family.is_gemma();
            let (wq, wk, wv) = if cfg.family == Family::Phi3 {
                let q_rows = cfg.n_heads * cfg.head_dim;
                let kv_rows = cfg.n_kv_heads * cfg.head_dim;
                let [q, k, v] =
                    self.split_rows(&format!("{p}.attn_qkv.weight"), [q_rows, kv_rows, kv_rows])?;
                (
                    to_linear(q, requantize)?,
                    to_linear(k, requantize)?,
                    to_linear(v, requantize)?,
                )
            } else {
                (
                    self.matmul(&format!("{p}.attn_q.weight"), requantize)?,
                    self.matmul(&format!("{p}.attn_k.weight"), requantize)?,
                    self.matmul(&format!("{p}.attn_v.weight"), requantize)?,
                )
            };
            let (w_gate, w_up) = if cfg.family == Family::Phi3 {
                // Phi-3 stores gate and up as one matrix, gate rows first.
                let rows = self.rows(&format!("{p}.ffn_up.weight"))?;
                let [gate, up] =
                    self.split_rows(&format!("{p}.ffn_up.weight"), [rows / 2, rows / 2])?;
                (to_linear(gate, requantize)?, to_linear(up, requantize)?)
            } else {
                (
                    self.matmul(&format!("{p}.ffn_gate.weight"), requantize)?,
                    self.matmul(&format!("{p}.ffn_up.weight"), requantize)?,
                )
            };
            layers.push(Layer {
                attn_norm: self.norm(&format!("{p}.attn_norm.weight"), cfg)?,
                wq,
                wk,
                wv,
                wo: self.matmul(&format!("{p}.attn_output.weight"), requantize)?,
                q_bias: self.opt_vector(&format!("{p}.attn_q.bias"))?,
                k_bias: self.opt_vector(&format!("{p}.attn_k.bias"))?,
                v_bias: self.opt_vector(&format!("{p}.attn_v.bias"))?,
                q_norm: self.opt_norm(&format!("{p}.attn_q_norm.weight"), cfg)?,
                k_norm: self.opt_norm(&format!("{p}.attn_k_norm.weight"), cfg)?,
                post_attn_norm: if gemma {
                    Some(self.norm(&format!("{p}.post_attention_norm.weight"), cfg)?)
                } else {
                    None
                },
                ffn_norm: self.norm(&format!("{p}.ffn_norm.weight"), cfg)?,
                w_gate,
                w_up,
                w_down: self.matmul(&format!("{p}.ffn_down.weight"), requantize)?,
                post_ffn_norm: if gemma {
                    Some(self.norm(&format!("{p}.post_ffw_norm.weight"), cfg)?)
                } else {
                    None
                },
            });
        }
        let rope_freq_factors = match self.opt_vector("rope_freqs.weight")? {
            Some(t) => Some(t.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        Ok(Weights {
            embedding,
            layers,
            final_norm: self.norm("output_norm.weight", cfg)?,
            lm_head,
            rope_freq_factors,
        })
    }

    fn norm(&mut self, name: &str, cfg: &Config) -> Result<RmsNorm, ModelError> {
        // GGUF conversion already folds Gemma's (1 + w) into the stored weight.
        let weight = self.tensor(name)?.dequantize(&Device::Cpu)?;
        Ok(RmsNorm {
            weight,
            eps: cfg.rms_eps,
        })
    }

    fn opt_norm(&mut self, name: &str, cfg: &Config) -> Result<Option<RmsNorm>, ModelError> {
        if self.has_tensor(name) {
            Ok(Some(self.norm(name, cfg)?))
        } else {
            Ok(None)
        }
    }

    fn opt_vector(&mut self, name: &str) -> Result<Option<candle_core::Tensor>, ModelError> {
        if self.has_tensor(name) {
            Ok(Some(self.tensor(name)?.dequantize(&Device::Cpu)?))
        } else {
            Ok(None)
        }
    }

    fn matmul(&mut self, name: &str, requantize: Requantize) -> Result<Linear, ModelError> {
        match requantize {
            Requantize::Auto => Ok(Linear::Q8(Arc::new(self.q8_matrix(name)?))),
            Requantize::Off => to_linear(self.tensor(name)?, requantize),
        }
    }

    fn rows(&self, name: &str) -> Result<usize, ModelError> {
        let info =
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| ModelError::MissingTensor {
                    name: name.to_string(),
                    message: "not in the file".into(),
                })?;
        Ok(info.shape.dims2()?.0)
    }

    /// A fused matrix cut into consecutive row blocks, each kept in the stored type (its
    /// rows are whole blocks of bytes, so nothing is re-rounded).
    fn split_rows<const N: usize>(
        &mut self,
        name: &str,
        rows: [usize; N],
    ) -> Result<[QTensor; N], ModelError> {
        let t = self.tensor(name)?;
        let (total, cols) = t.shape().dims2()?;
        if rows.iter().sum::<usize>() != total {
            return Err(ModelError::Format {
                path: name.into(),
                message: format!("fused matrix has {total} rows, expected {rows:?}"),
            });
        }
        let dtype = t.dtype();
        let row_bytes = cols / dtype.block_size() * dtype.type_size();
        let data = t.data()?;
        let mut start = 0;
        let mut parts = Vec::with_capacity(N);
        for r in rows {
            let bytes = &data[start * row_bytes..(start + r) * row_bytes];
            parts.push(candle_core::quantized::ggml_file::qtensor_from_ggml(
                dtype,
                bytes,
                vec![r, cols],
                &Device::Cpu,
            )?);
            start += r;
        }
        parts.try_into().map_err(|_| ModelError::Format {
            path: name.into(),
            message: "fused matrix split".into(),
        })
    }
}

fn to_linear(t: QTensor, requantize: Requantize) -> Result<Linear, ModelError> {
    Ok(match requantize {
        Requantize::Auto => Linear::Q8(Arc::new(Q8Matrix::from_qtensor(&t)?)),
        Requantize::Off => Linear::Candle(QMatMul::from_qtensor(t)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::synthetic::{self, Dims, Mix, Spec};

    /// A small file holding every common type in turn (Q4_K, Q5_K, Q6_K, Q8_0, F16).
    fn small_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let path = dir.path().join("small.gguf");
        let dims = Dims {
            hidden: 256,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 64,
            ff: 512,
            vocab: 300,
            context: 256,
        };
        let spec = Spec {
            family: Family::Qwen2,
            dims,
            seed: 7,
            mix: Mix::Every,
            tied: false,
            sliding_window: None,
        };
        synthetic::write(&path, &spec).expect("write synthetic gguf");
        path
    }

    /// RoPE scaling is read as llama.cpp reads it; a kind we do not run is refused at load
    /// rather than run as plain RoPE.
    #[test]
    fn rope_scaling_is_read_from_metadata() {
        fn set(file: &mut GgufFile, key: &str, value: Value) {
            file.content
                .metadata
                .insert(format!("qwen2.rope.{key}"), value);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut file = GgufFile::open(&small_file(&dir)).unwrap();
        assert_eq!(file.config(256).unwrap().rope_scaling, RopeScaling::None);
        set(&mut file, "scale_linear", Value::F32(2.0));
        assert_eq!(
            file.config(256).unwrap().rope_scaling,
            RopeScaling::Linear { factor: 2.0 }
        );
        set(&mut file, "scaling.type", Value::String("yarn".into()));
        set(&mut file, "scaling.factor", Value::F32(4.0));
        assert_eq!(
            file.config(256).unwrap().rope_scaling,
            RopeScaling::Yarn(Yarn::new(4.0, 256)),
            "the trained context, where the file gives no original one"
        );
        set(
            &mut file,
            "scaling.original_context_length",
            Value::U32(32768),
        );
        assert_eq!(
            file.config(256).unwrap().rope_scaling,
            RopeScaling::Yarn(Yarn::new(4.0, 32768))
        );
        set(&mut file, "scaling.type", Value::String("longrope".into()));
        let err = file.config(256).unwrap_err().to_string();
        assert!(err.contains("longrope") && err.contains("yarn"), "{err}");
    }

    /// Read a row at a time from the file, every matrix equals the one made from the whole
    /// tensor, row for row and product for product.
    #[test]
    fn matrices_read_in_chunks_equal_those_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = GgufFile::open(&small_file(&dir)).unwrap();
        let names: Vec<String> = file
            .content
            .tensor_infos
            .iter()
            .filter(|(_, info)| info.shape.dims().len() == 2)
            .map(|(name, _)| name.clone())
            .collect();
        let mut types = std::collections::BTreeSet::new();
        for name in &names {
            let whole = Q8Matrix::from_qtensor(&file.tensor(name).unwrap()).unwrap();
            let chunked = file.q8_matrix_in_chunks(name, 1).unwrap();
            types.insert(format!("{:?}", file.content.tensor_infos[name].ggml_dtype));
            for r in 0..whole.rows {
                assert_eq!(whole.row(r), chunked.row(r), "{name} row {r}");
            }
            let x: Vec<f32> = (0..2 * whole.cols)
                .map(|i| ((i * 37) % 17) as f32 - 8.0)
                .collect();
            assert_eq!(
                whole.matmul_rows(&x, 2),
                chunked.matmul_rows(&x, 2),
                "{name}"
            );
        }
        for t in ["Q4K", "Q6K", "Q8_0"] {
            assert!(types.contains(t), "{t} not in {types:?}");
        }
    }

    /// A file cut short fails with an error naming the tensor, before memory is set aside
    /// for the rows it does not hold.
    #[test]
    fn a_truncated_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = small_file(&dir);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        let mut file = GgufFile::open(&path).unwrap();
        let cfg = file.config(256).unwrap();
        let err = file.weights(&cfg, Requantize::Auto).unwrap_err();
        assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
        assert!(
            err.to_string().contains("past the end of the file"),
            "{err}"
        );
    }
}
