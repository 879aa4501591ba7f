//! Model equality testing (Gao et al. 2025, "Model Equality Testing: Which Model Is This
//! API Serving?"): are the suspect's sampled answers drawn from the same distribution as
//! the reference's? A two-sample test with the maximum mean discrepancy (MMD) under a
//! Hamming kernel, p-value by permutation. It needs no log-probabilities.
//!
//! Samples are compared as character sequences (so tokenizers do not matter), padded to
//! the longest answer of their prompt and cut at [`EqualityOptions::max_chars`]. The
//! kernel is zero between answers to different prompts, so the statistic is the mean
//! over prompts of each prompt's unbiased MMD², and permutations shuffle the labels
//! within each prompt.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::{clip, ProbeScore, SignalOutcome};
use crate::probes::ProbeKind;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EqualityOptions {
    pub permutations: usize,
    pub seed: u64,
    /// Characters of each answer compared.
    pub max_chars: usize,
}

impl Default for EqualityOptions {
    fn default() -> Self {
        Self {
            permutations: 1000,
            seed: 0,
            max_chars: 64,
        }
    }
}

/// Answers of both models to one sampling prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleGroup {
    pub probe_id: String,
    pub reference: Vec<String>,
    pub suspect: Vec<String>,
}

/// Share of positions where two padded sequences agree (padding agrees with padding).
pub fn hamming_kernel(a: &[char], b: &[char], len: usize) -> f64 {
    if len == 0 {
        return 1.0;
    }
    let same = (0..len).filter(|&i| a.get(i) == b.get(i)).count();
    same as f64 / len as f64
}

/// One prompt's kernel matrix over reference samples followed by suspect samples.
struct Block {
    n: usize,
    m: usize,
    kernel: Vec<f64>,
}

impl Block {
    fn new(group: &SampleGroup, max_chars: usize) -> Block {
        let seqs: Vec<Vec<char>> = group
            .reference
            .iter()
            .chain(&group.suspect)
            .map(|s| s.chars().take(max_chars).collect())
            .collect();
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let size = seqs.len();
        let mut kernel = vec![0.0; size * size];
        for i in 0..size {
            for j in i..size {
                let k = hamming_kernel(&seqs[i], &seqs[j], len);
                kernel[i * size + j] = k;
                kernel[j * size + i] = k;
            }
        }
        Block {
            n: group.reference.len(),
            m: group.suspect.len(),
            kernel,
        }
    }

    /// Unbiased MMD² when the samples at `order[..n]` are labelled reference.
    fn mmd2(&self, order: &[usize]) -> f64 {
        let size = self.n + self.m;
        let (xs, ys) = order.split_at(self.n);
        let k = |a: usize, b: usize| self.kernel[a * size + b];
        let within = |set: &[usize]| -> f64 {
            let mut sum = 0.0;
            for (i, &a) in set.iter().enumerate() {
                for &b in &set[i + 1..] {
                    sum += 2.0 * k(a, b);
                }
            }
            sum
        };
        let cross: f64 = xs
            .iter()
            .map(|&a| ys.iter().map(|&b| k(a, b)).sum::<f64>())
            .sum();
        let (n, m) = (self.n as f64, self.m as f64);
        within(xs) / (n * (n - 1.0)) + within(ys) / (m * (m - 1.0)) - 2.0 * cross / (n * m)
    }
}

/// Result of the test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MmdTest {
    /// Mean over prompts of the unbiased MMD² (0 when the distributions agree).
    pub mmd2: f64,
    /// Permutation p-value, (1 + #permutations at least as large) / (1 + permutations);
    /// `None` when no permutations were asked for.
    pub p_value: Option<f64>,
    pub prompts: usize,
    pub per_prompt: Vec<(String, f64)>,
}

/// MMD² over `groups` (each needs two or more samples per side; others are skipped) and,
/// if `opts.permutations > 0`, its permutation p-value.
pub fn mmd_test(groups: &[SampleGroup], opts: &EqualityOptions) -> Option<MmdTest> {
    let usable: Vec<&SampleGroup> = groups
        .iter()
        .filter(|g| g.reference.len() >= 2 && g.suspect.len() >= 2)
        .collect();
    if usable.is_empty() {
        return None;
    }
    let blocks: Vec<Block> = usable
        .iter()
        .map(|g| Block::new(g, opts.max_chars))
        .collect();
    let identity: Vec<Vec<usize>> = blocks.iter().map(|b| (0..b.n + b.m).collect()).collect();
    let per_prompt: Vec<f64> = blocks
        .iter()
        .zip(&identity)
        .map(|(b, order)| b.mmd2(order))
        .collect();
    let statistic = per_prompt.iter().sum::<f64>() / blocks.len() as f64;

    let p_value = (opts.permutations > 0).then(|| {
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let mut orders = identity.clone();
        let mut at_least = 0usize;
        for _ in 0..opts.permutations {
            let mut total = 0.0;
            for (block, order) in blocks.iter().zip(orders.iter_mut()) {
                order.shuffle(&mut rng);
                total += block.mmd2(order);
            }
            if total / blocks.len() as f64 >= statistic - 1e-12 {
                at_least += 1;
            }
        }
        (1.0 + at_least as f64) / (1.0 + opts.permutations as f64)
    });
    Some(MmdTest {
        mmd2: statistic,
        p_value,
        prompts: blocks.len(),
        per_prompt: usable
            .iter()
            .map(|g| g.probe_id.clone())
            .zip(per_prompt)
            .collect(),
    })
}

