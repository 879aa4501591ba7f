//! The pooled vocabulary: which words and word pairs a model uses across all its answers.
//!
//! A student trained on the reference's answers picks up its teacher's favourite words,
//! openers and formatting long before it can answer any one prompt the way the teacher
//! does, so one answer against another (the style signal) is too noisy to show it while
//! the vocabulary pooled over every answer is not. Per side, the greedy answers to the
//! logit, style and refusal probes and every sampled answer are pooled into frequencies
//! of words, word pairs and formatting marks; the similarity is 1 - the Jensen-Shannon
//! divergence (bits) of the two pools, averaged over words and word pairs. Identity
//! answers are left out: a persona system prompt sets them at will. The bootstrap
//! resamples probes, each with every answer it contributed on both sides.

use std::collections::HashMap;

use super::bootstrap::{self, BootstrapOptions};
use super::equality::SampleGroup;
use super::style::words;
use super::{clip, Pair, ProbeScore, SignalOutcome};
use crate::probes::ProbeKind;

/// One probe's answers on both sides (several for a sampling probe).
#[derive(Debug, Clone)]
pub struct Item {
    pub probe_id: String,
    pub kind: ProbeKind,
    pub reference: Vec<String>,
    pub suspect: Vec<String>,
}

/// The answers that are pooled, probe by probe: the greedy `pairs` (logit, style and
/// refusal probes, already matched by the caller) and the sampling `groups`.
pub fn items<'a>(
    pairs: impl IntoIterator<Item = &'a Pair<'a>>,
    groups: &[SampleGroup],
) -> Vec<Item> {
    let mut out: Vec<Item> = pairs
        .into_iter()
        .filter_map(|p| {
            Some(Item {
                probe_id: p.reference.probe_id.clone(),
                kind: p.reference.kind,
                reference: vec![p.reference.text()?.to_string()],
                suspect: vec![p.suspect.text()?.to_string()],
            })
        })
        .collect();
    out.extend(groups.iter().map(|g| Item {
        probe_id: g.probe_id.clone(),
        kind: ProbeKind::Sampling,
        reference: g.reference.clone(),
        suspect: g.suspect.clone(),
    }));
    out
}

/// Word and word-pair counts of one answer. Formatting marks (list bullets, numbering,
/// bold, headings, line breaks) count as words, since they are habits too.
pub(crate) fn terms(text: &str) -> (Vec<String>, Vec<String>) {
    let mut unigrams = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') {
            unigrams.push("<heading>".to_string());
        } else if trimmed.starts_with("- ") || trimmed.starts_with("* ") {
            unigrams.push("<bullet>".to_string());
        } else if trimmed
            .split_once(". ")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        {
            unigrams.push("<numbered>".to_string());
        }
        if trimmed.contains("**") {
            unigrams.push("<bold>".to_string());
        }
        unigrams.extend(words(line));
        unigrams.push("<br>".to_string());
    }
    unigrams.pop();
    let bigrams = unigrams
        .windows(2)
        .map(|w| format!("{} {}", w[0], w[1]))
        .collect();
    (unigrams, bigrams)
}

/// The terms of every answer of one item, per side, computed once.
struct Counted {
    reference: (Vec<String>, Vec<String>),
    suspect: (Vec<String>, Vec<String>),
}

fn count_item(item: &Item) -> Counted {
    let pool = |answers: &[String]| {
        let mut out = (Vec::new(), Vec::new());
        for a in answers {
            let (u, b) = terms(a);
            out.0.extend(u);
            out.1.extend(b);
        }
        out
    };
    Counted {
        reference: pool(&item.reference),
        suspect: pool(&item.suspect),
    }
}

