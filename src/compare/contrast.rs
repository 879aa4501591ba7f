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
//! (see `Contrast::weight`). Each control is scored the same way, against the other
//! controls and the suspect, so the p-value compares like with like (see [`Contrast`]).

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
        // A key is allocated once per distinct term, not per occurrence.
        match self.counts.get_mut(term) {
            Some(count) => *count += 1.0,
            None => {
                self.counts.insert(term.to_string(), 1.0);
            }
        }
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
        let mut probes: Vec<ProbeTerms> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (probe_id, kind, text) in answers {
            let at = *index.entry(probe_id).or_insert_with(|| {
                probes.push(ProbeTerms {
                    probe_id: probe_id.to_string(),
                    kind,
                    first_text: text.to_string(),
                    words: Vec::new(),
                    pairs: Vec::new(),
                });
                probes.len() - 1
            });
            let (w, p) = terms(text);
            probes[at].words.extend(w);
            probes[at].pairs.extend(p);
        }
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

/// The reference's terms weighed against a set of pools, the controls' and the suspect's,
/// each pool scored against all the others: the suspect against every control, each
/// control against the other controls and the suspect. Under the null (the suspect is one
/// more unrelated model) the scores are then exchangeable, so the controls' scores are a
/// valid null for the suspect's; scoring each control against the other controls only
/// would set it against one model fewer than the suspect. The pools' probabilities are
/// summed once per term, so leaving one out costs a subtraction, not another pass over
/// the pools (empirical p-values need 99 controls or more).
pub struct Contrast<'a> {
    reference: &'a Pool,
    /// In the order given; a pool without answers takes no part (it would pull the mean
    /// towards a uniform distribution).
    pools: Vec<&'a Pool>,
    /// Pools with answers.
    active: usize,
    /// Vocabulary sizes (words, word pairs) of the reference and the pools together.
    vocabulary: [f64; 2],
    /// Per term the reference used: its smoothed probability summed over the pools.
    sums: [HashMap<&'a str, f64>; 2],
    /// The reference's first answer per probe, for the evidence table.
    reference_text: HashMap<&'a str, &'a str>,
}

impl<'a> Contrast<'a> {
    pub fn new(reference: &'a Pool, pools: Vec<&'a Pool>) -> Contrast<'a> {
        let active_pools = || pools.iter().copied().filter(|p| !p.is_empty());
        let size = |pairs: bool| {
            let mut seen: HashSet<&str> = HashSet::new();
            for pool in std::iter::once(reference).chain(active_pools()) {
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
                    let sum = active_pools()
                        .map(|p| p.table(pairs).probability(t, v))
                        .sum::<f64>();
                    (t.as_str(), sum)
                })
                .collect()
        });
        let active = active_pools().count();
        let reference_text = reference
            .probes
            .iter()
            .map(|p| (p.probe_id.as_str(), p.first_text.as_str()))
            .collect();
        Contrast {
            reference,
            pools,
            active,
            vocabulary,
            sums,
            reference_text,
        }
    }

    /// The term's log-ratio against every pool but `left_out`; `None` when the reference
    /// never used the term. A term the reference never used has a frequency made of
    /// smoothing alone there, against a mean over many pools that cover more of the
    /// language: its log-ratio would measure that coverage gap (and punish word salad,
    /// whose rare word pairs some control happens to share) rather than any habit.
    fn weight(&self, term: &str, pairs: bool, left_out: &Pool) -> Option<f64> {
        let i = usize::from(pairs);
        let v = self.vocabulary[i];
        let sum = self.sums[i].get(term)? - left_out.table(pairs).probability(term, v);
        // Every pool gives each term a probability above zero; the floor only guards
        // against the subtraction's rounding.
        let background = (sum / (self.active - 1) as f64).max(f64::MIN_POSITIVE);
        Some(self.reference.table(pairs).probability(term, v).ln() - background.ln())
    }

    /// Pool `i` scored against every other pool with answers; `None` when it has no
    /// answers, when no other pool has any, or when none of its words is the reference's.
    pub fn left_out(&self, i: usize, boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
        let scored = *self.pools.get(i)?;
        let others = self.active - 1;
        if scored.is_empty() || others == 0 || self.reference.is_empty() {
            return None;
        }
        let weigh_all = |pairs: bool| -> HashMap<&str, Option<f64>> {
            scored
                .table(pairs)
                .counts
                .keys()
                .map(|t| (t.as_str(), self.weight(t, pairs, scored)))
                .collect()
        };
        let (word_weights, pair_weights) = (weigh_all(false), weigh_all(true));
        // Only probes where the scored model used some word of the reference's say
        // anything; the rest are neither counted nor listed.
        let probes: Vec<(&ProbeTerms, ProbeSums)> = scored
            .probes
            .iter()
            .map(|p| (p, probe_sums(&word_weights, &pair_weights, p)))
            .filter(|(_, s)| s.1 > 0.0)
            .collect();
        let sums: Vec<ProbeSums> = probes.iter().map(|(_, s)| *s).collect();
        let all: Vec<usize> = (0..sums.len()).collect();
        let (score, words, pairs) = score_of(&sums, &all)?;
        let interval = boot.and_then(|opts| {
            bootstrap::interval(sums.len(), opts, |idx| score_of(&sums, idx).map(|s| s.0))
        });
        let per_probe = probes
            .iter()
            .enumerate()
            .filter_map(|(k, (p, s))| {
                let (mean, _, _) = score_of(&sums, &[k])?;
                Some(ProbeScore {
                    probe_id: p.probe_id.clone(),
                    kind: p.kind,
                    score: mean,
                    reference_text: clip(
                        self.reference_text.get(p.probe_id.as_str()).unwrap_or(&""),
                    ),
                    suspect_text: clip(&p.first_text),
                    note: format!(
                        "mean log-ratio {mean:+.3} over {} of the reference's words \
                         (its frequencies against the other models')",
                        s.1
                    ),
                })
            })
            .collect();
        let mut extra = BTreeMap::new();
        extra.insert("words".to_string(), words);
        if let Some(pairs) = pairs {
            extra.insert("word_pairs".to_string(), pairs);
        }
        extra.insert("background_models".to_string(), others as f64);
        let pairs_text = pairs.map_or(String::new(), |p| format!(", word pairs {p:+.3}"));
        Some(SignalOutcome {
            score,
            n: sums.len(),
            interval,
            detail: format!(
                "words lean {} the reference's side: mean log-ratio {score:+.3} against \
                 {others} other models (words {words:+.3}{pairs_text})",
                if score > 0.0 { "towards" } else { "away from" },
            ),
            extra,
            per_probe,
        })
    }
}

