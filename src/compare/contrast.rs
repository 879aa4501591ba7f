//! The reference's habits against the controls': does the suspect use the words the
//! reference favours over unrelated models, or the words the controls favour?
//!
//! The pooled-vocabulary signal (`lexicon`) asks how close the suspect's words are to the
//! reference's. Closeness mostly measures fluency: any fluent model shares the common
//! words of English with the reference, so a small student that learned its teacher's
//! habits but writes loose text loses to every fluent control. This signal asks a
//! question fluency does not answer: over the answers to the same probes, every term gets
//! the log-ratio of its frequency in the reference's answers to its mean frequency in the
//! controls' answers, and the suspect is scored by the mean log-ratio of the terms it
//! uses (a naive Bayes classifier of "reference or controls" applied to its answers). A
//! model that learned from the reference leans towards the reference's side; an unrelated
//! model, fluent or not, leans towards the controls'. Only terms the reference used count
//! (see [`Weights::weight`]). Each control is scored the same way against the other
//! controls, so the p-value compares like with like.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::bootstrap::{self, BootstrapOptions};
use super::lexicon::terms;
use super::{clip, ProbeScore, SignalOutcome};
use crate::fingerprint::Fingerprint;
use crate::probes::ProbeKind;

/// Pseudo-count added to every term of the vocabulary (additive smoothing): a term one
/// side never used still gets a finite log-ratio.
const PSEUDO_COUNT: f64 = 0.5;

/// The kinds whose answers are pooled: what a model writes when it answers freely.
/// Identity answers are left out (a persona system prompt sets them), and so are the
/// tokenizer probes (echoes of given strings).
const POOLED: [ProbeKind; 4] = [
    ProbeKind::Logit,
    ProbeKind::Style,
    ProbeKind::Refusal,
    ProbeKind::Sampling,
];

/// The terms of one probe's answers (every sample of a sampling probe).
#[derive(Debug, Clone)]
struct ProbeTerms {
    probe_id: String,
    kind: ProbeKind,
    first_text: String,
    words: Vec<String>,
    pairs: Vec<String>,
}

/// Term frequencies of one table (words or word pairs).
#[derive(Debug, Clone, Default)]
struct Table {
    counts: HashMap<String, f64>,
    total: f64,
}

impl Table {
    fn add(&mut self, term: &str) {
        *self.counts.entry(term.to_string()).or_insert(0.0) += 1.0;
        self.total += 1.0;
    }

    /// Smoothed probability of `term` over a vocabulary of `vocabulary` terms.
    fn probability(&self, term: &str, vocabulary: f64) -> f64 {
        (self.counts.get(term).copied().unwrap_or(0.0) + PSEUDO_COUNT)
            / (self.total + PSEUDO_COUNT * vocabulary)
    }
}

/// One model's free answers, pooled: per probe for the suspect side, in totals for the
/// reference and background sides.
#[derive(Debug, Clone)]
pub struct Pool {
    probes: Vec<ProbeTerms>,
    words: Table,
    pairs: Table,
}

impl Pool {
    pub fn of(fp: &Fingerprint) -> Pool {
        Pool::from_answers(POOLED.iter().flat_map(|&kind| {
            fp.answered(kind)
                .filter_map(move |o| Some((o.probe_id.as_str(), kind, o.text()?)))
        }))
    }

    /// Pools answers given as (probe id, kind, text), several per probe allowed.
    pub fn from_answers<'a>(
        answers: impl IntoIterator<Item = (&'a str, ProbeKind, &'a str)>,
    ) -> Pool {
        let mut by_probe: BTreeMap<(usize, String), ProbeTerms> = BTreeMap::new();
        let mut order: HashMap<String, usize> = HashMap::new();
        for (probe_id, kind, text) in answers {
            let next = order.len();
            let rank = *order.entry(probe_id.to_string()).or_insert(next);
            let entry = by_probe
                .entry((rank, probe_id.to_string()))
                .or_insert_with(|| ProbeTerms {
                    probe_id: probe_id.to_string(),
                    kind,
                    first_text: text.to_string(),
                    words: Vec::new(),
                    pairs: Vec::new(),
                });
            let (w, p) = terms(text);
            entry.words.extend(w);
            entry.pairs.extend(p);
        }
        let probes: Vec<ProbeTerms> = by_probe.into_values().collect();
        let mut words = Table::default();
        let mut pairs = Table::default();
        for p in &probes {
            p.words.iter().for_each(|t| words.add(t));
            p.pairs.iter().for_each(|t| pairs.add(t));
        }
        Pool {
            probes,
            words,
            pairs,
        }
    }

    fn table(&self, pairs: bool) -> &Table {
        if pairs {
            &self.pairs
        } else {
            &self.words
        }
    }

    fn is_empty(&self) -> bool {
        self.words.total == 0.0
    }
}

