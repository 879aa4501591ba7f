//! Anytime-valid sequential testing: ask the suspect one logit probe at a time and stop
//! as soon as the evidence is decisive, because suspect APIs cost money and rate-limit.
//!
//! Each answered probe gives a match indicator X (see [`matches`]): same most likely
//! token and the reference's top tokens all present with log-probabilities within a
//! tolerance. Two test martingales (testing by betting) run side by side:
//!
//! - against "unrelated": an unrelated model matches probe j with probability at most
//!   q0_j, estimated per probe from the controls (add-one smoothed, floored) or a
//!   pessimistic default. Wealth is multiplied by 1 + λ (X - q0_j), λ = bet / q0_j.
//! - against "identical": the same weights match with probability at least q1 (from
//!   known-same pairs or a default that allows for engine noise). Wealth is multiplied
//!   by 1 + λ' ((1 - X) - (1 - q1)), λ' = bet / (1 - q1).
//!
//! Both factors have expectation at most 1 under their null, so by Ville's inequality
//! either wealth reaches 1/alpha with probability at most alpha, however many probes are
//! looked at and whenever the test stops. Crossing the first decides `identical`, the
//! second `not_identical`: for a suspect that is either a copy or an unrelated model that
//! means unrelated, but a fine-tune lands there too, and the full comparison tells
//! `derived` apart.
//!
//! Probes are asked in order of informativeness: those controls rarely match first, then
//! those where the reference's distribution is spread (a flat distribution is hard to
//! match by chance).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::likelihood::AnswerScore;
use super::logits::{positions, TopK};
use crate::fingerprint::{Fingerprint, Observation};
use crate::probes::ProbeKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialOptions {
    pub alpha: f64,
    /// Most suspect queries before giving up undecided.
    pub max_queries: usize,
    /// Reference tokens that must be matched.
    pub top_k: usize,
    /// Largest mean |Δ logprob| over those tokens for a match.
    pub tolerance_nats: f64,
    /// Share of wealth staked on each probe (below 1 so one surprise is not ruin).
    pub bet: f64,
    /// P(match | unrelated) assumed without controls; unrelated models rarely match
    /// five log-probabilities within tolerance, so one in two is pessimistic.
    pub default_q0: f64,
    /// Smallest P(match | unrelated) assumed from controls, however many never matched.
    pub q0_floor: f64,
    /// P(match | identical) assumed without known-same pairs; allows for one probe in
    /// five to be flipped by engine noise.
    pub default_q1: f64,
}

impl Default for SequentialOptions {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            max_queries: 8,
            top_k: 5,
            tolerance_nats: 0.3,
            bet: 0.9,
            default_q0: 0.5,
            q0_floor: 0.05,
            default_q1: 0.8,
        }
    }
}

