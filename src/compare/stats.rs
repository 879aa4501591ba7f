//! Small numerical helpers: tail probabilities of the normal, Student t and chi-square
//! distributions, and Fisher's combination of p-values. Written out here rather than
//! pulled in as a dependency because only these few are needed.

/// Arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        None
    } else {
        Some(values.iter().sum::<f64>() / values.len() as f64)
    }
}

/// Sample standard deviation (n - 1 in the denominator); `None` below two values.
pub fn sample_sd(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    Some((ss / (values.len() - 1) as f64).sqrt())
}

/// Complementary error function (Numerical Recipes `erfcc`, relative error < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// P(Z >= z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7).
pub fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the approximation in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = COEF[0];
    let t = x + 7.5;
    for (i, c) in COEF.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Regularized incomplete beta function I_x(a, b).
pub fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    let front = ln_front.exp();
    // The continued fraction converges fast only on this side; use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(x, a, b) / a
    } else {
        1.0 - front * beta_cf(1.0 - x, b, a) / b
    }
}

/// Continued fraction for the incomplete beta (modified Lentz, Numerical Recipes `betacf`).
fn beta_cf(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-14;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = d * c;
        h *= delta;
        if (delta - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// P(T >= t) for Student's t with `df` degrees of freedom.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let tail = 0.5 * inc_beta(df / (df + t * t), df / 2.0, 0.5);
    if t >= 0.0 {
        tail
    } else {
        1.0 - tail
    }
}

/// P(X >= x) for a chi-square X with an even number of degrees of freedom, in closed
/// form: e^{-x/2} Σ_{i<df/2} (x/2)^i / i!.
pub fn chi2_sf_even(x: f64, df: usize) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let half = x / 2.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..df / 2 {
        term *= half / i as f64;
        sum += term;
    }
    (sum.ln() - half).exp().min(1.0)
}

/// Fisher's method: -2 Σ ln p_i is chi-square with 2k degrees of freedom when the k
/// p-values are independent and uniform. Signals of one model pair are not fully
/// independent, so the combined value errs on the small side; the verdict treats it as
/// evidence, and the report lists the p-values it came from.
pub fn fisher(p_values: &[f64]) -> Option<f64> {
    if p_values.is_empty() {
        return None;
    }
    let statistic: f64 = p_values
        .iter()
        .map(|p| -2.0 * p.clamp(1e-300, 1.0).ln())
        .sum();
    Some(chi2_sf_even(statistic, 2 * p_values.len()))
}

/// Bonferroni's combination: the smallest of k p-values times k (at most 1). Valid
/// whatever the dependence between the tests, which matters where two signals read the
/// same answers (style and the pooled vocabulary both read the style answers): Fisher's
/// method would count that evidence twice. And one decisive signal is not diluted by
/// others that say nothing, as it is under Fisher's method (a student may inherit its
/// teacher's vocabulary and nothing else).
pub fn bonferroni(p_values: &[f64]) -> Option<f64> {
    let smallest = p_values.iter().copied().reduce(f64::min)?;
    Some((smallest.max(0.0) * p_values.len() as f64).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bonferroni_known_values() {
        assert_eq!(bonferroni(&[]), None);
        assert_eq!(bonferroni(&[0.5]), Some(0.5));
        assert!((bonferroni(&[0.9, 0.002, 1.0, 0.3]).unwrap_or(1.0) - 0.008).abs() < 1e-15);
        assert_eq!(bonferroni(&[0.4, 0.6, 0.9]), Some(1.0));
        // Where Fisher's method is diluted by signals that say nothing, Bonferroni is not.
        let ps = [0.001, 0.9, 0.9, 1.0];
        assert!(bonferroni(&ps).unwrap_or(1.0) < 0.01);
        assert!(fisher(&ps).unwrap_or(0.0) > 0.01);
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn normal_tail() {
        assert!(close(normal_sf(0.0), 0.5, 1e-7));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-6));
        assert!(close(normal_sf(-1.0), 0.841_344_7, 1e-6));
    }

    #[test]
    fn t_tail_matches_tables() {
        // t_{0.975} with 4 df is 2.776; with 1 df P(T > 1) = 0.25 exactly.
        assert!(close(student_t_sf(2.776_445, 4.0), 0.025, 1e-5));
        assert!(close(student_t_sf(1.0, 1.0), 0.25, 1e-9));
        assert!(close(student_t_sf(-1.0, 1.0), 0.75, 1e-9));
        assert!(close(student_t_sf(0.0, 7.0), 0.5, 1e-12));
    }

    #[test]
    fn chi_square_tail() {
        // df 2: e^{-x/2}. df 4, x = 9.4877: 0.05.
        assert!(close(chi2_sf_even(2.0, 2), (-1.0f64).exp(), 1e-12));
        assert!(close(chi2_sf_even(9.487_729, 4), 0.05, 1e-6));
    }

    #[test]
    fn fisher_combination() {
        // One p-value passes through unchanged.
        assert!(close(fisher(&[0.3]).unwrap_or(0.0), 0.3, 1e-12));
        // Two p-values of 0.05: X = 11.98, df 4 -> 0.0175.
        assert!(close(fisher(&[0.05, 0.05]).unwrap_or(0.0), 0.017_47, 1e-4));
        // Uninformative p-values stay uninformative.
        assert!(fisher(&[1.0, 1.0, 1.0]).unwrap_or(0.0) > 0.99);
        assert_eq!(fisher(&[]), None);
    }

    #[test]
    fn sd_and_mean() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), Some(2.0));
        assert!(close(
            sample_sd(&[1.0, 2.0, 3.0]).unwrap_or(0.0),
            1.0,
            1e-12
        ));
        assert_eq!(sample_sd(&[1.0]), None);
    }
}
