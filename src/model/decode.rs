//! The forward pass in plain Rust over slices, for models whose matrices are all on our
//! Q8/Q4_1 kernel (the default); candle's path (`transformer.rs`) serves the rest.
//!
//! Why: a decode step of a small model is a few hundred tiny operations, and through
//! candle each one allocates a tensor and goes through dispatch; profiles showed that
//! overhead costing more than the matrix products themselves. And candle's batched
//! attention rounds differently with the batch's shape, which made greedy answers depend
//! on which prompts had run before (through the shared-prefix cache).

use super::parallel::par_chunks_mut;
use super::qlinear::Q8Matrix;
use super::weights::{Config, Embedding, Layer, Linear, RmsNorm, Weights};

/// Norm weights and matrices pulled out of the candle structures once.
pub struct FastWeights {
    embedding: std::sync::Arc<Q8Matrix>,
    layers: Vec<FastLayer>,
    final_norm: Vec<f32>,
    lm_head: std::sync::Arc<Q8Matrix>,
    eps: f32,
}

struct FastLayer {
    attn_norm: Vec<f32>,
    wq: std::sync::Arc<Q8Matrix>,
    wk: std::sync::Arc<Q8Matrix>,
    wv: std::sync::Arc<Q8Matrix>,
    wo: std::sync::Arc<Q8Matrix>,
    q_bias: Option<Vec<f32>>,
    k_bias: Option<Vec<f32>>,
    v_bias: Option<Vec<f32>>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    w_gate: std::sync::Arc<Q8Matrix>,
    w_up: std::sync::Arc<Q8Matrix>,
    w_down: std::sync::Arc<Q8Matrix>,
    post_ffn_norm: Option<Vec<f32>>,
}

fn q8(l: &Linear) -> Option<std::sync::Arc<Q8Matrix>> {
    match l {
        Linear::Q8(m) => Some(m.clone()),
        Linear::Candle(_) => None,
    }
}

fn vec_of(n: &RmsNorm) -> Option<Vec<f32>> {
    flat(&n.weight)
}

fn flat(t: &candle_core::Tensor) -> Option<Vec<f32>> {
    t.flatten_all().ok()?.to_vec1::<f32>().ok()
}

/// Adds a per-output bias to each of the rows of `x`.
fn add_bias(x: &mut [f32], bias: &Option<Vec<f32>>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            row.iter_mut().zip(b).for_each(|(v, b)| *v += b);
        }
    }
}

impl FastWeights {
    /// `None` when some matrix is not on our kernel (exact weights, safetensors).
    pub fn new(w: &Weights, cfg: &Config) -> Option<Self> {
        let embedding = match &w.embedding {
            Embedding::Q8(m) => m.clone(),
            _ => return None,
        };
        let opt = |n: &Option<RmsNorm>| -> Option<Option<Vec<f32>>> {
            match n {
                Some(n) => vec_of(n).map(Some),
                None => Some(None),
            }
        };
        let bias = |b: &Option<candle_core::Tensor>| -> Option<Option<Vec<f32>>> {
            match b {
                Some(b) => flat(b).map(Some),
                None => Some(None),
            }
        };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let l: &Layer = l;
            layers.push(FastLayer {
                attn_norm: vec_of(&l.attn_norm)?,
                wq: q8(&l.wq)?,
                wk: q8(&l.wk)?,
                wv: q8(&l.wv)?,
                wo: q8(&l.wo)?,
                q_bias: bias(&l.q_bias)?,
                k_bias: bias(&l.k_bias)?,
                v_bias: bias(&l.v_bias)?,
                q_norm: opt(&l.q_norm)?,
                k_norm: opt(&l.k_norm)?,
                post_attn_norm: opt(&l.post_attn_norm)?,
                ffn_norm: vec_of(&l.ffn_norm)?,
                w_gate: q8(&l.w_gate)?,
                w_up: q8(&l.w_up)?,
                w_down: q8(&l.w_down)?,
                post_ffn_norm: opt(&l.post_ffn_norm)?,
            });
        }
        Some(Self {
            embedding,
            layers,
            final_norm: vec_of(&w.final_norm)?,
            lm_head: q8(&w.lm_head)?,
            eps: cfg.rms_eps as f32,
        })
    }
}

/// RoPE tables as plain rows: `cos[pos * half + i]`.
pub struct RopeTable {
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
    pub half: usize,
}

