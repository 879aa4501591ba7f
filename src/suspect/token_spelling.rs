//! Token text spelled as vocabulary pieces. A stack that reports log-probabilities with
//! `tokenizer.convert_ids_to_tokens` (private servers, some framework versions) lists
//! `"Ġthe"` (byte-level BPE) or `"▁the"` (SentencePiece) where llama.cpp and OpenAI list
//! `" the"`, and gives no `bytes`. Tokens are aligned across engines by their bytes, so
//! such a copy matched no reference token and read as another model. A response whose
//! chosen tokens decode to its text in one of these spellings has every token, and every
//! alternative, decoded to its bytes; one whose chosen tokens carry no sign either way is
//! read from its alternatives.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::endpoint::ProbeResponse;

/// How a server spelled the tokens of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// Text (or bytes) as they read: nothing to undo.
    Text,
    /// GPT-2's byte-level alphabet: each byte one printable character (`Ġ` a space).
    ByteLevel,
    /// SentencePiece: `▁` a space, `<0xNN>` a byte the vocabulary has no piece for.
    SentencePiece,
}

const SPM_SPACE: char = '\u{2581}';
/// A space and a newline in GPT-2's byte-level alphabet (`Ġ`, `Ċ`): what shows a piece.
const BYTE_LEVEL_MARKS: [char; 2] = ['\u{120}', '\u{10A}'];

/// GPT-2's byte-to-character table, reversed: printable bytes stand for themselves, the
/// other 68 take the characters from U+0100 on, in byte order.
fn byte_level_table() -> &'static BTreeMap<char, u8> {
    static TABLE: OnceLock<BTreeMap<char, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable =
            |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut table = BTreeMap::new();
        let mut next = 0u32;
        for b in 0..=255u8 {
            let c = if printable(b) {
                char::from(b)
            } else {
                next += 1;
                char::from_u32(255 + next).unwrap_or(char::REPLACEMENT_CHARACTER)
            };
            table.insert(c, b);
        }
        table
    })
}

/// The bytes a piece stands for in `spelling`; `None` where it is not a piece of it.
pub fn decode(piece: &str, spelling: Spelling) -> Option<Vec<u8>> {
    match spelling {
        Spelling::Text => Some(piece.as_bytes().to_vec()),
        Spelling::ByteLevel => {
            let table = byte_level_table();
            piece.chars().map(|c| table.get(&c).copied()).collect()
        }
        Spelling::SentencePiece => Some(decode_sentence_piece(piece)),
    }
}

fn decode_sentence_piece(piece: &str) -> Vec<u8> {
    // A byte-fallback piece is the whole piece (`<0xE2>`); a stack that joins the pieces
    // of one character lists a run of them.
    byte_fallback_run(piece).unwrap_or_else(|| piece.replace(SPM_SPACE, " ").into_bytes())
}

/// `<0xE2><0x82>` → [0xE2, 0x82]; `None` unless the whole piece is such bytes.
fn byte_fallback_run(piece: &str) -> Option<Vec<u8>> {
    if piece.is_empty() || !piece.len().is_multiple_of(6) {
        return None;
    }
    piece
        .as_bytes()
        .chunks(6)
        .map(|chunk| {
            let hex = chunk.strip_prefix(b"<0x")?.strip_suffix(b">")?;
            u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
        })
        .collect()
}

