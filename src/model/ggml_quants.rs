//! ggml's reference K-quantizers (`quantize_row_q{2,3,4,5,6}_K_ref` in llama.cpp's
//! `ggml-quants.c`), ported line by line so that a matrix quantized here has the bytes
//! `llama-quantize` writes for it without an importance matrix.
//!
//! candle's own K-quantizers follow an older ggml (Q2_K, Q4_K and Q5_K fit their scales with
//! `make_qkx1_quants`, and its `nearest_int` rounds halves away from zero where ggml's
//! rounds them to even), so a form made with them differs from the llama-quantize copy it
//! stands for in a quarter to a half of its bytes; the quantized forms of a reference
//! (`crate::quantized_forms`) are only as close to real copies as these bytes are.
//! `tests/llama_cpp.rs` compares every tensor with llama-quantize's output.

use candle_core::quantized::GgmlDType;
use half::f16;

const QK_K: usize = 256;
const GROUP_MAX_EPS: f32 = 1e-15;

/// `x` quantized to `dtype` as ggml's reference quantizer does, as the raw blocks of a GGUF
/// tensor; `None` for a type this module does not cover or a length that is not a whole
/// number of 256-value super-blocks.
pub fn quantize(dtype: GgmlDType, x: &[f32]) -> Option<Vec<u8>> {
    if x.is_empty() || !x.len().is_multiple_of(QK_K) {
        return None;
    }
    let blocks = x.chunks_exact(QK_K);
    let mut out = Vec::new();
    match dtype {
        GgmlDType::Q2K => blocks.for_each(|b| q2_k(b, &mut out)),
        GgmlDType::Q3K => blocks.for_each(|b| q3_k(b, &mut out)),
        GgmlDType::Q4K => blocks.for_each(|b| q4_k(b, &mut out)),
        GgmlDType::Q5K => blocks.for_each(|b| q5_k(b, &mut out)),
        GgmlDType::Q6K => blocks.for_each(|b| q6_k(b, &mut out)),
        _ => return None,
    }
    Some(out)
}

/// ggml's `nearest_int`: the magic-number trick, which rounds halves to even.
fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

fn fp16(v: f32) -> f16 {
    f16::from_f32(v)
}

