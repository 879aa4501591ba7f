//! Greedy answers compared as text: how much of the wording, phrasing and formatting the
//! suspect shares with the reference on open-ended prompts. A distilled model inherits
//! these habits even when its weights and tokenizer differ.
//!
//! Per probe the style similarity is the mean of four measures in [0, 1]: ROUGE-L F1,
//! 1 - normalised edit distance, the Dice overlap of word 3-grams, and agreement of
//! formatting habits (headings, bullets, numbered lists, bold, code, line breaks). One
//! measure alone is easy to fool: a short answer has a high edit similarity to anything
//! short, a list of the same facts a high ROUGE-L.

use std::collections::{BTreeMap, BTreeSet};

use super::bootstrap::{self, BootstrapOptions};
use super::{clip, Pair, ProbeScore, SignalOutcome};

/// Characters compared by the edit distance (answers are short; this bounds the cost).
const EDIT_CHARS: usize = 1500;

/// Words for text comparison: lower-case runs of letters and digits, and each CJK
/// character on its own (those scripts do not separate words with spaces).
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            out.push(c.to_string());
        } else if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Length of the longest common subsequence.
fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// ROUGE-L F1 over words: 2PR / (P + R) with P and R the longest common subsequence
/// over the candidate's and the reference's length. Symmetric; 1 for two empty texts.
pub fn rouge_l(reference: &str, candidate: &str) -> f64 {
    let (r, c) = (words(reference), words(candidate));
    if r.is_empty() && c.is_empty() {
        return 1.0;
    }
    if r.is_empty() || c.is_empty() {
        return 0.0;
    }
    let lcs = lcs_len(&r, &c) as f64;
    if lcs == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (lcs / c.len() as f64, lcs / r.len() as f64);
    2.0 * precision * recall / (precision + recall)
}

/// Levenshtein distance over characters divided by the longer length, in [0, 1].
pub fn normalized_edit_distance(a: &str, b: &str) -> f64 {
    let a: Vec<char> = a.chars().take(EDIT_CHARS).collect();
    let b: Vec<char> = b.chars().take(EDIT_CHARS).collect();
    let longest = a.len().max(b.len());
    if longest == 0 {
        return 0.0;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for (i, x) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(x != y);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()] as f64 / longest as f64
}

/// Dice overlap of word n-grams, 2|A ∩ B| / (|A| + |B|), with n lowered to the shorter
/// text's length so very short answers still compare.
pub fn shared_ngram_rate(a: &str, b: &str, n: usize) -> f64 {
    let (wa, wb) = (words(a), words(b));
    if wa.is_empty() && wb.is_empty() {
        return 1.0;
    }
    let n = n.min(wa.len()).min(wb.len());
    if n == 0 {
        return 0.0;
    }
    let grams =
        |w: &[String]| -> BTreeSet<Vec<String>> { w.windows(n).map(|g| g.to_vec()).collect() };
    let (ga, gb) = (grams(&wa), grams(&wb));
    let shared = ga.intersection(&gb).count() as f64;
    2.0 * shared / (ga.len() + gb.len()) as f64
}

/// Formatting habits of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Habits {
    pub heading: bool,
    pub bullets: bool,
    pub numbered: bool,
    pub bold: bool,
    pub code: bool,
    pub multiline: bool,
}

impl Habits {
    pub fn of(text: &str) -> Habits {
        let lines: Vec<&str> = text.lines().map(str::trim_start).collect();
        Habits {
            heading: lines.iter().any(|l| l.starts_with('#')),
            bullets: lines
                .iter()
                .any(|l| l.starts_with("- ") || l.starts_with("* ") || l.starts_with("• ")),
            numbered: lines.iter().any(|l| {
                let digits = l.chars().take_while(char::is_ascii_digit).count();
                digits > 0 && (l[digits..].starts_with(". ") || l[digits..].starts_with(") "))
            }),
            bold: text.contains("**") || text.contains("__"),
            code: text.contains("```") || text.matches('`').count() >= 2,
            multiline: text.trim().contains('\n'),
        }
    }

    fn flags(self) -> [bool; 6] {
        [
            self.heading,
            self.bullets,
            self.numbered,
            self.bold,
            self.code,
            self.multiline,
        ]
    }

    /// Share of habits both answers have or both lack.
    pub fn agreement(self, other: Habits) -> f64 {
        let (a, b) = (self.flags(), other.flags());
        a.iter().zip(&b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
    }
}

/// All measures for one pair of answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextSimilarity {
    pub rouge_l: f64,
    pub edit_similarity: f64,
    pub ngram: f64,
    pub habits: f64,
    /// Shorter over longer length, in characters.
    pub length_ratio: f64,
}