/// A logit probe in asking order with its null match probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedProbe {
    pub probe_id: String,
    /// P(match | unrelated) used for the bet.
    pub q0: f64,
    /// Entropy (nats) of the reference's first-position distribution.
    pub entropy: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequentialDecision {
    /// "Unrelated" rejected: the suspect matches the reference's log-probabilities.
    Identical,
    /// "Identical" rejected: an unrelated model, or a derivative.
    NotIdentical,
    Undecided,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialStep {
    pub probe_id: String,
    /// `None` when the answer had no usable log-probabilities (no bet was placed).
    pub matched: Option<bool>,
    pub e_against_unrelated: f64,
    pub e_against_identical: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequentialOutcome {
    pub decision: SequentialDecision,
    /// Suspect queries consumed.
    pub queries: usize,
    pub e_against_unrelated: f64,
    pub e_against_identical: f64,
    pub q1: f64,
    pub steps: Vec<SequentialStep>,
}

/// Whether `suspect` matches `reference` at the first generated position; `None` when
/// either lacks log-probabilities there.
pub fn matches(
    reference: &Observation,
    suspect: &Observation,
    opts: &SequentialOptions,
) -> Option<bool> {
    let r = first_top(reference)?;
    let s = first_top(suspect)?;
    // Byte pieces of a character are reported differently by each engine
    // (`logits::aligned_positions`): no bet on them.
    let partial = super::logits::partial_character;
    if r.entries.first().is_none_or(|e| partial(&e.0)) {
        return None;
    }
    if r.entries.first().map(|e| &e.0) != s.entries.first().map(|e| &e.0)
        && !near_tie(&r, &s, opts.tolerance_nats)
    {
        return Some(false);
    }
    let s_map: BTreeMap<&[u8], f64> = s
        .entries
        .iter()
        .map(|(k, lp)| (k.as_slice(), *lp))
        .collect();
    // A server lists a few alternatives (top-1, top-5): a token the reference ranks near
    // the suspect's last listed one may fall just outside its list, which says nothing;
    // one the suspect should have listed above entries it did list says it differs.
    let s_last = s.entries.iter().map(|e| e.1).fold(f64::INFINITY, f64::min);
    let mut total = 0.0;
    let mut count = 0usize;
    for (key, lp) in r
        .entries
        .iter()
        .filter(|(key, _)| !partial(key))
        .take(opts.top_k.max(1))
    {
        let Some(other) = s_map.get(key.as_slice()) else {
            if *lp <= s_last + opts.tolerance_nats {
                continue;
            }
            return Some(false);
        };
        total += (lp - other).abs();
        count += 1;
    }
    Some(count > 0 && total / count as f64 <= opts.tolerance_nats)
}

/// Two lists whose top tokens differ only by a near-tie: each side lists the other's top
/// token within `tolerance` of its own. Engines' rounding swaps such pairs (Gemma 3 on
/// llama-server ranks " a" 0.017 nats above " Monday" where our runner ranks them the
/// other way); the mean difference over the top tokens still has to be within tolerance.
fn near_tie(r: &TopK, s: &TopK, tolerance: f64) -> bool {
    let lists_top_of = |a: &TopK, b: &TopK| {
        let (Some((key, _)), Some((_, best))) = (b.entries.first(), a.entries.first()) else {
            return false;
        };
        a.entries
            .iter()
            .any(|(k, lp)| k == key && *lp >= best - tolerance)
    };
    lists_top_of(r, s) && lists_top_of(s, r)
}

fn first_top(obs: &Observation) -> Option<TopK> {
    if !obs.is_ok() {
        return None;
    }
    positions(obs).into_iter().next()?.1
}

fn greedy_logit<'a>(fp: &'a Fingerprint, probe_id: &str) -> Option<&'a Observation> {
    fp.find(probe_id, 0)
        .filter(|o| o.kind == ProbeKind::Logit && o.is_ok())
}

/// Whether `suspect` matches any of `targets` (the reference and its quantized forms) at
/// the first generated position; `None` when none could be compared.
fn matches_any<'a>(
    targets: impl IntoIterator<Item = &'a Observation>,
    suspect: &Observation,
    opts: &SequentialOptions,
) -> Option<bool> {
    let mut outcome = None;
    for target in targets {
        match matches(target, suspect, opts) {
            Some(true) => return Some(true),
            Some(false) => outcome = Some(false),
            None => {}
        }
    }
    outcome
}

/// The reference's answer to `probe_id` and its quantized forms' answers, where they have one.
fn targets<'a>(
    reference: &'a Fingerprint,
    forms: &'a [&'a Fingerprint],
    probe_id: &'a str,
) -> impl Iterator<Item = &'a Observation> + 'a {
    std::iter::once(reference)
        .chain(forms.iter().copied())
        .filter_map(move |fp| greedy_logit(fp, probe_id))
}

/// Logit probes of the reference in asking order (see the module notes).
pub fn plan(
    reference: &Fingerprint,
    controls: &[Fingerprint],
    opts: &SequentialOptions,
) -> Vec<PlannedProbe> {
    plan_with_forms(reference, &[], controls, opts)
}

