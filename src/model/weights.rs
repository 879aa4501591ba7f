//! What a model is, apart from how it runs: its family and configuration, and its weights
//! as read from any file format (`gguf.rs`, `safetensors.rs`). The two forward passes
//! (`transformer.rs` on candle tensors, `decode.rs` on slices) both read these.

use std::sync::Arc;

use candle_core::quantized::QMatMul;
use candle_core::{Module, Tensor};

use super::qlinear::Q8Matrix;

/// Which architecture-specific choices apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Llama,
    /// Qwen 2 / 2.5 and the DeepSeek-R1 distills built on it: biases on Q, K and V.
    Qwen2,
    /// Qwen 3: RMS norm on each query and key head (`q_norm`, `k_norm`).
    Qwen3,
    /// Phi-3: Q, K, V and gate/up fused in the file, split at load.
    Phi3,
    /// Gemma 2: sandwich norms, local and global layers in turn, logits soft-capped.
    Gemma2,
    Gemma3,
}

impl Family {
    /// The GGUF `general.architecture` names we run.
    pub const SUPPORTED: &'static str = "llama, qwen2, qwen3, phi3, gemma2, gemma3";

    pub fn from_architecture(arch: &str) -> Option<Self> {
        Some(match arch {
            "llama" => Self::Llama,
            "qwen2" => Self::Qwen2,
            "qwen3" => Self::Qwen3,
            "phi3" => Self::Phi3,
            "gemma2" => Self::Gemma2,
            "gemma3" => Self::Gemma3,
            _ => return None,
        })
    }

    /// The name its GGUF files carry in `general.architecture`.
    pub fn architecture(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
            Self::Phi3 => "phi3",
            Self::Gemma2 => "gemma2",
            Self::Gemma3 => "gemma3",
        }
    }

    /// Gemma scales the embedding by sqrt(hidden) and gates with GELU (tanh); the others
    /// use the embedding as stored and SiLU.
    pub fn is_gemma(self) -> bool {
        matches!(self, Self::Gemma2 | Self::Gemma3)
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub family: Family,
    pub hidden: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub rope_base: f32,
    /// Gemma 3's local (sliding-window) layers use another RoPE base.
    pub rope_base_local: f32,
    /// How positions are stretched in the global layers (the file's or the server's).
    pub rope_scaling: super::rope::RopeScaling,
    /// GGUF llama weights are permuted for interleaved RoPE; HF checkpoints use halves.
    pub rope_interleaved: bool,
    pub sliding_window: Option<usize>,
    /// Every `sliding_pattern`-th layer is global (Gemma 3: 6).
    pub sliding_pattern: usize,
    /// Attention is scaled by 1/sqrt(this).
    pub attn_scale_base: f64,
    /// Gemma 2 bends attention scores and output logits into (-cap, cap) with
    /// cap·tanh(x/cap); `None` leaves them as they are.
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub context_length: usize,
    /// The context the model was trained for (`context_length` is what we serve).
    pub trained_context: usize,
    pub vocab_size: usize,
    /// How keys and values are stored (a serving setting, not the file's).
    pub kv_cache: super::kv_cache_type::KvCacheType,
}

impl Config {
    pub(super) fn is_local_layer(&self, layer: usize) -> bool {
        self.sliding_window.is_some() && !(layer + 1).is_multiple_of(self.sliding_pattern.max(1))
    }
}

/// A weight matrix: candle's own (dense, or quantized as stored) or our Q8 kernel.
#[derive(Debug, Clone)]
pub enum Linear {
    Candle(QMatMul),
    Q8(Arc<Q8Matrix>),
}

impl Linear {
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Candle(m) => m.forward(x),
            Self::Q8(m) => m.forward(x),
        }
    }
}

/// Token embedding table, kept quantized when it came quantized: Gemma's 262144 x 640
/// table is 670 MiB in f32 and only a few rows are looked up per step.
#[derive(Debug, Clone)]
pub enum Embedding {
    Quantized(Arc<candle_core::quantized::QTensor>),
    Q8(Arc<Q8Matrix>),
    Dense(Tensor),
}

impl Embedding {
    pub(super) fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Quantized(q) => q.embedding(ids),
            Self::Q8(m) => {
                let ids_v = ids.flatten_all()?.to_vec1::<u32>()?;
                let mut data = Vec::with_capacity(ids_v.len() * m.cols);
                for id in &ids_v {
                    if *id as usize >= m.rows {
                        candle_core::bail!("token id {id} outside the vocabulary ({})", m.rows);
                    }
                    data.extend(m.row(*id as usize));
                }
                let mut dims = ids.dims().to_vec();
                dims.push(m.cols);
                Tensor::from_vec(data, dims, ids.device())
            }
            Self::Dense(t) => {
                let (_, hidden) = t.dims2()?;
                let flat = ids.flatten_all()?;
                let mut dims = ids.dims().to_vec();
                dims.push(hidden);
                t.index_select(&flat, 0)?.reshape(dims)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
}

impl RmsNorm {
    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps as f32)
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: RmsNorm,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    /// Qwen 2's biases on the query, key and value projections (f32, one per output).
    pub q_bias: Option<Tensor>,
    pub k_bias: Option<Tensor>,
    pub v_bias: Option<Tensor>,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub post_attn_norm: Option<RmsNorm>,
    pub ffn_norm: RmsNorm,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
    pub post_ffn_norm: Option<RmsNorm>,
}

/// All weights of a model, independent of the file they came from.
#[derive(Debug, Clone)]
pub struct Weights {
    pub embedding: Embedding,
    pub layers: Vec<Layer>,
    pub final_norm: RmsNorm,
    pub lm_head: Linear,
    /// Llama 3.1's long-context RoPE: each frequency divided by its factor (the file's
    /// `rope_freqs.weight`, one per pair of head dimensions).
    pub rope_freq_factors: Option<Vec<f32>>,
}
