//! Word-level differences between the reference's and the suspect's answer to a probe,
//! for side-by-side evidence (pure; `similar` does the alignment).

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

/// A run of text, marked when it is not shared by the other side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub text: String,
    pub changed: bool,
}

/// The two answers split into shared and differing runs: the reference's side marks what
/// the suspect lacks, the suspect's side what it added.
pub fn side_by_side(reference: &str, suspect: &str) -> (Vec<Segment>, Vec<Segment>) {
    let diff = TextDiff::from_words(reference, suspect);
    let mut left: Vec<Segment> = Vec::new();
    let mut right: Vec<Segment> = Vec::new();
    let push = |side: &mut Vec<Segment>, text: &str, changed: bool| match side.last_mut() {
        Some(last) if last.changed == changed => last.text.push_str(text),
        _ => side.push(Segment {
            text: text.to_string(),
            changed,
        }),
    };
    for change in diff.iter_all_changes() {
        let text = change.value();
        match change.tag() {
            ChangeTag::Equal => {
                push(&mut left, text, false);
                push(&mut right, text, false);
            }
            ChangeTag::Delete => push(&mut left, text, true),
            ChangeTag::Insert => push(&mut right, text, true),
        }
    }
    (left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(side: &[Segment]) -> String {
        side.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn identical_answers_have_no_marks() {
        let (l, r) = side_by_side("I am SmolLM.", "I am SmolLM.");
        assert!(l.iter().chain(&r).all(|s| !s.changed));
        assert_eq!(joined(&l), "I am SmolLM.");
    }

    #[test]
    fn changed_words_are_marked_on_their_own_side() {
        let (l, r) = side_by_side(
            "I am SmolLM, made by Hugging Face",
            "I am Kimi, made by Moonshot AI",
        );
        assert_eq!(joined(&l), "I am SmolLM, made by Hugging Face");
        assert_eq!(joined(&r), "I am Kimi, made by Moonshot AI");
        let marked_l: String = l
            .iter()
            .filter(|s| s.changed)
            .map(|s| s.text.as_str())
            .collect();
        let marked_r: String = r
            .iter()
            .filter(|s| s.changed)
            .map(|s| s.text.as_str())
            .collect();
        assert!(marked_l.contains("SmolLM") && marked_l.contains("Hugging"));
        assert!(marked_r.contains("Kimi") && marked_r.contains("Moonshot"));
        assert!(!marked_r.contains("made"));
    }
}
