//! Percentile bootstrap intervals over probes, with a seeded generator so a report is
//! reproducible.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    pub resamples: usize,
    /// Two-sided coverage, e.g. 0.95.
    pub level: f64,
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// Interval for `statistic` over `n` items resampled with replacement. The statistic gets
/// the resampled item indices and may decline (`None`, e.g. kappa of one class only);
/// declined resamples are left out. `None` for fewer than two items.
pub fn interval<F>(n: usize, opts: &BootstrapOptions, statistic: F) -> Option<(f64, f64)>
where
    F: Fn(&[usize]) -> Option<f64>,
{
    if n < 2 || opts.resamples == 0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut indices = vec![0usize; n];
    let mut values = Vec::with_capacity(opts.resamples);
    for _ in 0..opts.resamples {
        for slot in indices.iter_mut() {
            *slot = rng.random_range(0..n);
        }
        if let Some(v) = statistic(&indices) {
            if v.is_finite() {
                values.push(v);
            }
        }
    }
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let tail = (1.0 - opts.level.clamp(0.0, 1.0)) / 2.0;
    Some((quantile(&values, tail), quantile(&values, 1.0 - tail)))
}

/// Interval of the mean of `values`.
pub fn mean_interval(values: &[f64], opts: &BootstrapOptions) -> Option<(f64, f64)> {
    interval(values.len(), opts, |idx| {
        Some(idx.iter().map(|&i| values[i]).sum::<f64>() / idx.len() as f64)
    })
}

/// Linear interpolation between order statistics of sorted `values`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] * (1.0 - frac) + sorted[hi] * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_the_mean_and_is_reproducible() {
        let values: Vec<f64> = (0..50).map(|i| (i % 10) as f64 / 10.0).collect();
        let opts = BootstrapOptions::default();
        let (lo, hi) = mean_interval(&values, &opts).expect("interval");
        assert!(lo < 0.45 && 0.45 < hi, "{lo} {hi}");
        assert!(hi - lo < 0.3);
        assert_eq!(mean_interval(&values, &opts), Some((lo, hi)));
        let constant = vec![0.7; 10];
        let (lo, hi) = mean_interval(&constant, &opts).expect("interval");
        assert!((lo - 0.7).abs() < 1e-12 && (hi - 0.7).abs() < 1e-12);
        assert_eq!(mean_interval(&[1.0], &opts), None);
    }
}
