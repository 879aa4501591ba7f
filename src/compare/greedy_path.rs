//! A text-only suspect's greedy tokens against another fingerprint's next-token lists: the
//! greedy-token share (`likelihood::greedy_tokens_signal`) read from stored top-k lists
//! instead of a model. The read-back needs the model itself; a quantized form of the
//! reference (`crate::quantized_forms`) is kept only as its fingerprint on the logit
//! probes, so this is how a suspect without log-probabilities is set against each form.
//!
//! Each logit probe's stored answer lists the top tokens at its first few positions along
//! its own greedy path. The lists apply to the suspect's text only while the suspect
//! follows that path, so the walk stops at the first token where the two part.

use super::likelihood::NEAR_TOP_NATS;
use super::Pair;

/// Positions walked and how many of them the suspect's text takes a token within
/// [`NEAR_TOP_NATS`] of the other side's most likely one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathShare {
    pub share: f64,
    pub positions: usize,
    pub probes: usize,
    /// Read on raw probes (else on chat probes, through the suspect's template).
    pub raw: bool,
}

/// Over `pairs` (reference side: the fingerprint with top lists; suspect side: text), raw
/// probes when any were answered by both (no template or system prompt reaches them), chat
/// ones otherwise. `None` when no position could be walked.
pub fn share(pairs: &[Pair]) -> Option<PathShare> {
    let is_raw = |p: &&Pair| p.suspect.request.prompt.is_raw();
    let usable = |p: &&Pair| {
        p.suspect.text().is_some_and(|t| !t.is_empty())
            && p.reference
                .response
                .as_ref()
                .is_some_and(|r| r.tokens.iter().any(|t| !t.top.is_empty()))
    };
    let any_raw = pairs.iter().filter(usable).any(|p| is_raw(&p));
    let mut matched = 0usize;
    let mut positions = 0usize;
    let mut probes = 0usize;
    for pair in pairs.iter().filter(usable).filter(|p| is_raw(p) == any_raw) {
        let (Some(text), Some(response)) = (pair.suspect.text(), pair.reference.response.as_ref())
        else {
            continue;
        };
        let (m, n) = walk(text.as_bytes(), response);
        matched += m;
        positions += n;
        probes += 1;
    }
    (positions > 0).then(|| PathShare {
        share: matched as f64 / positions as f64,
        positions,
        probes,
        raw: any_raw,
    })
}

/// (positions where the text takes a near-top token, positions walked) along one answer.
pub fn walk(mut rest: &[u8], response: &crate::endpoint::ProbeResponse) -> (usize, usize) {
    let (mut matched, mut walked) = (0, 0);
    for step in &response.tokens {
        if rest.is_empty() || step.top.is_empty() {
            break;
        }
        let best = step
            .top
            .iter()
            .map(|t| t.logprob)
            .fold(step.logprob, f32::max);
        walked += 1;
        let near = step.top.iter().any(|t| {
            f64::from(best - t.logprob) <= NEAR_TOP_NATS
                && !t.bytes.is_empty()
                && rest.starts_with(&t.bytes)
        });
        if near {
            matched += 1;
        }
        // Past this position the lists were made after the other side's own token.
        match rest.strip_prefix(step.bytes.as_slice()) {
            Some(after) if !step.bytes.is_empty() => rest = after,
            _ => break,
        }
    }
    (matched, walked)
}

/// Whether `answer`'s text follows the greedy path of any of `forms` (their answers to the
/// same probe) at `band`'s share of the positions walked; `None` where no form's answer
/// could be walked.
pub fn matches_any(
    forms: &[&crate::fingerprint::Fingerprint],
    answer: &crate::fingerprint::Observation,
    band: f64,
) -> Option<bool> {
    let text = answer.text().filter(|t| !t.is_empty())?;
    let mut walked_any = false;
    for form in forms {
        let Some(response) = form
            .observations
            .iter()
            .find(|o| {
                o.probe_id == answer.probe_id
                    && o.sample_index == 0
                    && o.is_ok()
                    && o.request.prompt.is_raw() == answer.request.prompt.is_raw()
            })
            .and_then(|o| o.response.as_ref())
        else {
            continue;
        };
        let (matched, walked) = walk(text.as_bytes(), response);
        if walked == 0 {
            continue;
        }
        walked_any = true;
        if matched as f64 >= band * walked as f64 {
            return Some(true);
        }
    }
    walked_any.then_some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{ProbeResponse, TokenLogprobs, TopLogprob};

    fn step(chosen: &str, top: &[(&str, f32)]) -> TokenLogprobs {
        TokenLogprobs {
            id: None,
            token: chosen.into(),
            bytes: chosen.as_bytes().to_vec(),
            logprob: top
                .iter()
                .find(|(t, _)| *t == chosen)
                .map_or(-1.0, |(_, l)| *l),
            top: top
                .iter()
                .map(|(t, l)| TopLogprob {
                    id: None,
                    token: (*t).into(),
                    bytes: t.as_bytes().to_vec(),
                    logprob: *l,
                })
                .collect(),
        }
    }

    fn response(steps: Vec<TokenLogprobs>) -> ProbeResponse {
        ProbeResponse {
            text: steps.iter().map(|s| s.token.clone()).collect(),
            tokens: steps,
            usage: None,
            finish_reason: None,
            latency_ms: 0,
        }
    }

    #[test]
    fn walks_while_the_paths_agree_and_counts_near_ties() {
        let r = response(vec![
            step(" Paris", &[(" Paris", -0.1), (" the", -2.5)]),
            step(".", &[(".", -0.3), (",", -0.6)]),
            step(" It", &[(" It", -0.2), (" The", -3.0)]),
        ]);
        // The same path.
        assert_eq!(walk(b" Paris. It", &r), (3, 3));
        // A near tie taken (0.3 nats below the top): counted, then the walk stops.
        assert_eq!(walk(b" Paris, and", &r), (2, 2));
        // A token far below the top: a miss, and the walk stops.
        assert_eq!(walk(b" the city", &r), (0, 1));
        // Text shorter than the path.
        assert_eq!(walk(b" Paris", &r), (1, 1));
        assert_eq!(walk(b"", &r), (0, 0));
    }
}
