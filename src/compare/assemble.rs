//! The report's parts from the computed signals: each signal's line, why a signal or the
//! verdict lacks something, and the probes shown as evidence.

use std::collections::{BTreeMap, HashMap};

use super::calibration::NullTest;
use super::report::{EvidenceItem, ModelRef, SignalScore};
use super::signal::{default_null, pairs, ProbeScore, Signal, SignalOutcome};
use super::signals::Signals;
use super::verdict::Verdict;
use crate::fingerprint::Fingerprint;
use crate::probes::ProbeKind;

pub(super) fn model_ref(fp: &Fingerprint) -> ModelRef {
    ModelRef {
        describe: fp.model.describe.clone(),
        probe_set: fp.probe_set.clone(),
        created_at: fp.created_at.clone(),
        capabilities: Some(fp.model.capabilities.clone()),
    }
}

/// Why a signal could not be computed.
pub(super) fn unavailable_reason(
    name: Signal,
    reference: &Fingerprint,
    suspect: &Fingerprint,
) -> String {
    if name == Signal::Likelihood || name == Signal::GreedyTokens {
        return "not available: the suspect's answers were not read back by a local reference \
                model"
            .to_string();
    }
    if name == Signal::Contrast {
        return "not available: it needs control fingerprints and answers that use the \
                reference's words (the pooled vocabulary similarity counts instead)"
            .to_string();
    }
    if name == Signal::Refusal {
        let n = pairs(reference, suspect, ProbeKind::Refusal).len();
        if n > 0 {
            // Cohen's kappa is 0/0 then; an agreement of 1 would say nothing either, since
            // any model that always complies (or always refuses) would get it.
            return format!(
                "not informative: both sides gave all {n} refusal probes answered by both \
                 the same label"
            );
        }
    }
    "not available: no probes of this kind answered by both".to_string()
}

pub(super) fn signal_score(
    name: Signal,
    outcome: Option<&SignalOutcome>,
    test: Option<&NullTest>,
    used: bool,
    min_probes: usize,
    unavailable: impl FnOnce() -> String,
) -> SignalScore {
    let Some(outcome) = outcome else {
        return SignalScore {
            name: name.to_string(),
            score: None,
            interval: None,
            p_value: None,
            p_empirical: None,
            method: None,
            control_mean: None,
            null_centre: None,
            null_spread: None,
            n: 0,
            used_in_verdict: false,
            detail: unavailable(),
            extra: BTreeMap::new(),
        };
    };
    let mut detail = outcome.detail.clone();
    if outcome.n < min_probes {
        detail.push_str(&format!(" (fewer than {min_probes} probes: not used)"));
    }
    if name == Signal::Identity {
        detail.push_str(" (evidence only: a system prompt can set it)");
    }
    SignalScore {
        name: name.to_string(),
        score: Some(outcome.score),
        interval: outcome.interval,
        p_value: test.map(|t| t.p),
        p_empirical: test.and_then(|t| t.empirical),
        method: test.map(|t| t.method),
        control_mean: test.and_then(|t| t.control_mean),
        null_centre: test.and_then(|t| t.null_centre),
        null_spread: test.and_then(|t| t.null_spread),
        n: outcome.n,
        used_in_verdict: used,
        detail,
        extra: outcome.extra.clone(),
    }
}

