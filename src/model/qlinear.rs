//! Linear layers with 8-bit weights (Q8_0 blocks of 32) and our own AVX2 kernel.
//!
//! Why not candle's `QMatMul`: its CPU path computes one (weight row, activation row) dot
//! product at a time and converts each block's f16 scale through a function call; profiles
//! put 55-65% of our decode time there. Here a tile of four weight rows stays in L1 while
//! every activation row of the batch streams past it (prefill), the scales are f32, and
//! products are split across the pool of `parallel.rs`. Same arithmetic as ggml's
//! Q8_0 x Q8_0 dot (activations quantized per block of 32 to int8, integer dot products,
//! f32 scales).

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::parallel::PARALLEL_MIN_MACS;

pub const BLOCK: usize = 32;

/// How the weights are held.
#[derive(Debug, Clone)]
enum Blocks {
    /// int8 values, one f32 scale per block (ggml Q8_0).
    Q8 { qs: Vec<i8>, scales: Vec<f32> },
    /// 4-bit values packed two per byte (low nibbles are elements 0..16 of a block, high
    /// nibbles 16..32), value = d * q + m (ggml Q4_1, kept exactly as stored).
    Q4_1 {
        nibbles: Vec<u8>,
        d: Vec<f32>,
        m: Vec<f32>,
    },
}

/// An `out x in` weight matrix in blocks of 32.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    blocks: Blocks,
}

/// Activations quantized per block of 32 to int8 (ggml Q8_0 / Q8_1), one row per token;
/// `sums` (d * sum of the block's ints) serves the Q4_1 offset term.
struct Q8Rows {
    qs: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
}

impl Q8Rows {
    /// Row `i` of rows `cols` wide.
    fn row(&self, i: usize, cols: usize) -> XRow<'_> {
        let kb = cols / BLOCK;
        XRow {
            qs: &self.qs[i * cols..(i + 1) * cols],
            scales: &self.scales[i * kb..(i + 1) * kb],
            sums: &self.sums[i * kb..(i + 1) * kb],
        }
    }
}

