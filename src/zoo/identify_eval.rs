//! `eval --identify`: every zoo member set, as a suspect, against a library of every
//! reference (closed set: which one?) and against a library of only the references it
//! does not come from (open set: "none of these" is the right answer), from the prints the
//! evaluation already holds, replayed as a live suspect would have answered
//! (`crate::identify::identify_print`). No controls are unrelated to every reference of
//! the zoo, so the p-values stand against the default nulls, as a library without
//! controls has them.

use serde::{Deserialize, Serialize};

use super::{truth, Class, Member, ZooError};
use crate::compare::{CompareOptions, QuantizedForm};
use crate::fingerprint::Fingerprint;
use crate::identify::{identify_print, Library};
use crate::probes::ProbeSet;

/// One member's identification in one library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyResult {
    pub member: String,
    /// `closed`: every reference; `open`: those the member does not come from.
    pub library: String,
    /// The reference the member comes from, if the library holds it.
    pub expected: Option<String>,
    pub answer: Option<String>,
    pub queries: usize,
}

impl IdentifyResult {
    pub fn right(&self) -> bool {
        self.answer == self.expected
    }
}

/// The scores the README's table shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentifyScore {
    pub results: Vec<IdentifyResult>,
    /// Closed set: members answered with the reference they come from, of those that come
    /// from one.
    pub top1_accuracy: Option<f64>,
    /// Open set: members answered "none of these", of those the library holds nothing of.
    pub none_rate: Option<f64>,
    /// Answers naming a reference the member does not come from, of every answer given.
    pub false_identifications: usize,
    pub median_queries: usize,
    pub p95_queries: usize,
}

/// Identifies every member in both libraries.
pub async fn run(
    references: &[(&Member, Fingerprint)],
    forms: &std::collections::HashMap<String, Vec<QuantizedForm>>,
    members: &[(&Member, Fingerprint)],
    set: &ProbeSet,
    opts: &CompareOptions,
) -> Result<IdentifyScore, ZooError> {
    let library = |keep: &dyn Fn(&Member) -> bool| Library {
        references: references
            .iter()
            .filter(|(r, _)| keep(r))
            .map(|(r, p)| (r.id.clone(), p.clone()))
            .collect(),
        forms: references
            .iter()
            .filter(|(r, _)| keep(r))
            .map(|(r, _)| forms.get(&r.id).cloned().unwrap_or_default())
            .collect(),
        controls: Vec::new(),
    };
    let mut results = Vec::new();
    for (m, print) in members {
        let source = |r: &Member| truth(&r.base, m) != Class::Unrelated;
        let expected = references
            .iter()
            .find(|(r, _)| source(r))
            .map(|(r, _)| r.id.clone());
        for (name, lib) in [
            ("closed", library(&|_| true)),
            ("open", library(&|r| !source(r))),
        ] {
            if lib.references.is_empty() {
                continue;
            }
            let id = identify_print(&lib, set, print, opts)
                .await
                .map_err(|e| ZooError::Serve {
                    member: m.id.clone(),
                    message: e.to_string(),
                })?;
            results.push(IdentifyResult {
                member: m.id.clone(),
                library: name.to_string(),
                expected: if name == "closed" {
                    expected.clone()
                } else {
                    None
                },
                answer: id.answer,
                queries: id.suspect_queries,
            });
        }
    }
    Ok(score(results))
}

/// The table's numbers from the results (pure).
pub fn score(results: Vec<IdentifyResult>) -> IdentifyScore {
    let share = |rows: Vec<&IdentifyResult>| -> Option<f64> {
        (!rows.is_empty())
            .then(|| rows.iter().filter(|r| r.right()).count() as f64 / rows.len() as f64)
    };
    let top1_accuracy = share(
        results
            .iter()
            .filter(|r| r.library == "closed" && r.expected.is_some())
            .collect(),
    );
    let none_rate = share(results.iter().filter(|r| r.expected.is_none()).collect());
    let false_identifications = results
        .iter()
        .filter(|r| r.answer.is_some() && r.answer != r.expected)
        .count();
    let mut queries: Vec<usize> = results.iter().map(|r| r.queries).collect();
    queries.sort_unstable();
    let at = |q: f64| -> usize {
        if queries.is_empty() {
            0
        } else {
            queries[((queries.len() - 1) as f64 * q).round() as usize]
        }
    };
    IdentifyScore {
        top1_accuracy,
        none_rate,
        false_identifications,
        median_queries: at(0.5),
        p95_queries: at(0.95),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        library: &str,
        expected: Option<&str>,
        answer: Option<&str>,
        q: usize,
    ) -> IdentifyResult {
        IdentifyResult {
            member: "m".into(),
            library: library.into(),
            expected: expected.map(str::to_string),
            answer: answer.map(str::to_string),
            queries: q,
        }
    }

    #[test]
    fn closed_and_open_set_are_scored_apart() {
        let s = score(vec![
            row("closed", Some("a"), Some("a"), 8),
            row("closed", Some("b"), Some("a"), 108),
            row("open", None, None, 108),
            row("open", None, Some("b"), 40),
            row("closed", None, None, 108),
        ]);
        assert_eq!(s.top1_accuracy, Some(0.5));
        // "none" is right for the open-set rows and the closed-set row of a member the
        // zoo holds no reference of.
        assert_eq!(s.none_rate, Some(2.0 / 3.0));
        assert_eq!(s.false_identifications, 2);
        assert_eq!(s.median_queries, 108);
        assert_eq!(s.p95_queries, 108);
    }
}
