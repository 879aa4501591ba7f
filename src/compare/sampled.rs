//! Where a sampling suspect's tokens fall in the reference's own distribution: the
//! probability-integral transform behind the rank-based uniformity test of Zhu et al.
//! (ICLR 2026), exact here because the reference's whole distribution is at hand. If the
//! suspect draws each token from the reference's distribution (at some temperature,
//! perhaps cut to its most likely tokens), then u = P(more likely tokens) + U · P(token)
//! is uniform on [0, 1], position by position and independently.
//!
//! The suspect's temperature is not known (it ignores the one asked for), so it is fitted
//! by maximum likelihood on a grid, and a truncating sampler (min-p, top-k) is allowed for
//! by cutting each distribution at the largest gap below the top token that the suspect
//! was seen to write (its 99.5th percentile, so one odd token does not undo the cut).
//! Rather than drawing U, each token adds the whole interval of u it could have (its
//! expected indicator), which keeps the result deterministic and only makes the
//! Kolmogorov p-value conservative.
//!
//! With the temperature fitted, uniform ranks alone are not evidence: a language model is
//! a calibrated reader of fluent text from anywhere, so another model's samples fit as
//! well as a copy's (measured in docs/history.md). What another model cannot fake is how
//! often it agrees with itself ([`collisions`]): two samples of one prompt share their
//! first tokens with the probability the reference gives at the fitted temperature only
//! if the reference is what sampled them. A model with other preferences looks hot to the
//! reference (its choices land in the reference's tail) but is as cold to itself as its
//! own temperature makes it.

use serde::{Deserialize, Serialize};

/// Temperatures the suspect's sampler is fitted over: 0.05 to 1.6 in steps of 0.05.
pub const TEMPERATURES: usize = 32;

/// The temperature of entry `k` of [`SampledToken::tail`].
pub fn temperature(k: usize) -> f64 {
    0.05 * (k + 1) as f64
}

/// Every temperature of the grid, as the read-back asks for them.
pub fn temperatures() -> Vec<f32> {
    (0..TEMPERATURES).map(|k| temperature(k) as f32).collect()
}

/// A tail sum over no tokens (JSON has no −inf).
pub const NO_TAIL: f32 = -1.0e30;

/// Fewer tokens than this say too little about a sampler's shape.
pub const MIN_TOKENS: usize = 150;

/// The token of a sampled answer's end (`read_back` scores an answer that stopped on its
/// own one position past its text, at the reference's likeliest stop token): one id for
/// every stop token, and none that text encodes to.
pub const END: u32 = u32::MAX;

/// One written token, seen by the reference at its position (read back, teacher forced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledToken {
    /// The token written (the reference's id).
    #[serde(default)]
    pub token: u32,
    /// Gaps (nats below the most likely token) of the reference's most likely tokens,
    /// ascending; the first is 0.
    pub top: Vec<f32>,
    /// The written token's gap.
    pub gap: f32,
    /// How many tokens the reference finds more likely.
    pub rank: u32,
    /// ln Σ exp(−gap / T) over the tokens past `top`, at each [`temperature`]; [`NO_TAIL`]
    /// when there are none.
    pub tail: Vec<f32>,
}

/// How well the suspect's tokens read as the reference's samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledFit {
    pub tokens: usize,
    /// The fitted temperature of the suspect's sampler.
    pub temperature: f64,
    /// The fitted cut: gaps beyond it are never drawn.
    pub cut: f64,
    /// Largest distance between the tokens' probability-integral transforms and the
    /// uniform distribution (Kolmogorov's statistic).
    pub distance: f64,
    /// Kolmogorov's p-value for that distance (conservative: see the module notes).
    pub p_value: f64,
    /// Share of the tokens that are the reference's most likely one.
    pub top1: f64,
}

