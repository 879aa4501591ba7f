//! Linear layers with 8-bit or 4-bit weights in blocks of 32 and our own SIMD kernels.
//!
//! Why not candle's `QMatMul`: its CPU path computes one (weight row, activation row) dot
//! product at a time and converts each block's f16 scale through a function call; profiles
//! put 55-65% of our decode time there. Here the weights are interleaved at load in groups
//! of eight rows (as llama.cpp's repacked kernels hold them): one 32-byte load carries four
//! values of each of eight rows, so a broadcast of four activation values feeds eight rows
//! at once, and the eight rows' block sums come out in the lanes of one register, scaled by
//! one vector of their scales. With AVX-512 VNNI each such step is one `vpdpbusd`. Products
//! are split across the pool of `parallel.rs`. Same arithmetic as ggml's Q8_0 x Q8_0 and
//! Q4_1 x Q8_1 dots (activations quantized per block of 32 to int8, exact integer dot
//! products per block, f32 scales), summed over blocks in order. Weights stay near their
//! files' size (Q4_K 4.625 bits a weight, the others as in the file): their values, integer
//! block scales and f16 scales as stored, each block's f32 scale formed in the
//! kernel by the same product a conversion at load would form, so the numbers do not
//! depend on how they are held. A
//! decode step's kernel asks for the weight bytes `PREFETCH_AHEAD` ahead of those it reads:
//! decode streams every weight once a token, and the hardware prefetcher alone left it well
//! short of the memory's bandwidth.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::parallel::PARALLEL_MIN_MACS;

pub const BLOCK: usize = 32;

/// Weight rows per interleaved group; a matrix's last group is padded with zero rows.
const GROUP: usize = 8;

/// Activation rows one kernel call runs past a group's weights while they sit in registers.
const ACT_TILE: usize = 4;

/// How the weights are held: per group of eight rows and per block, the block's bytes are
/// cut into runs of four, and run `k` of the eight rows lies together (32 bytes: row 0's
/// four bytes, then row 1's, ...); the eight rows' scales of the block follow one another.
#[derive(Debug, Clone)]
enum Blocks {
    /// int8 values (run k holds elements 4k..4k+4), one f16 scale per row and block (ggml
    /// Q8_0, 8.5 bits a weight as in the file).
    Q8 { qs: Vec<i8>, scales: Vec<half::f16> },
    /// ggml Q6_K as stored, 6.5625 bits a weight: value = (d * scale) * (q - 32), q in 0..64
    /// and a scale for each half of 16. `low` holds q's low nibbles as `Q4_1` holds its
    /// values; `high` their top two bits, eight bytes per block: byte 4x + t holds element
    /// t of runs 4x..4x+4 (see `grouped`: run c is elements 4c..4c+4), run 4x + r at bits
    /// 2r, so that four shifts of one 32-byte load give four runs' top bits. `scale`: per
    /// block the eight rows' first-half int8 scales, then their second; `d` (f16) per row
    /// and super-block.
    Q6K {
        low: Vec<u8>,
        high: Vec<u8>,
        scale: Vec<i8>,
        d: Vec<half::f16>,
    },
    /// 4-bit values as ggml Q4_1 packs a block (byte i: element i in the low nibble, element
    /// i + 16 in the high one), value = d * q + m (ggml Q4_1; d and m f16 as in the file,
    /// 5 bits a weight).
    Q4_1 {
        nibbles: Vec<u8>,
        d: Vec<half::f16>,
        m: Vec<half::f16>,
    },
    /// ggml Q4_K as stored: nibbles as `Q4_1`'s, each block's 6-bit scale and min (one byte
    /// each), each super-block's d and dmin (f16, per row and super-block of eight blocks).
    /// Block value = (d * scale) * q - dmin * min, the products formed in the kernel.
    Q4K {
        nibbles: Vec<u8>,
        scale: Vec<u8>,
        min: Vec<u8>,
        d: Vec<half::f16>,
        dmin: Vec<half::f16>,
    },
}

/// Blocks per ggml K-quant super-block of 256 values.
const SUPER_BLOCKS: usize = 8;

impl Blocks {
    /// A 4-bit block's nibbles and its (d', m'), value = d' * q + m': row `j` of group `g`,
    /// block `b` of the row's `kb`.
    fn nibble_block(&self, g: usize, kb: usize, b: usize, j: usize) -> Option<(&[u8], f32, f32)> {
        let s = (g * kb + b) * GROUP + j;
        match self {
            Blocks::Q4_1 { nibbles, d, m } => Some((nibbles, d[s].to_f32(), m[s].to_f32())),
            Blocks::Q4K {
                nibbles,
                scale,
                min,
                d,
                dmin,
            } => {
                let sb = (g * kb / SUPER_BLOCKS + b / SUPER_BLOCKS) * GROUP + j;
                let (ds, ms) =
                    q4k_block_scales(d[sb].to_f32(), dmin[sb].to_f32(), scale[s], min[s]);
                Some((nibbles, ds, ms))
            }
            Blocks::Q8 { .. } | Blocks::Q6K { .. } => None,
        }
    }
}

/// An `out x in` weight matrix in blocks of 32.
#[derive(Debug, Clone)]
pub struct Q8Matrix {
    pub rows: usize,
    /// Inputs per row.
    pub cols: usize,
    blocks: Blocks,
}

/// Activations quantized per block of 32 to int8 (ggml Q8_0 / Q8_1), one row per token;
/// `sums` (d * sum of the block's ints) serves the Q4_1 offset term, `isums` (the sum of
/// the block's ints) and `hsums` (of its first 16) the VNNI kernel's unsigned-weight
/// correction.
struct Q8Rows {
    qs: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<f32>,
    isums: Vec<i32>,
    hsums: Vec<i32>,
}

impl Q8Rows {
    /// Row `i` of rows `cols` wide.
    fn row(&self, i: usize, cols: usize) -> XRow<'_> {
        let kb = cols / BLOCK;
        XRow {
            qs: &self.qs[i * cols..(i + 1) * cols],
            scales: &self.scales[i * kb..(i + 1) * kb],
            sums: &self.sums[i * kb..(i + 1) * kb],
            isums: &self.isums[i * kb..(i + 1) * kb],
            hsums: &self.hsums[i * kb..(i + 1) * kb],
        }
    }
}

/// Where byte `p` of row `j`'s block lies in grouped block `blk` (`g * kb + b`), for blocks
/// of `block_bytes` bytes: runs of four bytes, the group's eight rows side by side.
fn grouped(blk: usize, j: usize, p: usize, block_bytes: usize) -> usize {
    blk * GROUP * block_bytes + (p / 4) * GROUP * 4 + j * 4 + p % 4
}

