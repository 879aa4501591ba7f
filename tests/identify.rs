//! Identification against a library of stored reference fingerprints, no reference model
//! loaded: the real SmolLM2 and Gemma 3 fingerprinted in-process once, suspects behind
//! `serve-model` on loopback.

mod common;

use std::path::Path;

use provenance::compare::{CompareOptions, Verdict};
use provenance::identify::{identify, Library};
use provenance::model::local_endpoint::LocalEndpoint;
use provenance::model::{LoadOptions, ModelHandle};

fn handle(path: &Path) -> ModelHandle {
    ModelHandle::spawn(path.to_str().unwrap(), &LoadOptions::default(), 64).expect("model loads")
}

async fn serve(handle: ModelHandle, system_prompt: Option<&str>) -> provenance::suspect::HttpModel {
    let addr = common::serve_model(handle, "suspect", system_prompt).await;
    let mut cfg = provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "suspect");
    cfg.allow_private_targets = true;
    provenance::suspect::HttpModel::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_named_and_an_unknown_model_is_none_of_these() {
    let set = provenance::probes::load_dir(Path::new("probes/default")).unwrap();
    let set = provenance::fingerprint::subset(&set, 12, 2);
    let run = provenance::fingerprint::RunOptions {
        progress: false,
        ..Default::default()
    };
    let smol = handle(&common::smollm2());
    let gemma = handle(&common::gemma3());
    let both = tempfile::tempdir().unwrap();
    let only_smol = tempfile::tempdir().unwrap();
    for (name, h) in [("smollm2", &smol), ("gemma3", &gemma)] {
        let print = provenance::scan::fingerprint_to(
            &set,
            &LocalEndpoint::new(h.clone()),
            &both.path().join(format!("{name}.json")),
            &run,
        )
        .await
        .unwrap();
        if name == "smollm2" {
            print.save(&only_smol.path().join("smollm2.json")).unwrap();
        }
    }
    let library = Library::load(both.path()).unwrap();
    let opts = CompareOptions::default();

    // SmolLM2 behind a persona: named after at most eight queries.
    let persona = serve(
        smol.clone(),
        Some("You are Kimi, an AI assistant created by Moonshot AI."),
    )
    .await;
    let id = identify(&library, &set, &persona, &run, &opts)
        .await
        .unwrap();
    eprintln!("{}", provenance::identify::to_markdown(&id));
    assert_eq!(id.answer.as_deref(), Some("smollm2"));
    assert_eq!(id.candidates[0].verdict, Verdict::Identical);
    assert!(id.suspect_queries <= 8, "{} queries", id.suspect_queries);
    assert_ne!(id.candidates[1].verdict, Verdict::Identical);

    // Gemma 3 against both: Gemma 3.
    let served_gemma = serve(gemma.clone(), None).await;
    let id = identify(&library, &set, &served_gemma, &run, &opts)
        .await
        .unwrap();
    eprintln!("{}", provenance::identify::to_markdown(&id));
    assert_eq!(id.answer.as_deref(), Some("gemma3"));

    // Open set: a library without Gemma has no answer for it.
    let small = Library::load(only_smol.path()).unwrap();
    let id = identify(&small, &set, &served_gemma, &run, &opts)
        .await
        .unwrap();
    eprintln!("{}", provenance::identify::to_markdown(&id));
    assert_eq!(id.answer, None, "{:?}", id.candidates);
    assert_eq!(id.candidates[0].verdict, Verdict::Unrelated);

    // A library of prints from different probe sets is refused.
    let mixed = tempfile::tempdir().unwrap();
    std::fs::copy(
        both.path().join("smollm2.json"),
        mixed.path().join("smollm2.json"),
    )
    .unwrap();
    let mut other = provenance::fingerprint::load(&both.path().join("gemma3.json")).unwrap();
    other.probe_set.hash = "another set".into();
    other.save(&mixed.path().join("gemma3.json")).unwrap();
    assert!(Library::load(mixed.path()).is_err());
}
