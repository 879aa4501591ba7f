//! How rotary positions are stretched: a file's own choice (Gemma 3 4B and up declare
//! linear scaling, YaRN-extended checkpoints declare YaRN) or a server's setting (vLLM's
//! `--rope-scaling`, llama.cpp's `--rope-scaling yarn --rope-scale 4`, which Qwen's model
//! cards tell operators to set for long inputs). Both move every next-token distribution,
//! short prompts included, so the reference must be run the way it is served.
//!
//! The arithmetic is llama.cpp's (`rope_yarn` in ggml's CPU ops), which transformers'
//! `_compute_yarn_parameters` matches: per frequency, a ramp between the correction
//! dimensions of `beta_fast` and `beta_slow` mixes the interpolated angle (divided by the
//! factor) with the original one, and cos and sin are scaled by `1 + 0.1 ln factor`.

/// A RoPE scaling, as a GGUF file's `{arch}.rope.scaling.*` keys or a server's flags say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    None,
    /// Positions divided by `factor` (position interpolation).
    Linear {
        factor: f32,
    },
    Yarn(Yarn),
}

/// YaRN's parameters; `beta_fast` 32 and `beta_slow` 1 unless a file says otherwise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub factor: f32,
    /// The context the model was trained for (the ramp's dimensions depend on it).
    pub original_context: usize,
    pub beta_fast: f32,
    pub beta_slow: f32,
}

