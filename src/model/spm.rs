//! SentencePiece-style tokenizer built from GGUF metadata alone (vocab + scores, byte
//! fallback, no merges), as llama.cpp's `llm_tokenizer_spm` does it.
//!
//! Written by hand because the `tokenizers` crate needs merges for BPE, and merges
//! reconstructed from scores do not reproduce llama.cpp's order of merging exactly; we must
//! produce llama.cpp's token ids to compare with what a suspect served by llama.cpp sees.

use std::collections::{BinaryHeap, HashMap};

pub struct Spm {
    vocab: HashMap<String, u32>,
    scores: Vec<f32>,
    byte_tokens: [Option<u32>; 256],
    unk: Option<u32>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    // Highest score first; on a tie, the leftmost pair first (llama.cpp's comparator).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(tokens: &[String], scores: &[f32], unk: Option<u32>) -> Self {
        let mut vocab = HashMap::with_capacity(tokens.len());
        let mut byte_tokens = [None; 256];
        for (id, t) in tokens.iter().enumerate() {
            let id = id as u32;
            if let Some(b) = parse_byte_token(t) {
                byte_tokens[b as usize] = Some(id);
            }
            vocab.entry(t.clone()).or_insert(id);
        }
        Self {
            vocab,
            scores: scores.to_vec(),
            byte_tokens,
            unk,
        }
    }

    /// Tokenizes plain text (no special-token parsing; the caller partitions first).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        if text.is_empty() {
            return Vec::new();
        }
        let text = text.replace(' ', "\u{2581}");
        let mut symbols: Vec<Symbol> = Vec::new();
        for (start, ch) in text.char_indices() {
            let idx = symbols.len();
            symbols.push(Symbol {
                start,
                len: ch.len_utf8(),
                prev: idx.checked_sub(1),
                next: None,
            });
            if idx > 0 {
                symbols[idx - 1].next = Some(idx);
            }
        }
        let mut queue = BinaryHeap::new();
        let mut rev_merge: HashMap<String, (usize, usize)> = HashMap::new();
        for i in 1..symbols.len() {
            self.try_add(&text, &symbols, i - 1, i, &mut queue, &mut rev_merge);
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.size {
                continue; // stale: one side was merged elsewhere already
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            if let Some(p) = symbols[b.left].prev {
                self.try_add(&text, &symbols, p, b.left, &mut queue, &mut rev_merge);
            }
            if let Some(n) = symbols[b.left].next {
                self.try_add(&text, &symbols, b.left, n, &mut queue, &mut rev_merge);
            }
        }
        let mut out = Vec::new();
        let mut cur = Some(0);
        while let Some(i) = cur {
            self.resegment(&text, &symbols, i, &rev_merge, &mut out);
            cur = symbols[i].next;
        }
        out
    }

    fn try_add(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Bigram>,
        rev_merge: &mut HashMap<String, (usize, usize)>,
    ) {
        let start = symbols[left].start;
        let end = symbols[right].start + symbols[right].len;
        let piece = &text[start..end];
        if let Some(&id) = self.vocab.get(piece) {
            queue.push(Bigram {
                left,
                right,
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                size: piece.len(),
            });
            rev_merge.insert(piece.to_string(), (left, right));
        }
    }

    fn resegment(
        &self,
        text: &str,
        symbols: &[Symbol],
        i: usize,
        rev_merge: &HashMap<String, (usize, usize)>,
        out: &mut Vec<u32>,
    ) {
        let s = symbols[i];
        let piece = &text[s.start..s.start + s.len];
        if let Some(&id) = self.vocab.get(piece) {
            out.push(id);
            return;
        }
        match rev_merge.get(piece) {
            Some(&(l, r)) if l != i || r != i => {
                self.resegment(text, symbols, l, rev_merge, out);
                self.resegment(text, symbols, r, rev_merge, out);
            }
            _ => {
                for b in piece.bytes() {
                    if let Some(id) = self.byte_tokens[b as usize].or(self.unk) {
                        out.push(id);
                    }
                }
            }
        }
    }
}

/// `<0x41>` -> 0x41.
pub fn parse_byte_token(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        let tokens: Vec<String> = [
            "<unk>",
            "<0x41>",
            "a",
            "b",
            "ab",
            "\u{2581}",
            "\u{2581}ab",
            "c",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let scores = vec![0.0, 0.0, -1.0, -2.0, -0.5, -3.0, -0.1, -4.0];
        Spm::new(&tokens, &scores, Some(0))
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let spm = toy();
        assert_eq!(spm.encode("ab ab"), vec![4, 6]);
        // 'A' is not in the vocab as text: its byte token is used.
        assert_eq!(spm.encode("A"), vec![1]);
        // 'Z' has neither a piece nor a byte token: unknown.
        assert_eq!(spm.encode("cZ"), vec![7, 0]);
    }

    #[test]
    fn byte_token_parsing() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0x0>"), None);
        assert_eq!(parse_byte_token("hello"), None);
    }
}
