//! Hugging Face checkpoints of the llama family (Mistral), Qwen 2 / 3 and Phi-3:
//! `config.json` + `tokenizer.json` + `*.safetensors`. Also the reverse: a GGUF llama exported to that layout (used by the
//! ground-truth zoo and to test this loader against the GGUF path).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::chat::ChatTemplate;
use super::gguf::{GgufFile, Requantize};
use super::rope::{RopeScaling, Yarn};
use super::tokenizer::Tokenizer;
use super::weights::{Config, Embedding, Family, Layer, Linear, RmsNorm, Weights};
use super::{LoadOptions, LocalModel, ModelError, ModelInfo};

#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default)]
    model_type: Option<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    #[serde(default = "default_ctx")]
    max_position_embeddings: usize,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    bos_token_id: Option<u32>,
    #[serde(default)]
    eos_token_id: Option<serde_json::Value>,
    /// Mistral's attention window (null or absent: full attention).
    #[serde(default)]
    sliding_window: Option<usize>,
    /// Qwen 2 writes the window even where `use_sliding_window` is false.
    #[serde(default)]
    use_sliding_window: Option<bool>,
    #[serde(default)]
    rope_scaling: Option<HfRopeScaling>,
}

/// transformers' `rope_scaling` (`type` in older configs, `rope_type` in newer ones).
#[derive(Debug, Deserialize)]
struct HfRopeScaling {
    #[serde(default, alias = "type")]
    rope_type: Option<String>,
    #[serde(default)]
    factor: Option<f32>,
    #[serde(default)]
    original_max_position_embeddings: Option<usize>,
    #[serde(default)]
    beta_fast: Option<f32>,
    #[serde(default)]
    beta_slow: Option<f32>,
    #[serde(default)]
    low_freq_factor: Option<f32>,
    #[serde(default)]
    high_freq_factor: Option<f32>,
}

/// The config's RoPE scaling: linear and YaRN as scalings, Llama 3's as per-frequency
/// factors (what llama.cpp's converter writes into `rope_freqs`).
fn rope_scaling(
    hf: &HfConfig,
    head_dim: usize,
) -> Result<(RopeScaling, Option<Vec<f32>>), ModelError> {
    let Some(s) = &hf.rope_scaling else {
        return Ok((RopeScaling::None, None));
    };
    let kind = s.rope_type.as_deref().unwrap_or("default");
    let factor = s.factor.unwrap_or(1.0);
    let original = s
        .original_max_position_embeddings
        .unwrap_or(hf.max_position_embeddings);
    match kind {
        "default" => Ok((RopeScaling::None, None)),
        "linear" => Ok((RopeScaling::Linear { factor }, None)),
        "yarn" => {
            let mut yarn = Yarn::new(factor, original);
            yarn.beta_fast = s.beta_fast.unwrap_or(yarn.beta_fast);
            yarn.beta_slow = s.beta_slow.unwrap_or(yarn.beta_slow);
            Ok((RopeScaling::Yarn(yarn), None))
        }
        "llama3" => {
            let low = s.low_freq_factor.unwrap_or(1.0);
            let high = s.high_freq_factor.unwrap_or(4.0);
            let factors = (0..head_dim / 2)
                .map(|k| {
                    let rate = 1f32 / hf.rope_theta.powf((2 * k) as f32 / head_dim as f32);
                    let wavelen = 2.0 * std::f32::consts::PI / rate;
                    if wavelen < original as f32 / high {
                        1.0
                    } else if wavelen > original as f32 / low {
                        factor
                    } else {
                        let smooth = (original as f32 / wavelen - low) / (high - low);
                        1.0 / ((1.0 - smooth) / factor + smooth)
                    }
                })
                .collect();
            Ok((RopeScaling::None, Some(factors)))
        }
        other => Err(ModelError::Unsupported(format!(
            "config.json rope_scaling `{other}` (supported: default, linear, yarn, llama3)"
        ))),
    }
}

fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f32 {
    10_000.0
}
fn default_ctx() -> usize {
    2048
}