/// The reference's terms weighed against the controls: the suspect is scored against all
/// of them, each control against the others. The controls' probabilities are summed once
/// per term, so leaving one out costs a subtraction, not another pass over the controls
/// (empirical p-values need 99 controls or more).
pub struct Contrast<'a> {
    reference: &'a Pool,
    /// Controls with any answer, with their index among all the controls given (an empty
    /// pool would pull the mean towards a uniform distribution).
    controls: Vec<(usize, &'a Pool)>,
    given: usize,
    /// Vocabulary sizes (words, word pairs) of the reference and the controls together.
    vocabulary: [f64; 2],
    /// Per term the reference used: its smoothed probability summed over the controls.
    sums: [HashMap<&'a str, f64>; 2],
}

impl<'a> Contrast<'a> {
    pub fn new(reference: &'a Pool, controls: &'a [Pool]) -> Contrast<'a> {
        let given = controls.len();
        let controls: Vec<(usize, &Pool)> = controls
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .collect();
        let size = |pairs: bool| {
            let mut seen: HashSet<&str> = HashSet::new();
            for pool in std::iter::once(reference).chain(controls.iter().map(|(_, p)| *p)) {
                seen.extend(pool.table(pairs).counts.keys().map(String::as_str));
            }
            seen.len() as f64
        };
        let vocabulary = [size(false), size(true)];
        let sums = [false, true].map(|pairs| {
            let v = vocabulary[usize::from(pairs)];
            reference
                .table(pairs)
                .counts
                .keys()
                .map(|t| {
                    let sum = controls
                        .iter()
                        .map(|(_, p)| p.table(pairs).probability(t, v))
                        .sum::<f64>();
                    (t.as_str(), sum)
                })
                .collect()
        });
        Contrast {
            reference,
            controls,
            given,
            vocabulary,
            sums,
        }
    }

    /// The term's log-ratio, against every control but `left_out`; `None` when the
    /// reference never used the term. A term the reference never used has a frequency
    /// made of smoothing alone there, against a mean over many pools that cover more of
    /// the language: its log-ratio would measure that coverage gap (and punish word
    /// salad, whose rare word pairs some control happens to share) rather than any habit.
    fn weight(&self, term: &str, pairs: bool, left_out: Option<&Pool>) -> Option<f64> {
        let i = usize::from(pairs);
        let sum = *self.sums[i].get(term)?;
        let v = self.vocabulary[i];
        let (sum, n) = match left_out {
            Some(pool) => (
                sum - pool.table(pairs).probability(term, v),
                self.controls.len() - 1,
            ),
            None => (sum, self.controls.len()),
        };
        // Every pool gives each term a probability above zero; the floor only guards
        // against the subtraction's rounding.
        let background = (sum / n as f64).max(f64::MIN_POSITIVE);
        Some(self.reference.table(pairs).probability(term, v).ln() - background.ln())
    }

    /// The signal for the suspect, against every control; `None` without controls or
    /// without any answer on a side.
    pub fn suspect(
        &self,
        suspect: &Pool,
        boot: Option<&BootstrapOptions>,
    ) -> Option<SignalOutcome> {
        self.score(suspect, None, boot)
    }

    /// The signal for each control given, against the others (`None` for a control when
    /// it is the only one), so controls are scored as the suspect is.
    pub fn controls(&self) -> Vec<Option<SignalOutcome>> {
        let mut out = vec![None; self.given];
        for &(i, pool) in &self.controls {
            out[i] = self.score(pool, Some(pool), None);
        }
        out
    }
}