/// Per probe: (sum of word log-ratios, words counted, the same for word pairs).
type ProbeSums = (f64, f64, f64, f64);

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

/// Mean log-ratio of words and of word pairs over the probes at `indices`, averaged:
/// (score, words, word pairs). Word salad may share no word pair with the reference:
/// then words alone speak.
fn score_of(sums: &[ProbeSums], indices: &[usize]) -> Option<(f64, f64, Option<f64>)> {
    let mut total = (0.0, 0.0, 0.0, 0.0);
    for &i in indices {
        let s = sums[i];
        total = (total.0 + s.0, total.1 + s.1, total.2 + s.2, total.3 + s.3);
    }
    if total.1 == 0.0 {
        return None;
    }
    let words = total.0 / total.1;
    if total.3 == 0.0 {
        return Some((words, words, None));
    }
    let pairs = total.2 / total.3;
    Some(((words + pairs) / 2.0, words, Some(pairs)))
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

    /// The suspect's score against the background models, the suspect last in the set.
    fn score(reference: &Pool, suspect: &Pool, background: &[Pool]) -> f64 {
        let mut pools: Vec<&Pool> = background.iter().collect();
        pools.push(suspect);
        Contrast::new(reference, pools)
            .left_out(background.len(), None)
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

    /// Every pool is scored against all the others, whatever its place in the set: the
    /// suspect and the controls are scored alike, as the p-value needs.
    #[test]
    fn each_pool_is_scored_against_all_the_others() {
        let reference = pool("Certainly!", "Hope this helps!", false);
        let well = pool("Well,", "That is all.", false);
        let so = pool("So,", "In short.", false);
        let student = pool("Certainly!", "Hope this helps!", true);
        let first = Contrast::new(&reference, vec![&student, &well, &so]);
        let last = Contrast::new(&reference, vec![&well, &so, &student]);
        let a = first.left_out(0, None).expect("scored").score;
        let b = last.left_out(2, None).expect("scored").score;
        assert!((a - b).abs() < 1e-12, "{a} {b}");
        assert!(a > 0.3, "{a}");
        // A control, scored against the others with the student among them, leans the
        // reference's way less than the student does.
        let c = last.left_out(0, None).expect("scored").score;
        assert!(c < a, "{c} {a}");
        // Alone, a pool has nothing to be scored against; out of range is no pool.
        assert!(Contrast::new(&reference, vec![&well])
            .left_out(0, None)
            .is_none());
        assert!(last.left_out(3, None).is_none());
    }

    #[test]
    fn nothing_to_compare_is_none() {
        let reference = pool("Certainly!", "Hope this helps!", false);
        let empty = Pool::from_answers(std::iter::empty());
        let control = [pool("Well,", "That is all.", false)];
        assert!(Contrast::new(&reference, vec![&control[0], &empty])
            .left_out(1, None)
            .is_none());
        assert!(Contrast::new(&reference, vec![&control[0]])
            .left_out(0, None)
            .is_none());
        // Words the reference never used carry no evidence.
        let novel = Pool::from_answers([("p0", ProbeKind::Style, "zyx qwv")]);
        assert!(Contrast::new(&reference, vec![&control[0], &novel])
            .left_out(1, None)
            .is_none());
    }
}