#[derive(Debug, Deserialize, Default)]
struct TokenizerConfig {
    #[serde(default)]
    chat_template: Option<String>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub fn load(dir: &Path, opts: &LoadOptions) -> Result<LocalModel, ModelError> {
    let hf: HfConfig = read_json(&dir.join("config.json"))?;
    let family = match hf.model_type.as_deref() {
        None | Some("llama" | "mistral") => Family::Llama,
        Some("qwen2") => Family::Qwen2,
        Some("qwen3") => Family::Qwen3,
        Some("phi3") => Family::Phi3,
        Some(mt) => {
            return Err(ModelError::Unsupported(format!(
                "safetensors model_type `{mt}` (supported: llama, mistral, qwen2, qwen3, phi3)"
            )))
        }
    };
    let eos = match &hf.eos_token_id {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32),
        Some(serde_json::Value::Array(a)) => a.first().and_then(|v| v.as_u64()).map(|v| v as u32),
        _ => None,
    };
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"), hf.bos_token_id, eos)?;
    let tk_cfg: TokenizerConfig = if dir.join("tokenizer_config.json").exists() {
        read_json(&dir.join("tokenizer_config.json"))?
    } else {
        TokenizerConfig::default()
    };
    let piece = |id: Option<u32>| {
        id.and_then(|i| tokenizer.piece(i))
            .unwrap_or_default()
            .to_string()
    };
    let template = ChatTemplate::new(
        tk_cfg.chat_template,
        hf.model_type.as_deref().unwrap_or("llama"),
        piece(tokenizer.bos),
        piece(tokenizer.eos),
    )?;
    let n_kv = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
    let head_dim = hf
        .head_dim
        .unwrap_or(hf.hidden_size / hf.num_attention_heads);
    let sliding_window = match hf.use_sliding_window {
        Some(false) => None,
        _ => hf.sliding_window.filter(|&w| w > 0),
    };
    let (file_scaling, rope_freq_factors) = rope_scaling(&hf, head_dim)?;
    let config = Config {
        family,
        hidden: hf.hidden_size,
        n_layers: hf.num_hidden_layers,
        n_heads: hf.num_attention_heads,
        n_kv_heads: n_kv,
        head_dim,
        rms_eps: hf.rms_norm_eps,
        rope_base: hf.rope_theta,
        rope_base_local: hf.rope_theta,
        rope_scaling: opts.rope_scaling.map_or(file_scaling, |s| {
            s.with_trained_context(
                hf.rope_scaling
                    .as_ref()
                    .and_then(|r| r.original_max_position_embeddings)
                    .unwrap_or(hf.max_position_embeddings),
            )
        }),
        rope_interleaved: false,
        sliding_window,
        // Every layer local when there is a window (a pattern longer than the stack).
        sliding_pattern: usize::MAX,
        attn_scale_base: head_dim as f64,
        attn_softcap: None,
        final_softcap: None,
        context_length: hf.max_position_embeddings.min(opts.max_context),
        trained_context: hf.max_position_embeddings,
        vocab_size: hf.vocab_size,
        kv_cache: opts.kv_cache,
    };
    if !opts.kv_cache.fits(head_dim) {
        return Err(ModelError::Unsupported(format!(
            "a {} KV cache needs heads of whole 32-value blocks; this model's have {} values",
            opts.kv_cache.name(),
            head_dim
        )));
    }
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ModelError::Io {
            path: dir.to_path_buf(),
            source: e,
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(ModelError::Format {
            path: dir.to_path_buf(),
            message: "no *.safetensors files".into(),
        });
    }
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        let loaded = candle_core::safetensors::load(f, &Device::Cpu)?;
        tensors.extend(loaded);
    }
    let mut take = |name: &str| -> Result<Tensor, ModelError> {
        tensors
            .remove(name)
            .map(|t| t.to_dtype(DType::F32).map_err(ModelError::from))
            .transpose()?
            .ok_or_else(|| ModelError::MissingTensor {
                name: name.into(),
                message: "not in the safetensors files".into(),
            })
    };
    let norm = |t: Tensor| RmsNorm {
        weight: t,
        eps: hf.rms_norm_eps,
    };
    let embed = take("model.embed_tokens.weight")?;
    let dense = |t: Tensor| Linear::Candle(QMatMul::Tensor(t));
    let mut layers = Vec::with_capacity(config.n_layers);
    for i in 0..config.n_layers {
        let p = format!("model.layers.{i}");
        let mut opt = |name: String| {
            take(&name).map(Some).or_else(|e| match e {
                ModelError::MissingTensor { .. } => Ok(None),
                other => Err(other),
            })
        };
        let q_bias = opt(format!("{p}.self_attn.q_proj.bias"))?;
        let k_bias = opt(format!("{p}.self_attn.k_proj.bias"))?;
        let v_bias = opt(format!("{p}.self_attn.v_proj.bias"))?;
        let q_norm = opt(format!("{p}.self_attn.q_norm.weight"))?.map(norm);
        let k_norm = opt(format!("{p}.self_attn.k_norm.weight"))?.map(norm);
        let (wq, wk, wv, w_gate, w_up) = if family == Family::Phi3 {
            // Phi-3 fuses Q, K, V in one matrix and gate with up in another.
            let qkv = take(&format!("{p}.self_attn.qkv_proj.weight"))?;
            let (q_rows, kv_rows) = (config.n_heads * head_dim, config.n_kv_heads * head_dim);
            let gate_up = take(&format!("{p}.mlp.gate_up_proj.weight"))?;
            let ff = gate_up.dim(0)? / 2;
            (
                qkv.narrow(0, 0, q_rows)?.contiguous()?,
                qkv.narrow(0, q_rows, kv_rows)?.contiguous()?,
                qkv.narrow(0, q_rows + kv_rows, kv_rows)?.contiguous()?,
                gate_up.narrow(0, 0, ff)?.contiguous()?,
                gate_up.narrow(0, ff, ff)?.contiguous()?,
            )
        } else {
            (
                take(&format!("{p}.self_attn.q_proj.weight"))?,
                take(&format!("{p}.self_attn.k_proj.weight"))?,
                take(&format!("{p}.self_attn.v_proj.weight"))?,
                take(&format!("{p}.mlp.gate_proj.weight"))?,
                take(&format!("{p}.mlp.up_proj.weight"))?,
            )
        };
        layers.push(Layer {
            attn_norm: norm(take(&format!("{p}.input_layernorm.weight"))?),
            wq: dense(wq),
            wk: dense(wk),
            wv: dense(wv),
            wo: dense(take(&format!("{p}.self_attn.o_proj.weight"))?),
            q_bias,
            k_bias,
            v_bias,
            q_norm,
            k_norm,
            post_attn_norm: None,
            ffn_norm: norm(take(&format!("{p}.post_attention_layernorm.weight"))?),
            w_gate: dense(w_gate),
            w_up: dense(w_up),
            w_down: dense(take(&format!("{p}.mlp.down_proj.weight"))?),
            post_ffn_norm: None,
        });
    }
    let lm_head = if hf.tie_word_embeddings {
        Linear::Candle(QMatMul::Tensor(embed.clone()))
    } else {
        Linear::Candle(QMatMul::Tensor(take("lm_head.weight")?))
    };
    let weights = Weights {
        embedding: Embedding::Dense(embed),
        layers,
        final_norm: norm(take("model.norm.weight")?),
        lm_head,
        rope_freq_factors,
    };
    let info = ModelInfo {
        name: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
        source: dir.display().to_string(),
        format: "safetensors".into(),
        architecture: hf.model_type.clone().unwrap_or_else(|| "llama".into()),
        context_length: config.context_length,
        vocab_size: config.vocab_size,
        tokenizer: tokenizer.kind.clone(),
        chat_template: template.describe(),
        requantize: Requantize::Off,
        sha256: None,
    };
    Ok(LocalModel::assemble(
        info, tokenizer, template, config, weights,
    )?)
}