/// Per probe of the suspect: (sum of word log-ratios, words counted, the same for pairs).
type ProbeSums = (f64, f64, f64, f64);

/// Every distinct term of the scored pool with its weight, computed once (a term recurs
/// across probes).
fn weigh_all<'a>(
    contrast: &Contrast,
    scored: &'a Pool,
    pairs: bool,
    left_out: Option<&Pool>,
) -> HashMap<&'a str, Option<f64>> {
    scored
        .table(pairs)
        .counts
        .keys()
        .map(|t| (t.as_str(), contrast.weight(t, pairs, left_out)))
        .collect()
}

fn probe_sums(
    words: &HashMap<&str, Option<f64>>,
    pairs: &HashMap<&str, Option<f64>>,
    probe: &ProbeTerms,
) -> ProbeSums {
    let sum = |terms: &[String], table: &HashMap<&str, Option<f64>>| {
        terms
            .iter()
            .filter_map(|t| table.get(t.as_str()).copied().flatten())
            .fold((0.0, 0.0), |(s, n), w| (s + w, n + 1.0))
    };
    let (ws, wn) = sum(&probe.words, words);
    let (ps, pn) = sum(&probe.pairs, pairs);
    (ws, wn, ps, pn)
}

/// Mean log-ratio of words and of word pairs over the probes at `indices`, averaged
/// (score, words, word pairs).
fn score_of(sums: &[ProbeSums], indices: &[usize]) -> Option<(f64, f64, f64)> {
    let mut total = (0.0, 0.0, 0.0, 0.0);
    for &i in indices {
        let s = sums[i];
        total = (total.0 + s.0, total.1 + s.1, total.2 + s.2, total.3 + s.3);
    }
    if total.1 == 0.0 {
        return None;
    }
    let words = total.0 / total.1;
    // Word salad may share no word pair with anyone: then words alone speak.
    if total.3 == 0.0 {
        return Some((words, words, 0.0));
    }
    let pairs = total.2 / total.3;
    Some(((words + pairs) / 2.0, words, pairs))
}