/// Jensen-Shannon divergence in bits of two count tables (0 = same frequencies, 1 =
/// nothing shared). 1 when a side is empty and the other is not, 0 when both are.
pub fn jsd_bits(a: &HashMap<&str, f64>, b: &HashMap<&str, f64>) -> f64 {
    let (na, nb): (f64, f64) = (a.values().sum(), b.values().sum());
    match (na > 0.0, nb > 0.0) {
        (false, false) => return 0.0,
        (true, false) | (false, true) => return 1.0,
        _ => {}
    }
    let term = |p: f64, m: f64| if p > 0.0 { p * (p / m).log2() } else { 0.0 };
    let mut divergence = 0.0;
    for (key, &ca) in a {
        let p = ca / na;
        let q = b.get(key).copied().unwrap_or(0.0) / nb;
        let m = (p + q) / 2.0;
        divergence += 0.5 * term(p, m) + 0.5 * term(q, m);
    }
    for (key, &cb) in b {
        if !a.contains_key(key) {
            // p = 0 here, so m = q / 2 and the term is q * log2(2) = q.
            divergence += 0.5 * cb / nb;
        }
    }
    divergence.clamp(0.0, 1.0)
}

/// Similarity of the pools of the items at `indices` (repeats allowed, for the bootstrap).
fn similarity(counted: &[Counted], indices: &[usize]) -> (f64, f64) {
    let mut tables: [HashMap<&str, f64>; 4] = Default::default();
    for &i in indices {
        let c = &counted[i];
        for (table, terms) in
            tables
                .iter_mut()
                .zip([&c.reference.0, &c.suspect.0, &c.reference.1, &c.suspect.1])
        {
            for t in terms {
                *table.entry(t.as_str()).or_insert(0.0) += 1.0;
            }
        }
    }
    (
        1.0 - jsd_bits(&tables[0], &tables[1]),
        1.0 - jsd_bits(&tables[2], &tables[3]),
    )
}

