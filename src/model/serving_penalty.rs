//! The penalties serving stacks put on tokens already seen, so the read-back can ask
//! whether a greedy answer is the reference's top choice under one of them. A copy served
//! with a penalty leaves the reference's plain top choice wherever a token repeats, and
//! every stack counts "seen" its own way:
//!
//! - llama.cpp's `--repeat-penalty` and Ollama (default 1.1): the last 64 tokens, prompt
//!   included, for the repetition, presence and frequency penalties alike;
//! - Hugging Face transformers, TGI and vLLM's `repetition_penalty` (vLLM takes it from the
//!   model's `generation_config.json` by default: Qwen2.5 ships 1.05): every token of the
//!   prompt and the answer;
//! - OpenAI-style `presence_penalty` and `frequency_penalty` in vLLM and SGLang (Qwen's
//!   model cards advise a presence penalty up to 2): the answer's tokens only.
//!
//! The repetition penalty divides a seen token's logit when it is positive and multiplies
//! it when not; presence subtracts a constant from a seen token, frequency one per count.

use std::collections::HashMap;

use super::top_k;

/// Which earlier tokens a penalty counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The last [`LLAMA_CPP_WINDOW`] tokens of prompt and answer (llama.cpp, Ollama).
    Window,
    /// Every token of prompt and answer (transformers, TGI, vLLM's repetition penalty).
    Context,
    /// The answer's tokens only (vLLM's and SGLang's presence and frequency penalties).
    Answer,
}

/// One serving setting: the three penalties and where they count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalty {
    pub repeat: f32,
    pub presence: f32,
    pub frequency: f32,
    pub scope: Scope,
}

const fn repeat(repeat: f32, scope: Scope) -> Penalty {
    Penalty {
        repeat,
        presence: 0.0,
        frequency: 0.0,
        scope,
    }
}

const fn presence(presence: f32, scope: Scope) -> Penalty {
    Penalty {
        repeat: 1.0,
        presence,
        frequency: 0.0,
        scope,
    }
}

const fn frequency(frequency: f32, scope: Scope) -> Penalty {
    Penalty {
        repeat: 1.0,
        presence: 0.0,
        frequency,
        scope,
    }
}

/// Tokens llama.cpp's and Ollama's penalties look back on by default.
pub const LLAMA_CPP_WINDOW: usize = 64;

const LLAMA_CPP: Scope = Scope::Window;

/// The settings tried on every answer: the defaults and common choices of each stack.
/// The read-back keeps the one that puts most of an answer at the top, for suspects and
/// controls alike, so more settings lift every print a little and the controls say how
/// much.
pub const SERVING_PENALTIES: [Penalty; 18] = [
    repeat(1.05, LLAMA_CPP),
    repeat(1.1, LLAMA_CPP),
    repeat(1.15, LLAMA_CPP),
    repeat(1.2, LLAMA_CPP),
    repeat(1.3, LLAMA_CPP),
    presence(0.5, LLAMA_CPP),
    presence(1.0, LLAMA_CPP),
    presence(1.5, LLAMA_CPP),
    repeat(1.05, Scope::Context),
    repeat(1.1, Scope::Context),
    repeat(1.2, Scope::Context),
    repeat(1.3, Scope::Context),
    presence(0.5, Scope::Answer),
    presence(1.0, Scope::Answer),
    presence(1.5, Scope::Answer),
    presence(2.0, Scope::Answer),
    frequency(0.5, Scope::Answer),
    frequency(1.0, Scope::Answer),
];

/// Candidates for the best unpenalized token looked at before a full pass: the top few
/// are rarely all seen.
const RANKED: usize = 16;

/// How far (nats) `token` lies below the most likely token under each of
/// [`SERVING_PENALTIES`], after `prompt` and the `answer` tokens before it.
pub fn gaps(logits: &[f32], token: u32, prompt: &[u32], answer: &[u32]) -> Vec<f64> {
    let context = || prompt.iter().chain(answer);
    let skip = (prompt.len() + answer.len()).saturating_sub(LLAMA_CPP_WINDOW);
    let window = counts(context().skip(skip));
    let whole = counts(context());
    let answered = counts(answer.iter());
    let ranked = top_k(logits, RANKED);
    let chosen = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    SERVING_PENALTIES
        .iter()
        .map(|p| {
            let seen = match p.scope {
                Scope::Window => &window,
                Scope::Context => &whole,
                Scope::Answer => &answered,
            };
            gap_under(p, logits, chosen, token, seen, &ranked)
        })
        .collect()
}

