//! Judging a similarity score against a null population: the scores that control models
//! (known to be unrelated to the reference) get against the same reference.
//!
//! The p-value a person reads is the empirical one, (1 + #controls at least as similar)
//! / (1 + n). It cannot fall below 1 / (1 + n), so with fewer than 1/alpha - 1 controls it
//! can never reach alpha, and decisions use a parametric stand-in instead:
//!
//! - `ok` (n + 1 >= 1/alpha): the empirical p-value decides.
//! - `few` (2 <= n): a normal-theory prediction test, t = (x - centre) / (spread sqrt(1 +
//!   1/n)) with n - 1 degrees of freedom, spread floored in the signal's own units
//!   ([`null_test_floored`]) so a tight cluster of controls (variants of one model)
//!   cannot make any small gap look decisive. The test is one-sided (is the
//!   suspect *more* similar than unrelated models?), so the fit describes the controls'
//!   upper half: centre = their median, spread = the root mean square distance above it
//!   (for normal scores, the standard deviation). Controls far below the rest (a barely
//!   trained model, say) then cannot make a copy look ordinary, as they did with the mean
//!   and standard deviation: adding an obviously unrelated control should never hide a
//!   copy. And where any control is at least as similar as the suspect, the p-value is
//!   never below the empirical one: no extrapolation past a control that matched.
//! - `none` (n < 2): the signal's documented [`DefaultNull`], a deliberately pessimistic
//!   guess of what unrelated models score (its mean is raised to a single control's score
//!   when that is higher), its spread widened by the score's own standard error, since a
//!   score over few probes is noisy and no control measured on the same probes shows how
//!   noisy. The report says so.

use serde::{Deserialize, Serialize};

use super::stats::{mean, normal_sf, sample_sd, student_t_sf};

/// Smallest spread of control scores assumed, unless the signal sets its own
/// (`compare::signal::spread_floor`).
pub const SD_FLOOR: f64 = 0.02;

/// How much the controls can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    None,
    Few,
    Ok,
}

impl Level {
    pub fn of(controls: usize, alpha: f64) -> Level {
        if controls == 0 {
            Level::None
        } else if (controls as f64 + 1.0) * alpha >= 1.0 - 1e-9 {
            Level::Ok
        } else {
            Level::Few
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Few => "few",
            Level::Ok => "ok",
        }
    }
}

/// What unrelated models are assumed to score when there are too few controls to say.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DefaultNull {
    pub mean: f64,
    pub sd: f64,
}

/// How the deciding p-value was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NullMethod {
    Empirical,
    StudentT,
    Default,
}

/// One score judged against the controls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NullTest {
    /// Add-one smoothed share of controls at least as similar; `None` without controls.
    pub empirical: Option<f64>,
    /// The p-value decisions use (see the module notes).
    pub p: f64,
    pub method: NullMethod,
    pub controls: usize,
    pub control_mean: Option<f64>,
    pub control_sd: Option<f64>,
    /// What the deciding test compared the score with, when it was not the empirical
    /// share: the controls' median and upper-half spread (`student_t`) or the default
    /// null's mean and widened spread (`default`). The mean and SD above describe the
    /// controls; these are what the p-value came from.
    pub null_centre: Option<f64>,
    pub null_spread: Option<f64>,
}

/// Tests `score` (higher = more similar to the reference) against `controls`;
/// `score_se` is the score's standard error over probes (0 if unknown), used only with
/// the default null.
pub fn null_test(
    score: f64,
    score_se: f64,
    controls: &[f64],
    alpha: f64,
    default: DefaultNull,
) -> NullTest {
    null_test_floored(score, score_se, controls, alpha, default, SD_FLOOR)
}

/// [`null_test`] with the smallest spread the fit may assume, in the score's units.
pub fn null_test_floored(
    score: f64,
    score_se: f64,
    controls: &[f64],
    alpha: f64,
    default: DefaultNull,
    floor: f64,
) -> NullTest {
    let n = controls.len();
    // A tiny tolerance so a control exactly as similar counts as "at least as similar"
    // despite rounding.
    let as_similar = controls.iter().filter(|&&c| c >= score - 1e-12).count();
    let empirical = (n > 0).then(|| (1.0 + as_similar as f64) / (1.0 + n as f64));
    let control_mean = mean(controls);
    let control_sd = sample_sd(controls);
    let (p, method, null) = match Level::of(n, alpha) {
        Level::Ok => (empirical.unwrap_or(1.0), NullMethod::Empirical, None),
        _ if n >= 2 => {
            let (centre, spread) = upper_half_fit(controls);
            let sd = spread.max(floor);
            let t = (score - centre) / (sd * (1.0 + 1.0 / n as f64).sqrt());
            let p = student_t_sf(t, (n - 1) as f64);
            let p = match empirical {
                Some(e) if as_similar > 0 => p.max(e),
                _ => p,
            };
            (p, NullMethod::StudentT, Some((centre, sd)))
        }
        _ => {
            let m = controls.iter().copied().fold(default.mean, f64::max);
            let sd = default.sd.hypot(score_se.max(0.0)).max(floor);
            let z = (score - m) / sd;
            (normal_sf(z), NullMethod::Default, Some((m, sd)))
        }
    };
    NullTest {
        empirical,
        p: p.clamp(0.0, 1.0),
        method,
        controls: n,
        control_mean,
        control_sd,
        null_centre: null.map(|n| n.0),
        null_spread: null.map(|n| n.1),
    }
}