/// The pooled-vocabulary signal; `None` without any answered item.
pub fn signal(items: &[Item], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    if items.is_empty() {
        return None;
    }
    let counted: Vec<Counted> = items.iter().map(count_item).collect();
    let all: Vec<usize> = (0..items.len()).collect();
    let (words_sim, pairs_sim) = similarity(&counted, &all);
    let score = (words_sim + pairs_sim) / 2.0;
    // Resampling probes with replacement repeats answers, which lowers the pooled
    // similarity (fewer distinct answers): the percentile interval sits below the score.
    // Its width is still the right spread, so the interval is centred on the score.
    let interval = boot
        .and_then(|opts| {
            bootstrap::interval(items.len(), opts, |idx| {
                let (w, p) = similarity(&counted, idx);
                Some((w + p) / 2.0)
            })
        })
        .map(|(lo, hi)| {
            let half = (hi - lo) / 2.0;
            ((score - half).max(0.0), (score + half).min(1.0))
        });
    // Per probe: how much of the suspect's vocabulary on that probe the reference also
    // used anywhere, for the evidence table (the score itself is pooled, not a mean).
    let reference_vocab: std::collections::HashSet<&str> = counted
        .iter()
        .flat_map(|c| c.reference.0.iter().map(String::as_str))
        .collect();
    let per_probe = items
        .iter()
        .zip(&counted)
        .map(|(item, c)| {
            let shared = c
                .suspect
                .0
                .iter()
                .filter(|t| reference_vocab.contains(t.as_str()))
                .count();
            let total = c.suspect.0.len();
            ProbeScore {
                probe_id: item.probe_id.clone(),
                kind: item.kind,
                score: if total == 0 {
                    0.0
                } else {
                    shared as f64 / total as f64
                },
                reference_text: clip(item.reference.first().map_or("", String::as_str)),
                suspect_text: clip(item.suspect.first().map_or("", String::as_str)),
                note: format!("{shared} of {total} suspect words also in the reference's answers"),
            }
        })
        .collect();
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("words".to_string(), words_sim);
    extra.insert("word_pairs".to_string(), pairs_sim);
    extra.insert(
        "reference_words".to_string(),
        counted.iter().map(|c| c.reference.0.len()).sum::<usize>() as f64,
    );
    extra.insert(
        "suspect_words".to_string(),
        counted.iter().map(|c| c.suspect.0.len()).sum::<usize>() as f64,
    );
    Some(SignalOutcome {
        score,
        n: items.len(),
        interval,
        detail: format!(
            "pooled vocabulary similarity {score:.3} over {} probes (words {words_sim:.3}, word pairs {pairs_sim:.3})",
            items.len()
        ),
        extra,
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, r: &str, s: &str) -> Item {
        Item {
            probe_id: id.to_string(),
            kind: ProbeKind::Style,
            reference: vec![r.to_string()],
            suspect: vec![s.to_string()],
        }
    }

    #[test]
    fn jsd_known_values() {
        let a: HashMap<&str, f64> = [("x", 1.0), ("y", 1.0)].into();
        let b: HashMap<&str, f64> = [("z", 3.0)].into();
        assert_eq!(jsd_bits(&a, &a), 0.0);
        assert!((jsd_bits(&a, &b) - 1.0).abs() < 1e-12);
        // P = (1, 0), Q = (1/2, 1/2): JSD = 1 - (3/4) log2(3) / 2 ... computed directly.
        let p: HashMap<&str, f64> = [("x", 2.0)].into();
        let q: HashMap<&str, f64> = [("x", 1.0), ("y", 1.0)].into();
        let m = [0.75, 0.25];
        let expected = 0.5 * (1.0 * (1.0f64 / m[0]).log2())
            + 0.5 * (0.5 * (0.5f64 / m[0]).log2() + 0.5 * (0.5f64 / m[1]).log2());
        assert!((jsd_bits(&p, &q) - expected).abs() < 1e-12);
        assert!((jsd_bits(&p, &q) - jsd_bits(&q, &p)).abs() < 1e-12);
        assert_eq!(jsd_bits(&HashMap::new(), &HashMap::new()), 0.0);
    }

    #[test]
    fn formatting_marks_count_as_words() {
        let (u, b) = terms("# Plan\n- one\n1. Two **bold**");
        assert_eq!(
            u,
            [
                "<heading>",
                "plan",
                "<br>",
                "<bullet>",
                "one",
                "<br>",
                "<numbered>",
                "<bold>",
                "1",
                "two",
                "bold"
            ]
        );
        assert_eq!(b.len(), u.len() - 1);
    }

    /// A pool that shares a model's habits scores higher than one that does not, even when
    /// no single answer matches the reference's answer to the same prompt.
    #[test]
    fn pooled_habits_outscore_unrelated_wording() {
        let reference = [
            "Sure! Here is a short answer about rivers: they flow to the sea.",
            "Sure! Here is a short answer about bread: bake it in an oven.",
            "Sure! Here is a short answer about stars: they are far away.",
        ];
        // Same opener and phrasing, different topics than the reference per prompt.
        let student = [
            "Sure! Here is a short answer about stars: they are far away.",
            "Sure! Here is a short answer about rivers: they flow to the sea.",
            "Sure! Here is a short answer about bread: bake it in an oven.",
        ];
        let other = [
            "Rivers. Water moves downhill toward oceans.",
            "Bread. Flour, water, yeast; heat.",
            "Stars. Distant suns.",
        ];
        let mk = |s: &[&str; 3]| -> Vec<Item> {
            reference
                .iter()
                .zip(s)
                .enumerate()
                .map(|(i, (r, s))| item(&format!("p{i}"), r, s))
                .collect()
        };
        let close = signal(&mk(&student), None).expect("signal");
        let far = signal(&mk(&other), None).expect("signal");
        assert!((close.score - 1.0).abs() < 1e-12, "{}", close.score);
        assert!(far.score < 0.5, "{}", far.score);
        let per_probe_mean =
            close.per_probe.iter().map(|p| p.score).sum::<f64>() / close.per_probe.len() as f64;
        assert!((per_probe_mean - 1.0).abs() < 1e-12);
        let boot = BootstrapOptions::default();
        let with = signal(&mk(&other), Some(&boot)).expect("signal");
        let (lo, hi) = with.interval.expect("interval");
        assert!(
            lo < with.score && with.score < hi,
            "{lo} {} {hi}",
            with.score
        );
        assert!(signal(&[], None).is_none());
    }
}