/// A scaling as transformers' config writes it (null for none).
fn hf_rope_scaling(scaling: RopeScaling) -> serde_json::Value {
    match scaling {
        RopeScaling::None => serde_json::Value::Null,
        RopeScaling::Linear { factor } => {
            serde_json::json!({ "rope_type": "linear", "factor": factor })
        }
        RopeScaling::Yarn(y) => serde_json::json!({
            "rope_type": "yarn",
            "factor": y.factor,
            "original_max_position_embeddings": y.original_context,
            "beta_fast": y.beta_fast,
            "beta_slow": y.beta_slow,
        }),
    }
}

/// Writes a GGUF llama model as a Hugging Face checkpoint (f32 or f16 safetensors).
pub fn export_gguf_llama(gguf: &Path, out: &Path, dtype: DType) -> Result<(), ModelError> {
    let mut g = GgufFile::open(gguf)?;
    let cfg = g.config(usize::MAX)?;
    if cfg.family != Family::Llama {
        return Err(ModelError::Unsupported(
            "export to safetensors supports the llama architecture".into(),
        ));
    }
    let tokenizer = Tokenizer::from_gguf(&g)?;
    let hf_tok = tokenizer.hf().ok_or_else(|| {
        ModelError::Unsupported("export needs a gpt2-type (BPE) vocabulary".into())
    })?;
    std::fs::create_dir_all(out).map_err(|e| ModelError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let io = |e: std::io::Error| ModelError::Io {
        path: out.to_path_buf(),
        source: e,
    };
    hf_tok
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let names: Vec<String> = g.content.tensor_infos.keys().cloned().collect();
    let tied = !names.iter().any(|n| n == "output.weight");
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for name in &names {
        let t = g.raw_dequantized(name)?;
        let (hf_name, t) = hf_tensor(name, t, &cfg)?;
        tensors.insert(hf_name, t.to_dtype(dtype)?);
    }
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden,
        "intermediate_size": tensors
            .get("model.layers.0.mlp.up_proj.weight")
            .map(|t| t.dims()[0])
            .unwrap_or(0),
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_base,
        "rope_scaling": hf_rope_scaling(cfg.rope_scaling),
        "max_position_embeddings": cfg.context_length,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": tied,
        "bos_token_id": tokenizer.bos,
        "eos_token_id": tokenizer.eos,
        "torch_dtype": format!("{dtype:?}").to_lowercase(),
    });
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )
    .map_err(io)?;
    let tk_cfg = serde_json::json!({
        "chat_template": g.string("tokenizer.chat_template"),
        "bos_token": tokenizer.bos.and_then(|i| tokenizer.piece(i)),
        "eos_token": tokenizer.eos.and_then(|i| tokenizer.piece(i)),
    });
    std::fs::write(
        out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tk_cfg).unwrap_or_default(),
    )
    .map_err(io)?;
    Ok(())
}

