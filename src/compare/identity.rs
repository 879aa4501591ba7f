//! Identity claims: the maker and model family an answer names ("I'm Claude, made by
//! Anthropic"). Distillations often keep their teacher's self-description. A persona
//! system prompt changes it at will, so this signal is reported as evidence and never
//! decides a verdict on its own.

use std::collections::BTreeMap;

use super::bootstrap::{self, BootstrapOptions};
use super::{clip, Pair, ProbeScore, SignalOutcome};

pub use crate::probes::identity::{claims, primary_claim, Family, FAMILIES, NONE};

/// Distribution of claims over answers: each answer's weight is split equally over the
/// families it names; answers naming none count as [`NONE`].
pub fn distribution<'a, I>(answers: I) -> BTreeMap<&'static str, f64>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut counts: BTreeMap<&'static str, f64> = BTreeMap::new();
    let mut total = 0.0;
    for answer in answers {
        total += 1.0;
        let named = claims(answer);
        if named.is_empty() {
            *counts.entry(NONE).or_insert(0.0) += 1.0;
        } else {
            let share = 1.0 / named.len() as f64;
            for id in named {
                *counts.entry(id).or_insert(0.0) += share;
            }
        }
    }
    if total > 0.0 {
        for v in counts.values_mut() {
            *v /= total;
        }
    }
    counts
}

/// Total variation distance, half the L1 distance between two distributions.
pub fn total_variation(p: &BTreeMap<&str, f64>, q: &BTreeMap<&str, f64>) -> f64 {
    let keys: std::collections::BTreeSet<&str> = p.keys().chain(q.keys()).copied().collect();
    0.5 * keys
        .iter()
        .map(|k| (p.get(k).copied().unwrap_or(0.0) - q.get(k).copied().unwrap_or(0.0)).abs())
        .sum::<f64>()
}

/// The identity signal: score = 1 - total variation between the claim distributions.
pub fn signal(pairs: &[Pair], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    let texts: Vec<(&Pair, &str, &str)> = pairs
        .iter()
        .filter_map(|p| Some((p, p.reference.text()?, p.suspect.text()?)))
        .collect();
    if texts.is_empty() {
        return None;
    }
    let similarity = |idx: &[usize]| {
        let r = distribution(idx.iter().map(|&i| texts[i].1));
        let s = distribution(idx.iter().map(|&i| texts[i].2));
        1.0 - total_variation(&r, &s)
    };
    let all: Vec<usize> = (0..texts.len()).collect();
    let score = similarity(&all);
    let interval =
        boot.and_then(|opts| bootstrap::interval(texts.len(), opts, |idx| Some(similarity(idx))));

    let r_dist = distribution(texts.iter().map(|t| t.1));
    let s_dist = distribution(texts.iter().map(|t| t.2));
    let top = |d: &BTreeMap<&str, f64>| {
        d.iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
            .unwrap_or_default()
    };
    let per_probe: Vec<ProbeScore> = texts
        .iter()
        .map(|(pair, r, s)| {
            let (rc, sc) = (primary_claim(r), primary_claim(s));
            ProbeScore {
                probe_id: pair.reference.probe_id.clone(),
                kind: pair.reference.kind,
                score: if rc == sc { 1.0 } else { 0.0 },
                reference_text: clip(r),
                suspect_text: clip(s),
                note: format!("reference claims {rc}, suspect claims {sc}"),
            }
        })
        .collect();
    let agreement = per_probe.iter().map(|p| p.score).sum::<f64>() / per_probe.len() as f64;
    let mut extra = BTreeMap::new();
    extra.insert("primary_claim_agreement".to_string(), agreement);
    for (id, share) in &s_dist {
        extra.insert(format!("suspect_claims:{id}"), *share);
    }
    for (id, share) in &r_dist {
        extra.insert(format!("reference_claims:{id}"), *share);
    }
    Some(SignalOutcome {
        score,
        n: texts.len(),
        interval,
        extra,
        detail: format!(
            "reference mostly claims {}, suspect mostly claims {} (1 - total variation = {score:.2})",
            top(&r_dist),
            top(&s_dist)
        ),
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_claims_in_order() {
        assert_eq!(
            claims("I am Claude, an AI assistant made by Anthropic."),
            ["anthropic/claude"]
        );
        assert_eq!(
            claims("I'm not ChatGPT; I'm SmolLM, trained by Hugging Face."),
            ["openai/gpt", "huggingface/smollm"]
        );
        assert_eq!(claims("我是通义千问，由阿里云开发。"), ["alibaba/qwen"]);
        assert_eq!(claims("Built on GPT-4-turbo."), ["openai/gpt"]);
        // Whole words only: "metadata" is not Meta, "llamas" are animals.
        assert!(claims("The metadata of llamas and grokking.").is_empty());
        assert_eq!(primary_claim("I am a helpful assistant."), NONE);
    }

    #[test]
    fn total_variation_bounds() {
        let a = distribution(["I am Claude.", "Anthropic made me."]);
        let b = distribution(["I am Gemma, by Google.", "I am Gemma."]);
        assert!((total_variation(&a, &a)).abs() < 1e-12);
        assert!((total_variation(&a, &b) - 1.0).abs() < 1e-12);
        let c = distribution(["I am Claude.", "I am Gemma."]);
        assert!((total_variation(&a, &c) - 0.5).abs() < 1e-12);
    }
}