impl TextSimilarity {
    pub fn of(a: &str, b: &str) -> TextSimilarity {
        let (la, lb) = (a.chars().count(), b.chars().count());
        TextSimilarity {
            rouge_l: rouge_l(a, b),
            edit_similarity: 1.0 - normalized_edit_distance(a, b),
            ngram: shared_ngram_rate(a, b, 3),
            habits: Habits::of(a).agreement(Habits::of(b)),
            length_ratio: if la.max(lb) == 0 {
                1.0
            } else {
                la.min(lb) as f64 / la.max(lb) as f64
            },
        }
    }

    /// The per-probe style score (see the module notes).
    pub fn score(&self) -> f64 {
        (self.rouge_l + self.edit_similarity + self.ngram + self.habits) / 4.0
    }
}

/// The style signal over pairs of greedy answers: score = mean per-probe style score.
pub fn signal(pairs: &[Pair], boot: Option<&BootstrapOptions>) -> Option<SignalOutcome> {
    let measured: Vec<(&Pair, &str, &str, TextSimilarity)> = pairs
        .iter()
        .filter_map(|p| {
            let (r, s) = (p.reference.text()?, p.suspect.text()?);
            Some((p, r, s, TextSimilarity::of(r, s)))
        })
        .collect();
    if measured.is_empty() {
        return None;
    }
    let n = measured.len() as f64;
    let scores: Vec<f64> = measured.iter().map(|m| m.3.score()).collect();
    let score = scores.iter().sum::<f64>() / n;
    let avg = |f: fn(&TextSimilarity) -> f64| measured.iter().map(|m| f(&m.3)).sum::<f64>() / n;
    let mut extra = BTreeMap::new();
    extra.insert("rouge_l".to_string(), avg(|t| t.rouge_l));
    extra.insert("edit_similarity".to_string(), avg(|t| t.edit_similarity));
    extra.insert("shared_3gram".to_string(), avg(|t| t.ngram));
    extra.insert("formatting_agreement".to_string(), avg(|t| t.habits));
    extra.insert("length_ratio".to_string(), avg(|t| t.length_ratio));
    let per_probe = measured
        .iter()
        .map(|(pair, r, s, t)| ProbeScore {
            probe_id: pair.reference.probe_id.clone(),
            kind: pair.reference.kind,
            score: t.score(),
            reference_text: clip(r),
            suspect_text: clip(s),
            note: format!(
                "ROUGE-L {:.2}, edit similarity {:.2}, shared 3-grams {:.2}",
                t.rouge_l, t.edit_similarity, t.ngram
            ),
        })
        .collect();
    Some(SignalOutcome {
        score,
        n: measured.len(),
        interval: boot.and_then(|opts| bootstrap::mean_interval(&scores, opts)),
        detail: format!(
            "style similarity {score:.2} over {} answers (ROUGE-L {:.2})",
            measured.len(),
            extra.get("rouge_l").copied().unwrap_or(0.0)
        ),
        extra,
        per_probe,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rouge_l_known_value() {
        // LCS of "the cat sat on the mat" and "the cat on the mat" is 5 words:
        // P = 5/5, R = 5/6, F1 = 10/11.
        let f = rouge_l("the cat sat on the mat", "the cat on the mat");
        assert!((f - 10.0 / 11.0).abs() < 1e-12, "{f}");
        assert_eq!(rouge_l("a b c", "a b c"), 1.0);
        assert_eq!(rouge_l("a b c", "x y z"), 0.0);
        assert_eq!(rouge_l("", ""), 1.0);
    }

    #[test]
    fn edit_distance_known_values() {
        assert!((normalized_edit_distance("kitten", "sitting") - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(normalized_edit_distance("same", "same"), 0.0);
        assert_eq!(normalized_edit_distance("", "abc"), 1.0);
    }

    #[test]
    fn ngrams_and_habits() {
        assert_eq!(
            shared_ngram_rate("one two three four", "one two three four", 3),
            1.0
        );
        // 2 shared trigrams of 2 and 2: "a b c", "b c d" vs "a b c", "b c e" -> 1 shared.
        assert!((shared_ngram_rate("a b c d", "a b c e", 3) - 0.5).abs() < 1e-12);
        let md = Habits::of("# Title\n- one\n- two\n**bold**");
        assert!(md.heading && md.bullets && md.bold && md.multiline && !md.numbered);
        let plain = Habits::of("Just one line.");
        assert!((md.agreement(plain) - 2.0 / 6.0).abs() < 1e-12);
        assert!(Habits::of("1. first\n2. second").numbered);
        assert_eq!(words("Hello, 世界 World2"), ["hello", "世", "界", "world2"]);
    }
}