/// Keys and values of one layer, laid out `[position][kv_head][head_dim]`.
#[derive(Default, Clone)]
pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

/// Appends positions to a layer's keys or values, growing the buffer by whole runs of
/// `KV_STEP` positions instead of doubling it (a doubled cache holds up to twice the
/// memory the positions need).
fn append_positions(buf: &mut Vec<f32>, rows: &[f32], width: usize) {
    const KV_STEP: usize = 256;
    let needed = buf.len() + rows.len();
    if buf.capacity() < needed {
        let step = KV_STEP * width.max(1);
        buf.reserve_exact(needed.div_ceil(step) * step - buf.len());
    }
    buf.extend_from_slice(rows);
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

fn rms_norm_heads(x: &mut [f32], w: &[f32], eps: f32, hd: usize) {
    for head in x.chunks_exact_mut(hd) {
        let n = rms_norm(head, w, eps);
        head.copy_from_slice(&n);
    }
}

fn rope(x: &mut [f32], hd: usize, pos: usize, t: &RopeTable, interleaved: bool) {
    let cos = &t.cos[pos * t.half..(pos + 1) * t.half];
    let sin = &t.sin[pos * t.half..(pos + 1) * t.half];
    for head in x.chunks_exact_mut(hd) {
        for i in 0..hd / 2 {
            let (a, b) = if interleaved {
                (2 * i, 2 * i + 1)
            } else {
                (i, i + hd / 2)
            };
            let (x0, x1) = (head[a], head[b]);
            head[a] = x0 * cos[i] - x1 * sin[i];
            head[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

/// Dot product in eight lanes (vectorizes; the order is fixed, so results are too).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn gelu_tanh(x: f32) -> f32 {
    // 0.5 x (1 + tanh u) = x / (1 + e^(-2u)): the same function with one `expf` instead of
    // libm's `tanhf` (which calls `expm1f`), a twentieth of Gemma's prefill time.
    let u = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
    x / (1.0 + (-2.0 * u).exp())
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Runs `tokens` at positions `pos..` (the cache holds `pos` positions) and returns the
/// logits after each of the last `outputs` of them (row-major, `outputs` × vocabulary),
/// appending every position's keys and values to `kv`.
///
/// Each position is computed exactly as it would be alone: products are per row, and
/// attention loops over exactly the positions in reach. So a prompt gives the same numbers
/// whether it was prefilled in one batch, token by token, or partly from a cached prefix;
/// a fingerprint taken in-process equals one taken through the HTTP server, whatever
/// either had run before.
pub fn run(
    fw: &FastWeights,
    cfg: &Config,
    tokens: &[u32],
    pos: usize,
    kv: &mut [LayerKv],
    ropes: (&RopeTable, Option<&RopeTable>),
    outputs: usize,
) -> Vec<f32> {
    super::parallel::install(|| run_on_pool(fw, cfg, tokens, pos, kv, ropes, outputs))
}

fn run_on_pool(
    fw: &FastWeights,
    cfg: &Config,
    tokens: &[u32],
    pos: usize,
    kv: &mut [LayerKv],
    (rope_global, rope_local): (&RopeTable, Option<&RopeTable>),
    outputs: usize,
) -> Vec<f32> {
    let m = tokens.len();
    let outputs = outputs.clamp(1, m);
    let hidden = cfg.hidden;
    let hd = cfg.head_dim;
    let (nh, nkv) = (cfg.n_heads, cfg.n_kv_heads);
    let group = nh / nkv;
    let scale = 1.0 / (cfg.attn_scale_base as f32).sqrt();
    let gemma = cfg.family.is_gemma();
    let mut x: Vec<f32> = Vec::with_capacity(m * hidden);
    for &t in tokens {
        let mut row = fw.embedding.row(t as usize);
        if cfg.family.is_gemma() {
            let s = (cfg.hidden as f32).sqrt();
            row.iter_mut().for_each(|v| *v *= s);
        }
        x.extend(row);
    }
    let norm_rows = |x: &[f32], w: &[f32], width: usize| -> Vec<f32> {
        x.chunks_exact(width)
            .flat_map(|r| rms_norm(r, w, fw.eps))
            .collect()
    };
    for (li, l) in fw.layers.iter().enumerate() {
        let local =
            cfg.sliding_window.is_some() && !(li + 1).is_multiple_of(cfg.sliding_pattern.max(1));
        let table = match (rope_local, local) {
            (Some(t), true) => t,
            _ => rope_global,
        };
        let h = norm_rows(&x, &l.attn_norm, hidden);
        let [mut q, mut k, mut v] = Q8Matrix::matmul_group([&l.wq, &l.wk, &l.wv], &h, m);
        add_bias(&mut q, &l.q_bias);
        add_bias(&mut k, &l.k_bias);
        add_bias(&mut v, &l.v_bias);
        for i in 0..m {
            let qi = &mut q[i * nh * hd..(i + 1) * nh * hd];
            let ki = &mut k[i * nkv * hd..(i + 1) * nkv * hd];
            if let Some(n) = &l.q_norm {
                rms_norm_heads(qi, n, fw.eps, hd);
            }
            if let Some(n) = &l.k_norm {
                rms_norm_heads(ki, n, fw.eps, hd);
            }
            rope(qi, hd, pos + i, table, cfg.rope_interleaved);
            rope(ki, hd, pos + i, table, cfg.rope_interleaved);
        }
        cfg.kv_cache.before_attention(&mut q, &mut k, &mut v, hd);
        let cache = &mut kv[li];
        append_positions(&mut cache.k, &k, nkv * hd);
        append_positions(&mut cache.v, &v, nkv * hd);
        let mut att = vec![0f32; m * nh * hd];
        let cache = &*cache;
        let span = |i: usize| {
            let total = pos + i + 1;
            let start = match (local, cfg.sliding_window) {
                (true, Some(w)) => total.saturating_sub(w),
                _ => 0,
            };
            start..total
        };
        let work = (0..m).map(|i| span(i).len()).sum::<usize>() * nh * hd * 2;
        // One (position, head) per chunk: prefill spreads them over both cores.
        par_chunks_mut(&mut att, hd, work, |idx, out| {
            let (i, head) = (idx / nh, idx % nh);
            let g = head / group;
            let qh = &q[idx * hd..(idx + 1) * hd];
            let positions = span(i);
            let mut scores: Vec<f32> = positions
                .clone()
                .map(|t| dot(qh, &cache.k[(t * nkv + g) * hd..(t * nkv + g + 1) * hd]) * scale)
                .map(|s| softcap(s, cfg.attn_softcap))
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            for (j, t) in positions.enumerate() {
                let w = scores[j] / sum;
                let vt = &cache.v[(t * nkv + g) * hd..(t * nkv + g + 1) * hd];
                for (o, vv) in out.iter_mut().zip(vt) {
                    *o += w * vv;
                }
            }
        });
        cfg.kv_cache.after_attention(&mut att, hd);
        let mut o = l.wo.matmul_rows(&att, m);
        if let Some(n) = &l.post_attn_norm {
            o = norm_rows(&o, n, hidden);
        }
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        let h = norm_rows(&x, &l.ffn_norm, hidden);
        let [gate, up] = Q8Matrix::matmul_group([&l.w_gate, &l.w_up], &h, m);
        let act: Vec<f32> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| {
                let a = if gemma { gelu_tanh(*g) } else { silu(*g) };
                a * u
            })
            .collect();
        let mut d = l.w_down.matmul_rows(&act, m);
        if let Some(n) = &l.post_ffn_norm {
            d = norm_rows(&d, n, hidden);
        }
        x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
    }
    let last = norm_rows(&x[(m - outputs) * hidden..], &fw.final_norm, hidden);
    let mut logits = fw.lm_head.matmul_rows(&last, outputs);
    if cfg.final_softcap.is_some() {
        logits
            .iter_mut()
            .for_each(|v| *v = softcap(*v, cfg.final_softcap));
    }
    logits
}

fn softcap(x: f32, cap: Option<f32>) -> f32 {
    match cap {
        Some(c) => c * (x / c).tanh(),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sigmoid form is Gemma's tanh-approximated GELU to f32 precision, tails included.
    #[test]
    fn gelu_matches_the_tanh_form() {
        for i in -4000..=4000 {
            let x = i as f32 / 200.0;
            let u = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let want = 0.5 * x * (1.0 + u.tanh());
            let got = gelu_tanh(x);
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "x {x}: {got} vs {want}"
            );
        }
        assert_eq!(gelu_tanh(-100.0), 0.0);
        assert!(!gelu_tanh(-1e30).is_nan());
    }
}