fn put_f16(out: &mut Vec<u8>, v: f16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// The value of largest magnitude (the first of equals), or `None` when all are zero.
fn largest_magnitude(x: &[f32]) -> Option<f32> {
    let (mut max, mut amax) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (amax >= GROUP_MAX_EPS).then_some(max)
}

fn make_qx_quants(x: &[f32], nmax: i32, l_out: &mut [i8], rmse_type: i32) -> f32 {
    let n = x.len();
    let Some(max) = largest_magnitude(x) else {
        l_out[..n].fill(0);
        return 0.0;
    };
    let clamp = |l: i32| l.clamp(-nmax, nmax - 1);
    let weight = |v: f32| match rmse_type {
        1 => v * v,
        2 => 1.0,
        3 => v.abs(),
        _ => v.abs().sqrt(),
    };
    let mut iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    for i in 0..n {
        let l = clamp(nearest_int(iscale * x[i]));
        l_out[i] = (l + nmax) as i8;
        let w = weight(x[i]);
        sumlx += w * x[i] * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &v in x {
            let l = clamp(nearest_int(iscale * v));
            let w = weight(v);
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for i in 0..n {
                l_out[i] = (nmax + clamp(nearest_int(iscale * x[i]))) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

fn make_q3_quants(x: &[f32], nmax: i32, l_out: &mut [i8]) -> f32 {
    let n = x.len();
    let Some(max) = largest_magnitude(x) else {
        l_out[..n].fill(0);
        return 0.0;
    };
    let iscale = -(nmax as f32) / max;
    let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
    let mut l = [0i32; 16];
    for i in 0..n {
        l[i] = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
        let w = x[i] * x[i];
        sumlx += w * x[i] * l[i] as f32;
        suml2 += w * l[i] as f32 * l[i] as f32;
    }
    for _ in 0..5 {
        let mut changed = 0;
        for i in 0..n {
            let w = x[i] * x[i];
            let mut slx = sumlx - w * x[i] * l[i] as f32;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * l[i] as f32 * l[i] as f32;
                let new_l = nearest_int(x[i] * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != l[i] {
                    slx += w * x[i] * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l[i] = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        changed += 1;
                    }
                }
            }
        }
        if changed == 0 {
            break;
        }
    }
    for i in 0..n {
        l_out[i] = (l[i] + nmax) as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Returns `(scale, the_min)` and writes the levels to `l_out`.
#[allow(clippy::too_many_arguments)]
fn make_qkx2_quants(
    x: &[f32],
    weights: &[f32],
    nmax: i32,
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    use_mad: bool,
) -> (f32, f32) {
    let n = x.len();
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += weights[i];
        sum_x += weights[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out[..n].fill(0);
        return (0.0, -min);
    }
    let err = |d: f32| if use_mad { d.abs() } else { d * d };
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        best_error += weights[i] * err(scale * l as f32 + min - x[i]);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let (w, l) = (weights[i], l as f32);
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                cur_error += weights[i] * err(this_scale * laux[i] as f32 + this_min - x[i]);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Packs 2-bit levels four to a byte, 128 values at a time (Q2_K and Q3_K).
fn pack_2bit(l: &[u8; QK_K]) -> [u8; QK_K / 4] {
    let mut qs = [0u8; QK_K / 4];
    for j in (0..QK_K).step_by(128) {
        for i in 0..32 {
            qs[j / 4 + i] =
                l[j + i] | (l[j + i + 32] << 2) | (l[j + i + 64] << 4) | (l[j + i + 96] << 6);
        }
    }
    qs
}

fn q2_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; QK_K];
    let mut mins = [0f32; QK_K / 16];
    let mut scales = [0f32; QK_K / 16];
    let q4scale = 15.0f32;
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 16 {
        let xs = &x[16 * j..16 * j + 16];
        let weights: [f32; 16] = std::array::from_fn(|l| xs[l].abs());
        let (scale, min) = make_qkx2_quants(xs, &weights, 3, &mut l[16 * j..], -0.5, 0.1, 15, true);
        scales[j] = scale;
        mins[j] = min;
        max_scale = max_scale.max(scale);
        max_min = max_min.max(min);
    }
    let mut sc = [0u8; QK_K / 16];
    let d = if max_scale > 0.0 {
        let iscale = q4scale / max_scale;
        for j in 0..QK_K / 16 {
            sc[j] = nearest_int(iscale * scales[j]) as u8;
        }
        fp16(max_scale / q4scale)
    } else {
        fp16(0.0)
    };
    let dmin = if max_min > 0.0 {
        let iscale = q4scale / max_min;
        for j in 0..QK_K / 16 {
            sc[j] |= (nearest_int(iscale * mins[j]) << 4) as u8;
        }
        fp16(max_min / q4scale)
    } else {
        fp16(0.0)
    };
    for j in 0..QK_K / 16 {
        let dl = d.to_f32() * (sc[j] & 0xF) as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * (sc[j] >> 4) as f32;
        for ii in 0..16 {
            l[16 * j + ii] = nearest_int((x[16 * j + ii] + dm) / dl).clamp(0, 3) as u8;
        }
    }
    out.extend_from_slice(&sc);
    out.extend_from_slice(&pack_2bit(&l));
    put_f16(out, d);
    put_f16(out, dmin);
}

fn q3_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut amax) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 16 {
        scales[j] = make_q3_quants(&x[16 * j..16 * j + 16], 4, &mut l[16 * j..]);
        if scales[j].abs() > amax {
            amax = scales[j].abs();
            max_scale = scales[j];
        }
    }
    let mut sc = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for j in 0..QK_K / 16 {
            // ggml stores nearest_int's result in an int8_t before clamping it.
            let v = (nearest_int(iscale * scales[j]) as i8).clamp(-32, 31) + 32;
            let v = v as u8;
            if j < 8 {
                sc[j] = v & 0xF;
            } else {
                sc[j - 8] |= (v & 0xF) << 4;
            }
            sc[j % 4 + 8] |= (v >> 4) << (2 * (j / 4));
        }
        fp16(1.0 / iscale)
    } else {
        fp16(0.0)
    };
    for j in 0..QK_K / 16 {
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let s = (low | (((sc[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) as i32 - 32;
        let dl = d.to_f32() * s as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dl).clamp(-4, 3) + 4) as i8;
        }
    }
    let mut hmask = [0u8; QK_K / 8];
    let mut low = [0u8; QK_K];
    let (mut m, mut hm) = (0usize, 1u8);
    for j in 0..QK_K {
        let mut v = l[j] as u8;
        if v > 3 {
            hmask[m] |= hm;
            v -= 4;
        }
        low[j] = v;
        m += 1;
        if m == QK_K / 8 {
            m = 0;
            hm <<= 1;
        }
    }
    out.extend_from_slice(&hmask);
    out.extend_from_slice(&pack_2bit(&low));
    out.extend_from_slice(&sc);
    put_f16(out, d);
}

/// Q4_K and Q5_K share their scale search and packing of the 6-bit scales and mins.
fn k_scales(
    x: &[f32],
    nmax: i32,
    rmin: f32,
    nstep: i32,
    l: &mut [u8; QK_K],
) -> (f16, f16, [u8; 12]) {
    let mut mins = [0f32; QK_K / 32];
    let mut scales = [0f32; QK_K / 32];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..QK_K / 32 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().fold(0.0, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        let weights: [f32; 32] = std::array::from_fn(|l| av_x + xs[l].abs());
        let (scale, min) = make_qkx2_quants(
            xs,
            &weights,
            nmax,
            &mut l[32 * j..],
            rmin,
            0.1,
            nstep,
            false,
        );
        scales[j] = scale;
        mins[j] = min;
        max_scale = max_scale.max(scale);
        max_min = max_min.max(min);
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut sc = [0u8; 12];
    for j in 0..QK_K / 32 {
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            sc[j] = ls;
            sc[j + 4] = lm;
        } else {
            sc[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4);
            sc[j - 4] |= (ls >> 4) << 6;
            sc[j] |= (lm >> 4) << 6;
        }
    }
    let (d, dmin) = (fp16(max_scale / 63.0), fp16(max_min / 63.0));
    for j in 0..QK_K / 32 {
        let (s, m) = get_scale_min_k4(j, &sc);
        let dl = d.to_f32() * s as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dl).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, sc)
}

fn q4_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; QK_K];
    let (d, dmin, sc) = k_scales(x, 15, -1.0, 20, &mut l);
    put_f16(out, d);
    put_f16(out, dmin);
    out.extend_from_slice(&sc);
    for j in (0..QK_K).step_by(64) {
        for i in 0..32 {
            out.push(l[j + i] | (l[j + i + 32] << 4));
        }
    }
}

