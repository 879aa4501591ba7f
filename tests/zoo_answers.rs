//! The zoo's recorded answers, text only (`tests/fixtures/zoo-answers`: every member of
//! the 27 Nov zoo, fingerprinted through `serve-model`, with log-probabilities and the
//! identity and tokenizer probes stripped; see the README there). Judged from their words
//! alone, each against the members unrelated to its reference as controls (itself left
//! out), the students and the fine-tune on Gemma's answers are distilled and every
//! unrelated member is unrelated: the claim the README's zoo table makes for the
//! distillation signals, kept from regressing without building the zoo (an hour).

use std::path::{Path, PathBuf};

use provenance::compare::{self, CompareOptions, Verdict};
use provenance::fingerprint::Fingerprint;
use provenance::zoo::{truth, Class, Manifest};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zoo-answers")
}

fn load(id: &str) -> Fingerprint {
    let path = dir().join(format!("{id}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[test]
fn recorded_students_are_distilled_and_unrelated_models_are_not() {
    let manifest = Manifest::load(&dir()).expect("manifest");
    let prints: Vec<_> = manifest.members.iter().map(|m| (m, load(&m.id))).collect();
    let mut judged = 0;
    let mut misses = Vec::new();
    for reference in manifest.references() {
        let reference_print = load(&reference.id);
        for (member, print) in &prints {
            let class = truth(&reference.base, member);
            let want = match class {
                Class::Distilled => Verdict::Distilled,
                Class::Unrelated => Verdict::Unrelated,
                // Copies and derivatives are told by their logits, stripped here.
                Class::Identical | Class::Derived => continue,
            };
            let controls: Vec<Fingerprint> = prints
                .iter()
                .filter(|(o, _)| o.id != member.id && truth(&reference.base, o) == Class::Unrelated)
                .map(|(_, fp)| fp.clone())
                .collect();
            let report = compare::compare(
                &reference_print,
                print,
                &controls,
                &CompareOptions::default(),
            );
            judged += 1;
            if report.verdict != want {
                misses.push(format!(
                    "{} / {}: {:?}, truly {:?}: {:?}",
                    reference.id, member.id, report.verdict, class, report.reasons
                ));
            }
            if class == Class::Distilled {
                // Caught by the contrast, which the students' loose text does not hide.
                let contrast = report.signal(compare::CONTRAST).expect("contrast listed");
                assert!(contrast.used_in_verdict, "{}: {contrast:?}", member.id);
                assert!(
                    contrast.score.unwrap_or(0.0) > 0.0,
                    "{}: {contrast:?}",
                    member.id
                );
            }
        }
    }
    // 5 distilled pairs and 26 unrelated ones.
    assert_eq!(judged, 31);
    assert!(misses.is_empty(), "{misses:#?}");
}