impl Q8Matrix {
    /// From any candle tensor (dequantized first when needed).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Self> {
        let (rows, cols) = t.shape().dims2()?;
        match t.dtype() {
            GgmlDType::Q8_0 => return Self::from_ggml_q8_0(&t.data()?, rows, cols),
            GgmlDType::Q4_1 => return Self::from_ggml_q4_1(&t.data()?, rows, cols),
            _ => {}
        }
        Self::from_dense(&t.dequantize(&Device::Cpu)?)
    }

    pub fn from_dense(t: &Tensor) -> candle_core::Result<Self> {
        let (rows, cols) = t.dims2()?;
        if !cols.is_multiple_of(BLOCK) {
            candle_core::bail!("Q8 linear needs a multiple of {BLOCK} inputs, got {cols}");
        }
        let data = t
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let q = quantize_rows(&data, cols);
        Ok(Self {
            rows,
            cols,
            blocks: Blocks::Q8 {
                qs: q.qs,
                scales: q.scales,
            },
        })
    }

    /// From ggml's Q4_1 layout: f16 d, f16 m, 16 bytes of nibbles per block.
    fn from_ggml_q4_1(bytes: &[u8], rows: usize, cols: usize) -> candle_core::Result<Self> {
        const SIZE: usize = 4 + BLOCK / 2;
        let blocks = rows * cols / BLOCK;
        if bytes.len() != blocks * SIZE {
            candle_core::bail!("Q4_1 data of {} bytes for {rows}x{cols}", bytes.len());
        }
        let mut nibbles = Vec::with_capacity(blocks * BLOCK / 2);
        let mut d = Vec::with_capacity(blocks);
        let mut m = Vec::with_capacity(blocks);
        for b in bytes.chunks_exact(SIZE) {
            d.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
            m.push(half::f16::from_le_bytes([b[2], b[3]]).to_f32());
            nibbles.extend_from_slice(&b[4..]);
        }
        Ok(Self {
            rows,
            cols,
            blocks: Blocks::Q4_1 { nibbles, d, m },
        })
    }

    /// From ggml's Q8_0 layout: per block an f16 scale followed by 32 int8 values.
    fn from_ggml_q8_0(bytes: &[u8], rows: usize, cols: usize) -> candle_core::Result<Self> {
        let blocks = rows * cols / BLOCK;
        if bytes.len() != blocks * (2 + BLOCK) {
            candle_core::bail!("Q8_0 data of {} bytes for {rows}x{cols}", bytes.len());
        }
        let mut qs = Vec::with_capacity(rows * cols);
        let mut scales = Vec::with_capacity(blocks);
        for b in bytes.chunks_exact(2 + BLOCK) {
            scales.push(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
            qs.extend(b[2..].iter().map(|&v| v as i8));
        }
        Ok(Self {
            rows,
            cols,
            blocks: Blocks::Q8 { qs, scales },
        })
    }

    /// Dequantized row `r` (embedding lookup).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let kb = self.cols / BLOCK;
        let mut out = Vec::with_capacity(self.cols);
        for b in r * kb..(r + 1) * kb {
            match &self.blocks {
                Blocks::Q8 { qs, scales } => {
                    let s = scales[b];
                    out.extend(qs[b * BLOCK..(b + 1) * BLOCK].iter().map(|&v| v as f32 * s));
                }
                Blocks::Q4_1 { nibbles, d, m } => {
                    let q = &nibbles[b * BLOCK / 2..(b + 1) * BLOCK / 2];
                    out.extend(q.iter().map(|&v| (v & 0xF) as f32 * d[b] + m[b]));
                    out.extend(q.iter().map(|&v| (v >> 4) as f32 * d[b] + m[b]));
                }
            }
        }
        out
    }

    /// One activation vector (a decode step).
    pub fn matvec(&self, x: &[f32]) -> Vec<f32> {
        self.matmul_rows(x, 1)
    }

    /// `m` activation rows, row-major; returns `m` output rows. Every row is computed
    /// exactly as `matvec` computes it alone, whatever `m` is.
    pub fn matmul_rows(&self, x: &[f32], m: usize) -> Vec<f32> {
        debug_assert_eq!(x.len(), m * self.cols);
        let act = quantize_rows(x, self.cols);
        self.matmul(&act, m)
    }

    /// Several matrices with the same inputs (Q, K and V; gate and up) applied to the same
    /// `m` rows: the activations are quantized once and all products are split across the
    /// pool as one. Each output equals `matmul_rows` of its matrix, bit for bit.
    pub fn matmul_group<const N: usize>(
        mats: [&Q8Matrix; N],
        x: &[f32],
        m: usize,
    ) -> [Vec<f32>; N] {
        let cols = mats.first().map_or(0, |w| w.cols);
        debug_assert!(mats.iter().all(|w| w.cols == cols));
        debug_assert_eq!(x.len(), m * cols);
        Self::products(mats, &quantize_rows(x, cols), m)
    }

    /// `x` is (..., cols); returns (..., rows).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let k = *dims.last().unwrap_or(&0);
        if k != self.cols {
            candle_core::bail!("Q8 linear expects {} inputs, got {k}", self.cols);
        }
        let m = x.elem_count() / k.max(1);
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let act = quantize_rows(&data, k);
        let out = self.matmul(&act, m);
        let mut out_dims = dims;
        if let Some(last) = out_dims.last_mut() {
            *last = self.rows;
        }
        Tensor::from_vec(out, out_dims, x.device())
    }

    fn matmul(&self, act: &Q8Rows, m: usize) -> Vec<f32> {
        let [out] = Self::products([self], act, m);
        out
    }

    /// out[i][r] = sum_b sx[i][b] * sw[r][b] * <x[i][b], w[r][b]>, for each matrix, `m`
    /// output rows each.
    fn products<const N: usize>(mats: [&Q8Matrix; N], act: &Q8Rows, m: usize) -> [Vec<f32>; N] {
        let mut outs: [Vec<f32>; N] = mats.map(|w| vec![0f32; w.rows * m]);
        let mut jobs: Vec<(&Q8Matrix, &mut [f32])> = mats
            .iter()
            .copied()
            .zip(outs.iter_mut().map(Vec::as_mut_slice))
            .collect();
        run_tile_jobs(&mut jobs, act, m);
        if m > 1 {
            for (w, out) in mats.iter().zip(outs.iter_mut()) {
                *out = transpose(out, w.rows, m);
            }
        }
        outs
    }
}

const TILE: usize = 4;

