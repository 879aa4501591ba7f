//! Tokenizer: token counts of crafted strings (odd whitespace, rare scripts, numbers,
//! code) identify a tokenizer's vocabulary, merges and normalisation. Counts of the same
//! tokenizer agree on every string; different tokenizers disagree on many.
//!
//! Counts may come from a tokenize call (no special tokens) or from `usage.prompt_tokens`
//! (a BOS token, or a chat template on a chat-only endpoint, adds a constant), so the
//! counts are compared up to one constant offset: the most common difference. Through a
//! chat template whose delimiters are plain text for this tokenizer (llama-server falls
//! back to ChatML for a GGUF without a template), the message's last characters may merge
//! with the delimiter after them, so there a count one off the offset still agrees.

use std::collections::BTreeMap;

use super::bootstrap::{self, BootstrapOptions};
use super::{clip, Pair, ProbeScore, SignalOutcome};

/// Counts of both sides compared.
#[derive(Debug, Clone, PartialEq)]
pub struct CountComparison {
    /// Suspect count minus reference count that most strings show.
    pub offset: i64,
    /// Per probe: whether the difference equals the offset.
    pub matches: Vec<bool>,
    pub fraction: f64,
}

/// How far from the offset a count through a chat template may lie (one merge at the
/// message's end).
pub const CHAT_SLACK: i64 = 1;

/// Compares (reference, suspect) counts up to a constant offset, each within its slack.
pub fn compare_counts(counts: &[(u32, u32, i64)]) -> Option<CountComparison> {
    if counts.is_empty() {
        return None;
    }
    let mut differences: BTreeMap<i64, usize> = BTreeMap::new();
    for (r, s, _) in counts {
        *differences
            .entry(i64::from(*s) - i64::from(*r))
            .or_insert(0) += 1;
    }
    // Most common difference; on a tie the smallest in size, so exact agreement wins.
    let offset = differences
        .iter()
        .max_by(|a, b| {
            a.1.cmp(b.1)
                .then(b.0.abs().cmp(&a.0.abs()))
                .then(b.0.cmp(a.0))
        })
        .map(|(d, _)| *d)
        .unwrap_or(0);
    let matches: Vec<bool> = counts
        .iter()
        .map(|(r, s, slack)| (i64::from(*s) - i64::from(*r) - offset).abs() <= *slack)
        .collect();
    let fraction = matches.iter().filter(|m| **m).count() as f64 / matches.len() as f64;
    Some(CountComparison {
        offset,
        matches,
        fraction,
    })
}

/// Tokens the suspect's chat prompts carry beyond what the reference's own template makes
/// of them (its counts' offset, all counted through chat), where that is more than the
/// slack of one merge: text the operator adds that the scan cannot see (a hidden system
/// prompt, a wrapper around each message, a template of its own). `None` where the counts
/// say nothing of it.
pub fn hidden_chat_tokens(outcome: &SignalOutcome) -> Option<i64> {
    if outcome.extra.get("through_chat") != Some(&1.0) {
        return None;
    }
    let offset = *outcome.extra.get("offset")? as i64;
    (offset.abs() > CHAT_SLACK).then_some(offset)
}

/// The same hidden text read from a few chat requests' usage counts, (reference through its
/// own template, suspect) per request, before any tokenizer probe is asked: their common
/// difference, where every request shows it (within one merge) and it is more than one
/// merge. A different tokenizer makes the differences vary from message to message, so
/// it shows nothing here. `None` with fewer than two counts.
pub fn hidden_tokens_in_counts(counts: &[(u32, u32)]) -> Option<i64> {
    if counts.len() < 2 {
        return None;
    }
    let slack: Vec<(u32, u32, i64)> = counts.iter().map(|&(r, s)| (r, s, CHAT_SLACK)).collect();
    let comparison = compare_counts(&slack)?;
    (comparison.fraction == 1.0 && comparison.offset.abs() > CHAT_SLACK)
        .then_some(comparison.offset)
}

/// The tokenizer signal: score = share of strings whose counts agree (up to the offset).
pub fn signal(pairs: &[Pair], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    let counted: Vec<(&Pair, u32, u32)> = pairs
        .iter()
        .filter(|p| !through_chat(p.suspect) || countable_through_chat(prompt_text(p)))
        .filter_map(|p| {
            // A chat-only suspect counts through its template: the reference's count
            // through its own template is the one to set against it.
            let reference = p.reference.token_count_like(p.suspect)?.0;
            Some((p, reference, p.suspect.token_count()?.0))
        })
        .collect();
    let counts: Vec<(u32, u32, i64)> = counted
        .iter()
        .map(|c| {
            (
                c.1,
                c.2,
                if through_chat(c.0.suspect) {
                    CHAT_SLACK
                } else {
                    0
                },
            )
        })
        .collect();
    let comparison = compare_counts(&counts)?;
    let indicator: Vec<f64> = comparison
        .matches
        .iter()
        .map(|m| if *m { 1.0 } else { 0.0 })
        .collect();
    let per_probe = counted
        .iter()
        .zip(&comparison.matches)
        .map(|((pair, r, s), matched)| ProbeScore {
            probe_id: pair.reference.probe_id.clone(),
            kind: pair.reference.kind,
            score: if *matched { 1.0 } else { 0.0 },
            reference_text: format!("{r} tokens"),
            suspect_text: format!("{s} tokens"),
            note: format!(
                "{:?}: counts {r} vs {s}{}",
                clip(prompt_text(pair)),
                if *matched { " agree" } else { " differ" }
            ),
        })
        .collect();
    let mut extra = BTreeMap::new();
    extra.insert("offset".to_string(), comparison.offset as f64);
    if counted.iter().all(|c| through_chat(c.0.suspect)) {
        extra.insert("through_chat".to_string(), 1.0);
    }
    extra.insert(
        "mismatches".to_string(),
        comparison.matches.iter().filter(|m| !**m).count() as f64,
    );
    Some(SignalOutcome {
        score: comparison.fraction,
        n: counts.len(),
        interval: boot.and_then(|opts| bootstrap::mean_interval(&indicator, opts)),
        detail: format!(
            "{:.0}% of {} strings have the same token count (offset {:+})",
            comparison.fraction * 100.0,
            counts.len(),
            comparison.offset
        ),
        extra,
        per_probe,
    })
}