/// GGUF name and layout -> Hugging Face name and layout. llama.cpp permutes Q and K rows
/// for interleaved RoPE; HF checkpoints keep the two halves apart, so undo it.
fn hf_tensor(name: &str, t: Tensor, cfg: &Config) -> Result<(String, Tensor), ModelError> {
    let unpermute = |t: Tensor, heads: usize| -> Result<Tensor, ModelError> {
        let (out, inp) = t.dims2()?;
        let hd = out / heads;
        Ok(t.reshape((heads, hd / 2, 2, inp))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((out, inp))?)
    };
    let mapped = match name {
        "token_embd.weight" => ("model.embed_tokens.weight".to_string(), t),
        "output_norm.weight" => ("model.norm.weight".to_string(), t),
        "output.weight" => ("lm_head.weight".to_string(), t),
        _ => {
            let rest = name
                .strip_prefix("blk.")
                .ok_or_else(|| ModelError::Unsupported(format!("unexpected tensor {name}")))?;
            let (layer, part) = rest
                .split_once('.')
                .ok_or_else(|| ModelError::Unsupported(format!("unexpected tensor {name}")))?;
            let p = format!("model.layers.{layer}");
            match part {
                "attn_norm.weight" => (format!("{p}.input_layernorm.weight"), t),
                "ffn_norm.weight" => (format!("{p}.post_attention_layernorm.weight"), t),
                "attn_q.weight" => (
                    format!("{p}.self_attn.q_proj.weight"),
                    unpermute(t, cfg.n_heads)?,
                ),
                "attn_k.weight" => (
                    format!("{p}.self_attn.k_proj.weight"),
                    unpermute(t, cfg.n_kv_heads)?,
                ),
                "attn_v.weight" => (format!("{p}.self_attn.v_proj.weight"), t),
                "attn_output.weight" => (format!("{p}.self_attn.o_proj.weight"), t),
                "ffn_gate.weight" => (format!("{p}.mlp.gate_proj.weight"), t),
                "ffn_up.weight" => (format!("{p}.mlp.up_proj.weight"), t),
                "ffn_down.weight" => (format!("{p}.mlp.down_proj.weight"), t),
                other => {
                    return Err(ModelError::Unsupported(format!(
                        "unexpected tensor part {other}"
                    )))
                }
            }
        }
    };
    Ok(mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rope_scaling: serde_json::Value) -> HfConfig {
        serde_json::from_value(serde_json::json!({
            "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 1,
            "vocab_size": 10, "rope_theta": 500000.0, "max_position_embeddings": 131072,
            "rope_scaling": rope_scaling,
        }))
        .unwrap()
    }

    /// Llama 3.1's scaling as per-frequency factors: fast frequencies kept, slow ones
    /// divided by the factor, a smooth blend between (transformers'
    /// `_compute_llama3_parameters`); YaRN and linear as scalings; others refused.
    #[test]
    fn rope_scaling_is_read_from_the_config() {
        let llama3 = config(serde_json::json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192,
        }));
        let (scaling, factors) = rope_scaling(&llama3, 128).unwrap();
        assert_eq!(scaling, RopeScaling::None);
        let factors = factors.unwrap();
        assert_eq!(factors.len(), 64);
        assert_eq!(factors[0], 1.0);
        assert_eq!(factors[63], 8.0);
        assert!(factors.windows(2).all(|w| w[0] <= w[1]), "{factors:?}");
        assert!(factors.iter().any(|f| *f > 1.0 && *f < 8.0));
        let yarn = config(serde_json::json!({
            "type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768,
        }));
        assert_eq!(
            rope_scaling(&yarn, 64).unwrap(),
            (RopeScaling::Yarn(Yarn::new(4.0, 32768)), None)
        );
        let linear = config(serde_json::json!({ "type": "linear", "factor": 2.0 }));
        assert_eq!(
            rope_scaling(&linear, 64).unwrap(),
            (RopeScaling::Linear { factor: 2.0 }, None)
        );
        let err = rope_scaling(
            &config(serde_json::json!({ "type": "dynamic", "factor": 2.0 })),
            64,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("dynamic"), "{err}");
        assert_eq!(
            rope_scaling(&config(serde_json::Value::Null), 64).unwrap(),
            (RopeScaling::None, None)
        );
    }
}