/// [`plan`] for a test that counts a match with the reference or any of its quantized
/// `forms` (a copy served quantized matches its form, not the reference as given); the
/// controls are judged by the same rule, so P(match | unrelated) stays what it is.
pub fn plan_with_forms(
    reference: &Fingerprint,
    forms: &[&Fingerprint],
    controls: &[Fingerprint],
    opts: &SequentialOptions,
) -> Vec<PlannedProbe> {
    let mut planned: Vec<(bool, PlannedProbe)> = reference
        .answered(ProbeKind::Logit)
        .filter(|o| o.sample_index == 0)
        .filter_map(|r| {
            let entropy = first_top(r)?.entropy();
            let outcomes: Vec<bool> = controls
                .iter()
                .filter_map(|c| {
                    let answer = greedy_logit(c, &r.probe_id)?;
                    matches_any(targets(reference, forms, &r.probe_id), answer, opts)
                })
                .collect();
            let q0 = q0_from(&outcomes, opts);
            let raw = r.request.prompt.is_raw();
            Some((
                raw,
                PlannedProbe {
                    probe_id: r.probe_id.clone(),
                    q0,
                    entropy,
                },
            ))
        })
        .collect();
    // Raw probes first: a hidden system prompt moves every chat answer, so a copy behind a
    // persona would lose its bets there. A suspect without raw completions skips them at
    // no cost (`crate::scan::sequential_phase`, `in_plan_order`).
    planned.sort_by(|(ra, a), (rb, b)| {
        rb.cmp(ra)
            .then(a.q0.total_cmp(&b.q0))
            .then(b.entropy.total_cmp(&a.entropy))
            .then(a.probe_id.cmp(&b.probe_id))
    });
    planned.into_iter().map(|(_, p)| p).collect()
}

/// Whether a suspect's greedy answer, read back by the reference, is the reference's own
/// choice: at least `band` of its tokens within engine noise of the reference's top token
/// (the greedy-token share's band). `None` for an answer with no tokens.
pub fn text_matches(score: &AnswerScore, band: f64) -> Option<bool> {
    (score.tokens > 0).then_some(score.near_top as f64 >= band * score.tokens as f64)
}

/// The probes a suspect without log-probabilities is asked first: the reference's greedy
/// raw completions (`raw`; a hidden system prompt cannot move them) or its greedy chat
/// answers of the kinds the likelihood reads, ordered as [`plan`] orders logit probes,
/// with P(match | unrelated) from the controls where they answered the probe: their
/// read-back answers (`controls.scores`, one list per control) and, on logit probes, their
/// texts against the quantized forms (`controls.prints`, `forms`), judged by the union rule
/// the suspect's answers are ([`TextMatch`]).
pub fn text_plan(
    reference: &Fingerprint,
    controls: TextControls<'_>,
    forms: &[&Fingerprint],
    raw: bool,
    band: f64,
    opts: &SequentialOptions,
) -> Vec<PlannedProbe> {
    let mut planned: Vec<PlannedProbe> = reference
        .observations
        .iter()
        .filter(|o| o.is_ok() && o.sample_index == 0 && o.request.temperature == 0.0)
        .filter(|o| {
            let is_raw = o.request.prompt.is_raw();
            if raw {
                is_raw
            } else {
                // The chat kinds the likelihood reads back, less identity (a persona sets
                // it), and the chat logit probes, which the quantized forms answered too.
                !is_raw
                    && matches!(
                        o.kind,
                        ProbeKind::Style | ProbeKind::Refusal | ProbeKind::Logit
                    )
            }
        })
        .map(|r| {
            let outcomes: Vec<bool> = controls
                .scores
                .iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let read = c.iter().find(|s| s.probe_id == r.probe_id && s.raw == raw);
                    let answer = controls.prints.get(i).and_then(|p| {
                        p.observations
                            .iter()
                            .find(|o| o.probe_id == r.probe_id && o.sample_index == 0)
                    });
                    TextMatch { band, forms }.judge(read, answer)
                })
                .collect();
            let q0 = q0_from(&outcomes, opts);
            PlannedProbe {
                probe_id: r.probe_id.clone(),
                q0,
                entropy: 0.0,
            }
        })
        .collect();
    planned.sort_by(|a, b| a.q0.total_cmp(&b.q0).then(a.probe_id.cmp(&b.probe_id)));
    planned
}