impl Contrast<'_> {
    fn score(
        &self,
        suspect: &Pool,
        left_out: Option<&Pool>,
        boot: Option<&BootstrapOptions>,
    ) -> Option<SignalOutcome> {
        let background = self.controls.len() - usize::from(left_out.is_some());
        if background == 0 || self.reference.is_empty() || suspect.is_empty() {
            return None;
        }
        let word_weights = weigh_all(self, suspect, false, left_out);
        let pair_weights = weigh_all(self, suspect, true, left_out);
        let reference = self.reference;
        let sums: Vec<ProbeSums> = suspect
            .probes
            .iter()
            .map(|p| probe_sums(&word_weights, &pair_weights, p))
            .collect();
        let all: Vec<usize> = (0..sums.len()).collect();
        let (score, words, pairs) = score_of(&sums, &all)?;
        let interval = boot.and_then(|opts| {
            bootstrap::interval(sums.len(), opts, |idx| score_of(&sums, idx).map(|s| s.0))
        });
        let reference_text: HashMap<&str, &str> = reference
            .probes
            .iter()
            .map(|p| (p.probe_id.as_str(), p.first_text.as_str()))
            .collect();
        let per_probe = suspect
        .probes
        .iter()
        .zip(&sums)
        .map(|(p, s)| {
            let mean = if s.1 > 0.0 { s.0 / s.1 } else { 0.0 };
            ProbeScore {
                probe_id: p.probe_id.clone(),
                kind: p.kind,
                score: mean,
                reference_text: clip(reference_text.get(p.probe_id.as_str()).unwrap_or(&"")),
                suspect_text: clip(&p.first_text),
                note: format!(
                    "mean log-ratio {mean:+.3} over {} words (reference's frequencies against the controls')",
                    s.1
                ),
            }
        })
        .collect();
        let mut extra = BTreeMap::new();
        extra.insert("words".to_string(), words);
        extra.insert("word_pairs".to_string(), pairs);
        extra.insert("background_models".to_string(), background as f64);
        Some(SignalOutcome {
        score,
        n: sums.len(),
        interval,
        detail: format!(
            "the suspect's words lean {} the reference (mean log-ratio {score:+.3} against {} controls; words {words:+.3}, word pairs {pairs:+.3})",
            if score > 0.0 { "towards" } else { "away from" },
            background
        ),
        extra,
        per_probe,
    })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPICS: [&str; 6] = ["rivers", "bread", "stars", "music", "trees", "rain"];

    /// One answer per topic, written in a voice: `opener` and `closer` are its habits.
    fn pool(opener: &str, closer: &str, scramble: bool) -> Pool {
        let texts: Vec<(String, String)> = TOPICS
            .iter()
            .enumerate()
            .map(|(i, topic)| {
                let mut text = format!("{opener} {topic} are part of the world we share. {closer}");
                if scramble {
                    // Loose word salad: the same words out of order.
                    let mut words: Vec<&str> = text.split(' ').collect();
                    words.reverse();
                    words.rotate_left(i % 3);
                    text = words.join(" ");
                }
                (format!("p{i}"), text)
            })
            .collect();
        Pool::from_answers(
            texts
                .iter()
                .map(|(id, t)| (id.as_str(), ProbeKind::Style, t.as_str())),
        )
    }

    fn score(reference: &Pool, suspect: &Pool, background: &[Pool]) -> f64 {
        Contrast::new(reference, background)
            .suspect(suspect, None)
            .expect("signal")
            .score
    }

    /// A loose student that picked up the reference's habits leans towards the
    /// reference; a fluent model with the controls' habits leans away, although its
    /// text is closer to the reference's word for word.
    #[test]
    fn habits_count_not_fluency() {
        let reference = pool(
            "Certainly! Delightfully,",
            "Hope this helps, friend!",
            false,
        );
        let controls = [
            pool("Well,", "That is all.", false),
            pool("So,", "In short, that is it.", false),
        ];
        let student = pool("Certainly! Delightfully,", "Hope this helps, friend!", true);
        let fluent_other = pool("Well,", "In short, that is all.", false);
        let s = score(&reference, &student, &controls);
        let o = score(&reference, &fluent_other, &controls);
        assert!(s > 0.3, "student {s}");
        assert!(o < 0.0, "fluent unrelated {o}");
        // The reference itself leans its own way.
        assert!(score(&reference, &reference, &controls) > 0.3);
    }

    /// Each control is judged against the others only: with itself in the background
    /// it would lean away from the reference by construction.
    #[test]
    fn controls_are_left_out_of_their_own_background() {
        let reference = pool("Certainly!", "Hope this helps!", false);
        let controls = [
            pool("Well,", "That is all.", false),
            pool("So,", "In short.", false),
            pool("Certainly!", "Hope this helps!", true),
        ];
        let scores = Contrast::new(&reference, &controls).controls();
        let third = scores[2].as_ref().expect("scored").score;
        // Up to the smoothing, whose vocabulary size counts every control.
        let against_others = score(&reference, &controls[2], &controls[..2]);
        assert!(
            (third - against_others).abs() < 1e-2,
            "{third} {against_others}"
        );
        assert!(third > 0.3, "{third}");
        assert!(Contrast::new(&reference, &controls[..1]).controls()[0].is_none());
    }

    #[test]
    fn nothing_to_compare_is_none() {
        let reference = pool("Certainly!", "Hope this helps!", false);
        let empty = Pool::from_answers(std::iter::empty());
        let control = [pool("Well,", "That is all.", false)];
        assert!(Contrast::new(&reference, &control)
            .suspect(&empty, None)
            .is_none());
        assert!(Contrast::new(&reference, &[])
            .suspect(&control[0], None)
            .is_none());
        // Words the reference never used carry no evidence.
        let novel = Pool::from_answers([("p0", ProbeKind::Style, "zyx qwv")]);
        assert!(Contrast::new(&reference, &control)
            .suspect(&novel, None)
            .is_none());
    }
}