/// The fit over `tokens`; `None` below [`MIN_TOKENS`] or when a token lacks the tail sums.
pub fn fit(tokens: &[SampledToken]) -> Option<SampledFit> {
    let n = tokens.len();
    if n < MIN_TOKENS || tokens.iter().any(|t| t.tail.len() != TEMPERATURES) {
        return None;
    }
    let mut gaps: Vec<f64> = tokens.iter().map(|t| t.gap as f64).collect();
    gaps.sort_by(f64::total_cmp);
    let cut = gaps[((n - 1) as f64 * 0.995) as usize];
    let best = (0..TEMPERATURES)
        .map(|k| (k, log_likelihood(tokens, k, cut)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    let intervals: Vec<(f64, f64)> = tokens.iter().map(|t| interval(t, best.0, cut)).collect();
    let distance = distance_from_uniform(&intervals);
    Some(SampledFit {
        tokens: n,
        temperature: temperature(best.0),
        cut,
        distance,
        p_value: kolmogorov_sf(distance, n),
        top1: tokens.iter().filter(|t| t.rank == 0).count() as f64 / n as f64,
    })
}

/// Σ exp(−gap / T) over the tokens the cut keeps: the top ones one by one, and the whole
/// tail once the cut reaches past them (the part of the tail beyond the cut is small at
/// any temperature the suspect is likely to use).
fn kept_mass(t: &SampledToken, k: usize, cut: f64) -> (f64, f64) {
    let top: f64 = kept_top(t, k, cut).sum();
    let reaches_tail = t.top.last().is_some_and(|last| cut >= *last as f64);
    let tail = match t.tail.get(k) {
        Some(&ln) if reaches_tail && ln > NO_TAIL => (ln as f64).exp(),
        _ => 0.0,
    };
    (top, top + tail)
}

/// exp(−gap / T) of each of the top tokens the cut keeps, most likely first.
fn kept_top(t: &SampledToken, k: usize, cut: f64) -> impl Iterator<Item = f64> + '_ {
    let temp = temperature(k);
    t.top
        .iter()
        .map(|g| *g as f64)
        .filter(move |g| *g <= cut)
        .map(move |g| (-g / temp).exp())
}

/// Log-likelihood of the tokens inside the cut under temperature `k` and the cut.
fn log_likelihood(tokens: &[SampledToken], k: usize, cut: f64) -> f64 {
    let temp = temperature(k);
    tokens
        .iter()
        .filter(|t| (t.gap as f64) <= cut)
        .map(|t| {
            let (_, z) = kept_mass(t, k, cut);
            -(t.gap as f64) / temp - z.ln()
        })
        .sum()
}

/// The interval the token's probability-integral transform lies in: exact for a token
/// among the top ones, the tail's whole share for one past them (given that the token is
/// in the tail, its transform is uniform over that share), [1, 1] beyond the cut.
fn interval(t: &SampledToken, k: usize, cut: f64) -> (f64, f64) {
    let gap = t.gap as f64;
    if gap > cut {
        return (1.0, 1.0);
    }
    let temp = temperature(k);
    let (top, z) = kept_mass(t, k, cut);
    if z <= 0.0 {
        return (0.0, 1.0);
    }
    let rank = t.rank as usize;
    if rank < t.top.len() {
        // Every token above the written one lies inside the cut too.
        let above: f64 = kept_top(t, k, cut).take(rank).sum();
        let own = (-gap / temp).exp();
        ((above / z).min(1.0), ((above + own) / z).min(1.0))
    } else {
        ((top / z).min(1.0), 1.0)
    }
}

/// sup over x of |F(x) − x|, F the mean of each interval's uniform distribution function,
/// evaluated on a fine grid of x and at every interval end.
fn distance_from_uniform(intervals: &[(f64, f64)]) -> f64 {
    let n = intervals.len() as f64;
    let cdf = |x: f64| {
        intervals
            .iter()
            .map(|&(a, b)| {
                if x >= b {
                    1.0
                } else if x <= a {
                    0.0
                } else {
                    (x - a) / (b - a)
                }
            })
            .sum::<f64>()
            / n
    };
    (0..=400)
        .map(|i| i as f64 / 400.0)
        .map(|x| (cdf(x) - x).abs())
        .fold(0.0, f64::max)
}

/// How often a suspect's samples of one prompt agree with each other, against how often
/// the reference's own samples would at a temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collisions {
    /// Samples compared (every sample of a prompt that has another).
    #[serde(alias = "pairs")]
    pub samples: usize,
    /// Pairs of samples compared, summed over positions: at each position, every pair of
    /// the samples that have agreed so far.
    pub trials: usize,
    /// Of those, the pairs that wrote the same token there.
    pub observed: usize,
    /// The reference's expectation of that count: Σ C(n, 2) Σ_v q_T(v)² over positions.
    pub expected: f64,
    /// The count's standard deviation under the reference's sampler (0 in reports stored
    /// before it was kept: [`Collisions::can_tell`] then falls back to the expectation).
    #[serde(default)]
    pub sd: f64,
    /// (observed − expected) / sd.
    pub z: f64,
}

