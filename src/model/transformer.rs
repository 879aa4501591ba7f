//! One decoder-only transformer that covers the llama family (Mistral's sliding window
//! included), Qwen 2 and 3, Phi-3, Gemma 2 and Gemma 3.
//!
//! Written here rather than taken from candle-transformers because we need things the
//! upstream models do not give: a KV cache that can be truncated to a shared prefix (prompt
//! reuse across probes), weights re-quantized at load to types with SIMD kernels, and a
//! Gemma 3 that is right. Upstream `quantized_gemma3` (0.11) differs from the reference
//! implementation in four ways that this module fixes:
//! - its MLP uses SiLU; Gemma uses GELU with the tanh approximation;
//! - it builds RoPE tables for 131072 positions in every layer (GiBs, seconds of load);
//!   we build one table per distinct base, sized to the context we serve;
//! - it applies no sliding-window mask during single-token decode; we mask every step;
//! - its chunked prefill at `index_pos > 0` mixes dtypes; our mask is built in f32 for any
//!   offset, which is also what prefix reuse relies on.

use candle_core::{DType, Device, Tensor};

use super::decode::{self, FastWeights, LayerKv, RopeTable};
use super::kv_cache_type::KvCacheType;
use super::rope::RopeScaling;

/// Prompt positions per pass through the layers in prefill (llama.cpp's micro-batch is
/// 512; 64 keeps a pass's activations small and the weights' reuse across positions).
const PREFILL_ROWS: usize = 64;
pub use super::weights::{Config, Family, Layer, Linear, Weights};

struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(
        head_dim: usize,
        base: f32,
        factors: Option<&[f32]>,
        scaling: RopeScaling,
        positions: usize,
        dev: &Device,
    ) -> candle_core::Result<Self> {
        let (rates, mscale) = super::rope::rates(head_dim, base, factors, scaling);
        let inv = Tensor::new(rates.as_slice(), dev)?.reshape((1, head_dim / 2))?;
        let pos = Tensor::arange(0u32, positions as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((positions, 1))?;
        let freqs = pos.matmul(&inv)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        if mscale == 1.0 {
            return Ok(Self { cos, sin });
        }
        Ok(Self {
            cos: (cos * f64::from(mscale))?,
            sin: (sin * f64::from(mscale))?,
        })
    }
}

/// Per-layer key/value cache plus the tokens it holds, so a new prompt that shares a prefix
/// with the previous one only runs its new tokens. Plain vectors laid out
/// `[position][kv_head][head_dim]`: appending a position copies nothing else.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    tokens: Vec<u32>,
    /// Floats per position in each layer (kv_heads * head_dim).
    width: usize,
}

impl KvCache {
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn clear(&mut self) {
        self.layers.clear();
        self.tokens.clear();
    }

    /// Keep only the first `len` positions.
    pub fn truncate(&mut self, len: usize) -> candle_core::Result<()> {
        if len >= self.tokens.len() {
            return Ok(());
        }
        for l in self.layers.iter_mut() {
            l.k.truncate(len * self.width);
            l.v.truncate(len * self.width);
        }
        self.tokens.truncate(len);
        Ok(())
    }
}

pub struct Transformer {
    pub config: Config,
    /// The scaling the model was loaded with, which [`Transformer::set_rope_scaling`]
    /// returns to.
    loaded_scaling: RopeScaling,
    weights: Weights,
    rope_global: Rope,
    rope_local: Option<Rope>,
    /// The same tables as plain rows, and the weights as slices, for the decode step.
    fast: Option<(FastWeights, RopeTable, Option<RopeTable>)>,
    device: Device,
}

fn table(r: &Rope) -> candle_core::Result<RopeTable> {
    let half = r.cos.dim(1)?;
    Ok(RopeTable {
        cos: r.cos.flatten_all()?.to_vec1::<f32>()?,
        sin: r.sin.flatten_all()?.to_vec1::<f32>()?,
        half,
    })
}

