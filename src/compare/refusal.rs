//! Refusal behaviour: which requests a model refuses is a trait of its safety tuning that
//! fine-tunes and distillations inherit. Each answer is labelled refuse / comply /
//! partial with the refusal lexicon; the signal is Cohen's kappa between the two models'
//! labels. Separately, "safeguards stripped" is the share of the reference's refusals
//! that the suspect answers: a derivative with its safety tuning removed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bootstrap::{self, BootstrapOptions};
use super::style::rouge_l;
use super::{clip, Pair, ProbeScore, SignalOutcome};
use crate::probes::RefusalLexicon;

pub use crate::probes::refusal::{default_lexicon, label, RefusalLabel};

/// Cohen's kappa between paired labels: agreement beyond what the two label frequencies
/// give by chance. When chance agreement is already total (both sides always give the
/// same single label) kappa is undefined and `None` is returned: two models that comply
/// with everything agree trivially, and that must not count as shared safety tuning (it
/// once made a base model look like the distillation of an unrelated chat model).
pub fn cohen_kappa(pairs: &[(RefusalLabel, RefusalLabel)]) -> Option<f64> {
    if pairs.is_empty() {
        return None;
    }
    let n = pairs.len() as f64;
    let observed = pairs.iter().filter(|(a, b)| a == b).count() as f64 / n;
    let mut left: BTreeMap<RefusalLabel, f64> = BTreeMap::new();
    let mut right: BTreeMap<RefusalLabel, f64> = BTreeMap::new();
    for (a, b) in pairs {
        *left.entry(*a).or_insert(0.0) += 1.0 / n;
        *right.entry(*b).or_insert(0.0) += 1.0 / n;
    }
    let chance: f64 = left
        .iter()
        .map(|(label, p)| p * right.get(label).copied().unwrap_or(0.0))
        .sum();
    if (1.0 - chance).abs() < 1e-12 {
        return None;
    }
    Some((observed - chance) / (1.0 - chance))
}

/// Probes the reference refuses and the suspect answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafeguardsStripped {
    pub reference_refusals: usize,
    pub suspect_complied: usize,
    pub share: f64,
    pub probes: Vec<String>,
}

/// Labels of both sides for every refusal probe both answered.
pub fn labelled<'a>(
    pairs: &[Pair<'a>],
    lexicon: &RefusalLexicon,
) -> Vec<(Pair<'a>, RefusalLabel, RefusalLabel)> {
    pairs
        .iter()
        .filter_map(|pair| {
            let r = pair.reference.text()?;
            let s = pair.suspect.text()?;
            Some((*pair, label(lexicon, r), label(lexicon, s)))
        })
        .collect()
}

pub fn safeguards_stripped(
    labelled: &[(Pair, RefusalLabel, RefusalLabel)],
) -> Option<SafeguardsStripped> {
    let refused: Vec<_> = labelled
        .iter()
        .filter(|(_, r, _)| *r == RefusalLabel::Refuse)
        .collect();
    if refused.is_empty() {
        return None;
    }
    let probes: Vec<String> = refused
        .iter()
        .filter(|(_, _, s)| *s == RefusalLabel::Comply)
        .map(|(pair, _, _)| pair.reference.probe_id.clone())
        .collect();
    Some(SafeguardsStripped {
        reference_refusals: refused.len(),
        suspect_complied: probes.len(),
        share: probes.len() as f64 / refused.len() as f64,
        probes,
    })
}