/// Whether the suspect's count came from `usage.prompt_tokens` of a chat request.
fn through_chat(o: &crate::fingerprint::Observation) -> bool {
    o.token_ids.is_none() && matches!(o.request.prompt, crate::endpoint::PromptForm::Chat { .. })
}

/// Chat templates commonly trim each message (Gemma's does, ChatML does not), and servers
/// read special tokens in the prompt they render, so a string with whitespace at either
/// end or anything tag-like would count differently under two templates of one tokenizer:
/// through chat, only strings neither can touch are counted.
fn countable_through_chat(text: &str) -> bool {
    text.trim() == text && !(text.contains('<') && text.contains('>'))
}

fn prompt_text<'a>(pair: &'a Pair) -> &'a str {
    match &pair.reference.request.prompt {
        crate::endpoint::PromptForm::Raw { prompt } => prompt,
        crate::endpoint::PromptForm::Chat { messages } => messages
            .last()
            .map(|m| m.content.as_str())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gateway that puts 18 tokens of its own before every user message (SmolLM2 on
    /// llama-server, chat only): the counts agree up to that offset, and the offset is
    /// hidden text only where every count went through chat.
    #[test]
    fn hidden_chat_tokens_are_an_offset_through_chat() {
        let outcome = |offset: f64, chat: bool| {
            let mut extra = BTreeMap::from([("offset".to_string(), offset)]);
            if chat {
                extra.insert("through_chat".to_string(), 1.0);
            }
            SignalOutcome {
                score: 1.0,
                n: 10,
                interval: None,
                extra,
                detail: String::new(),
                per_probe: Vec::new(),
            }
        };
        assert_eq!(hidden_chat_tokens(&outcome(18.0, true)), Some(18));
        assert_eq!(hidden_chat_tokens(&outcome(-7.0, true)), Some(-7));
        // One merge at the message's end, or a BOS token: not text.
        assert_eq!(hidden_chat_tokens(&outcome(1.0, true)), None);
        // Counted by a tokenize call: the offset is about the prompt as sent.
        assert_eq!(hidden_chat_tokens(&outcome(18.0, false)), None);
    }

    /// The early stop's warm-up: SmolLM2 behind a 21-token system prompt (llama-server,
    /// chat only) and behind none; Gemma's counts against SmolLM2's template.
    #[test]
    fn hidden_tokens_counted_on_a_few_chat_requests() {
        assert_eq!(hidden_tokens_in_counts(&[(31, 52), (40, 61)]), Some(21));
        assert_eq!(hidden_tokens_in_counts(&[(31, 52), (40, 62)]), Some(21));
        assert_eq!(hidden_tokens_in_counts(&[(31, 20), (40, 29)]), Some(-11));
        assert_eq!(hidden_tokens_in_counts(&[(31, 31), (40, 41)]), None);
        assert_eq!(hidden_tokens_in_counts(&[(31, 52), (40, 48)]), None);
        assert_eq!(hidden_tokens_in_counts(&[(31, 52)]), None);
        assert_eq!(hidden_tokens_in_counts(&[]), None);
    }

    #[test]
    fn exact_match_and_constant_offset() {
        let same = compare_counts(&[(3, 3, 0), (10, 10, 0), (7, 7, 0)]).expect("compares");
        assert_eq!((same.offset, same.fraction), (0, 1.0));
        // A BOS token counted on one side only.
        let bos = compare_counts(&[(3, 4, 0), (10, 11, 0), (7, 8, 0)]).expect("compares");
        assert_eq!((bos.offset, bos.fraction), (1, 1.0));
        let different =
            compare_counts(&[(3, 5, 0), (10, 10, 0), (7, 4, 0), (9, 12, 0)]).expect("compares");
        assert_eq!(different.offset, 0);
        assert!((different.fraction - 0.25).abs() < 1e-12);
        assert_eq!(compare_counts(&[]), None);
        // Through ChatML on Gemma's tokenizer (llama-server, a GGUF without a template):
        // two strings merge with the closing delimiter. SmolLM2's counts of the same
        // strings through its own template stay apart.
        let chatml: Vec<(u32, u32, i64)> = [(21, 36), (46, 61), (34, 48), (17, 32), (15, 30)]
            .iter()
            .map(|(r, s)| (*r, *s, CHAT_SLACK))
            .collect();
        assert_eq!(compare_counts(&chatml).map(|c| c.fraction), Some(1.0));
        let unrelated: Vec<(u32, u32, i64)> = [(21, 42), (46, 67), (34, 75), (17, 54), (15, 38)]
            .iter()
            .map(|(r, s)| (*r, *s, CHAT_SLACK))
            .collect();
        assert!(compare_counts(&unrelated).is_some_and(|c| c.fraction < 0.95));
    }

    #[test]
    fn through_chat_only_strings_no_template_touches_count() {
        assert!(countable_through_chat("a b  c   d"));
        assert!(countable_through_chat("x = 1 < 2"));
        assert!(!countable_through_chat("    leading spaces"));
        assert!(!countable_through_chat("trailing\r\n"));
        assert!(!countable_through_chat("<|im_start|>user"));
    }
}