/// The reference's sampling probes in the order a self-agreement test learns most from
/// them (`super::sampled::collisions`): by the share of its own samples, taken in disjoint
/// pairs, that agree word for word, most first (ties by id). A prompt with one likely
/// answer gives a long run of agreeing tokens per pair; a flat one gives almost none.
pub fn sampling_plan(reference: &Fingerprint) -> Vec<String> {
    let mut samples: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for o in reference.answered(ProbeKind::Sampling) {
        if let Some(text) = o.text() {
            samples
                .entry(o.probe_id.as_str())
                .or_default()
                .push((o.sample_index, text.trim()));
        }
    }
    let mut scored: Vec<(f64, &str)> = samples
        .into_iter()
        .filter_map(|(id, mut texts)| {
            texts.sort_by_key(|(i, _)| *i);
            let pairs = texts.len() / 2;
            if pairs == 0 {
                return None;
            }
            let agree = texts
                .chunks_exact(2)
                .filter(|pair| pair[0].1 == pair[1].1)
                .count();
            Some((agree as f64 / pairs as f64, id))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    scored.into_iter().map(|(_, id)| id.to_string()).collect()
}

/// The controls of a text plan: their fingerprints and their answers read back by the
/// reference, in the same order.
#[derive(Clone, Copy)]
pub struct TextControls<'a> {
    pub prints: &'a [Fingerprint],
    pub scores: &'a [Vec<AnswerScore>],
}

/// When one greedy answer counts as a match on text: read back by the reference, its own
/// choice at `band`'s share of the tokens ([`text_matches`]); or, on a logit probe, the
/// greedy path of one of the reference's quantized forms followed as closely
/// (`super::greedy_path`), which is how a copy served quantized matches.
#[derive(Clone, Copy)]
pub struct TextMatch<'a> {
    pub band: f64,
    pub forms: &'a [&'a Fingerprint],
}

impl TextMatch<'_> {
    pub fn judge(&self, read: Option<&AnswerScore>, answer: Option<&Observation>) -> Option<bool> {
        let by_reference = read.and_then(|r| text_matches(r, self.band));
        let by_form = answer
            .filter(|a| a.kind == ProbeKind::Logit && !self.forms.is_empty())
            .and_then(|a| super::greedy_path::matches_any(self.forms, a, self.band));
        match (by_reference, by_form) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (None, None) => None,
            _ => Some(false),
        }
    }
}

/// P(match | unrelated) from the controls' outcomes on one probe: add-one smoothed and
/// floored, or the default without any.
fn q0_from(outcomes: &[bool], opts: &SequentialOptions) -> f64 {
    if outcomes.is_empty() {
        return opts.default_q0;
    }
    let hits = outcomes.iter().filter(|m| **m).count() as f64;
    ((hits + 1.0) / (outcomes.len() as f64 + 2.0)).max(opts.q0_floor)
}

/// P(match | identical) from known-same pairs (add-one smoothed and kept within
/// [0.5, 0.95]), else the default.
pub fn q1_from_known_same(
    reference: &Fingerprint,
    known_same: &[Fingerprint],
    opts: &SequentialOptions,
) -> f64 {
    let outcomes: Vec<bool> = known_same
        .iter()
        .flat_map(|k| {
            reference
                .answered(ProbeKind::Logit)
                .filter(|o| o.sample_index == 0)
                .filter_map(move |r| matches(r, greedy_logit(k, &r.probe_id)?, opts))
        })
        .collect();
    if outcomes.is_empty() {
        return opts.default_q1;
    }
    let hits = outcomes.iter().filter(|m| **m).count() as f64;
    ((hits + 1.0) / (outcomes.len() as f64 + 2.0)).clamp(0.5, 0.95)
}

/// The test, fed one suspect observation at a time.
pub struct SequentialTest<'a> {
    reference: &'a Fingerprint,
    forms: &'a [&'a Fingerprint],
    q0: BTreeMap<&'a str, f64>,
    q1: f64,
    opts: SequentialOptions,
    e_unrelated: f64,
    e_identical: f64,
    steps: Vec<SequentialStep>,
    decision: SequentialDecision,
}