/// What was missing, in words, for an inconclusive verdict.
pub(super) fn missing_reasons(
    reference: &Fingerprint,
    suspect: &Fingerprint,
    ours: &Signals,
    distillation: &[Signal],
    min_probes: usize,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if !super::has_logprobs(reference) {
        reasons.push("the reference has no log-probabilities".to_string());
    }
    if !super::has_logprobs(suspect) {
        reasons.push("the suspect returned no log-probabilities".to_string());
    }
    let asked = suspect.observations.len();
    let answered = suspect.observations.iter().filter(|o| o.is_ok()).count();
    if answered < asked {
        let mut errors: BTreeMap<String, usize> = BTreeMap::new();
        for o in &suspect.observations {
            if let Some(err) = &o.error {
                *errors
                    .entry(crate::fingerprint::error_kind(err))
                    .or_insert(0) += 1;
            }
        }
        let listed = errors
            .iter()
            .map(|(k, n)| format!("{k} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        reasons.push(format!(
            "the suspect answered {answered} of {asked} asks (errors: {listed})"
        ));
    }
    for name in distillation
        .iter()
        .copied()
        .chain([Signal::Logits, Signal::Tokenizer])
    {
        let n = ours.get(name).map(|o| o.n).unwrap_or(0);
        if ours.get(name).is_none() && name == Signal::Refusal {
            reasons.push(format!(
                "{name}: {}",
                unavailable_reason(name, reference, suspect)
            ));
        } else if n < min_probes {
            reasons.push(format!(
                "{name}: {n} probes answered by both (need {min_probes})"
            ));
        }
    }
    reasons
}

/// The probes that weighed most: per signal (in report order, so logits come first), the
/// few probes furthest from the controls (or the default null), closest first; for an
/// unrelated verdict the most different probes instead. Scores of different signals are
/// on different scales, so probes are ranked within a signal, not across.
pub(super) fn evidence(
    ours: &Signals,
    controls: &[Signals],
    verdict: Verdict,
    max: usize,
) -> Vec<EvidenceItem> {
    const PER_SIGNAL: usize = 2;
    let related = matches!(
        verdict,
        Verdict::Identical | Verdict::Derived | Verdict::Distilled
    );
    let mut items = Vec::new();
    for name in Signal::ALL {
        let Some(outcome) = ours.get(name) else {
            continue;
        };
        // Mean control score per probe.
        let mut sums: HashMap<&str, (f64, usize)> = HashMap::new();
        for c in controls {
            for p in c
                .get(name)
                .map(|o| o.per_probe.as_slice())
                .unwrap_or_default()
            {
                let e = sums.entry(p.probe_id.as_str()).or_insert((0.0, 0));
                e.0 += p.score;
                e.1 += 1;
            }
        }
        let fallback = default_null(name).mean;
        let mut scored: Vec<(f64, &ProbeScore, Option<f64>)> = outcome
            .per_probe
            .iter()
            .map(|p| {
                let control = sums.get(p.probe_id.as_str()).map(|(s, n)| s / *n as f64);
                (p.score - control.unwrap_or(fallback), p, control)
            })
            .collect();
        scored.sort_by(|a, b| {
            let order = if related {
                b.0.total_cmp(&a.0)
            } else {
                a.0.total_cmp(&b.0)
            };
            order.then_with(|| a.1.probe_id.cmp(&b.1.probe_id))
        });
        for (weight, p, control) in scored.into_iter().take(PER_SIGNAL) {
            let baseline = match control {
                Some(c) => format!("controls {c:.2}"),
                None => format!("default null {fallback:.2}"),
            };
            items.push(EvidenceItem {
                probe_id: p.probe_id.clone(),
                kind: p.kind,
                signal: name.to_string(),
                reference_text: p.reference_text.clone(),
                suspect_text: p.suspect_text.clone(),
                weight,
                why: format!("{}; score {:.2} vs {baseline}", p.note, p.score),
            });
        }
    }
    // Refusals the suspect no longer makes are shown whatever the verdict.
    if let (Some(stripped), Some(refusal)) = (&ours.stripped, &ours.refusal) {
        for id in stripped.probes.iter().take(PER_SIGNAL) {
            if let Some(p) = refusal.per_probe.iter().find(|p| &p.probe_id == id) {
                items.push(EvidenceItem {
                    probe_id: id.clone(),
                    kind: p.kind,
                    signal: "safeguards_stripped".to_string(),
                    reference_text: p.reference_text.clone(),
                    suspect_text: p.suspect_text.clone(),
                    weight: 0.0,
                    why: "the reference refuses, the suspect complies".to_string(),
                });
            }
        }
    }
    items.truncate(max);
    items
}