impl Collisions {
    /// Whether the count could show a model that agrees with itself twice as often as the
    /// reference's samples would: the expectation at least [`MIN_EXPECTED_SD`] standard
    /// deviations (for disjoint pairs and rare agreement, an expectation of about 3).
    pub fn can_tell(&self) -> bool {
        if self.sd > 0.0 {
            self.expected >= MIN_EXPECTED_SD * self.sd
        } else {
            self.expected >= MIN_EXPECTED_SD * MIN_EXPECTED_SD
        }
    }
}

/// Largest distance from uniform ranks that still reads as the reference's own samples:
/// the serving stack moves it a little without changing weights (another engine's
/// rounding, text re-encoded by the reference, a top-p cut the single fitted cut does not
/// follow).
pub const RANKS_BAND: f64 = 0.06;

/// Fewer pairs compared than this say too little about agreement.
pub const MIN_TRIALS: usize = 20;

/// An expectation below this many standard deviations cannot show a model that agrees
/// with itself even twice as often as the reference's samples would: the count then says
/// nothing either way. √3: for rare agreement (a Poisson count) an expectation of 3.
pub const MIN_EXPECTED_SD: f64 = 1.732_050_8;

/// The suspect agrees with itself more (or less) often than the reference's samples would
/// beyond this many standard deviations: not the reference's sampler.
pub const MAX_COLLISION_Z: f64 = 3.0;

/// Σ_v q(v)² and Σ_v q(v)³ at one position under temperature `k` and the cut (the tail
/// left out: its tokens are each too unlikely to count raised to a power).
fn self_agreement(t: &SampledToken, k: usize, cut: f64) -> (f64, f64) {
    let (_, z) = kept_mass(t, k, cut);
    if z <= 0.0 {
        return (0.0, 0.0);
    }
    kept_top(t, k, cut)
        .map(|w| w / z)
        .fold((0.0, 0.0), |(s2, s3), q| (s2 + q * q, s3 + q * q * q))
}

/// The grid entry of a temperature [`fit`] chose.
fn grid_index(temperature: f64) -> usize {
    ((temperature / 0.05).round() as usize).clamp(1, TEMPERATURES) - 1
}

/// Running sums of [`collisions`].
#[derive(Default)]
struct Tally {
    trials: usize,
    observed: usize,
    expected: f64,
    variance: f64,
}

impl Tally {
    /// The samples `members` have written the same tokens before `depth`, so at `depth`
    /// each draws from one distribution: count their agreeing pairs there, then go on
    /// with each group that wrote the same token.
    fn node(&mut self, members: &[&[SampledToken]], depth: usize, k: usize, cut: f64) {
        let here: Vec<&[SampledToken]> = members
            .iter()
            .copied()
            .filter(|m| m.len() > depth)
            .collect();
        let n = here.len();
        if n < 2 {
            return;
        }
        let (s2, s3) = self_agreement(&here[0][depth], k, cut);
        let pairs = n * (n - 1) / 2;
        let triples = n * (n - 1) * (n - 2) / 6;
        self.trials += pairs;
        self.expected += pairs as f64 * s2;
        // Var of the number of agreeing pairs among n independent draws.
        self.variance += pairs as f64 * (s2 - s2 * s2) + 6.0 * triples as f64 * (s3 - s2 * s2);
        let mut groups: std::collections::BTreeMap<u32, Vec<&[SampledToken]>> = Default::default();
        for m in here {
            groups.entry(m[depth].token).or_default().push(m);
        }
        for group in groups.values() {
            self.observed += group.len() * (group.len() - 1) / 2;
            self.node(group, depth + 1, k, cut);
        }
    }
}