/// The global and (where it differs) local RoPE tables under `scaling`.
fn ropes(
    config: &Config,
    weights: &Weights,
    scaling: RopeScaling,
    device: &Device,
) -> candle_core::Result<(Rope, Option<Rope>)> {
    let global = Rope::new(
        config.head_dim,
        config.rope_base,
        weights.rope_freq_factors.as_deref(),
        scaling,
        config.context_length,
        device,
    )?;
    // Gemma 3's local layers keep plain RoPE when the global ones are stretched (as
    // llama.cpp and transformers run them; stretching them too puts our Gemma 3 0.39 nats
    // from llama.cpp's).
    let local_differs = (config.rope_base_local - config.rope_base).abs() > f32::EPSILON
        || (config.family == super::weights::Family::Gemma3 && scaling != RopeScaling::None);
    let local = if config.sliding_window.is_some() && local_differs {
        Some(Rope::new(
            config.head_dim,
            config.rope_base_local,
            None,
            RopeScaling::None,
            config.context_length,
            device,
        )?)
    } else {
        None
    };
    Ok((global, local))
}

impl Transformer {
    pub fn new(config: Config, weights: Weights, device: &Device) -> candle_core::Result<Self> {
        if let Some(f) = &weights.rope_freq_factors {
            if f.len() != config.head_dim / 2 {
                candle_core::bail!(
                    "rope_freqs has {} factors for a head of {} dimensions",
                    f.len(),
                    config.head_dim
                );
            }
        }
        let (rope_global, rope_local) = ropes(&config, &weights, config.rope_scaling, device)?;
        let fast = match FastWeights::new(&weights, &config) {
            Some(fw) => Some((
                fw,
                table(&rope_global)?,
                rope_local.as_ref().map(table).transpose()?,
            )),
            None => None,
        };
        Ok(Self {
            loaded_scaling: config.rope_scaling,
            config,
            weights,
            rope_global,
            rope_local,
            fast,
            device: device.clone(),
        })
    }

    /// Runs the model with its context stretched as a server may be told to (`None`: as
    /// loaded). The caller clears any KV cache made under another scaling.
    pub fn set_rope_scaling(&mut self, scaling: Option<RopeScaling>) -> candle_core::Result<()> {
        let scaling = scaling.map_or(self.loaded_scaling, |s| {
            s.with_trained_context(self.config.trained_context)
        });
        if scaling == self.config.rope_scaling {
            return Ok(());
        }
        let (global, local) = ropes(&self.config, &self.weights, scaling, &self.device)?;
        if let Some((_, fast_global, fast_local)) = &mut self.fast {
            *fast_global = table(&global)?;
            *fast_local = local.as_ref().map(table).transpose()?;
        }
        self.rope_global = global;
        self.rope_local = local;
        self.config.rope_scaling = scaling;
        Ok(())
    }

    /// Runs `tokens` after what the cache holds and returns the logits (f32, vocab) after
    /// each of them, one vector per token: what `forward` would give fed one at a time.
    pub fn forward_each(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        if tokens.is_empty() {
            return Ok(Vec::new());
        }
        let Some((fw, global, local)) = &self.fast else {
            // The tensor path is not batch-invariant; one token at a time keeps it exact.
            return tokens
                .iter()
                .map(|t| self.forward(&[*t], cache)?.to_vec1::<f32>())
                .collect();
        };
        self.check_room(tokens.len(), cache)?;
        let vocab = cfg_vocab(&self.weights, &self.config);
        let logits = decode::run(
            fw,
            &self.config,
            tokens,
            cache.tokens.len(),
            &mut cache.layers,
            (global, local.as_ref()),
            tokens.len(),
        );
        cache.tokens.extend_from_slice(tokens);
        Ok(logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect())
    }

    fn check_room(&self, seq: usize, cache: &mut KvCache) -> candle_core::Result<()> {
        let cfg = &self.config;
        let offset = cache.tokens.len();
        if seq == 0 {
            candle_core::bail!("forward called with no tokens");
        }
        if offset + seq > cfg.context_length {
            candle_core::bail!(
                "sequence of {} tokens exceeds the context length {}",
                offset + seq,
                cfg.context_length
            );
        }
        if cache.layers.len() != cfg.n_layers {
            cache.layers = vec![LayerKv::default(); cfg.n_layers];
            cache.width = cfg.n_kv_heads * cfg.head_dim;
        }
        Ok(())
    }