/// Median of the scores and the root mean square distance above it of those at or above
/// it: a normal fit to the upper half.
fn upper_half_fit(scores: &[f64]) -> (f64, f64) {
    let mut sorted: Vec<f64> = scores.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return (0.0, 0.0);
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let upper: Vec<f64> = sorted.iter().copied().filter(|&v| v >= median).collect();
    let ms = upper.iter().map(|v| (v - median).powi(2)).sum::<f64>() / upper.len() as f64;
    (median, ms.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NULL: DefaultNull = DefaultNull { mean: 0.5, sd: 0.1 };

    #[test]
    fn the_spread_floor_is_in_the_signals_own_units() {
        // Four variants of one model, tightly together, on a scale in nats: a sixth of a
        // nat above them is no evidence once the floor follows the signal's spread.
        let nats = DefaultNull {
            mean: 0.0,
            sd: 0.15,
        };
        let variants = [-0.20, -0.19, -0.18, -0.19];
        let t = null_test_floored(-0.02, 0.0, &variants, 0.01, nats, 0.0375);
        assert_eq!(t.method, NullMethod::StudentT);
        assert!(
            (t.null_spread.unwrap_or(0.0) - 0.0375).abs() < 1e-12,
            "{t:?}"
        );
        assert!(t.p > 0.01, "{t:?}");
        // A real gap still decides.
        assert!(null_test_floored(0.6, 0.0, &variants, 0.01, nats, 0.0375).p < 0.01);
    }

    #[test]
    fn empirical_p_is_add_one_smoothed() {
        let controls: Vec<f64> = (0..99).map(|i| i as f64 / 100.0).collect();
        let t = null_test(2.0, 0.0, &controls, 0.01, NULL);
        assert_eq!(t.method, NullMethod::Empirical);
        assert!((t.p - 0.01).abs() < 1e-12);
        let t = null_test(0.5, 0.0, &controls, 0.01, NULL);
        // 49 controls (0.50 ..= 0.98) are at least as similar.
        assert!((t.p - 50.0 / 100.0).abs() < 1e-12);
    }

    #[test]
    fn few_controls_use_a_prediction_test() {
        let controls = [0.40, 0.45, 0.50, 0.42, 0.48];
        let far = null_test(0.95, 0.0, &controls, 0.01, NULL);
        assert_eq!(far.method, NullMethod::StudentT);
        assert!(far.p < 0.01, "{far:?}");
        assert!((far.empirical.unwrap_or(0.0) - 1.0 / 6.0).abs() < 1e-12);
        let near = null_test(0.47, 0.0, &controls, 0.01, NULL);
        assert!(near.p > 0.2, "{near:?}");
        // The report shows what the test used: the median 0.45 and the RMS distance above
        // it of 0.45, 0.50 and 0.48, not the controls' mean and SD.
        assert_eq!(far.null_centre, Some(0.45));
        let spread = ((0.0 + 0.0025 + 0.0009) / 3.0f64).sqrt();
        assert!(
            (far.null_spread.unwrap_or(0.0) - spread).abs() < 1e-12,
            "{far:?}"
        );
        assert!((far.control_mean.unwrap_or(0.0) - 0.45).abs() < 1e-12);
        let none = null_test(0.95, 0.0, &[], 0.01, NULL);
        assert_eq!((none.null_centre, none.null_spread), (Some(0.5), Some(0.1)));
        let many: Vec<f64> = (0..99).map(|i| i as f64 / 200.0).collect();
        assert_eq!(null_test(0.95, 0.0, &many, 0.01, NULL).null_centre, None);
    }

    #[test]
    fn controls_far_below_do_not_hide_a_copy() {
        // Ten controls near 0.57 and two barely trained models near 0.1: a copy at 0.99
        // stays decisive, as it is without the two.
        let mut controls = vec![0.55, 0.56, 0.57, 0.58, 0.59, 0.60, 0.54, 0.57, 0.56, 0.58];
        let without = null_test(0.99, 0.0, &controls, 0.01, NULL);
        controls.extend([0.08, 0.12]);
        let with = null_test(0.99, 0.0, &controls, 0.01, NULL);
        assert!(without.p < 0.01 && with.p < 0.01, "{without:?} {with:?}");
        // A score among the controls stays ordinary.
        assert!(null_test(0.58, 0.0, &controls, 0.01, NULL).p > 0.2);
    }

    #[test]
    fn a_control_as_similar_keeps_the_empirical_floor() {
        // One unrelated control scored higher than the suspect: however far the rest lie
        // below, the p-value is at least the empirical one.
        let controls = [0.50, 0.50, 0.51, 0.50, 0.49, 0.97];
        let t = null_test(0.95, 0.0, &controls, 0.01, NULL);
        assert!((t.p - 2.0 / 7.0).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn no_controls_fall_back_to_the_default() {
        let t = null_test(0.9, 0.0, &[], 0.01, NULL);
        assert_eq!(t.method, NullMethod::Default);
        assert_eq!(t.empirical, None);
        assert!(t.p < 0.001);
        // One control more similar than the default mean raises the bar.
        let t = null_test(0.9, 0.0, &[0.85], 0.01, NULL);
        assert!(t.p > 0.3);
        // A noisy score (few probes) is judged more cautiously.
        let noisy = null_test(0.9, 0.2, &[], 0.01, NULL);
        assert!(noisy.p > 0.01 && noisy.p < 0.05, "{noisy:?}");
        assert_eq!(Level::of(0, 0.01), Level::None);
        assert_eq!(Level::of(5, 0.01), Level::Few);
        assert_eq!(Level::of(99, 0.01), Level::Ok);
        assert_eq!(Level::of(19, 0.05), Level::Ok);
    }
}