/// Computes each (matrix, output) job, the output written (rows x m) so that each tile of
/// four weight rows owns a contiguous run. The tiles of all jobs form one parallel
/// iterator, so a group of small matrices is split across the pool as one product.
fn run_tile_jobs(jobs: &mut [(&Q8Matrix, &mut [f32])], act: &Q8Rows, m: usize) {
    let macs: usize = jobs.iter().map(|(w, _)| w.rows * w.cols * m).sum();
    let tile = |(w, tile, out): (&Q8Matrix, usize, &mut [f32])| {
        let r = tile * TILE;
        let t = TILE.min(w.rows - r);
        for i in 0..m {
            let mut res = [0f32; TILE];
            dot_tile(w, r, t, act.row(i, w.cols), &mut res);
            for (j, v) in res.iter().enumerate().take(t) {
                out[j * m + i] = *v;
            }
        }
    };
    if macs < PARALLEL_MIN_MACS {
        for (w, out) in jobs.iter_mut() {
            for (t, chunk) in out.chunks_mut(TILE * m).enumerate() {
                tile((w, t, chunk));
            }
        }
        return;
    }
    jobs.par_iter_mut()
        .flat_map(|(w, out)| {
            let w: &Q8Matrix = w;
            out.par_chunks_mut(TILE * m)
                .enumerate()
                .map(move |(t, chunk)| (w, t, chunk))
        })
        .for_each(tile);
}

/// (n x m) to (m x n).
fn transpose(out_t: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for r in 0..n {
        for i in 0..m {
            out[i * n + r] = out_t[r * m + i];
        }
    }
    out
}

/// One activation row, quantized.
#[derive(Clone, Copy)]
struct XRow<'a> {
    qs: &'a [i8],
    scales: &'a [f32],
    sums: &'a [f32],
}

/// Dot products of up to four consecutive weight rows with one activation row.
fn dot_tile(w: &Q8Matrix, r: usize, t: usize, x: XRow, res: &mut [f32; 4]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were just detected; the kernels check bounds before
            // any raw load.
            unsafe {
                match &w.blocks {
                    Blocks::Q8 { qs, scales } => avx2::dot_tile_q8(qs, scales, w, r, t, x, res),
                    Blocks::Q4_1 { nibbles, d, m } => {
                        avx2::dot_tile_q4_1(nibbles, d, m, w, r, t, x, res)
                    }
                }
            };
            return;
        }
    }
    scalar_dot_tile(w, r, t, x, res);
}