/// Rearranges row-major blocks (`block_bytes` per block, `kb` blocks per row) into the
/// grouped layout, padding the last group with zero rows.
fn interleave<T: Copy + Default>(
    plain: &[T],
    rows: usize,
    kb: usize,
    block_bytes: usize,
) -> Vec<T> {
    let groups = rows.div_ceil(GROUP);
    let mut out = vec![T::default(); groups * GROUP * kb * block_bytes];
    for row in 0..rows {
        let (g, j) = (row / GROUP, row % GROUP);
        for b in 0..kb {
            let src = &plain[(row * kb + b) * block_bytes..(row * kb + b + 1) * block_bytes];
            for p in (0..block_bytes).step_by(4) {
                let at = grouped(g * kb + b, j, p, block_bytes);
                out[at..at + 4].copy_from_slice(&src[p..p + 4]);
            }
        }
    }
    out
}

/// Per-(row, block) values into the grouped order, zeros for padding rows.
fn interleave_scales(plain: &[f32], rows: usize, kb: usize) -> Vec<half::f16> {
    let groups = rows.div_ceil(GROUP);
    let mut out = vec![half::f16::ZERO; groups * GROUP * kb];
    for row in 0..rows {
        for b in 0..kb {
            // The scales are f16 values already (`quantize_rows` rounds them as ggml does).
            out[((row / GROUP) * kb + b) * GROUP + row % GROUP] =
                half::f16::from_f32(plain[row * kb + b]);
        }
    }
    out
}

/// Builds a grouped matrix from ggml's bytes a few rows at a time, each row written straight
/// to where it lies: a whole tensor read first, or a row-major copy on the way, would add
/// the largest matrix to peak memory (a tied 151936-row embedding is 130 MB or more).
pub struct Builder {
    dtype: GgmlDType,
    rows: usize,
    cols: usize,
    next: usize,
    blocks: Blocks,
}

impl Builder {
    /// `None` for a type held no way of its own here (dequantize it and use `from_dense`).
    pub fn new(dtype: GgmlDType, rows: usize, cols: usize) -> candle_core::Result<Option<Self>> {
        let block = dtype.block_size();
        let held = matches!(
            dtype,
            GgmlDType::Q8_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q4K | GgmlDType::Q6K
        );
        if !held {
            return Ok(None);
        }
        if cols == 0 || !cols.is_multiple_of(block) {
            candle_core::bail!("{dtype:?} matrix of {rows}x{cols}: rows are not whole blocks");
        }
        let padded = rows.div_ceil(GROUP) * GROUP;
        let blocks = padded * (cols / BLOCK);
        let supers = blocks / SUPER_BLOCKS;
        let blocks = match dtype {
            GgmlDType::Q4_1 => Blocks::Q4_1 {
                nibbles: vec![0; blocks * BLOCK / 2],
                d: vec![half::f16::ZERO; blocks],
                m: vec![half::f16::ZERO; blocks],
            },
            GgmlDType::Q4K => Blocks::Q4K {
                nibbles: vec![0; blocks * BLOCK / 2],
                scale: vec![0; blocks],
                min: vec![0; blocks],
                d: vec![half::f16::ZERO; supers],
                dmin: vec![half::f16::ZERO; supers],
            },
            GgmlDType::Q6K => Blocks::Q6K {
                low: vec![0; blocks * BLOCK / 2],
                high: vec![0; blocks * BLOCK / 4],
                scale: vec![0; 2 * blocks],
                d: vec![half::f16::ZERO; supers],
            },
            _ => Blocks::Q8 {
                qs: vec![0; blocks * BLOCK],
                scales: vec![half::f16::ZERO; blocks],
            },
        };
        Ok(Some(Self {
            dtype,
            rows,
            cols,
            next: 0,
            blocks,
        }))
    }