/// Collisions over `samples`: for each prompt, its samples (each as the reference read
/// it, token by token). At each position, every pair of the samples that have written the
/// same tokens so far is compared (the unbiased estimate of Σ q² from all of them, not
/// only disjoint pairs), under the reference's distribution at the fitted temperature and
/// cut (their prefix is the same, so one sample's read-back serves). Given what came
/// before, each position's count has a known mean and variance, so the sums make a
/// martingale and z is asymptotically normal. `None` below [`MIN_TRIALS`].
pub fn collisions(samples: &[Vec<&[SampledToken]>], fit: &SampledFit) -> Option<Collisions> {
    let k = grid_index(fit.temperature);
    let mut tally = Tally::default();
    let mut compared = 0;
    for prompt in samples.iter().filter(|p| p.len() >= 2) {
        compared += prompt.len();
        tally.node(prompt, 0, k, fit.cut);
    }
    if tally.trials < MIN_TRIALS || tally.variance <= 0.0 {
        return None;
    }
    let sd = tally.variance.sqrt();
    Some(Collisions {
        samples: compared,
        trials: tally.trials,
        observed: tally.observed,
        expected: tally.expected,
        sd,
        z: (tally.observed as f64 - tally.expected) / sd,
    })
}

/// One answer of a sampling suspect as the reference read it.
#[derive(Debug, Clone, Copy)]
pub struct Read<'a> {
    pub probe_id: &'a str,
    /// A sampling probe's sample (read for [`collisions`]; every answer counts for [`fit`]).
    pub sampling: bool,
    pub sample_index: usize,
    pub tokens: &'a [SampledToken],
}

/// The fit over every token read, and the collisions of the sampling probes' samples at
/// the fitted temperature.
pub fn judge(reads: &[Read]) -> (Option<SampledFit>, Option<Collisions>) {
    let tokens: Vec<SampledToken> = reads
        .iter()
        .flat_map(|r| r.tokens.iter().cloned())
        .collect();
    let Some(fit) = fit(&tokens) else {
        return (None, None);
    };
    let mut by_probe: std::collections::BTreeMap<&str, Vec<&Read>> = Default::default();
    for r in reads.iter().filter(|r| r.sampling) {
        by_probe.entry(r.probe_id).or_default().push(r);
    }
    let samples: Vec<Vec<&[SampledToken]>> = by_probe
        .into_values()
        .map(|mut v| {
            v.sort_by_key(|r| r.sample_index);
            v.into_iter().map(|r| r.tokens).collect()
        })
        .collect();
    let agree = collisions(&samples, &fit);
    (Some(fit), agree)
}