    /// Runs `tokens` after what the cache holds and returns the logits (f32, vocab) at the
    /// last position.
    pub fn forward(&self, tokens: &[u32], cache: &mut KvCache) -> candle_core::Result<Tensor> {
        self.check_room(tokens.len(), cache)?;
        let cfg = &self.config;
        let offset = cache.tokens.len();
        let seq = tokens.len();
        if let Some((fw, global, local)) = &self.fast {
            // A long prompt in passes of `PREFILL_ROWS`: each position is computed as it
            // would be alone, so the numbers are the same, and the activations of a pass
            // (an FFN row is `ff` floats) stay a few MiB instead of growing with the prompt.
            let mut logits = Vec::new();
            for chunk in tokens.chunks(PREFILL_ROWS) {
                logits = decode::run(
                    fw,
                    cfg,
                    chunk,
                    cache.tokens.len(),
                    &mut cache.layers,
                    (global, local.as_ref()),
                    1,
                );
                cache.tokens.extend_from_slice(chunk);
            }
            return Tensor::from_vec(logits, cfg_vocab(&self.weights, cfg), &self.device);
        }
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let mut x = self.weights.embedding.forward(&ids)?;
        if cfg.family.is_gemma() {
            x = (x * (cfg.hidden as f64).sqrt())?;
        }
        let global_mask = self.mask(seq, offset, None)?;
        let local_mask = match cfg.sliding_window {
            Some(w) => self.mask(seq, offset, Some(w))?,
            None => None,
        };
        for (i, layer) in self.weights.layers.iter().enumerate() {
            let local = cfg.is_local_layer(i);
            let mask = if local { &local_mask } else { &global_mask };
            let rope = match (&self.rope_local, local) {
                (Some(r), true) => r,
                _ => &self.rope_global,
            };
            x = self.layer(layer, &x, offset, mask.as_ref(), rope, &mut cache.layers[i])?;
        }
        let x = x.narrow(1, seq - 1, 1)?;
        let x = self.weights.final_norm.forward(&x)?;
        let mut logits = self.weights.lm_head.forward(&x)?;
        if let Some(cap) = cfg.final_softcap {
            logits = ((logits / f64::from(cap))?.tanh()? * f64::from(cap))?;
        }
        cache.tokens.extend_from_slice(tokens);
        logits.flatten_all()?.to_dtype(DType::F32)
    }

