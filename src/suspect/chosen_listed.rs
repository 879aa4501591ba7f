//! Lists of alternatives that leave out the chosen token. OpenAI, llama.cpp and vLLM list
//! the chosen token among a position's most likely ones; a stack that lists only the
//! *other* candidates makes every greedy position look like llama.cpp's merged
//! characters (a list belonging to another position, which the comparison skips), so a
//! copy was compared on no log-probability at all. Where every ASCII position of a
//! response misses its chosen token, the server leaves it out, and it is put back with
//! the log-probability the server gave it.

use crate::endpoint::{ProbeResponse, TopLogprob};

/// ASCII positions a response needs before its lists are judged: one could be chance.
const MIN_POSITIONS: usize = 2;

/// Whether a position's token can be told apart from llama.cpp's merged characters,
/// whose lists are another position's: plain ASCII is never such a character.
fn plain(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.is_ascii()
}

fn lists_chosen(bytes: &[u8], top: &[TopLogprob]) -> bool {
    top.iter().any(|t| t.bytes == bytes)
}

/// Puts each ASCII position's chosen token back into its list where the response's
/// lists leave it out everywhere (at least [`MIN_POSITIONS`] such positions).
pub fn restore_chosen(resp: &mut ProbeResponse) {
    let judged: Vec<bool> = resp
        .tokens
        .iter()
        .filter(|t| plain(&t.bytes) && !t.top.is_empty() && t.logprob.is_finite())
        .map(|t| lists_chosen(&t.bytes, &t.top))
        .collect();
    if judged.len() < MIN_POSITIONS || judged.iter().any(|&listed| listed) {
        return;
    }
    for t in &mut resp.tokens {
        if plain(&t.bytes) && !t.top.is_empty() && t.logprob.is_finite() {
            let at = t
                .top
                .iter()
                .position(|alt| alt.logprob < t.logprob)
                .unwrap_or(t.top.len());
            t.top.insert(
                at,
                TopLogprob {
                    id: t.id,
                    token: t.token.clone(),
                    bytes: t.bytes.clone(),
                    logprob: t.logprob,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::TokenLogprobs;

    fn position(chosen: &str, lp: f32, alts: &[(&str, f32)]) -> TokenLogprobs {
        TokenLogprobs {
            id: None,
            token: chosen.to_string(),
            bytes: chosen.as_bytes().to_vec(),
            logprob: lp,
            top: alts
                .iter()
                .map(|(t, l)| TopLogprob {
                    id: None,
                    token: t.to_string(),
                    bytes: t.as_bytes().to_vec(),
                    logprob: *l,
                })
                .collect(),
        }
    }

    fn response(tokens: Vec<TokenLogprobs>) -> ProbeResponse {
        ProbeResponse {
            text: String::new(),
            tokens,
            usage: None,
            finish_reason: None,
            latency_ms: 0,
        }
    }

    fn listed(resp: &ProbeResponse) -> Vec<Vec<String>> {
        resp.tokens
            .iter()
            .map(|t| t.top.iter().map(|a| a.token.clone()).collect())
            .collect()
    }

    #[test]
    fn lists_without_their_chosen_token_get_it_back_in_order() {
        let mut resp = response(vec![
            position(" Paris", -0.25, &[(" the", -2.7), (" a", -3.1)]),
            position(".", -0.4, &[(",", -1.6)]),
            // Sampled below the first alternative: it goes where its log-probability says.
            position(" It", -2.0, &[("\n", -0.5), (" The", -2.5)]),
        ]);
        restore_chosen(&mut resp);
        assert_eq!(
            listed(&resp),
            vec![
                vec![" Paris", " the", " a"],
                vec![".", ","],
                vec!["\n", " It", " The"],
            ]
        );
    }

    #[test]
    fn lists_that_hold_their_chosen_token_are_left_alone() {
        let kept = response(vec![
            position(" Paris", -0.25, &[(" Paris", -0.25), (" the", -2.7)]),
            position(".", -0.4, &[(",", -1.6)]),
        ]);
        let mut resp = kept.clone();
        restore_chosen(&mut resp);
        assert_eq!(resp, kept);
    }

    #[test]
    fn merged_characters_and_single_positions_are_not_read_as_a_habit() {
        // llama.cpp's merged character: a list of its last byte piece, chosen missing.
        let merged = response(vec![
            position("日", -0.3, &[("\u{fffd}", -0.3)]),
            position("本", -0.2, &[("\u{fffd}", -0.2)]),
        ]);
        let mut resp = merged.clone();
        restore_chosen(&mut resp);
        assert_eq!(resp, merged);
        let single = response(vec![position(" Paris", -0.25, &[(" the", -2.7)])]);
        let mut resp = single.clone();
        restore_chosen(&mut resp);
        assert_eq!(resp, single);
    }
}