    /// Bytes of one row in the file.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.dtype.block_size() * self.dtype.type_size()
    }

    /// The next whole rows, as the file holds them.
    pub fn push_rows(&mut self, bytes: &[u8]) -> candle_core::Result<()> {
        let row_bytes = self.row_bytes();
        if !bytes.len().is_multiple_of(row_bytes) || self.next + bytes.len() / row_bytes > self.rows
        {
            candle_core::bail!(
                "{:?} data of {} bytes does not fit the rows left of {}x{}",
                self.dtype,
                bytes.len(),
                self.rows,
                self.cols
            );
        }
        for src in bytes.chunks_exact(row_bytes) {
            self.write_row(src);
            self.next += 1;
        }
        Ok(())
    }

    pub fn finish(self) -> candle_core::Result<Q8Matrix> {
        if self.next != self.rows {
            candle_core::bail!(
                "{:?} matrix got {} of {} rows",
                self.dtype,
                self.next,
                self.rows
            );
        }
        Ok(Q8Matrix {
            rows: self.rows,
            cols: self.cols,
            blocks: self.blocks,
        })
    }

    /// Row `self.next` from its bytes (`src` is exactly one row).
    fn write_row(&mut self, src: &[u8]) {
        let kb = self.cols / BLOCK;
        let (g, j) = (self.next / GROUP, self.next % GROUP);
        // Grouped block `b` of this row, and where per-block values of it lie.
        let blk = |b: usize| g * kb + b;
        let at = |b: usize| blk(b) * GROUP + j;
        let at_super = |s: usize| (g * kb / SUPER_BLOCKS + s) * GROUP + j;
        let h16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]);
        match (&mut self.blocks, self.dtype) {
            // Per block an f16 scale and 32 int8 values.
            (Blocks::Q8 { qs, scales }, GgmlDType::Q8_0) => {
                for (b, c) in src.chunks_exact(2 + BLOCK).enumerate() {
                    scales[at(b)] = h16(c);
                    for (p, &v) in c[2..].iter().enumerate() {
                        qs[grouped(blk(b), j, p, BLOCK)] = v as i8;
                    }
                }
            }
            // f16 d, 32 high bits, 16 bytes of low nibbles; value = d * (q - 16): held as
            // int8 q - 16 with scale d, which is how ggml's Q5_0 x Q8_0 dot multiplies them.
            (Blocks::Q8 { qs, scales }, _) => {
                for (b, c) in src.chunks_exact(2 + 4 + BLOCK / 2).enumerate() {
                    scales[at(b)] = h16(c);
                    let qh = u32::from_le_bytes([c[2], c[3], c[4], c[5]]);
                    let nib = &c[6..];
                    for e in 0..BLOCK {
                        let low = if e < 16 {
                            nib[e] & 0xF
                        } else {
                            nib[e - 16] >> 4
                        };
                        let q = (low | (((qh >> e) & 1) as u8) << 4) as i8 - 16;
                        qs[grouped(blk(b), j, e, BLOCK)] = q;
                    }
                }
            }
            // f16 d, f16 m, 16 bytes of nibbles; value = d * q + m.
            (Blocks::Q4_1 { nibbles, d, m }, _) => {
                for (b, c) in src.chunks_exact(4 + BLOCK / 2).enumerate() {
                    d[at(b)] = h16(c);
                    m[at(b)] = h16(&c[2..]);
                    for (p, &v) in c[4..].iter().enumerate() {
                        nibbles[grouped(blk(b), j, p, BLOCK / 2)] = v;
                    }
                }
            }
            // Super-blocks of 256: f16 d and dmin, twelve bytes of 6-bit scales and mins,
            // then 128 bytes where each run of 32 bytes holds two blocks, low nibbles first.
            (
                Blocks::Q4K {
                    nibbles,
                    scale,
                    min,
                    d,
                    dmin,
                },
                _,
            ) => {
                for (s, sb) in src.chunks_exact(4 + 12 + 128).enumerate() {
                    d[at_super(s)] = h16(sb);
                    dmin[at_super(s)] = h16(&sb[2..]);
                    let sc = &sb[4..16];
                    // ggml's get_scale_min_k4.
                    let scale_min = |k: usize| {
                        if k < 4 {
                            (sc[k] & 63, sc[k + 4] & 63)
                        } else {
                            (
                                (sc[k + 4] & 0xF) | ((sc[k - 4] >> 6) << 4),
                                (sc[k + 4] >> 4) | ((sc[k] >> 6) << 4),
                            )
                        }
                    };
                    for (run, q) in sb[16..].chunks_exact(32).enumerate() {
                        for (half_, shift) in [(0, 0), (1, 4)] {
                            let b = s * SUPER_BLOCKS + 2 * run + half_;
                            (scale[at(b)], min[at(b)]) = scale_min(2 * run + half_);
                            let v = |l: usize| (q[l] >> shift) & 0xF;
                            for i in 0..BLOCK / 2 {
                                nibbles[grouped(blk(b), j, i, BLOCK / 2)] =
                                    v(i) | (v(i + BLOCK / 2) << 4);
                            }
                        }
                    }
                }
            }
            // Super-blocks of 256: 128 bytes of low nibbles, 64 bytes of high bit pairs, 16
            // int8 scales, f16 d; value = (d * scale[e / 16]) * (q - 32).
            (
                Blocks::Q6K {
                    low,
                    high,
                    scale,
                    d,
                },
                _,
            ) => {
                const SUPER: usize = 256;
                for (s, sb) in src
                    .chunks_exact(SUPER / 2 + SUPER / 4 + SUPER / 16 + 2)
                    .enumerate()
                {
                    let (ql, rest) = sb.split_at(SUPER / 2);
                    let (qh, rest) = rest.split_at(SUPER / 4);
                    let (sc, dd) = rest.split_at(SUPER / 16);
                    d[at_super(s)] = h16(dd);
                    for (e16, &v) in sc.iter().enumerate() {
                        let b = s * SUPER_BLOCKS + e16 / 2;
                        scale[(blk(b) * 2 + e16 % 2) * GROUP + j] = v as i8;
                    }
                    // ggml's dequantize_row_q6_K: per half of 128, element l + 32 t (l < 32)
                    // has its low nibble in ql[l + 32 (t % 2)] (low or high nibble for t < 2
                    // or not) and its high bits at 2 t in qh[l].
                    let q = |e: usize| {
                        let (n, i) = (e / 128, e % 128);
                        let (t, l) = (i / 32, i % 32);
                        let lo = (ql[64 * n + l + 32 * (t % 2)] >> (4 * (t / 2))) & 0xF;
                        let hi = (qh[32 * n + l] >> (2 * t)) & 3;
                        lo | (hi << 4)
                    };
                    for sub in 0..SUPER_BLOCKS {
                        let b = s * SUPER_BLOCKS + sub;
                        let q = |e: usize| q(sub * BLOCK + e);
                        for p in 0..BLOCK / 2 {
                            low[grouped(blk(b), j, p, BLOCK / 2)] =
                                (q(p) & 0xF) | ((q(p + BLOCK / 2) & 0xF) << 4);
                        }
                        for p in 0..BLOCK / 4 {
                            let (x, t) = (p / 4, p % 4);
                            high[grouped(blk(b), j, p, BLOCK / 4)] = (0..4).fold(0u8, |acc, r| {
                                acc | ((q(4 * (4 * x + r) + t) >> 4) << (2 * r))
                            });
                        }
                    }
                }
            }
        }
    }
}

impl Q8Matrix {
    /// From any candle tensor (dequantized first when its type has no layout here).
    pub fn from_qtensor(t: &QTensor) -> candle_core::Result<Self> {
        let (rows, cols) = t.shape().dims2()?;
        match Builder::new(t.dtype(), rows, cols)? {
            Some(mut builder) => {
                builder.push_rows(&t.data()?)?;
                builder.finish()
            }
            None => Self::from_dense(&t.dequantize(&Device::Cpu)?),
        }
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
        let kb = cols / BLOCK;
        Ok(Self {
            rows,
            cols,
            blocks: Blocks::Q8 {
                qs: interleave(&q.qs, rows, kb, BLOCK),
                scales: interleave_scales(&q.scales, rows, kb),
            },
        })
    }

    /// Bytes the weights take in memory (values and scales).
    pub fn bytes(&self) -> usize {
        match &self.blocks {
            Blocks::Q8 { qs, scales } => qs.len() + 2 * scales.len(),
            Blocks::Q6K {
                low,
                high,
                scale,
                d,
            } => low.len() + high.len() + scale.len() + 2 * d.len(),
            Blocks::Q4_1 { nibbles, d, m } => nibbles.len() + 2 * (d.len() + m.len()),
            Blocks::Q4K {
                nibbles,
                scale,
                min,
                d,
                dmin,
            } => nibbles.len() + scale.len() + min.len() + 2 * (d.len() + dmin.len()),
        }
    }

