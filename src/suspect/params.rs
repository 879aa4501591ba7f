//! Request parameters a server refuses, learned from its 400 answers.
//!
//! Providers differ in what they accept: OpenAI's newer models refuse `max_tokens` (they
//! want `max_completion_tokens`) and any temperature but 1, Azure deployments and some
//! gateways refuse `seed`, Anthropic's newer models refuse `temperature` and `top_p`
//! together. A scan that stopped at the first such 400 could not judge those suspects at
//! all, so the client drops (or renames) the parameter the message names, once per server,
//! and every later request goes without it.

use std::sync::atomic::{AtomicU8, Ordering};

/// A request parameter a server may refuse, least consequential first: when a message
/// names several (`temperature` and `top_p` cannot both be set), the first is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// Always sent as 1.0, which changes nothing.
    TopP,
    Seed,
    Stop,
    MaxTokens,
    Temperature,
}

impl Param {
    const ALL: [Param; 5] = [
        Param::TopP,
        Param::Seed,
        Param::Stop,
        Param::MaxTokens,
        Param::Temperature,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Param::TopP => "top_p",
            Param::Seed => "seed",
            Param::Stop => "stop",
            Param::MaxTokens => "max_tokens",
            Param::Temperature => "temperature",
        }
    }

    /// What the client sends instead, for the report.
    fn remedy(self) -> &'static str {
        match self {
            Param::MaxTokens => "sent as max_completion_tokens",
            Param::Temperature => "left out: the server samples at its own temperature",
            Param::TopP | Param::Seed | Param::Stop => "left out",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The parameters one server has refused so far.
#[derive(Debug, Default)]
pub struct Refused(AtomicU8);

impl Refused {
    pub fn contains(&self, param: Param) -> bool {
        self.0.load(Ordering::Relaxed) & param.bit() != 0
    }

    /// Records a refusal; false when it was known already.
    pub fn insert(&self, param: Param) -> bool {
        self.0.fetch_or(param.bit(), Ordering::Relaxed) & param.bit() == 0
    }

    pub fn remove(&self, param: Param) {
        self.0.fetch_and(!param.bit(), Ordering::Relaxed);
    }

    /// One entry per refused parameter: its name and what is sent instead.
    pub fn described(&self) -> Vec<String> {
        Param::ALL
            .into_iter()
            .filter(|&p| self.contains(p))
            .map(|p| format!("{} ({})", p.name(), p.remedy()))
            .collect()
    }
}

/// The parameter a 400 answer's message names, among those the request sent, where the
/// message is about a parameter at all (unsupported, unrecognised, invalid value).
pub fn named_in(message: &str, sent: &[Param]) -> Option<Param> {
    let message = message.to_ascii_lowercase();
    let about_a_parameter = [
        "unsupported",
        "not supported",
        "unrecognized",
        "unrecognised",
        "unknown",
        "not allowed",
        "not permitted",
        "invalid",
        "cannot both",
        "extra inputs",
        "only the default",
        "does not support",
    ]
    .iter()
    .any(|phrase| message.contains(phrase));
    if !about_a_parameter {
        return None;
    }
    Param::ALL
        .into_iter()
        .find(|p| sent.contains(p) && names_word(&message, p.name()))
}

/// `word` occurs in `text` with no identifier character on either side (so `max_tokens`
/// is not found in `max_completion_tokens`, nor `stop` in `stop_sequences`).
fn names_word(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: [Param; 5] = Param::ALL;

    #[test]
    fn providers_messages_name_the_parameter() {
        let cases = [
            (
                "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
                Param::MaxTokens,
            ),
            (
                "Unsupported value: 'temperature' does not support 0 with this model. Only the default (1) value is supported.",
                Param::Temperature,
            ),
            ("Unrecognized request argument supplied: seed", Param::Seed),
            (
                "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
                Param::TopP,
            ),
            (
                "1 validation error: body.stop: Extra inputs are not permitted",
                Param::Stop,
            ),
        ];
        for (message, param) in cases {
            assert_eq!(named_in(message, &SENT), Some(param), "{message}");
        }
    }

    #[test]
    fn only_parameters_sent_and_only_messages_about_them() {
        let msg = "Unrecognized request argument supplied: seed";
        assert_eq!(named_in(msg, &[Param::TopP, Param::MaxTokens]), None);
        // A prompt too long for max_tokens is not a refused parameter.
        assert_eq!(
            named_in(
                "This model's maximum context length is 4096 tokens; lower max_tokens",
                &SENT
            ),
            None
        );
        assert_eq!(
            named_in("Unsupported parameter: 'stop_sequences'", &SENT),
            None
        );
        assert_eq!(
            named_in("Invalid value for 'max_completion_tokens'", &SENT),
            None
        );
    }

    #[test]
    fn refusals_are_remembered_once_and_described() {
        let refused = Refused::default();
        assert!(refused.insert(Param::MaxTokens));
        assert!(!refused.insert(Param::MaxTokens));
        assert!(refused.insert(Param::Seed));
        assert!(refused.contains(Param::Seed) && !refused.contains(Param::TopP));
        assert_eq!(
            refused.described(),
            vec![
                "seed (left out)".to_string(),
                "max_tokens (sent as max_completion_tokens)".to_string()
            ]
        );
        refused.remove(Param::Seed);
        assert!(!refused.contains(Param::Seed));
    }
}