fn q5_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0u8; QK_K];
    let (d, dmin, sc) = k_scales(x, 31, -0.5, 15, &mut l);
    let mut qh = [0u8; QK_K / 8];
    let mut ql = [0u8; QK_K / 2];
    let (mut m1, mut m2) = (1u8, 2u8);
    for (chunk, n) in (0..QK_K).step_by(64).enumerate() {
        for j in 0..32 {
            let mut l1 = l[n + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[n + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            ql[32 * chunk + j] = l1 | (l2 << 4);
        }
        m1 = m1.wrapping_shl(2);
        m2 = m2.wrapping_shl(2);
    }
    put_f16(out, d);
    put_f16(out, dmin);
    out.extend_from_slice(&sc);
    out.extend_from_slice(&qh);
    out.extend_from_slice(&ql);
}

fn q6_k(x: &[f32], out: &mut Vec<u8>) {
    let mut l = [0i8; QK_K];
    let mut scales = [0f32; QK_K / 16];
    let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
    for ib in 0..QK_K / 16 {
        let scale = make_qx_quants(&x[16 * ib..16 * ib + 16], 32, &mut l[16 * ib..], 1);
        scales[ib] = scale;
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        out.extend(std::iter::repeat_n(0u8, 3 * QK_K / 4 + QK_K / 16));
        put_f16(out, fp16(0.0));
        return;
    }
    let iscale = -128.0 / max_scale;
    let d = fp16(1.0 / iscale);
    let mut sc = [0i8; QK_K / 16];
    for ib in 0..QK_K / 16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..QK_K / 16 {
        let dl = d.to_f32() * sc[j] as f32;
        if dl == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dl).clamp(-32, 31) + 32) as i8;
        }
    }
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    for (half, j) in (0..QK_K).step_by(128).enumerate() {
        let (ql, qh) = (&mut ql[64 * half..], &mut qh[32 * half..]);
        for i in 0..32 {
            let q = |k: usize| l[j + i + k] as u8;
            ql[i] = (q(0) & 0xF) | ((q(64) & 0xF) << 4);
            ql[i + 32] = (q(32) & 0xF) | ((q(96) & 0xF) << 4);
            qh[i] = (q(0) >> 4) | ((q(32) >> 4) << 2) | ((q(64) >> 4) << 4) | ((q(96) >> 4) << 6);
        }
    }
    out.extend_from_slice(&ql);
    out.extend_from_slice(&qh);
    out.extend(sc.iter().map(|&s| s as u8));
    put_f16(out, d);
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::ggml_file::qtensor_from_ggml;
    use candle_core::Device;

    fn values(n: usize) -> Vec<f32> {
        // A fixed, irregular pattern with both signs and a few large values.
        (0..n)
            .map(|i| {
                let t = i as f32 * 0.618_034;
                (t.sin() * 0.05) + if i % 97 == 0 { 0.4 } else { 0.0 }
            })
            .collect()
    }

    #[test]
    fn nearest_int_rounds_halves_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(3.4), 3);
        assert_eq!(nearest_int(-3.6), -4);
    }

    fn rms_error(x: &[f32], q: &candle_core::quantized::QTensor) -> f32 {
        let back: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .expect("dequantized");
        (x.iter()
            .zip(&back)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            / x.len() as f32)
            .sqrt()
    }

    /// candle reads the blocks written here, and they hold the values about as well as
    /// candle's own (older) quantizers do: a packing mistake would not. ggml's Q2_K fits
    /// absolute rather than squared errors, so its rms error here is 1.2x candle's.
    #[test]
    fn every_type_round_trips_as_well_as_candles_own() {
        let x = values(4 * QK_K);
        let dense =
            candle_core::Tensor::from_vec(x.clone(), (4, QK_K), &Device::Cpu).expect("tensor");
        for dtype in [
            GgmlDType::Q2K,
            GgmlDType::Q3K,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let bytes = quantize(dtype, &x).expect("a K type");
            assert_eq!(bytes.len(), x.len() / QK_K * dtype.type_size(), "{dtype:?}");
            let ours = qtensor_from_ggml(dtype, &bytes, vec![4, QK_K], &Device::Cpu)
                .expect("candle reads the blocks");
            let candles =
                candle_core::quantized::QTensor::quantize(&dense, dtype).expect("candle quantizes");
            let (a, b) = (rms_error(&x, &ours), rms_error(&x, &candles));
            assert!(a <= b * 1.3, "{dtype:?}: rms error {a} here, {b} by candle");
        }
    }

    #[test]
    fn other_types_and_ragged_lengths_are_not_covered() {
        assert!(quantize(GgmlDType::Q4_0, &values(QK_K)).is_none());
        assert!(quantize(GgmlDType::Q4K, &values(QK_K + 32)).is_none());
        assert!(quantize(GgmlDType::Q4K, &[]).is_none());
    }
}
