//! Tallies of an evaluation: confusion matrix, precision and recall, false accusations.
//! Pure functions over (truth, verdict) pairs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Class;
use crate::compare::Verdict;

pub const VERDICTS: [Verdict; 5] = [
    Verdict::Identical,
    Verdict::Derived,
    Verdict::Distilled,
    Verdict::Unrelated,
    Verdict::Inconclusive,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub pairs: usize,
    /// Share of this class's pairs given their true verdict (None without pairs).
    pub recall: Option<f64>,
    /// Share of pairs given this class's verdict that truly are of it.
    pub precision: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub pairs: usize,
    /// Share of all pairs given their true verdict.
    pub accuracy: f64,
    /// Unrelated pairs called identical, derived or distilled, over unrelated pairs.
    pub false_accusation_rate: Option<f64>,
    /// confusion[truth][verdict] = count.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    pub per_class: BTreeMap<String, ClassScore>,
}

fn share(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

pub fn score(results: &[(Class, Verdict)]) -> Score {
    let mut confusion: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for class in Class::ALL {
        let row = confusion.entry(class.as_str().to_string()).or_default();
        for v in VERDICTS {
            row.insert(v.as_str().to_string(), 0);
        }
    }
    for (truth, verdict) in results {
        *confusion
            .entry(truth.as_str().to_string())
            .or_default()
            .entry(verdict.as_str().to_string())
            .or_default() += 1;
    }
    let correct = results.iter().filter(|(t, v)| t.verdict() == *v).count();
    let per_class = Class::ALL
        .iter()
        .map(|class| {
            let pairs = results.iter().filter(|(t, _)| t == class).count();
            let hits = results
                .iter()
                .filter(|(t, v)| t == class && *v == class.verdict())
                .count();
            let called = results
                .iter()
                .filter(|(_, v)| *v == class.verdict())
                .count();
            (
                class.as_str().to_string(),
                ClassScore {
                    pairs,
                    recall: share(hits, pairs),
                    precision: share(hits, called),
                },
            )
        })
        .collect();
    let unrelated = results
        .iter()
        .filter(|(t, _)| *t == Class::Unrelated)
        .count();
    let accused = results
        .iter()
        .filter(|(t, v)| {
            *t == Class::Unrelated
                && matches!(
                    v,
                    Verdict::Identical | Verdict::Derived | Verdict::Distilled
                )
        })
        .count();
    Score {
        pairs: results.len(),
        accuracy: share(correct, results.len()).unwrap_or(0.0),
        false_accusation_rate: share(accused, unrelated),
        confusion,
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_a_small_evaluation() {
        let results = [
            (Class::Identical, Verdict::Identical),
            (Class::Identical, Verdict::Derived),
            (Class::Derived, Verdict::Derived),
            (Class::Unrelated, Verdict::Unrelated),
            (Class::Unrelated, Verdict::Distilled),
            (Class::Unrelated, Verdict::Inconclusive),
        ];
        let s = score(&results);
        assert_eq!(s.pairs, 6);
        assert!((s.accuracy - 3.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.false_accusation_rate, Some(1.0 / 3.0));
        assert_eq!(s.confusion["identical"]["derived"], 1);
        assert_eq!(s.confusion["unrelated"]["inconclusive"], 1);
        assert_eq!(s.per_class["identical"].recall, Some(0.5));
        // Two pairs called derived, one of them truly derived.
        assert_eq!(s.per_class["derived"].precision, Some(0.5));
        assert_eq!(s.per_class["distilled"].recall, None);
        assert_eq!(s.per_class["distilled"].precision, Some(0.0));
    }

    #[test]
    fn no_pairs_no_accusations() {
        let s = score(&[]);
        assert_eq!(s.accuracy, 0.0);
        assert_eq!(s.false_accusation_rate, None);
    }
}
