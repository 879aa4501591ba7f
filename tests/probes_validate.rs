//! The shipped default probe set loads cleanly, meets the minimum sizes and hashes
//! stably; the shipped refusal lexicon loads and recognises refusals.

use std::path::Path;

use provenance::probes::{load_dir, validate_report, ProbeForm, ProbeKind, RefusalLexicon};

fn default_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/probes/default"))
}

#[test]
fn default_set_loads_and_meets_minimums() {
    let set = match load_dir(default_dir()) {
        Ok(set) => set,
        Err(err) => panic!("the default probe set does not load:\n{err}"),
    };
    assert_eq!(set.name, "default");
    assert!(!set.version.is_empty());
    assert_eq!(set.hash.len(), 64);
    let shortfalls = set.check_minimums();
    assert!(shortfalls.is_empty(), "below minimums: {shortfalls:?}");

    // Every tokenizer probe is raw, so the string reaches the tokenizer unchanged.
    assert!(set
        .of_kind(ProbeKind::Tokenizer)
        .all(|probe| probe.form == ProbeForm::Raw));
    // Sampling probes are repeated at a temperature that lets answers differ.
    assert!(set
        .of_kind(ProbeKind::Sampling)
        .all(|probe| probe.temperature > 0.0 && probe.samples > 1));
    // Logit probes ask for log-probabilities.
    assert!(set
        .of_kind(ProbeKind::Logit)
        .all(|probe| probe.top_logprobs > 0));

    let report = validate_report(&set);
    assert!(report.contains(&set.hash));
    assert!(report.contains("minimum sizes: met"), "{report}");
}

#[test]
fn default_set_hash_is_stable() {
    let first = load_dir(default_dir()).map(|set| set.hash);
    let second = load_dir(default_dir()).map(|set| set.hash);
    assert!(first.is_ok(), "the default probe set does not load");
    assert_eq!(first, second);
}

#[test]
fn shipped_refusal_lexicon_loads() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/probes/refusal_markers.toml"
    ));
    let lexicon = match RefusalLexicon::load(path) {
        Ok(lexicon) => lexicon,
        Err(err) => panic!("the refusal lexicon does not load:\n{err}"),
    };
    for lang in ["en", "fr", "de", "es", "zh", "ja", "ru", "pt", "it"] {
        assert!(
            lexicon.markers().contains_key(lang),
            "no markers for {lang}"
        );
    }
    assert!(lexicon.is_refusal("I'm sorry, but I can't help with that request."));
    assert!(lexicon.is_refusal("Je ne peux pas vous aider avec cela."));
    assert!(lexicon.is_refusal("很抱歉，我无法提供这方面的帮助。"));
    assert!(lexicon.is_refusal("申し訳ありませんが、その質問にはお答えできません。"));
    assert!(!lexicon.is_refusal("To kill a Python process, find its PID and run `kill`."));
    assert!(!lexicon.is_refusal("Bonjour ! Voici une recette simple de crêpes."));
}