impl<'a> SequentialTest<'a> {
    pub fn new(
        reference: &'a Fingerprint,
        plan: &'a [PlannedProbe],
        q1: f64,
        opts: &SequentialOptions,
    ) -> Self {
        Self {
            reference,
            forms: &[],
            q0: plan.iter().map(|p| (p.probe_id.as_str(), p.q0)).collect(),
            q1: q1.clamp(0.01, 0.99),
            opts: opts.clone(),
            e_unrelated: 1.0,
            e_identical: 1.0,
            steps: Vec::new(),
            decision: SequentialDecision::Undecided,
        }
    }

    /// Counts a match with any of the reference's quantized `forms` too; the plan must come
    /// from [`plan_with_forms`] with the same forms.
    pub fn with_forms(mut self, forms: &'a [&'a Fingerprint]) -> Self {
        self.forms = forms;
        self
    }

    pub fn decided(&self) -> bool {
        self.decision != SequentialDecision::Undecided || self.steps.len() >= self.opts.max_queries
    }

    /// Takes the suspect's answer to the next planned probe; returns the decision once
    /// there is one. Answers after a decision are ignored.
    pub fn update(&mut self, suspect: &Observation) -> SequentialDecision {
        if self.decided() {
            return self.decision;
        }
        let matched = matches_any(
            targets(self.reference, self.forms, &suspect.probe_id),
            suspect,
            &self.opts,
        );
        self.update_matched(&suspect.probe_id, matched)
    }

    /// Takes whether the answer to planned probe `probe_id` matched (`None`: no bet), as
    /// judged by the caller: the logit match above, or [`text_matches`] on a read-back.
    pub fn update_matched(&mut self, probe_id: &str, matched: Option<bool>) -> SequentialDecision {
        if self.decided() {
            return self.decision;
        }
        let q0 = self.q0.get(probe_id).copied();
        let matched = matched.filter(|_| q0.is_some());
        if let (Some(x), Some(q0)) = (matched, q0) {
            let x = if x { 1.0 } else { 0.0 };
            let bet = self.opts.bet.clamp(0.0, 1.0);
            self.e_unrelated *= 1.0 + bet / q0 * (x - q0);
            let miss_bound = 1.0 - self.q1;
            self.e_identical *= 1.0 + bet / miss_bound * ((1.0 - x) - miss_bound);
        }
        self.steps.push(SequentialStep {
            probe_id: probe_id.to_string(),
            matched,
            e_against_unrelated: self.e_unrelated,
            e_against_identical: self.e_identical,
        });
        let threshold = 1.0 / self.opts.alpha;
        if self.e_unrelated >= threshold {
            self.decision = SequentialDecision::Identical;
        } else if self.e_identical >= threshold {
            self.decision = SequentialDecision::NotIdentical;
        }
        self.decision
    }

    pub fn outcome(&self) -> SequentialOutcome {
        SequentialOutcome {
            decision: self.decision,
            queries: self.steps.len(),
            e_against_unrelated: self.e_unrelated,
            e_against_identical: self.e_identical,
            q1: self.q1,
            steps: self.steps.clone(),
        }
    }
}

/// Runs the test over `suspect` observations in the order given (normally the plan's
/// order) and stops at the first decision or after `max_queries`.
pub fn run<'a, I>(
    reference: &Fingerprint,
    forms: &[&Fingerprint],
    plan: &[PlannedProbe],
    q1: f64,
    suspect: I,
    opts: &SequentialOptions,
) -> SequentialOutcome
where
    I: IntoIterator<Item = &'a Observation>,
{
    let mut test = SequentialTest::new(reference, plan, q1, opts).with_forms(forms);
    for obs in suspect {
        test.update(obs);
        if test.decided() {
            break;
        }
    }
    test.outcome()
}