    /// Dequantized row `r` (embedding lookup).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let kb = self.cols / BLOCK;
        let (g, j) = (r / GROUP, r % GROUP);
        let mut out = Vec::with_capacity(self.cols);
        for b in 0..kb {
            let blk = g * kb + b;
            let s = blk * GROUP + j;
            match &self.blocks {
                Blocks::Q8 { qs, scales } => {
                    out.extend(
                        (0..BLOCK)
                            .map(|e| qs[grouped(blk, j, e, BLOCK)] as f32 * scales[s].to_f32()),
                    );
                }
                Blocks::Q6K {
                    low,
                    high,
                    scale,
                    d,
                } => {
                    let sb = (g * kb / SUPER_BLOCKS + b / SUPER_BLOCKS) * GROUP + j;
                    out.extend((0..BLOCK).map(|e| {
                        let sw =
                            q6k_half_scale(d[sb].to_f32(), scale[(blk * 2 + e / 16) * GROUP + j]);
                        q6k_value(low, high, blk, j, e) as f32 * sw
                    }));
                }
                Blocks::Q4_1 { .. } | Blocks::Q4K { .. } => {
                    if let Some((nibbles, ds, ms)) = self.blocks.nibble_block(g, kb, b, j) {
                        let byte = |p: usize| nibbles[grouped(blk, j, p, BLOCK / 2)];
                        out.extend((0..BLOCK / 2).map(|p| (byte(p) & 0xF) as f32 * ds + ms));
                        out.extend((0..BLOCK / 2).map(|p| (byte(p) >> 4) as f32 * ds + ms));
                    }
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
        let act = quantize_rows(x, cols);
        Self::products(mats, &act, m)
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
        run_group_jobs(&mut jobs, act, m);
        if m > 1 {
            for (w, out) in mats.iter().zip(outs.iter_mut()) {
                *out = ungroup(out, w.rows, m);
            }
        }
        outs
    }
}

/// Computes each (matrix, output) job, the output written so that each group of eight
/// weight rows owns a contiguous run. The groups of all jobs form one parallel
/// iterator, so a set of small matrices is split across the pool as one product.
fn run_group_jobs(jobs: &mut [(&Q8Matrix, &mut [f32])], act: &Q8Rows, m: usize) {
    let Some(cols) = jobs.first().map(|(w, _)| w.cols) else {
        return;
    };
    let xs: Vec<XRow> = (0..m).map(|i| act.row(i, cols)).collect();
    let macs: usize = jobs.iter().map(|(w, _)| w.rows * cols * m).sum();
    let group = |(w, g, out): (&Q8Matrix, usize, &mut [f32])| group_product(w, g, &xs, out);
    if macs < PARALLEL_MIN_MACS {
        for (w, out) in jobs.iter_mut() {
            for (g, chunk) in out.chunks_mut(GROUP * m).enumerate() {
                group((w, g, chunk));
            }
        }
        return;
    }
    jobs.par_iter_mut()
        .flat_map(|(w, out)| {
            let w: &Q8Matrix = w;
            out.par_chunks_mut(GROUP * m)
                .enumerate()
                .map(move |(g, chunk)| (w, g, chunk))
        })
        .for_each(group);
}

/// Group `g`'s rows (as many as `out` holds, up to eight: `t`) times every activation row
/// of `xs`, written `out[i * t + j]`: each activation row's results lie together.
fn group_product(w: &Q8Matrix, g: usize, xs: &[XRow], out: &mut [f32]) {
    let t = out.len() / xs.len();
    let tiles = xs.chunks(ACT_TILE).zip(out.chunks_mut(ACT_TILE * t));
    for (k, (tile, dst)) in tiles.enumerate() {
        let mut res = [[0f32; GROUP]; ACT_TILE];
        // Only the first tile reads the group's weights from memory.
        dot_group(w, g, tile, &mut res, k == 0);
        for (r, d) in res.iter().zip(dst.chunks_mut(t)) {
            d.copy_from_slice(&r[..t]);
        }
    }
}

/// From groups of (m x up to eight) to (m x n): one copy per group and row.
fn ungroup(out_g: &[f32], n: usize, m: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for (g, chunk) in out_g.chunks(GROUP * m).enumerate() {
        let t = chunk.len() / m;
        for (i, run) in chunk.chunks(t).enumerate() {
            out[i * n + g * GROUP..i * n + g * GROUP + t].copy_from_slice(run);
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
    isums: &'a [i32],
    hsums: &'a [i32],
}

/// Q6_K's q - 32 for element `e` of row `j` in grouped block `blk`.
fn q6k_value(low: &[u8], high: &[u8], blk: usize, j: usize, e: usize) -> i32 {
    let lo = (low[grouped(blk, j, e % 16, BLOCK / 2)] >> (4 * (e / 16))) & 0xF;
    let (run, t) = (e / 4, e % 4);
    let hi = (high[grouped(blk, j, 4 * (run / 4) + t, BLOCK / 4)] >> (2 * (run % 4))) & 3;
    (lo | (hi << 4)) as i32 - 32
}

/// A Q6_K half block's scale d * scale, as the kernels form it.
#[inline]
fn q6k_half_scale(d: f32, scale: i8) -> f32 {
    d * scale as f32
}

/// A Q4_K block's d' = d * scale and m' = -(dmin * min): the kernels form them the same way.
#[inline]
fn q4k_block_scales(d: f32, dmin: f32, scale: u8, min: u8) -> (f32, f32) {
    (d * scale as f32, -(dmin * min as f32))
}

/// A group kernel: unsafe because the SIMD ones need CPU features the caller has checked.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
type Kernel = unsafe fn(&Q8Matrix, usize, &[XRow], &mut [[f32; GROUP]; ACT_TILE], bool);

/// The eight rows of group `g` times up to `ACT_TILE` activation rows: `res[i][j]`.
/// `stream`: the weights come from memory this time (a decode step's kernel prefetches
/// them).
fn dot_group(
    w: &Q8Matrix,
    g: usize,
    xs: &[XRow],
    res: &mut [[f32; GROUP]; ACT_TILE],
    stream: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if let Some(kernel) = simd::pick() {
            // SAFETY: `pick` returns only kernels whose CPU features were detected; the
            // kernels check bounds before any raw load.
            unsafe { kernel(w, g, xs, res, stream) };
            return;
        }
    }
    let _ = stream;
    scalar_dot_group(w, g, xs, res);
}

/// The same sums in the same order as the SIMD kernels (fused multiply-adds over blocks),
/// so every result is bit for bit theirs.
fn scalar_dot_group(w: &Q8Matrix, g: usize, xs: &[XRow], res: &mut [[f32; GROUP]; ACT_TILE]) {
    let kb = w.cols / BLOCK;
    let nibble_dot = |nibbles: &[u8], blk: usize, j: usize, xb: &[i8]| {
        let mut dot = 0i32;
        for p in 0..BLOCK / 2 {
            let v = nibbles[grouped(blk, j, p, BLOCK / 2)];
            dot += (v & 0xF) as i32 * xb[p] as i32;
            dot += (v >> 4) as i32 * xb[p + BLOCK / 2] as i32;
        }
        dot as f32
    };
    for (x, out) in xs.iter().zip(res.iter_mut()) {
        for (j, r) in out.iter_mut().enumerate() {
            let (mut acc, mut offset) = (0f32, 0f32);
            for b in 0..kb {
                let blk = g * kb + b;
                let s = blk * GROUP + j;
                let xb = &x.qs[b * BLOCK..(b + 1) * BLOCK];
                match &w.blocks {
                    Blocks::Q8 { qs, scales } => {
                        let dot: i32 = (0..BLOCK)
                            .map(|e| qs[grouped(blk, j, e, BLOCK)] as i32 * xb[e] as i32)
                            .sum();
                        acc = (dot as f32).mul_add(scales[s].to_f32() * x.scales[b], acc);
                    }
                    Blocks::Q6K {
                        low,
                        high,
                        scale,
                        d,
                    } => {
                        let sb = (g * kb / SUPER_BLOCKS + b / SUPER_BLOCKS) * GROUP + j;
                        for h in 0..2 {
                            let dot: i32 = (h * BLOCK / 2..(h + 1) * BLOCK / 2)
                                .map(|e| q6k_value(low, high, blk, j, e) * xb[e] as i32)
                                .sum();
                            let sw =
                                q6k_half_scale(d[sb].to_f32(), scale[(blk * 2 + h) * GROUP + j]);
                            acc = (dot as f32).mul_add(sw * x.scales[b], acc);
                        }
                    }
                    Blocks::Q4_1 { .. } | Blocks::Q4K { .. } => {
                        if let Some((nibbles, ds, ms)) = w.blocks.nibble_block(g, kb, b, j) {
                            let dot = nibble_dot(nibbles, blk, j, xb);
                            acc = dot.mul_add(ds * x.scales[b], acc);
                            offset = ms.mul_add(x.sums[b], offset);
                        }
                    }
                }
            }
            *r = acc + offset;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! The grouped kernels, generated twice: with AVX-512 VNNI (`vpdpbusd`: four u8 x i8
    //! products summed into each i32 lane in one instruction) and with plain AVX2.
    use super::{Blocks, Kernel, Q8Matrix, XRow, ACT_TILE, BLOCK, GROUP, SUPER_BLOCKS};
    use std::arch::x86_64::*;

    /// Every kernel this CPU runs, best first. `PROVENANCE_NO_VNNI` leaves out the VNNI one
    /// (to measure or check the AVX2 path on a VNNI machine).
    pub(super) fn detected() -> Vec<(&'static str, Kernel)> {
        let mut kernels = Vec::new();
        if !(is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c"))
        {
            return kernels;
        }
        if std::env::var_os("PROVENANCE_NO_VNNI").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
        {
            kernels.push(("vnni", vnni::dot_group as Kernel));
        }
        kernels.push(("avx2", avx2::dot_group as Kernel));
        kernels
    }

    /// The best kernel this CPU runs, if any (detected once).
    pub(super) fn pick() -> Option<Kernel> {
        use std::sync::OnceLock;
        static PICK: OnceLock<Option<Kernel>> = OnceLock::new();
        *PICK.get_or_init(|| detected().first().map(|&(_, k)| k))
    }

    /// Bytes ahead of a weight stream that a kernel asks for. Measured on decode of a
    /// Qwen2.5-1.5B-sized model (2-core Zen 4): none 33 tok/s, 2 KiB 38, 3 KiB 39.
    const PREFETCH_AHEAD: usize = 3072;

    /// Asks for the cache lines `PREFETCH_AHEAD` past the `len` bytes at `p` (a weight
    /// stream read in order). A hint: nothing faults past the end of the data.
    #[inline(always)]
    unsafe fn prefetch(p: *const u8, len: usize) {
        for off in (0..len).step_by(64) {
            _mm_prefetch(
                p.wrapping_add(PREFETCH_AHEAD + off) as *const i8,
                _MM_HINT_T0,
            );
        }
    }

    /// Eight f16 values at `p` as f32.
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn halves(p: *const half::f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// Four activation bytes starting at `p`, in every lane.
    #[inline(always)]
    unsafe fn broadcast4(p: *const i8) -> __m256i {
        _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }

    macro_rules! kernels {
        ($features:literal, $q8_prepare:ident, $q8_dot:ident, $q8_init:ident, $q4_dot:ident) => {
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn dot_group(
                w: &Q8Matrix,
                g: usize,
                xs: &[XRow],
                res: &mut [[f32; GROUP]; ACT_TILE],
                stream: bool,
            ) {
                // The prefetching kernel is a build of its own: with the hints in every
                // kernel, even skipped at run time, prefill (which finds its weights in
                // cache) ran about 13% slower.
                match (xs.len(), stream) {
                    (1, true) => tile::<1, true>(w, g, xs, res),
                    (1, false) => tile::<1, false>(w, g, xs, res),
                    (2, _) => tile::<2, false>(w, g, xs, res),
                    (3, _) => tile::<3, false>(w, g, xs, res),
                    _ => tile::<ACT_TILE, false>(w, g, xs, res),
                }
            }

            #[target_feature(enable = $features)]
            unsafe fn tile<const N: usize, const STREAM: bool>(
                w: &Q8Matrix,
                g: usize,
                xs: &[XRow],
                res: &mut [[f32; GROUP]; ACT_TILE],
            ) {
                let kb = w.cols / BLOCK;
                assert!(xs.len() >= N && N <= ACT_TILE);
                for x in &xs[..N] {
                    assert!(x.qs.len() >= kb * BLOCK && x.scales.len() >= kb);
                    assert!(x.sums.len() >= kb && x.isums.len() >= kb && x.hsums.len() >= kb);
                }
                let mut acc = [_mm256_setzero_ps(); N];
                let mut offset = [_mm256_setzero_ps(); N];
                match &w.blocks {
                    Blocks::Q8 { qs, scales } => {
                        assert!((g + 1) * kb * GROUP <= scales.len());
                        assert!((g + 1) * kb * GROUP * BLOCK <= qs.len());
                        for b in 0..kb {
                            let blk = g * kb + b;
                            let wp = qs.as_ptr().add(blk * GROUP * BLOCK);
                            if STREAM {
                                prefetch(wp as *const u8, GROUP * BLOCK);
                            }
                            let wv = q8_runs(wp);
                            let sw = halves(scales.as_ptr().add(blk * GROUP));
                            // Two chains per activation row halve the dependency depth.
                            let mut s0 = [_mm256_setzero_si256(); N];
                            let mut s1 = [_mm256_setzero_si256(); N];
                            for i in 0..N {
                                s0[i] = $q8_init(*xs[i].isums.get_unchecked(b));
                            }
                            for k in (0..8).step_by(2) {
                                for i in 0..N {
                                    let xp = xs[i].qs.as_ptr().add(b * BLOCK + k * 4);
                                    s0[i] = $q8_dot(s0[i], wv[k], broadcast4(xp));
                                    s1[i] = $q8_dot(s1[i], wv[k + 1], broadcast4(xp.add(4)));
                                }
                            }
                            for i in 0..N {
                                let dot = _mm256_cvtepi32_ps(_mm256_add_epi32(s0[i], s1[i]));
                                let d = _mm256_mul_ps(
                                    sw,
                                    _mm256_set1_ps(*xs[i].scales.get_unchecked(b)),
                                );
                                acc[i] = _mm256_fmadd_ps(dot, d, acc[i]);
                            }
                        }
                    }
                    Blocks::Q6K {
                        low,
                        high,
                        scale,
                        d,
                    } => {
                        let ksb = kb / SUPER_BLOCKS;
                        assert!((g + 1) * kb * GROUP * BLOCK / 2 <= low.len());
                        assert!((g + 1) * kb * GROUP * BLOCK / 4 <= high.len());
                        assert!((g + 1) * kb * 2 * GROUP <= scale.len());
                        assert!((g + 1) * ksb * GROUP <= d.len());
                        let nib = _mm256_set1_epi8(0x0F);
                        let top = _mm256_set1_epi8(0x30);
                        for b in 0..kb {
                            let blk = g * kb + b;
                            let lp = low.as_ptr().add(blk * GROUP * BLOCK / 2);
                            let hp = high.as_ptr().add(blk * GROUP * BLOCK / 4);
                            if STREAM {
                                prefetch(lp, GROUP * BLOCK / 2);
                                prefetch(hp, GROUP * BLOCK / 4);
                            }
                            let h = [
                                _mm256_loadu_si256(hp as *const __m256i),
                                _mm256_loadu_si256(hp.add(32) as *const __m256i),
                            ];
                            // Run 4x + r's top bits sit at bits 2r of h[x]; moved to bits 4-5.
                            let tops = |x: usize, r: usize| {
                                let v = match r {
                                    0 => _mm256_slli_epi16(h[x], 4),
                                    1 => _mm256_slli_epi16(h[x], 2),
                                    2 => h[x],
                                    _ => _mm256_srli_epi16(h[x], 2),
                                };
                                _mm256_and_si256(v, top)
                            };
                            // Unsigned q in 0..64; the 32 of q - 32 comes out through the
                            // initial sums.
                            let mut wv = [_mm256_setzero_si256(); 8];
                            for k in 0..4 {
                                let r = _mm256_loadu_si256(lp.add(k * 32) as *const __m256i);
                                wv[k] = _mm256_or_si256(_mm256_and_si256(r, nib), tops(0, k));
                                wv[4 + k] = _mm256_or_si256(
                                    _mm256_and_si256(_mm256_srli_epi16(r, 4), nib),
                                    tops(1, k),
                                );
                            }
                            let dv = halves(d.as_ptr().add((g * ksb + b / SUPER_BLOCKS) * GROUP));
                            let half_scale = |hh: usize| {
                                let eight =
                                    _mm_loadl_epi64(scale.as_ptr().add((blk * 2 + hh) * GROUP)
                                        as *const __m128i);
                                // The same f32 products as `q6k_half_scale`.
                                _mm256_mul_ps(dv, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(eight)))
                            };
                            let (sw0, sw1) = (half_scale(0), half_scale(1));
                            // Runs 0..4 hold the first 16 values, runs 4..8 the last 16.
                            let mut s0 = [_mm256_setzero_si256(); N];
                            let mut s1 = [_mm256_setzero_si256(); N];
                            for i in 0..N {
                                let (all, first) =
                                    (*xs[i].isums.get_unchecked(b), *xs[i].hsums.get_unchecked(b));
                                s0[i] = _mm256_set1_epi32(-32 * first);
                                s1[i] = _mm256_set1_epi32(-32 * (all - first));
                            }
                            for k in 0..4 {
                                for i in 0..N {
                                    let xp = xs[i].qs.as_ptr().add(b * BLOCK + k * 4);
                                    s0[i] = $q4_dot(s0[i], wv[k], broadcast4(xp));
                                    s1[i] = $q4_dot(s1[i], wv[k + 4], broadcast4(xp.add(16)));
                                }
                            }
                            for i in 0..N {
                                let sx = _mm256_set1_ps(*xs[i].scales.get_unchecked(b));
                                let dot0 = _mm256_cvtepi32_ps(s0[i]);
                                let dot1 = _mm256_cvtepi32_ps(s1[i]);
                                acc[i] = _mm256_fmadd_ps(dot0, _mm256_mul_ps(sw0, sx), acc[i]);
                                acc[i] = _mm256_fmadd_ps(dot1, _mm256_mul_ps(sw1, sx), acc[i]);
                            }
                        }
                    }
                    Blocks::Q4_1 { nibbles, d, m } => {
                        assert!((g + 1) * kb * GROUP <= d.len() && (g + 1) * kb * GROUP <= m.len());
                        assert!((g + 1) * kb * GROUP * BLOCK / 2 <= nibbles.len());
                        for b in 0..kb {
                            let blk = g * kb + b;
                            let sd = halves(d.as_ptr().add(blk * GROUP));
                            let sm = halves(m.as_ptr().add(blk * GROUP));
                            let wp = nibbles.as_ptr().add(blk * GROUP * BLOCK / 2);
                            q4_block::<N, STREAM>(wp, sd, sm, xs, b, &mut acc, &mut offset);
                        }
                    }
                    Blocks::Q4K {
                        nibbles,
                        scale,
                        min,
                        d,
                        dmin,
                    } => {
                        let ksb = kb / SUPER_BLOCKS;
                        assert!((g + 1) * kb * GROUP <= scale.len());
                        assert!((g + 1) * kb * GROUP <= min.len());
                        assert!((g + 1) * ksb * GROUP <= d.len());
                        assert!((g + 1) * ksb * GROUP <= dmin.len());
                        assert!((g + 1) * kb * GROUP * BLOCK / 2 <= nibbles.len());
                        let sign = _mm256_set1_ps(-0.0);
                        for b in 0..kb {
                            let blk = g * kb + b;
                            let sb = (g * ksb + b / SUPER_BLOCKS) * GROUP;
                            let bytes = |v: &[u8]| {
                                let eight =
                                    _mm_loadl_epi64(v.as_ptr().add(blk * GROUP) as *const __m128i);
                                _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(eight))
                            };
                            // The same f32 products as `q4k_block_scales`.
                            let sd = _mm256_mul_ps(halves(d.as_ptr().add(sb)), bytes(scale));
                            let sm = _mm256_xor_ps(
                                _mm256_mul_ps(halves(dmin.as_ptr().add(sb)), bytes(min)),
                                sign,
                            );
                            let wp = nibbles.as_ptr().add(blk * GROUP * BLOCK / 2);
                            q4_block::<N, STREAM>(wp, sd, sm, xs, b, &mut acc, &mut offset);
                        }
                    }
                }
                for i in 0..N {
                    _mm256_storeu_ps(res[i].as_mut_ptr(), _mm256_add_ps(acc[i], offset[i]));
                }
            }

            /// The eight runs of a grouped int8 block, ready for `$q8_dot`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q8_runs(wp: *const i8) -> [__m256i; 8] {
                let mut wv = [_mm256_setzero_si256(); 8];
                for (k, v) in wv.iter_mut().enumerate() {
                    *v = $q8_prepare(_mm256_loadu_si256(wp.add(k * 32) as *const __m256i));
                }
                wv
            }

            /// One grouped block of nibbles (`wp`) with its eight rows' d' (`sd`) and m'
            /// (`sm`) times block `b` of each activation row.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn q4_block<const N: usize, const STREAM: bool>(
                wp: *const u8,
                sd: __m256,
                sm: __m256,
                xs: &[XRow],
                b: usize,
                acc: &mut [__m256; N],
                offset: &mut [__m256; N],
            ) {
                if STREAM {
                    prefetch(wp, GROUP * BLOCK / 2);
                }
                let low = _mm256_set1_epi8(0x0F);
                // Run k's low nibbles are elements 4k..4k+4, its high ones 16+4k..16+4k+4:
                // chunks k and 4 + k of the block.
                let mut wv = [_mm256_setzero_si256(); 8];
                for k in 0..4 {
                    let r = _mm256_loadu_si256(wp.add(k * 32) as *const __m256i);
                    wv[k] = _mm256_and_si256(r, low);
                    wv[4 + k] = _mm256_and_si256(_mm256_srli_epi16(r, 4), low);
                }
                let mut s0 = [_mm256_setzero_si256(); N];
                let mut s1 = [_mm256_setzero_si256(); N];
                for k in (0..8).step_by(2) {
                    for i in 0..N {
                        let xp = xs[i].qs.as_ptr().add(b * BLOCK + k * 4);
                        s0[i] = $q4_dot(s0[i], wv[k], broadcast4(xp));
                        s1[i] = $q4_dot(s1[i], wv[k + 1], broadcast4(xp.add(4)));
                    }
                }
                for i in 0..N {
                    let dot = _mm256_cvtepi32_ps(_mm256_add_epi32(s0[i], s1[i]));
                    let x = &xs[i];
                    let dx = _mm256_mul_ps(sd, _mm256_set1_ps(*x.scales.get_unchecked(b)));
                    acc[i] = _mm256_fmadd_ps(dot, dx, acc[i]);
                    offset[i] =
                        _mm256_fmadd_ps(sm, _mm256_set1_ps(*x.sums.get_unchecked(b)), offset[i]);
                }
            }
        };
    }

    pub(super) mod vnni {
        use super::*;

        /// Signed weights as unsigned bytes (w + 128) for `vpdpbusd`; `q8_init` takes the
        /// 128 * sum(x) this adds back out.
        #[inline]
        #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
        unsafe fn q8_prepare(w: __m256i) -> __m256i {
            _mm256_xor_si256(w, _mm256_set1_epi8(-128))
        }

        #[inline]
        #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
        unsafe fn q8_init(sum_x: i32) -> __m256i {
            _mm256_set1_epi32(-128 * sum_x)
        }

        #[inline]
        #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
        unsafe fn dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(acc, w, x)
        }

        kernels!(
            "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
            q8_prepare,
            dot,
            q8_init,
            dot
        );
    }

    pub(super) mod avx2 {
        use super::*;

        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn q8_prepare(w: __m256i) -> __m256i {
            w
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn q8_init(_sum_x: i32) -> __m256i {
            _mm256_setzero_si256()
        }

        /// Signed x signed: |w| * (x * sign(w)) as u8 x i8 pairs; |w|, |x| <= 127 so the
        /// i16 sums of pairs cannot saturate.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn q8_dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
            let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
            _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
        }

        /// Unsigned 4-bit values times signed int8: at most 15 * 128 * 2 per i16.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn q4_dot(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
            let p16 = _mm256_maddubs_epi16(w, x);
            _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
        }

        kernels!("avx2,fma,f16c", q8_prepare, q8_dot, q8_init, q4_dot);
    }
}

/// Per block of 32: scale = max|x| / 127, values rounded to int8 (ggml's Q8_0 rule).
fn quantize_rows(data: &[f32], cols: usize) -> Q8Rows {
    let blocks = data.len() / BLOCK;
    let mut qs = vec![0i8; data.len()];
    let mut scales = vec![0f32; blocks];
    let mut sums = vec![0f32; blocks];
    let mut isums = vec![0i32; blocks];
    let mut hsums = vec![0i32; blocks];
    debug_assert!(cols.is_multiple_of(BLOCK));
    for (b, (src, dst)) in data
        .chunks_exact(BLOCK)
        .zip(qs.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        let amax = src.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        // As ggml's x86 quantizer: 127 / amax, rounded half to even (its `nearest_int`
        // trick: adding 1.5 * 2^23 leaves the rounded value in the low mantissa bits, with
        // no call to libm's `roundf`, which the default x86_64 target does not inline).
        let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        let mut total = 0i32;
        for (e, (q, v)) in dst.iter_mut().zip(src).enumerate() {
            let f = v * id + 12_582_912.0;
            *q = ((f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000) as i8;
            total += *q as i32;
            if e + 1 == BLOCK / 2 {
                hsums[b] = total;
            }
        }
        // ggml stores these as f16; round the same way so our numbers match its.
        scales[b] = half::f16::from_f32(d).to_f32();
        sums[b] = half::f16::from_f32(d * total as f32).to_f32();
        isums[b] = total;
    }
    Q8Rows {
        qs,
        scales,
        sums,
        isums,
        hsums,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel this CPU runs gives the scalar fallback's numbers bit for bit, on every
    /// group (the last one partial when the rows are not a multiple of eight) and for every
    /// number of activation rows in a tile.
    fn kernels_agree_with_scalar(q: &Q8Matrix, x: &[f32], m: usize) {
        let act = quantize_rows(x, q.cols);
        let mut kernels: Vec<(&str, Kernel)> = vec![("dispatch", dot_group)];
        #[cfg(target_arch = "x86_64")]
        kernels.extend(simd::detected());
        let rows: Vec<XRow> = (0..m).map(|i| act.row(i, q.cols)).collect();
        for g in 0..q.rows.div_ceil(GROUP) {
            for n in 1..=ACT_TILE.min(m) {
                let mut want = [[0f32; GROUP]; ACT_TILE];
                scalar_dot_group(q, g, &rows[..n], &mut want);
                for ((name, kernel), stream) in kernels.iter().flat_map(|k| [(k, false), (k, true)])
                {
                    let mut got = [[0f32; GROUP]; ACT_TILE];
                    // SAFETY: `detected` lists only kernels whose features this CPU has.
                    unsafe { kernel(q, g, &rows[..n], &mut got, stream) };
                    assert_eq!(
                        got[..n],
                        want[..n],
                        "{name} (stream {stream}): group {g}, {n} rows"
                    );
                }
            }
        }
    }

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
        // Rows come back out of the interleaved groups (the last one partial) in place.
        for r in 0..n {
            for (c, v) in q.row(r).iter().enumerate() {
                assert!((v - w[r * k + c]).abs() < 0.01, "row {r} col {c}");
            }
        }
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
        kernels_agree_with_scalar(&q, &x, m);
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
        kernels_agree_with_scalar(&q, &x, 2);
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
                kernels_agree_with_scalar(q, &x, m);
                let batched = q.matmul_rows(&x, m);
                for i in 0..m {
                    let alone = q.matvec(&x[i * k..(i + 1) * k]);
                    assert_eq!(&batched[i * n..(i + 1) * n], alone.as_slice(), "row {i}");
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

    /// Q8_0, Q5_0, Q4_K and Q6_K weights land in the grouped layout exactly (the last
    /// group partial): every row equals candle's dequantization, and every kernel agrees.
    #[test]
    fn stored_types_rows_equal_candle_dequantization() {
        let (n, k, m) = (13, 512, 3);
        let (w, x) = inputs(n, k, m);
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q8_0,
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            let qt = QTensor::quantize(&wt, dtype).unwrap();
            let q = Q8Matrix::from_qtensor(&qt).unwrap();
            let dense = qt.dequantize(&Device::Cpu).unwrap();
            let dense_v = dense.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for r in 0..n {
                assert_eq!(q.row(r), dense_v[r * k..(r + 1) * k], "{dtype:?} row {r}");
            }
            kernels_agree_with_scalar(&q, &x, m);
        }
    }

    /// Weights are held about as small as the file holds them: Q4_K at 4.625 bits a weight
    /// (the file's 4.5, with a byte per 6-bit scale and min), Q6_K, Q8_0, Q5_0 (held as
    /// int8, 8.5) and Q4_1 at the file's size.
    #[test]
    fn weights_are_held_near_their_file_size() {
        let (n, k) = (16, 512);
        let (w, _) = inputs(n, k, 0);
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let sizes = [
            (GgmlDType::Q4K, 4.625),
            (GgmlDType::Q6K, 6.5625),
            (GgmlDType::Q8_0, 8.5),
            (GgmlDType::Q5_0, 8.5),
            (GgmlDType::Q4_1, 5.0),
        ];
        for (dtype, bits) in sizes {
            let q = Q8Matrix::from_qtensor(&QTensor::quantize(&wt, dtype).unwrap()).unwrap();
            assert_eq!(q.bytes() as f64 * 8.0 / (n * k) as f64, bits, "{dtype:?}");
        }
    }

    /// Bytes that are not whole rows, more rows than the matrix has, or too few rows at the
    /// end are errors, not a matrix with zeros in it.
    #[test]
    fn a_builder_refuses_bytes_that_do_not_fit() {
        let mut b = Builder::new(GgmlDType::Q8_0, 3, 64).unwrap().unwrap();
        assert_eq!(b.row_bytes(), 2 * 34);
        assert!(b.push_rows(&[0; 2 * 34 + 1]).is_err());
        assert!(b.push_rows(&[0; 4 * 2 * 34]).is_err());
        b.push_rows(&[0; 2 * 2 * 34]).unwrap();
        assert!(b.finish().is_err());
        assert!(Builder::new(GgmlDType::Q4K, 2, 128).is_err());
        assert!(Builder::new(GgmlDType::F16, 2, 64).unwrap().is_none());
    }

    /// Activations round as ggml's x86 quantizer rounds them: half to even.
    #[test]
    fn activations_round_half_to_even() {
        let mut x = vec![0f32; BLOCK];
        x[..7].copy_from_slice(&[127.0, -127.0, 2.5, 3.5, -2.5, 0.49, -3.51]);
        let q = quantize_rows(&x, BLOCK);
        assert_eq!(&q.qs[..7], &[127, -127, 2, 4, -2, 0, -4]);
        assert_eq!(q.isums[0], 0);
        assert_eq!(q.scales[0], 1.0);
    }

    #[test]
    fn rows_dequantize() {
        let wt = Tensor::from_vec(vec![0.5f32; 64], (2, 32), &Device::Cpu).unwrap();
        let q = Q8Matrix::from_dense(&wt).unwrap();
        assert!(q.row(1).iter().all(|v| (v - 0.5).abs() < 1e-2));
    }

    /// A Q6_K matrix (a scale per half block) gives exactly the dot products of its dequantized
    /// weights with the quantized activations, alone and beside other matrices.
    #[test]
    fn q6_k_products_are_exact_on_quantized_activations() {
        let (n, k, m) = (11, 256, 5);
        let (w, x) = inputs(n, k, m);
        let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let q = Q8Matrix::from_qtensor(&QTensor::quantize(&wt, GgmlDType::Q6K).unwrap()).unwrap();
        let act = quantize_rows(&x, k);
        let got = q.matmul_rows(&x, m);
        for i in 0..m {
            for r in 0..n {
                let row = q.row(r);
                // The 16-value halves, each with its own scale, in f64: the kernel's f32
                // sums of the same terms must land within rounding of it.
                let want: f64 = (0..k)
                    .map(|e| {
                        row[e] as f64
                            * act.qs[i * k + e] as f64
                            * act.scales[i * k / BLOCK + e / BLOCK] as f64
                    })
                    .sum();
                let g = got[i * n + r] as f64;
                assert!(
                    (g - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "row {r} x {i}: {g} vs {want}"
                );
            }
        }
        let other = Q8Matrix::from_dense(&wt).unwrap();
        let [a, b] = Q8Matrix::matmul_group([&q, &other], &x, m);
        assert_eq!(a, got);
        assert_eq!(b, other.matmul_rows(&x, m));
    }
}