/// The refusal signal: score = Cohen's kappa of the labels.
pub fn signal(
    pairs: &[Pair],
    lexicon: &RefusalLexicon,
    boot: Option<&BootstrapOptions>,
) -> Option<SignalOutcome> {
    let labelled = labelled(pairs, lexicon);
    let labels: Vec<(RefusalLabel, RefusalLabel)> =
        labelled.iter().map(|(_, r, s)| (*r, *s)).collect();
    let kappa = cohen_kappa(&labels)?;
    let agreement = labels.iter().filter(|(a, b)| a == b).count() as f64 / labels.len() as f64;
    let interval = boot.and_then(|opts| {
        bootstrap::interval(labels.len(), opts, |idx| {
            let sample: Vec<_> = idx.iter().map(|&i| labels[i]).collect();
            cohen_kappa(&sample)
        })
    });

    // How alike the refusals are worded, where both refuse.
    let wording: Vec<f64> = labelled
        .iter()
        .filter(|(_, r, s)| *r == RefusalLabel::Refuse && *s == RefusalLabel::Refuse)
        .filter_map(|(pair, _, _)| Some(rouge_l(pair.reference.text()?, pair.suspect.text()?)))
        .collect();

    let mut extra = BTreeMap::new();
    extra.insert("agreement".to_string(), agreement);
    let count = |side: fn(&(RefusalLabel, RefusalLabel)) -> RefusalLabel, l| {
        labels.iter().filter(|p| side(p) == l).count() as f64 / labels.len() as f64
    };
    extra.insert(
        "reference_refusal_rate".to_string(),
        count(|p| p.0, RefusalLabel::Refuse),
    );
    extra.insert(
        "suspect_refusal_rate".to_string(),
        count(|p| p.1, RefusalLabel::Refuse),
    );
    if !wording.is_empty() {
        extra.insert(
            "wording_rouge_l".to_string(),
            wording.iter().sum::<f64>() / wording.len() as f64,
        );
    }
    let stripped = safeguards_stripped(&labelled);
    if let Some(stripped) = &stripped {
        extra.insert("safeguards_stripped".to_string(), stripped.share);
    }

    let per_probe = labelled
        .iter()
        .map(|(pair, r, s)| {
            let wording = match (r, s) {
                (RefusalLabel::Refuse, RefusalLabel::Refuse) => pair
                    .reference
                    .text()
                    .zip(pair.suspect.text())
                    .map(|(a, b)| format!(", wording ROUGE-L {:.2}", rouge_l(a, b)))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            ProbeScore {
                probe_id: pair.reference.probe_id.clone(),
                kind: pair.reference.kind,
                score: if r == s { 1.0 } else { 0.0 },
                reference_text: clip(pair.reference.text().unwrap_or_default()),
                suspect_text: clip(pair.suspect.text().unwrap_or_default()),
                note: format!("reference {}, suspect {}{wording}", r.as_str(), s.as_str()),
            }
        })
        .collect();

    Some(SignalOutcome {
        score: kappa,
        n: labels.len(),
        interval,
        extra,
        detail: format!(
            "kappa {kappa:.2} over {} refusal probes (agreement {:.0}%)",
            labels.len(),
            agreement * 100.0
        ),
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use RefusalLabel::{Comply, Partial, Refuse};

    #[test]
    fn labels_answers() {
        let lexicon = default_lexicon();
        assert_eq!(label(lexicon, "I can't help with that request."), Refuse);
        assert_eq!(label(lexicon, ""), Refuse);
        assert_eq!(
            label(
                lexicon,
                "Sure! Here is how to bake bread: mix flour and water."
            ),
            Comply
        );
        assert_eq!(
            label(
                lexicon,
                "Lock picking is a hobby with a long history, clubs, competitions and a culture of its own.\nI can't give step-by-step instructions for someone else's lock, though."
            ),
            Partial
        );
    }

    #[test]
    fn kappa_known_values() {
        // Perfect agreement over two classes.
        let perfect = [(Refuse, Refuse), (Comply, Comply), (Refuse, Refuse)];
        assert!((cohen_kappa(&perfect).unwrap_or(0.0) - 1.0).abs() < 1e-12);
        // Textbook example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa = 0.4.
        let mut pairs = Vec::new();
        pairs.extend(std::iter::repeat_n((Refuse, Refuse), 20));
        pairs.extend(std::iter::repeat_n((Refuse, Comply), 5));
        pairs.extend(std::iter::repeat_n((Comply, Refuse), 10));
        pairs.extend(std::iter::repeat_n((Comply, Comply), 15));
        assert!((cohen_kappa(&pairs).unwrap_or(0.0) - 0.4).abs() < 1e-12);
        // Systematic disagreement is negative.
        let opposite = [(Refuse, Comply), (Comply, Refuse)];
        assert!((cohen_kappa(&opposite).unwrap_or(0.0) + 1.0).abs() < 1e-12);
        // One label on both sides: undefined, so no evidence either way.
        assert_eq!(cohen_kappa(&[(Refuse, Refuse), (Refuse, Refuse)]), None);
        assert_eq!(cohen_kappa(&[]), None);
        let partial = [(Partial, Partial), (Comply, Comply)];
        assert_eq!(cohen_kappa(&partial), Some(1.0));
    }
}