/// MMD² mapped to a similarity in [0, 1] (MMD² under a [0, 1] kernel is at most 2).
pub fn similarity(mmd2: f64) -> f64 {
    1.0 - mmd2.clamp(0.0, 2.0) / 2.0
}

/// The most common answers of a side, for people: `"42" ×5, "37" ×3`.
fn common_answers(samples: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples {
        *counts.entry(s.trim()).or_insert(0) += 1;
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked
        .iter()
        .take(3)
        .map(|(s, n)| format!("{:?} ×{n}", clip(s)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The equality signal: score = similarity of the MMD²; the permutation p-value (if run)
/// is in `extra["permutation_p"]` and tests "same distribution", not "closer than
/// controls".
pub fn signal(groups: &[SampleGroup], opts: &EqualityOptions) -> Option<(SignalOutcome, MmdTest)> {
    let test = mmd_test(groups, opts)?;
    let score = similarity(test.mmd2);
    let mut extra = BTreeMap::new();
    extra.insert("mmd2".to_string(), test.mmd2);
    if let Some(p) = test.p_value {
        extra.insert("permutation_p".to_string(), p);
    }
    let samples: usize = groups
        .iter()
        .map(|g| g.reference.len() + g.suspect.len())
        .sum();
    extra.insert("samples".to_string(), samples as f64);
    let per_probe = test
        .per_prompt
        .iter()
        .filter_map(|(id, mmd2)| {
            let group = groups.iter().find(|g| &g.probe_id == id)?;
            Some(ProbeScore {
                probe_id: id.clone(),
                kind: ProbeKind::Sampling,
                score: similarity(*mmd2),
                reference_text: common_answers(&group.reference),
                suspect_text: common_answers(&group.suspect),
                note: format!("MMD² {mmd2:.3}"),
            })
        })
        .collect();
    let detail = match test.p_value {
        Some(p) => format!(
            "MMD² {:.3} over {} prompts; same-distribution permutation p = {p:.3}",
            test.mmd2, test.prompts
        ),
        None => format!("MMD² {:.3} over {} prompts", test.mmd2, test.prompts),
    };
    let outcome = SignalOutcome {
        score,
        n: test.prompts,
        interval: None,
        extra,
        detail,
        per_probe,
    };
    Some((outcome, test))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// `count` answers drawn from `weights` over `choices`.
    fn draw(rng: &mut StdRng, choices: &[&str], weights: &[f64], count: usize) -> Vec<String> {
        let total: f64 = weights.iter().sum();
        (0..count)
            .map(|_| {
                let mut x = rng.random::<f64>() * total;
                for (c, w) in choices.iter().zip(weights) {
                    if x < *w {
                        return c.to_string();
                    }
                    x -= w;
                }
                choices[choices.len() - 1].to_string()
            })
            .collect()
    }

    fn groups(seed: u64, suspect_weights: &[f64]) -> Vec<SampleGroup> {
        let mut rng = StdRng::seed_from_u64(seed);
        let choices = ["42", "37", "7", "73", "fifty"];
        let reference = [0.4, 0.3, 0.15, 0.1, 0.05];
        (0..4)
            .map(|i| SampleGroup {
                probe_id: format!("p{i}"),
                reference: draw(&mut rng, &choices, &reference, 24),
                suspect: draw(&mut rng, &choices, suspect_weights, 24),
            })
            .collect()
    }

    #[test]
    fn kernel() {
        let a: Vec<char> = "abcd".chars().collect();
        let b: Vec<char> = "abxy".chars().collect();
        assert_eq!(hamming_kernel(&a, &b, 4), 0.5);
        assert_eq!(hamming_kernel(&a, &a[..2], 4), 0.5);
        assert_eq!(hamming_kernel(&a, &a, 4), 1.0);
    }

    #[test]
    fn same_distribution_is_not_rejected() {
        let opts = EqualityOptions::default();
        let test = mmd_test(&groups(1, &[0.4, 0.3, 0.15, 0.1, 0.05]), &opts).expect("runs");
        let p = test.p_value.unwrap_or(0.0);
        assert!(p > 0.05, "p = {p}");
        assert!(test.mmd2.abs() < 0.1);
    }

    #[test]
    fn different_distribution_is_rejected() {
        let opts = EqualityOptions::default();
        let test = mmd_test(&groups(2, &[0.05, 0.05, 0.1, 0.3, 0.5]), &opts).expect("runs");
        let p = test.p_value.unwrap_or(1.0);
        assert!(p < 0.01, "p = {p}");
        assert!(similarity(test.mmd2) < 1.0);
        // Reproducible with the same seed.
        let again = mmd_test(&groups(2, &[0.05, 0.05, 0.1, 0.3, 0.5]), &opts).expect("runs");
        assert_eq!(test, again);
    }
}
