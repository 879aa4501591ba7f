//! A compact view of the model's whole next-token distribution at one position, kept when
//! another model's sampled text is read back: enough to ask later, at any temperature and
//! truncation, where the written token fell in the distribution (`compare::sampled`),
//! without keeping a full-vocabulary row (1 MiB for Gemma) per position.

use serde::Serialize;

/// Most likely tokens whose gaps are kept one by one.
pub const TOP: usize = 24;

/// Gap buckets for the tail sums: 1/64 nat wide up to 64 nats (beyond, exp(-64/1.6) is
/// 4e-18 per token and counts for nothing against the top tokens).
const BUCKETS_PER_NAT: f32 = 64.0;
const BUCKETS: usize = 64 * 64;

/// One position of a read-back, seen whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// Gaps (nats below the most likely token) of the [`TOP`] most likely tokens (fewer
    /// in a smaller vocabulary), ascending; the first is 0.
    pub top: Vec<f32>,
    /// The written token's gap.
    pub gap: f32,
    /// The written token's rank: how many tokens are more likely (0 for the top one).
    pub rank: u32,
    /// ln Σ exp(−gap / T) over every token past the first [`TOP`], at each of the
    /// temperatures asked for; −inf when there are none.
    pub tail: Vec<f32>,
}

impl Spread {
    /// The view of `logits` with `token` written, the tail summed at each of
    /// `temperatures`; `token` must be inside the vocabulary.
    pub fn of(logits: &[f32], token: u32, temperatures: &[f32]) -> Spread {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let chosen = logits
            .get(token as usize)
            .copied()
            .unwrap_or(f32::NEG_INFINITY);
        let top_ids = super::top_k(logits, TOP);
        let top = top_ids.iter().map(|(_, l)| max - l).collect();
        // Bucketed gaps of the whole vocabulary, the top tokens taken out again, so each
        // temperature's tail sum costs BUCKETS exponentials rather than the vocabulary.
        let mut counts = vec![0u32; BUCKETS];
        let bucket = |gap: f32| ((gap * BUCKETS_PER_NAT) as usize).min(BUCKETS);
        let mut rank = 0u32;
        for &l in logits {
            if l > chosen {
                rank += 1;
            }
            if let Some(c) = counts.get_mut(bucket(max - l)) {
                *c += 1;
            }
        }
        for (_, l) in &top_ids {
            if let Some(c) = counts.get_mut(bucket(max - l)) {
                *c -= 1;
            }
        }
        let tail = temperatures
            .iter()
            .map(|&t| {
                let sum: f64 = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &c)| c > 0)
                    .map(|(b, &c)| {
                        let gap = (b as f64 + 0.5) / BUCKETS_PER_NAT as f64;
                        c as f64 * (-gap / t as f64).exp()
                    })
                    .sum();
                if sum > 0.0 {
                    sum.ln() as f32
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect();
        Spread {
            top,
            gap: max - chosen,
            rank,
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_sums_what_the_top_leaves_out() {
        // 100 tokens, logits 0, -0.1, -0.2, …: the top 24 kept, 76 in the tail.
        let logits: Vec<f32> = (0..100).map(|i| -0.1 * i as f32).collect();
        let temperatures = [0.2f32, 0.5, 1.0, 1.6];
        let s = Spread::of(&logits, 30, &temperatures);
        assert_eq!(s.rank, 30);
        assert!((s.gap - 3.0).abs() < 1e-5);
        assert_eq!(s.top.len(), TOP);
        assert!(s.top[0].abs() < 1e-6 && (s.top[23] - 2.3).abs() < 1e-5);
        for (k, t) in temperatures.iter().enumerate() {
            let exact: f64 = (24..100).map(|i| (-0.1 * i as f64 / *t as f64).exp()).sum();
            let off = (s.tail[k] as f64 - exact.ln()).abs();
            assert!(off < 0.03, "T {t}: {} against {}", s.tail[k], exact.ln());
        }
    }

    #[test]
    fn a_small_vocabulary_has_no_tail() {
        let s = Spread::of(&[1.0, 0.0, 2.0], 1, &[0.5, 1.0]);
        assert_eq!(s.rank, 2);
        assert_eq!(s.tail, vec![f32::NEG_INFINITY; 2]);
        assert_eq!(s.top, vec![0.0, 1.0, 2.0]);
    }
}