/// The suspect's observations of the planned probes, in plan order (what a sequential
/// scan would have asked, replayed from a full fingerprint).
pub fn in_plan_order<'a>(suspect: &'a Fingerprint, plan: &[PlannedProbe]) -> Vec<&'a Observation> {
    // A probe the suspect's API does not offer was never sent, so it cost no query (a live
    // scan skips it too).
    plan.iter()
        .filter_map(|p| suspect.find(&p.probe_id, 0))
        .filter(|o| {
            !matches!(
                o.error,
                Some(crate::endpoint::EndpointError::Unsupported(_))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(probe: &str, tokens: usize, near_top: usize) -> AnswerScore {
        AnswerScore {
            probe_id: probe.into(),
            kind: ProbeKind::Logit,
            text: String::new(),
            tokens,
            logprob: 0.0,
            expected: 0.0,
            variance: 0.0,
            top1: near_top,
            raw: true,
            near_top,
            system: None,
            format: None,
            stretch: None,
            sampled: Vec::new(),
            sample_index: 0,
        }
    }

    fn print(observations: Vec<Observation>) -> Fingerprint {
        Fingerprint::new(
            crate::fingerprint::ModelDescription {
                describe: "r".into(),
                capabilities: Default::default(),
            },
            crate::fingerprint::ProbeSetRef {
                name: "s".into(),
                version: "1".into(),
                hash: "h".into(),
            },
            observations,
        )
    }

    fn sample(probe: &str, index: usize, text: &str) -> Observation {
        use crate::endpoint::{ProbeRequest, ProbeResponse, PromptForm};
        Observation {
            probe_id: probe.into(),
            kind: ProbeKind::Sampling,
            sample_index: index,
            request: ProbeRequest {
                prompt: PromptForm::Raw { prompt: "x".into() },
                max_tokens: 8,
                temperature: 1.0,
                top_p: 1.0,
                seed: None,
                top_logprobs: 0,
                stop: Vec::new(),
            },
            response: Some(ProbeResponse {
                text: text.into(),
                tokens: Vec::new(),
                usage: None,
                finish_reason: None,
                latency_ms: 1,
            }),
            token_ids: None,
            chat_prompt_tokens: None,
            error: None,
            attempts: 1,
            latency_ms: 1,
        }
    }

    fn logit_answer(top: &[(&str, f32)]) -> Observation {
        use crate::endpoint::{TokenLogprobs, TopLogprob};
        let mut obs = sample("p", 0, top[0].0);
        obs.kind = ProbeKind::Logit;
        let entry = |(t, lp): &(&str, f32)| TopLogprob {
            id: None,
            token: t.to_string(),
            bytes: t.as_bytes().to_vec(),
            logprob: *lp,
        };
        if let Some(r) = obs.response.as_mut() {
            r.tokens = vec![TokenLogprobs {
                id: None,
                token: top[0].0.into(),
                bytes: top[0].0.as_bytes().to_vec(),
                logprob: top[0].1,
                top: top.iter().map(entry).collect(),
            }];
        }
        obs
    }

    #[test]
    fn a_server_listing_only_its_top_token_is_judged_on_what_it_lists() {
        let reference = logit_answer(&[
            (" Paris", -0.25),
            (" the", -2.1),
            (" a", -2.9),
            (" located", -3.3),
            (" in", -3.8),
        ]);
        let capped = logit_answer(&[(" Paris", -0.27)]);
        let five = SequentialOptions::default();
        let one = SequentialOptions {
            top_k: 1,
            ..SequentialOptions::default()
        };
        // Entries a server never shows are no evidence against it...
        assert_eq!(matches(&reference, &capped, &five), Some(true));
        assert_eq!(matches(&reference, &capped, &one), Some(true));
        let top_four = logit_answer(&[
            (" Paris", -0.26),
            (" the", -2.0),
            (" a", -3.0),
            (" in", -3.4),
        ]);
        assert_eq!(matches(&reference, &top_four, &five), Some(true));
        // ...while one it should have listed above those it did list is.
        let skipped = logit_answer(&[(" Paris", -0.26), (" a", -2.9), (" in", -3.8)]);
        assert_eq!(matches(&reference, &skipped, &five), Some(false));
        // ...but the one it shows still has to agree.
        let other = logit_answer(&[(" Paris", -1.4)]);
        assert_eq!(matches(&reference, &other, &one), Some(false));
        let different = logit_answer(&[(" the", -0.3)]);
        assert_eq!(matches(&reference, &different, &one), Some(false));
    }

    #[test]
    fn a_near_tie_at_the_top_may_swap_but_not_a_clear_lead() {
        let reference = logit_answer(&[
            (" Monday", -1.90),
            (" a", -1.92),
            (" the", -2.66),
            (" not", -3.03),
            (" Friday", -3.04),
        ]);
        let swapped = logit_answer(&[
            (" a", -1.90),
            (" Monday", -1.92),
            (" the", -2.66),
            (" not", -3.03),
            (" Friday", -3.04),
        ]);
        let opts = SequentialOptions::default();
        assert_eq!(matches(&reference, &swapped, &opts), Some(true));
        let leading = logit_answer(&[
            (" a", -1.2),
            (" Monday", -2.5),
            (" the", -2.66),
            (" not", -3.03),
            (" Friday", -3.04),
        ]);
        assert_eq!(matches(&reference, &leading, &opts), Some(false));
    }

    #[test]
    fn sampling_probes_are_planned_by_how_often_the_references_pairs_agree() {
        let texts = [
            ("coin", ["Heads", "Heads", "Heads", "Tails"]),
            ("number", ["17", "42", "7", "73"]),
            ("colour", ["Blue", "Blue", "Red", "Red"]),
        ];
        let observations = texts
            .iter()
            .flat_map(|(id, answers)| {
                answers
                    .iter()
                    .enumerate()
                    .map(move |(i, t)| sample(id, i, t))
            })
            .collect();
        let reference = print(observations);
        // Pairs (0, 1) and (2, 3): colour 2 of 2 agree, coin 1 of 2, number none.
        assert_eq!(sampling_plan(&reference), ["colour", "coin", "number"]);
    }

    #[test]
    fn a_text_match_is_the_bands_share_of_tokens_near_the_top() {
        assert_eq!(text_matches(&read("a", 4, 4), 0.9), Some(true));
        assert_eq!(text_matches(&read("a", 4, 3), 0.9), Some(false));
        assert_eq!(text_matches(&read("a", 40, 38), 0.95), Some(true));
        assert_eq!(text_matches(&read("a", 0, 0), 0.9), None);
    }

    #[test]
    fn text_matches_bet_against_unrelated_until_it_is_rejected() {
        let reference = print(Vec::new());
        let plan: Vec<PlannedProbe> = (0..8)
            .map(|i| PlannedProbe {
                probe_id: format!("p{i}"),
                q0: 0.2,
                entropy: 0.0,
            })
            .collect();
        let opts = SequentialOptions::default();
        // Each match multiplies the wealth by 1 + 0.9 (1 - 0.2) / 0.2 = 4.6: four pass
        // 1 / alpha = 100 (4.6^3 = 97.3).
        let mut copy = SequentialTest::new(&reference, &plan, 0.8, &opts);
        for p in &plan[..3] {
            assert_eq!(
                copy.update_matched(&p.probe_id, Some(true)),
                SequentialDecision::Undecided
            );
        }
        assert_eq!(
            copy.update_matched("p3", Some(true)),
            SequentialDecision::Identical
        );
        // Misses rule "identical" out; an answer without tokens places no bet, and a
        // probe outside the plan none either.
        let mut other = SequentialTest::new(&reference, &plan, 0.8, &opts);
        assert_eq!(
            other.update_matched("p0", None),
            SequentialDecision::Undecided
        );
        assert_eq!(
            other.update_matched("elsewhere", Some(true)),
            SequentialDecision::Undecided
        );
        assert_eq!(other.outcome().e_against_unrelated, 1.0);
        // Each miss multiplies the wealth against "identical" by 1 + 0.9 (1 - 0.2) / 0.2.
        for p in ["p1", "p2", "p3"] {
            assert_eq!(
                other.update_matched(p, Some(false)),
                SequentialDecision::Undecided
            );
        }
        assert_eq!(
            other.update_matched("p4", Some(false)),
            SequentialDecision::NotIdentical
        );
    }
}