/// Bytes without whitespace: servers trim answers and drop stop tokens from the text,
/// so the chosen tokens and the text are compared on what is left.
fn visible(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

/// Whether the chosen tokens, read in `spelling`, spell the response's text (one may
/// run past the other: a stop token listed, an answer cut short).
fn spells_text(resp: &ProbeResponse, spelling: Spelling) -> bool {
    let mut joined = Vec::new();
    for t in &resp.tokens {
        match decode(&t.token, spelling) {
            Some(bytes) => joined.extend(bytes),
            None => return false,
        }
    }
    let (joined, text) = (visible(&joined), visible(resp.text.as_bytes()));
    !joined.is_empty()
        && !text.is_empty()
        && (joined.starts_with(&text) || text.starts_with(&joined))
}

/// Whether some token of the response (chosen or alternative) carries a sign of `spelling`.
fn shows(resp: &ProbeResponse, spelling: Spelling) -> bool {
    let pieces = resp
        .tokens
        .iter()
        .flat_map(|t| std::iter::once(&t.token).chain(t.top.iter().map(|a| &a.token)));
    let marked: &dyn Fn(&str) -> bool = match spelling {
        Spelling::Text => return false,
        Spelling::ByteLevel => &|p| p.contains(BYTE_LEVEL_MARKS),
        Spelling::SentencePiece => &|p| p.contains(SPM_SPACE),
    };
    let mut any = false;
    for piece in pieces {
        if decode(piece, spelling).is_none() {
            return false;
        }
        any |= marked(piece);
    }
    any
}

/// How the response's tokens are spelled. Only a response whose tokens came without the
/// server's bytes can be spelled as pieces: bytes given are taken as the truth.
pub fn spelling_of(resp: &ProbeResponse) -> Spelling {
    let as_text = resp.tokens.iter().all(|t| {
        t.bytes == t.token.as_bytes() && t.top.iter().all(|a| a.bytes == a.token.as_bytes())
    });
    if resp.tokens.is_empty() || !as_text {
        return Spelling::Text;
    }
    let pieces = [Spelling::ByteLevel, Spelling::SentencePiece];
    if spells_text(resp, Spelling::Text) {
        // The chosen tokens read as text; their alternatives may still be pieces where
        // none of the chosen ones had a space or byte to show it.
        let chosen_plain = resp
            .tokens
            .iter()
            .all(|t| !t.token.contains(BYTE_LEVEL_MARKS) && !t.token.contains(SPM_SPACE));
        return if chosen_plain {
            pieces
                .into_iter()
                .find(|s| shows(resp, *s))
                .unwrap_or(Spelling::Text)
        } else {
            Spelling::Text
        };
    }
    pieces
        .into_iter()
        .find(|s| spells_text(resp, *s) && shows(resp, *s))
        .unwrap_or(Spelling::Text)
}

/// Decodes every token and alternative of `resp` to the bytes it stands for, where the
/// server spelled them as vocabulary pieces ([`spelling_of`]).
pub fn undo_pieces(resp: &mut ProbeResponse) {
    let spelling = spelling_of(resp);
    if spelling == Spelling::Text {
        return;
    }
    let respell = |token: &mut String, bytes: &mut Vec<u8>| {
        if let Some(decoded) = decode(token, spelling) {
            *token = String::from_utf8_lossy(&decoded).into_owned();
            *bytes = decoded;
        }
    };
    for t in &mut resp.tokens {
        respell(&mut t.token, &mut t.bytes);
        for alt in &mut t.top {
            respell(&mut alt.token, &mut alt.bytes);
        }
    }
}

/// `bytes` spelled as a piece of `spelling` (for tests that play such a server).
#[cfg(test)]
pub(crate) fn spell(bytes: &[u8], spelling: Spelling) -> String {
    match spelling {
        Spelling::Text => String::from_utf8_lossy(bytes).into_owned(),
        Spelling::ByteLevel => {
            let table = byte_level_table();
            bytes
                .iter()
                .map(|b| table.iter().find(|(_, v)| *v == b).map_or('?', |(c, _)| *c))
                .collect()
        }
        Spelling::SentencePiece => match std::str::from_utf8(bytes) {
            Ok(text) => text.replace(' ', &SPM_SPACE.to_string()),
            Err(_) => bytes.iter().map(|b| format!("<0x{b:02X}>")).collect(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{TokenLogprobs, TopLogprob};

    fn response(text: &str, tokens: &[(&str, &[&str])]) -> ProbeResponse {
        ProbeResponse {
            text: text.to_string(),
            tokens: tokens
                .iter()
                .map(|(chosen, alts)| TokenLogprobs {
                    id: None,
                    token: chosen.to_string(),
                    bytes: chosen.as_bytes().to_vec(),
                    logprob: -0.1,
                    top: alts
                        .iter()
                        .map(|a| TopLogprob {
                            id: None,
                            token: a.to_string(),
                            bytes: a.as_bytes().to_vec(),
                            logprob: -0.5,
                        })
                        .collect(),
                })
                .collect(),
            usage: None,
            finish_reason: None,
            latency_ms: 0,
        }
    }

    fn bytes_of(resp: &ProbeResponse) -> Vec<Vec<Vec<u8>>> {
        resp.tokens
            .iter()
            .map(|t| {
                std::iter::once(t.bytes.clone())
                    .chain(t.top.iter().map(|a| a.bytes.clone()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn byte_level_pieces_decode_to_the_bytes_they_stand_for() {
        // "é" is two bytes, each its own character in GPT-2's alphabet: Ã (C3) and © (A9).
        let mut resp = response(
            " Paris.\nCafé",
            &[
                ("ĠParis", &["ĠParis", "Ġthe"]),
                (".", &[".", ","]),
                ("Ċ", &["Ċ", "ĊĊ"]),
                ("CafÃ©", &["CafÃ©"]),
            ],
        );
        assert_eq!(spelling_of(&resp), Spelling::ByteLevel);
        undo_pieces(&mut resp);
        let want: Vec<Vec<Vec<u8>>> = vec![
            vec![b" Paris".to_vec(), b" Paris".to_vec(), b" the".to_vec()],
            vec![b".".to_vec(), b".".to_vec(), b",".to_vec()],
            vec![b"\n".to_vec(), b"\n".to_vec(), b"\n\n".to_vec()],
            vec!["Café".as_bytes().to_vec(), "Café".as_bytes().to_vec()],
        ];
        assert_eq!(bytes_of(&resp), want);
        assert_eq!(resp.tokens[0].token, " Paris");
    }

    #[test]
    fn sentence_pieces_and_byte_fallback_decode() {
        let mut resp = response(
            " the capital €",
            &[
                ("▁the", &["▁the", "▁a"]),
                ("▁capital", &["▁capital"]),
                ("▁", &["▁"]),
                ("<0xE2>", &["<0xE2>"]),
                ("<0x82>", &["<0x82>"]),
                ("<0xAC>", &["<0xAC>", "<0xE2><0x82><0xAC>"]),
            ],
        );
        assert_eq!(spelling_of(&resp), Spelling::SentencePiece);
        undo_pieces(&mut resp);
        assert_eq!(resp.tokens[0].bytes, b" the");
        assert_eq!(resp.tokens[0].top[1].bytes, b" a");
        assert_eq!(resp.tokens[3].bytes, vec![0xE2]);
        assert_eq!(resp.tokens[5].top[1].bytes, "€".as_bytes());
    }

    #[test]
    fn text_as_it_reads_is_left_alone() {
        let plain = response(" Paris.", &[(" Paris", &[" Paris", " the"]), (".", &["."])]);
        assert_eq!(spelling_of(&plain), Spelling::Text);
        let mut kept = plain.clone();
        undo_pieces(&mut kept);
        assert_eq!(kept, plain);
        // A model that writes the letter Ġ itself is not read as spelling spaces with it.
        let odd = response(
            "Ġ is a letter",
            &[("Ġ", &["Ġ"]), (" is a letter", &[" is"])],
        );
        assert_eq!(spelling_of(&odd), Spelling::Text);
    }

    #[test]
    fn bytes_the_server_gave_are_the_truth() {
        let mut resp = response(" Paris", &[("ĠParis", &["ĠParis"])]);
        resp.tokens[0].bytes = b" Paris".to_vec();
        resp.tokens[0].top[0].bytes = b" Paris".to_vec();
        assert_eq!(spelling_of(&resp), Spelling::Text);
    }

    #[test]
    fn chosen_tokens_without_a_space_are_read_from_their_alternatives() {
        let resp = response("Paris", &[("Paris", &["Paris", "ĠParis", "Ġthe"])]);
        assert_eq!(spelling_of(&resp), Spelling::ByteLevel);
        let spm = response("Paris", &[("Paris", &["Paris", "▁Paris"])]);
        assert_eq!(spelling_of(&spm), Spelling::SentencePiece);
    }
}