/// How many times each token occurs.
fn counts<'a>(tokens: impl Iterator<Item = &'a u32>) -> HashMap<u32, u32> {
    let mut out = HashMap::new();
    for &id in tokens {
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

fn gap_under(
    p: &Penalty,
    logits: &[f32],
    chosen: f32,
    token: u32,
    seen: &HashMap<u32, u32>,
    ranked: &[(u32, f32)],
) -> f64 {
    let penalize = |logit: f32, count: u32| {
        let l = if logit > 0.0 {
            logit / p.repeat
        } else {
            logit * p.repeat
        };
        l - count as f32 * p.frequency - p.presence
    };
    let unseen = ranked
        .iter()
        .find(|(id, _)| !seen.contains_key(id))
        .map(|(_, l)| *l)
        .unwrap_or_else(|| {
            logits
                .iter()
                .enumerate()
                .filter(|(id, _)| !seen.contains_key(&(*id as u32)))
                .map(|(_, l)| *l)
                .fold(f32::NEG_INFINITY, f32::max)
        });
    let best = seen
        .iter()
        .filter_map(|(&id, &count)| logits.get(id as usize).map(|&l| penalize(l, count)))
        .fold(unseen, f32::max);
    let chosen = seen
        .get(&token)
        .map_or(chosen, |&count| penalize(chosen, count));
    (best - chosen) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(p: Penalty) -> usize {
        SERVING_PENALTIES
            .iter()
            .position(|q| *q == p)
            .expect("a listed setting")
    }

    #[test]
    fn a_repeated_token_loses_its_lead_under_a_repetition_penalty() {
        // Token 0 leads (2.0) but was just said; token 1 (1.9) was not.
        let logits = [2.0f32, 1.9, -1.0, 0.5];
        let gaps = gaps(&logits, 1, &[0, 2], &[]);
        assert_eq!(gaps.len(), SERVING_PENALTIES.len());
        // 2.0 / 1.05 = 1.905 still leads 1.9 by 0.005; from 1.1 on token 1 is the top.
        let at = |r| gaps[index(repeat(r, LLAMA_CPP))];
        assert!((at(1.05) - (2.0 / 1.05 - 1.9)).abs() < 1e-5, "{gaps:?}");
        assert!(
            [1.1, 1.15, 1.2, 1.3].iter().all(|&r| at(r) == 0.0),
            "{gaps:?}"
        );
        // The repeated token itself lies below token 1 from 1.1 on.
        let gaps_0 = super::gaps(&logits, 0, &[0, 2], &[]);
        assert!(gaps_0[index(repeat(1.1, LLAMA_CPP))] > 0.0, "{gaps_0:?}");
        // A negative logit is multiplied: the repeated token 2 falls further (-1.1).
        let gaps_2 = super::gaps(&logits, 2, &[0, 2], &[]);
        assert!((gaps_2[index(repeat(1.1, LLAMA_CPP))] - (1.9 + 1.1)).abs() < 1e-5);
        // Nothing seen: the plain gap under every setting.
        let gaps_3 = super::gaps(&logits, 3, &[], &[]);
        assert!(gaps_3.iter().all(|g| (g - 1.5).abs() < 1e-6), "{gaps_3:?}");
    }

    #[test]
    fn each_stack_counts_its_own_tokens() {
        // Token 0 leads by 0.3 and stands 70 tokens back in the prompt only.
        let logits = [2.0f32, 1.7, 0.0];
        let mut prompt = vec![0u32];
        prompt.extend(std::iter::repeat_n(2u32, 70));
        let gaps = gaps(&logits, 1, &prompt, &[]);
        // Out of llama.cpp's window: token 0 keeps its lead there.
        assert!((gaps[index(repeat(1.3, LLAMA_CPP))] - 0.3).abs() < 1e-5);
        // In the whole context (transformers, vLLM): 2.0 / 1.3 falls below 1.7.
        assert_eq!(gaps[index(repeat(1.3, Scope::Context))], 0.0);
        // Not in the answer: presence in vLLM's sense does not touch it.
        assert!((gaps[index(presence(1.0, Scope::Answer))] - 0.3).abs() < 1e-5);
        // Said twice in the answer: presence takes 1.0 once, frequency 0.5 per time.
        let gaps = super::gaps(&logits, 1, &[2], &[0, 0]);
        assert_eq!(gaps[index(presence(1.0, Scope::Answer))], 0.0);
        assert_eq!(gaps[index(frequency(0.5, Scope::Answer))], 0.0);
        assert_eq!(gaps[index(presence(0.5, Scope::Answer))], 0.0);
    }

    #[test]
    fn the_best_unseen_token_is_found_past_the_ranked_few() {
        // The top RANKED + 4 tokens were all seen (10.0 down to 9.05); the best unseen one,
        // token 30 (8.8), ranks below them.
        let mut logits: Vec<f32> = (0..40)
            .map(|i| if i < 20 { 10.0 - i as f32 * 0.05 } else { 0.0 })
            .collect();
        logits[30] = 8.8;
        let prompt: Vec<u32> = (0..RANKED as u32 + 4).collect();
        // Under presence 1.5 every seen token drops to 8.5 or below: token 30 leads, and
        // token 0 (8.5) lies 0.3 below it.
        let gaps = gaps(&logits, 0, &prompt, &[]);
        assert!(
            (gaps[index(presence(1.5, LLAMA_CPP))] - 0.3).abs() < 1e-5,
            "{gaps:?}"
        );
    }
}