impl Yarn {
    pub const fn new(factor: f32, original_context: usize) -> Self {
        Self {
            factor,
            original_context,
            beta_fast: 32.0,
            beta_slow: 1.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RopeScalingError {
    #[error("RoPE scaling `{0}`: expected none, linear:<factor> or yarn:<factor>")]
    Syntax(String),
    #[error("RoPE scaling factor {0} is not a number above 1")]
    Factor(String),
}

impl RopeScaling {
    /// Parses a server's setting: `none`, `linear:<factor>` or `yarn:<factor>`; YaRN's
    /// original context is the model's trained one unless given as `yarn:<factor>:<ctx>`.
    pub fn parse(s: &str) -> Result<Self, RopeScalingError> {
        let s = s.trim().to_ascii_lowercase();
        if s == "none" {
            return Ok(Self::None);
        }
        let mut parts = s.split(':');
        let kind = parts.next().unwrap_or_default();
        let factor_text = parts
            .next()
            .ok_or_else(|| RopeScalingError::Syntax(s.clone()))?;
        let factor = factor_text
            .parse::<f32>()
            .ok()
            .filter(|f| f.is_finite() && *f > 1.0)
            .ok_or_else(|| RopeScalingError::Factor(factor_text.to_string()))?;
        let context = match parts.next() {
            Some(c) => Some(
                c.parse::<usize>()
                    .ok()
                    .filter(|c| *c > 0)
                    .ok_or_else(|| RopeScalingError::Syntax(s.clone()))?,
            ),
            None => None,
        };
        if parts.next().is_some() {
            return Err(RopeScalingError::Syntax(s));
        }
        match (kind, context) {
            ("linear", None) => Ok(Self::Linear { factor }),
            // 0 stands for "the model's own", filled in at load.
            ("yarn", c) => Ok(Self::Yarn(Yarn::new(factor, c.unwrap_or(0)))),
            _ => Err(RopeScalingError::Syntax(s)),
        }
    }

    /// The same scaling with YaRN's unset original context taken as `trained`.
    pub fn with_trained_context(self, trained: usize) -> Self {
        match self {
            Self::Yarn(y) if y.original_context == 0 => Self::Yarn(Yarn {
                original_context: trained,
                ..y
            }),
            other => other,
        }
    }

    /// How a report names it: `yarn x4`, `linear x2`, `none`.
    pub fn name(&self) -> String {
        match self {
            Self::None => "none".to_string(),
            Self::Linear { factor } => format!("linear x{factor}"),
            Self::Yarn(y) => format!("yarn x{}", y.factor),
        }
    }
}

/// The rotation angle per position for each of a head's `head_dim / 2` frequencies, and
/// the factor cos and sin are scaled by: `angle(pos, k) = pos * rates[k]`.
pub fn rates(
    head_dim: usize,
    base: f32,
    factors: Option<&[f32]>,
    scaling: RopeScaling,
) -> (Vec<f32>, f32) {
    let half = head_dim / 2;
    let plain = (0..half).map(|k| {
        let factor = factors.and_then(|f| f.get(k)).copied().unwrap_or(1.0);
        1f32 / (base.powf((2 * k) as f32 / head_dim as f32) * factor)
    });
    match scaling {
        RopeScaling::None => (plain.collect(), 1.0),
        RopeScaling::Linear { factor } => (plain.map(|r| r / factor).collect(), 1.0),
        RopeScaling::Yarn(y) => {
            let (low, high) = correction_dims(head_dim, y, base);
            let rates = plain
                .enumerate()
                .map(|(k, r)| {
                    let mix = ramp(low, high, k);
                    (r / y.factor) * (1.0 - mix) + r * mix
                })
                .collect();
            (rates, 1.0 + 0.1 * y.factor.ln())
        }
    }
}

/// ggml's `ggml_rope_yarn_corr_dims`: the dimensions below which frequencies are kept and
/// above which they are interpolated.
fn correction_dims(head_dim: usize, y: Yarn, base: f32) -> (f32, f32) {
    let dim = |rotations: f32| {
        head_dim as f32
            * (y.original_context as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let start = dim(y.beta_fast).floor().max(0.0);
    let end = dim(y.beta_slow).ceil().min(head_dim as f32 - 1.0);
    (start, end)
}

/// ggml's `rope_yarn_ramp` for frequency `k` (its `i0 / 2`): 1 keeps the frequency, 0
/// interpolates it.
fn ramp(low: f32, high: f32, k: usize) -> f32 {
    let y = (k as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_their_errors() {
        assert_eq!(RopeScaling::parse("none"), Ok(RopeScaling::None));
        assert_eq!(
            RopeScaling::parse("Linear:2"),
            Ok(RopeScaling::Linear { factor: 2.0 })
        );
        assert_eq!(
            RopeScaling::parse("yarn:4"),
            Ok(RopeScaling::Yarn(Yarn::new(4.0, 0)))
        );
        assert_eq!(
            RopeScaling::parse("yarn:4:32768"),
            Ok(RopeScaling::Yarn(Yarn::new(4.0, 32768)))
        );
        for bad in [
            "yarn",
            "yarn:0.5",
            "yarn:x",
            "dynamic:2",
            "linear:2:100",
            "yarn:4:0",
        ] {
            assert!(RopeScaling::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            RopeScaling::Yarn(Yarn::new(4.0, 0)).with_trained_context(8192),
            RopeScaling::Yarn(Yarn::new(4.0, 8192))
        );
    }

    #[test]
    fn yarn_keeps_fast_frequencies_and_interpolates_slow_ones() {
        let (plain, one) = rates(64, 10_000.0, None, RopeScaling::None);
        assert_eq!(one, 1.0);
        let (linear, _) = rates(64, 10_000.0, None, RopeScaling::Linear { factor: 4.0 });
        for (p, l) in plain.iter().zip(&linear) {
            assert!((p / 4.0 - l).abs() <= 1e-7 * p, "{p} {l}");
        }
        let (yarn, mscale) = rates(64, 10_000.0, None, RopeScaling::Yarn(Yarn::new(4.0, 8192)));
        assert!((mscale - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
        // 64 dims, context 8192, base 1e4: floor(12.88) = 12 and ceil(24.92) = 25, as
        // transformers' find_correction_range gives too.
        assert_eq!(
            correction_dims(64, Yarn::new(4.0, 8192), 10_000.0),
            (12.0, 25.0)
        );
        assert_eq!(yarn[..=12], plain[..=12]);
        for k in 25..32 {
            assert!((yarn[k] - plain[k] / 4.0).abs() <= 1e-7 * plain[k]);
        }
        let mid = 18;
        assert!(yarn[mid] < plain[mid] && yarn[mid] > plain[mid] / 4.0);
    }
}