fn scalar_dot_tile(w: &Q8Matrix, r: usize, t: usize, x: XRow, res: &mut [f32; 4]) {
    let kb = w.cols / BLOCK;
    for (j, out) in res.iter_mut().enumerate().take(t) {
        let row = r + j;
        let mut acc = 0f32;
        for b in 0..kb {
            let xb = &x.qs[b * BLOCK..(b + 1) * BLOCK];
            let blk = row * kb + b;
            acc += match &w.blocks {
                Blocks::Q8 { qs, scales } => {
                    let wq = &qs[blk * BLOCK..(blk + 1) * BLOCK];
                    let dot: i32 = wq.iter().zip(xb).map(|(&a, &c)| a as i32 * c as i32).sum();
                    dot as f32 * scales[blk] * x.scales[b]
                }
                Blocks::Q4_1 { nibbles, d, m } => {
                    let q = &nibbles[blk * BLOCK / 2..(blk + 1) * BLOCK / 2];
                    let mut dot = 0i32;
                    for (i, &v) in q.iter().enumerate() {
                        dot += (v & 0xF) as i32 * xb[i] as i32;
                        dot += (v >> 4) as i32 * xb[i + BLOCK / 2] as i32;
                    }
                    dot as f32 * d[blk] * x.scales[b] + m[blk] * x.sums[b]
                }
            };
        }
        *out = acc;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Q8Matrix, XRow, BLOCK};
    use std::arch::x86_64::*;

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q8_block(w: *const i8, x: *const i8) -> __m256 {
        let wv = _mm256_loadu_si256(w as *const __m256i);
        let xv = _mm256_loadu_si256(x as *const __m256i);
        // |w| * (x * sign(w)) as u8 x i8 pairs; |w|, |x| <= 127 so the i16 sums of
        // pairs cannot saturate.
        let aw = _mm256_sign_epi8(wv, wv);
        let sx = _mm256_sign_epi8(xv, wv);
        let p16 = _mm256_maddubs_epi16(aw, sx);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn q4_block(w: *const u8, x: *const i8) -> __m256 {
        let packed = _mm_loadu_si128(w as *const __m128i);
        let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
        let q = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
        let xv = _mm256_loadu_si256(x as *const __m256i);
        // Unsigned 4-bit values times signed int8: at most 15 * 127 * 2 per i16.
        let p16 = _mm256_maddubs_epi16(q, xv);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_tile_q8(
        qs: &[i8],
        scales: &[f32],
        w: &Q8Matrix,
        r: usize,
        t: usize,
        x: XRow,
        res: &mut [f32; 4],
    ) {
        let kb = w.cols / BLOCK;
        assert!(t <= 4 && (r + t) * kb <= scales.len() && (r + t) * kb * BLOCK <= qs.len());
        assert!(x.qs.len() >= kb * BLOCK && x.scales.len() >= kb);
        let mut acc = [_mm256_setzero_ps(); 4];
        for b in 0..kb {
            let xp = x.qs.as_ptr().add(b * BLOCK);
            let sx = *x.scales.get_unchecked(b);
            for (j, a) in acc.iter_mut().enumerate().take(t) {
                let blk = (r + j) * kb + b;
                let d = q8_block(qs.as_ptr().add(blk * BLOCK), xp);
                *a = _mm256_fmadd_ps(d, _mm256_set1_ps(*scales.get_unchecked(blk) * sx), *a);
            }
        }
        for j in 0..t {
            res[j] = hsum(acc[j]);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot_tile_q4_1(
        nibbles: &[u8],
        d: &[f32],
        m: &[f32],
        w: &Q8Matrix,
        r: usize,
        t: usize,
        x: XRow,
        res: &mut [f32; 4],
    ) {
        let kb = w.cols / BLOCK;
        assert!(t <= 4 && (r + t) * kb <= d.len() && (r + t) * kb <= m.len());
        assert!((r + t) * kb * BLOCK / 2 <= nibbles.len());
        assert!(x.qs.len() >= kb * BLOCK && x.scales.len() >= kb && x.sums.len() >= kb);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut offset = [0f32; 4];
        for b in 0..kb {
            let xp = x.qs.as_ptr().add(b * BLOCK);
            let sx = *x.scales.get_unchecked(b);
            let sum_x = *x.sums.get_unchecked(b);
            for j in 0..t {
                let blk = (r + j) * kb + b;
                let p = q4_block(nibbles.as_ptr().add(blk * BLOCK / 2), xp);
                acc[j] = _mm256_fmadd_ps(p, _mm256_set1_ps(*d.get_unchecked(blk) * sx), acc[j]);
                offset[j] += *m.get_unchecked(blk) * sum_x;
            }
        }
        for j in 0..t {
            res[j] = hsum(acc[j]) + offset[j];
        }
    }
}

/// Per block of 32: scale = max|x| / 127, values rounded to int8 (ggml's Q8_0 rule).
fn quantize_rows(data: &[f32], cols: usize) -> Q8Rows {
    let blocks = data.len() / BLOCK;
    let mut qs = vec![0i8; data.len()];
    let mut scales = vec![0f32; blocks];
    let mut sums = vec![0f32; blocks];
    debug_assert!(cols.is_multiple_of(BLOCK));
    for (b, (src, dst)) in data
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut total = 0i32;
        for (q, v) in dst.iter_mut().zip(src) {
            *q = (v * id).round() as i8;
            total += *q as i32;
        }
        // ggml stores these as f16; round the same way so our numbers match its.
        scales[b] = half::f16::from_f32(d).to_f32();
        sums[b] = half::f16::from_f32(d * total as f32).to_f32();
    }
    Q8Rows { qs, scales, sums }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic weights (n x k) and activations (m x k) in [-1, 1].
    fn inputs(n: usize, k: usize, m: usize) -> (Vec<f32>, Vec<f32>) {
        let w = (0..n * k)
            .map(|i| ((i * 7919) % 251) as f32 / 125.0 - 1.0)
            .collect();
        let x = (0..m * k)
            .map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0)
            .collect();
        (w, x)
    }

    #[test]
    fn matches_a_dense_matmul_within_quantization_error() {
        let (n, k, m) = (37, 96, 5);
        let (w, x) = inputs(n, k, m);
        let wt = Tensor::from_vec(w.clone(), (n, k), &Device::Cpu).unwrap();
        let xt = Tensor::from_vec(x.clone(), (1, m, k), &Device::Cpu).unwrap();
        let q = Q8Matrix::from_dense(&wt).unwrap();
        let out = q.forward(&xt).unwrap();
        assert_eq!(out.dims(), &[1, m, n]);
        let got = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..m {
            for r in 0..n {
                let exact: f32 = (0..k).map(|c| w[r * k + c] * x[i * k + c]).sum();
                let d = (got[i * n + r] - exact).abs();
                assert!(
                    d < 0.05 * (1.0 + exact.abs()),
                    "({i},{r}): {} vs {exact}",
                    got[i * n + r]
                );
            }
        }
        // The SIMD tile and the scalar fallback agree exactly up to summation order.
        let act = quantize_rows(&x[..k], k);
        let row = act.row(0, k);
        let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
        dot_tile(&q, 8, 4, row, &mut a);
        scalar_dot_tile(&q, 8, 4, row, &mut b);
        for j in 0..4 {
            assert!((a[j] - b[j]).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn q4_1_kernel_matches_candle_dequantization() {
        let (n, k) = (12, 64);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 31) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap();
        let q = Q8Matrix::from_qtensor(&qt).unwrap();
        let dense = qt.dequantize(&Device::Cpu).unwrap();
        let dense_v = dense.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for r in 0..n {
            for (a, b) in q.row(r).iter().zip(&dense_v[r * k..(r + 1) * k]) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        let x: Vec<f32> = (0..2 * k)
            .map(|i| ((i * 13) % 29) as f32 / 14.0 - 1.0)
            .collect();
        let xt = Tensor::from_vec(x.clone(), (2, k), &Device::Cpu).unwrap();
        let got = q
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in 0..2 {
            for r in 0..n {
                let exact: f32 = (0..k).map(|c| dense_v[r * k + c] * x[i * k + c]).sum();
                assert!((got[i * n + r] - exact).abs() < 0.05 * (1.0 + exact.abs()));
            }
        }
        let act = quantize_rows(&x[..k], k);
        let row = act.row(0, k);
        let (mut a, mut b) = ([0f32; 4], [0f32; 4]);
        dot_tile(&q, 4, 4, row, &mut a);
        scalar_dot_tile(&q, 4, 4, row, &mut b);
        for j in 0..4 {
            assert!((a[j] - b[j]).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    /// Prefill must not change a number: every row of a batched product (on a full and a
    /// partial tile of weight rows) equals the same row computed alone, bit for bit.
    #[test]
    fn batched_rows_equal_single_rows_exactly() {
        // The second shape is large enough to be split across threads, even row by row.
        for (n, k, m) in [(38, 96, 7), (302, 256, 5)] {
            let (w, x) = inputs(n, k, m);
            let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            let q8 = Q8Matrix::from_dense(&wt).unwrap();
            let q4 =
                Q8Matrix::from_qtensor(&QTensor::quantize(&wt, GgmlDType::Q4_1).unwrap()).unwrap();
            assert_eq!(n * k * m >= PARALLEL_MIN_MACS, n > 100);
            for q in [&q8, &q4] {
                let batched = q.matmul_rows(&x, m);
                for i in 0..m {
                    let alone = q.matvec(&x[i * k..(i + 1) * k]);
                    assert_eq!(&batched[i * n..(i + 1) * n], alone.as_slice(), "row {i}");
                    let mut tile = [0f32; 4];
                    let act = quantize_rows(&x[i * k..(i + 1) * k], k);
                    let row = act.row(0, k);
                    dot_tile(q, n - 2, 2, row, &mut tile);
                    assert_eq!(&tile[..2], &alone[n - 2..], "row {i}, last rows");
                }
            }
        }
    }

    /// Q, K and V (of different heights and kinds) as one group give what each gives alone.
    #[test]
    fn grouped_products_equal_separate_ones_exactly() {
        let (k, m) = (64, 3);
        let (w, x) = inputs(40, k, m);
        let dense = |rows: usize| {
            Tensor::from_vec(w[..rows * k].to_vec(), (rows, k), &Device::Cpu).unwrap()
        };
        let a = Q8Matrix::from_dense(&dense(40)).unwrap();
        let b = Q8Matrix::from_qtensor(&QTensor::quantize(&dense(9), GgmlDType::Q4_1).unwrap())
            .unwrap();
        let c = Q8Matrix::from_dense(&dense(4)).unwrap();
        for rows in [1, m] {
            let x = &x[..rows * k];
            let grouped = Q8Matrix::matmul_group([&a, &b, &c], x, rows);
            for (g, q) in grouped.iter().zip([&a, &b, &c]) {
                assert_eq!(g, &q.matmul_rows(x, rows));
            }
        }
    }

    #[test]
    fn rows_dequantize() {
        let wt = Tensor::from_vec(vec![0.5f32; 64], (2, 32), &Device::Cpu).unwrap();
        let q = Q8Matrix::from_dense(&wt).unwrap();
        assert!(q.row(1).iter().all(|v| (v - 0.5).abs() < 1e-2));
    }
}