    /// Additive causal mask (f32) for `seq` new positions after `offset` cached ones;
    /// `None` when nothing needs masking (a single token with no window in reach).
    fn mask(
        &self,
        seq: usize,
        offset: usize,
        window: Option<usize>,
    ) -> candle_core::Result<Option<Tensor>> {
        let total = offset + seq;
        let window_bites = window.is_some_and(|w| total > w);
        if seq == 1 && !window_bites {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(seq * total);
        for i in 0..seq {
            let qpos = offset + i;
            for kpos in 0..total {
                let future = kpos > qpos;
                let too_far = window.is_some_and(|w| qpos - kpos.min(qpos) >= w);
                data.push(if future || too_far {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
            }
        }
        Ok(Some(Tensor::from_vec(
            data,
            (1, 1, seq, total),
            &self.device,
        )?))
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        offset: usize,
        mask: Option<&Tensor>,
        rope: &Rope,
        cache: &mut LayerKv,
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.config;
        let (b, seq, _) = x.dims3()?;
        let h = l.attn_norm.forward(x)?;
        let with_bias = |t: Tensor, b: &Option<Tensor>| match b {
            Some(b) => t.broadcast_add(b),
            None => Ok(t),
        };
        let q = with_bias(l.wq.forward(&h)?, &l.q_bias)?;
        let k = with_bias(l.wk.forward(&h)?, &l.k_bias)?;
        let v = with_bias(l.wv.forward(&h)?, &l.v_bias)?;
        let q = q.reshape((b, seq, cfg.n_heads, cfg.head_dim))?;
        let k = k.reshape((b, seq, cfg.n_kv_heads, cfg.head_dim))?;
        let v = v.reshape((b, seq, cfg.n_kv_heads, cfg.head_dim))?;
        let q = match &l.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &l.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let q = q.transpose(1, 2)?.contiguous()?;
        let k = k.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let cos = rope.cos.narrow(0, offset, seq)?;
        let sin = rope.sin.narrow(0, offset, seq)?;
        let (mut q, k) = if cfg.rope_interleaved {
            (
                candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
            )
        } else {
            (
                candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
            )
        };
        // Append (seq, kv_heads, head_dim) rows, then view the whole cache as
        // (1, kv_heads, total, head_dim).
        let (k, v) = {
            let rows = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
                t.squeeze(0)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()
            };
            let (mut k, mut v) = (rows(&k)?, rows(&v)?);
            if cfg.kv_cache != KvCacheType::F32 {
                let mut data = q.flatten_all()?.to_vec1::<f32>()?;
                cfg.kv_cache
                    .before_attention(&mut data, &mut k, &mut v, cfg.head_dim);
                q = Tensor::from_vec(data, q.shape(), &self.device)?;
            }
            cache.k.extend(k);
            cache.v.extend(v);
            let total = offset + seq;
            let view = |data: &[f32]| -> candle_core::Result<Tensor> {
                Tensor::from_slice(data, (total, cfg.n_kv_heads, cfg.head_dim), &self.device)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)
            };
            (view(&cache.k)?, view(&cache.v)?)
        };
        let group = cfg.n_heads / cfg.n_kv_heads;
        let k = repeat_kv(&k, group)?;
        let v = repeat_kv(&v, group)?;
        let scale = 1.0 / cfg.attn_scale_base.sqrt();
        let mut att = (q.matmul(&k.t()?)? * scale)?;
        if let Some(cap) = cfg.attn_softcap {
            att = ((att / f64::from(cap))?.tanh()? * f64::from(cap))?;
        }
        if let Some(m) = mask {
            att = att.broadcast_add(m)?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let mut out = att.matmul(&v.contiguous()?)?;
        if cfg.kv_cache != KvCacheType::F32 {
            let mut data = out.flatten_all()?.to_vec1::<f32>()?;
            cfg.kv_cache.after_attention(&mut data, cfg.head_dim);
            out = Tensor::from_vec(data, out.shape(), &self.device)?;
        }
        let out = out
            .transpose(1, 2)?
            .reshape((b, seq, cfg.n_heads * cfg.head_dim))?;
        let mut out = l.wo.forward(&out)?;
        if let Some(n) = &l.post_attn_norm {
            out = n.forward(&out)?;
        }
        let x = (x + out)?;
        let h = l.ffn_norm.forward(&x)?;
        let gate = l.w_gate.forward(&h)?;
        let gate = if cfg.family.is_gemma() {
            gate.gelu()? // tanh approximation, as Gemma specifies
        } else {
            candle_nn::ops::silu(&gate)?
        };
        let up = l.w_up.forward(&h)?;
        let mut ff = l.w_down.forward(&(gate * up)?)?;
        if let Some(n) = &l.post_ffn_norm {
            ff = n.forward(&ff)?;
        }
        x + ff
    }
}

/// Output rows of the head (the vocabulary size as the model computes it).
fn cfg_vocab(w: &Weights, cfg: &Config) -> usize {
    match &w.lm_head {
        Linear::Q8(m) => m.rows,
        Linear::Candle(_) => cfg.vocab_size,
    }
}

fn repeat_kv(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, h, s, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, h, n, s, d))?
        .reshape((b, h * n, s, d))
}

pub fn log_softmax_slice(v: &[f32]) -> Vec<f32> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = v.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    v.iter().map(|&x| (x as f64 - lse) as f32).collect()
}