/// P(Kolmogorov's statistic ≥ d) for n observations (Stephens' finite-n correction).
pub fn kolmogorov_sf(d: f64, n: usize) -> f64 {
    let sn = (n as f64).sqrt();
    let lambda = (sn + 0.12 + 0.11 / sn) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for j in 1..=100 {
        let j = j as f64;
        let term = (-2.0 * j * j * lambda * lambda).exp();
        sum += if j as usize % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random next-token distribution over `vocab` tokens (logits), like a model's:
    /// a few likely tokens and a long tail.
    fn logits(rng: &mut impl Rng, vocab: usize) -> Vec<f64> {
        let sharp = rng.random_range(0.5..4.0);
        (0..vocab)
            .map(|i| -sharp * (1.0 + i as f64).ln() + rng.random_range(-1.0..1.0))
            .collect()
    }

    /// Draws a token from `l` at temperature `t`, keeping only tokens within `cut` nats of
    /// the top one (min-p).
    fn draw(rng: &mut impl Rng, l: &[f64], t: f64, cut: f64) -> usize {
        let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = l
            .iter()
            .map(|x| {
                if max - x <= cut {
                    ((x - max) / t).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let total: f64 = w.iter().sum();
        let mut r = rng.random_range(0.0..total);
        for (i, wi) in w.iter().enumerate() {
            if r < *wi {
                return i;
            }
            r -= wi;
        }
        l.len() - 1
    }

    /// What the read-back keeps of position `l` with token `y` written (as
    /// `model::spread::Spread` computes it, exactly rather than bucketed).
    fn seen(l: &[f64], y: usize) -> SampledToken {
        let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut gaps: Vec<f64> = l.iter().map(|x| max - x).collect();
        gaps.sort_by(f64::total_cmp);
        let top: Vec<f32> = gaps.iter().take(24).map(|g| *g as f32).collect();
        let tail = (0..TEMPERATURES)
            .map(|k| {
                let s: f64 = gaps[24..].iter().map(|g| (-g / temperature(k)).exp()).sum();
                if s > 0.0 {
                    s.ln() as f32
                } else {
                    NO_TAIL
                }
            })
            .collect();
        SampledToken {
            token: y as u32,
            top,
            gap: (max - l[y]) as f32,
            rank: l.iter().filter(|x| **x > l[y]).count() as u32,
            tail,
        }
    }

    /// `n` tokens: each position's distribution is the reference's, the token drawn from
    /// `writer(reference logits)` at temperature `t` with the cut.
    fn tokens(seed: u64, n: usize, t: f64, cut: f64, other: bool) -> Vec<SampledToken> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let reference = logits(&mut rng, 300);
                let writer = if other {
                    // Another model: the same shape, but its likely tokens in another
                    // order (a few swaps among the reference's 30 most likely).
                    let mut l = reference.clone();
                    for _ in 0..6 {
                        l.swap(rng.random_range(0..30), rng.random_range(0..30));
                    }
                    l
                } else {
                    reference.clone()
                };
                let y = draw(&mut rng, &writer, t, cut);
                seen(&reference, y)
            })
            .collect()
    }

    #[test]
    fn the_references_own_samples_read_as_uniform_at_their_temperature() {
        for (seed, t) in [(1, 0.7), (2, 1.0), (3, 0.4)] {
            let fit = fit(&tokens(seed, 600, t, f64::INFINITY, false)).expect("fit");
            assert!((fit.temperature - t).abs() <= 0.1, "{t}: {fit:?}");
            assert!(fit.distance < 0.06, "{t}: {fit:?}");
            assert!(fit.p_value > 0.001, "{t}: {fit:?}");
        }
    }

    #[test]
    fn a_min_p_cut_is_fitted_too() {
        // llama.cpp's default min-p 0.05 keeps tokens within ln 20 = 3.0 nats of the top.
        let fit = fit(&tokens(4, 600, 0.8, 3.0, false)).expect("fit");
        assert!(fit.cut <= 3.0 && fit.cut > 2.0, "{fit:?}");
        assert!(fit.distance < 0.06, "{fit:?}");
    }

    #[test]
    fn another_models_samples_do_not() {
        // Text whose likely tokens the reference ranks otherwise is told apart, at any
        // fitted temperature, given enough of it.
        for (seed, t) in [(5, 0.7), (6, 1.0)] {
            let fit = fit(&tokens(seed, 1500, t, f64::INFINITY, true)).expect("fit");
            assert!(fit.distance > 0.05, "{t}: {fit:?}");
            assert!(fit.p_value < 1e-4, "{t}: {fit:?}");
        }
    }

    /// Pairs of samples of `prompts` prompts, `length` positions each: at each position
    /// both draw from the writer's distribution (the reference's, or a colder copy of
    /// it), and the reference's view is kept; after they part, each goes on alone.
    fn pairs(seed: u64, prompts: usize, t_writer: f64) -> Vec<Vec<Vec<SampledToken>>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..prompts)
            .map(|_| {
                let (mut a, mut b) = (Vec::new(), Vec::new());
                let mut together = true;
                for _ in 0..8 {
                    let reference = logits(&mut rng, 300);
                    let ya = draw(&mut rng, &reference, t_writer, f64::INFINITY);
                    let yb = if together {
                        draw(&mut rng, &reference, t_writer, f64::INFINITY)
                    } else {
                        // Apart, b's positions do not matter: another token id.
                        300
                    };
                    together &= ya == yb;
                    a.push(seen(&reference, ya));
                    let mut other = seen(&reference, ya);
                    other.token = yb as u32;
                    b.push(other);
                }
                vec![a, b]
            })
            .collect()
    }

    fn collisions_of(p: &[Vec<Vec<SampledToken>>], temperature: f64) -> Option<Collisions> {
        let fit = SampledFit {
            tokens: 0,
            temperature,
            cut: f64::INFINITY,
            distance: 0.0,
            p_value: 1.0,
            top1: 0.0,
        };
        let views: Vec<Vec<&[SampledToken]>> = p
            .iter()
            .map(|prompt| prompt.iter().map(Vec::as_slice).collect())
            .collect();
        collisions(&views, &fit)
    }

    #[test]
    fn a_sampler_agrees_with_itself_as_often_as_its_temperature_says() {
        let own = collisions_of(&pairs(8, 200, 0.7), 0.7).expect("collisions");
        assert!(own.z.abs() < MAX_COLLISION_Z, "{own:?}");
        // A colder writer read as if it were the reference at 1.0 agrees with itself too
        // often: what a model with other preferences looks like.
        let cold = collisions_of(&pairs(9, 200, 0.5), 1.0).expect("collisions");
        assert!(cold.z > MAX_COLLISION_Z, "{cold:?}");
        assert!(collisions_of(&pairs(10, 2, 0.7), 0.7).is_none());
    }

    /// `m` samples of each of `prompts` prompts, 8 positions each, drawn as a
    /// sampler writes them: the samples that agree so far share a context (one
    /// distribution, the reference's or a colder copy of it) and part where they differ.
    fn trees(seed: u64, prompts: usize, m: usize, t_writer: f64) -> Vec<Vec<Vec<SampledToken>>> {
        fn grow(
            rng: &mut impl Rng,
            members: &mut [Vec<SampledToken>],
            length: usize,
            t_writer: f64,
        ) {
            let depth = members[0].len();
            if depth == length {
                return;
            }
            let reference = logits(rng, 300);
            let drawn: Vec<usize> = members
                .iter()
                .map(|_| draw(rng, &reference, t_writer, f64::INFINITY))
                .collect();
            for (member, &y) in members.iter_mut().zip(&drawn) {
                member.push(seen(&reference, y));
            }
            let mut tokens = drawn.clone();
            tokens.sort_unstable();
            tokens.dedup();
            for y in tokens {
                let mut group: Vec<Vec<SampledToken>> = Vec::new();
                let mut at = Vec::new();
                for (i, &d) in drawn.iter().enumerate() {
                    if d == y {
                        group.push(std::mem::take(&mut members[i]));
                        at.push(i);
                    }
                }
                grow(rng, &mut group, length, t_writer);
                for (i, member) in at.into_iter().zip(group) {
                    members[i] = member;
                }
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..prompts)
            .map(|_| {
                let mut members = vec![Vec::new(); m];
                grow(&mut rng, &mut members, 8, t_writer);
                members
            })
            .collect()
    }

    #[test]
    fn every_pair_of_four_samples_counts_and_z_stays_calibrated() {
        // The reference's own samples: z over many draws has mean near 0 and spread near 1.
        let zs: Vec<f64> = (0..40)
            .map(|seed| {
                collisions_of(&trees(100 + seed, 12, 4, 0.7), 0.7)
                    .expect("collisions")
                    .z
            })
            .collect();
        let mean = zs.iter().sum::<f64>() / zs.len() as f64;
        let spread =
            (zs.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / (zs.len() - 1) as f64).sqrt();
        assert!(mean.abs() < 0.4, "mean z {mean}, {zs:?}");
        assert!((0.7..1.3).contains(&spread), "spread of z {spread}, {zs:?}");
        // Twelve prompts of four samples give far more compared pairs than twelve pairs.
        let four = collisions_of(&trees(7, 12, 4, 0.7), 0.7).expect("collisions");
        assert_eq!(four.samples, 48);
        // The first positions alone give 12 x 6; prompts whose samples agree give more.
        assert!(four.trials > 72, "{four:?}");
        // A colder writer read as the reference at 1.0 agrees with itself too often.
        let cold = collisions_of(&trees(8, 60, 4, 0.5), 1.0).expect("collisions");
        assert!(cold.z > MAX_COLLISION_Z && cold.can_tell(), "{cold:?}");
    }

    #[test]
    fn too_few_tokens_say_nothing() {
        assert!(fit(&tokens(7, MIN_TOKENS - 1, 0.7, f64::INFINITY, false)).is_none());
    }

    #[test]
    fn kolmogorov_tail_matches_known_values() {
        // λ = 1.36 is the 5% point, 1.63 the 1% point.
        assert!((kolmogorov_sf(1.36 / 1000f64.sqrt(), 1000) - 0.05).abs() < 0.005);
        assert!((kolmogorov_sf(1.63 / 1000f64.sqrt(), 1000) - 0.01).abs() < 0.002);
        assert_eq!(kolmogorov_sf(0.0, 10), 1.0);
    }
}
