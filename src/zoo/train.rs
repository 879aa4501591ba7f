//! Llama blocks in candle's autograd, for the zoo's trained members (students trained from
//! scratch, fine-tunes of the reference). The arithmetic is the runner's for GGUF llama
//! files (RMSNorm, RoPE on adjacent pairs, grouped key/value heads, SiLU-gated FFN), so
//! weights trained here and written to GGUF mean the same when served.

use candle_core::{Device, Tensor, D};
use rand::Rng;

/// A block's tensors by name (`blk.N.{part}.weight` in GGUF), in the order
/// [`Block::from_parts`] takes them.
pub const PARTS: [&str; 9] = [
    "attn_norm",
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_norm",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
];

/// One block's weights, GGUF layout (rows = outputs; Q and K rows in the pair order
/// llama.cpp's files use).
pub struct Block {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub ffn_norm: Tensor,
    pub gate: Tensor,
    pub up: Tensor,
    pub down: Tensor,
}

impl Block {
    /// From tensors in [`PARTS`] order.
    pub fn from_parts(parts: [Tensor; 9]) -> Block {
        let [attn_norm, wq, wk, wv, wo, ffn_norm, gate, up, down] = parts;
        Block {
            attn_norm,
            wq,
            wk,
            wv,
            wo,
            ffn_norm,
            gate,
            up,
            down,
        }
    }
}

/// What every block of one model shares: head layout, RoPE tables and the causal mask for
/// windows of a fixed length.
pub struct Context {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    cos: Tensor,
    sin: Tensor,
    mask: Tensor,
}

impl Context {
    pub fn new(
        window: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        rope_base: f32,
        eps: f64,
    ) -> candle_core::Result<Context> {
        let (cos, sin) = rope_tables(window, head_dim, rope_base)?;
        Ok(Context {
            heads,
            kv_heads,
            head_dim,
            eps,
            cos,
            sin,
            mask: causal_mask(window)?,
        })
    }
}

pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// `x @ w^T` for a (B, T, in) activation and an (out, in) weight.
fn linear(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let (b, t, i) = x.dims3()?;
    let out = w.dim(0)?;
    x.reshape((b * t, i))?.matmul(&w.t()?)?.reshape((b, t, out))
}

/// RoPE on adjacent pairs (2i, 2i+1), the layout llama.cpp's GGUF llama files use and our
/// runner applies to them. `x`: (B, H, T, hd); `cos`/`sin`: (T, hd/2).
fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, hd) = x.dims4()?;
    let pairs = x.reshape((b, h, t, hd / 2, 2))?;
    let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
    let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
    let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    Tensor::stack(&[r0, r1], 4)?.reshape((b, h, t, hd))
}

fn rope_tables(t: usize, hd: usize, base: f32) -> candle_core::Result<(Tensor, Tensor)> {
    let half = hd / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in 0..t {
        for i in 0..half {
            let theta = p as f32 / base.powf((2 * i) as f32 / hd as f32);
            cos.push(theta.cos());
            sin.push(theta.sin());
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, half), &Device::Cpu)?,
        Tensor::from_vec(sin, (t, half), &Device::Cpu)?,
    ))
}

fn causal_mask(t: usize) -> candle_core::Result<Tensor> {
    // Large and finite, not -inf: softmax's gradient stays defined.
    let v: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_vec(v, (t, t), &Device::Cpu)
}

/// One pre-norm block over a (B, T, hidden) activation; T must be the context's window.
pub fn block(h: &Tensor, w: &Block, ctx: &Context) -> candle_core::Result<Tensor> {
    let (b, t, hidden) = h.dims3()?;
    let (nh, nkv, hd) = (ctx.heads, ctx.kv_heads, ctx.head_dim);
    let split = |x: Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2);
    // Query head i reads key/value head i / (nh / nkv), as the runner does.
    let repeat = |x: Tensor| -> candle_core::Result<Tensor> {
        if nkv == nh {
            return Ok(x);
        }
        x.unsqueeze(2)?
            .broadcast_as((b, nkv, nh / nkv, t, hd))?
            .reshape((b, nh, t, hd))
    };
    let n = rms_norm(h, &w.attn_norm, ctx.eps)?;
    let q = rope_interleaved(&split(linear(&n, &w.wq)?, nh)?, &ctx.cos, &ctx.sin)?;
    let k = rope_interleaved(&split(linear(&n, &w.wk)?, nkv)?, &ctx.cos, &ctx.sin)?;
    let k = repeat(k)?;
    let v = repeat(split(linear(&n, &w.wv)?, nkv)?)?.contiguous()?;
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? / (hd as f64).sqrt())?
        .broadcast_add(&ctx.mask)?;
    let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
    let att = att.transpose(1, 2)?.reshape((b, t, nh * hd))?;
    let h = (h + linear(&att, &w.wo)?)?;
    let n = rms_norm(&h, &w.ffn_norm, ctx.eps)?;
    let f = (linear(&n, &w.gate)?.silu()? * linear(&n, &w.up)?)?;
    debug_assert_eq!(f.dim(1)?, t);
    let out = (h + linear(&f, &w.down)?)?;
    debug_assert_eq!(out.dim(2)?, hidden);
    Ok(out)
}

/// Standard normal draws (Box-Muller), so the zoo needs no distribution crate.
pub(crate) fn gaussian(rng: &mut rand::rngs::StdRng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rope_rotates_adjacent_pairs() {
        // One head of size 4 at position 1: pair (0,1) turns by 1 rad, pair (2,3) by 0.01.
        let x = Tensor::new(&[1f32, 0.0, 1.0, 0.0], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 4))
            .unwrap();
        let (cos, sin) = rope_tables(2, 4, 10_000.0).unwrap();
        let cos = cos.narrow(0, 1, 1).unwrap();
        let sin = sin.narrow(0, 1, 1).unwrap();
        let r: Vec<f32> = rope_interleaved(&x, &cos, &sin)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = [1f32.cos(), 1f32.sin(), 0.01f32.cos(), 0.01f32.sin()];
        for (a, b) in r.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{r:?} vs {want:?}");
        }
    }

    #[test]
    fn causal_mask_hides_the_future() {
        let m: Vec<Vec<f32>> = causal_mask(3).unwrap().to_vec2().unwrap();
        assert_eq!(m[0], vec![0.0, -1e9, -1e9]);
        assert_eq!(m[2], vec![0.0, 0.0, 0.0]);
    }
}
