//! The quick ground-truth zoo, built from the real models and evaluated end to end: every
//! pair must get its true verdict, and no unrelated pair may be accused.

mod common;

use provenance::zoo::{self, Class, Recipe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_zoo_pairs_get_their_true_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bases = [("smollm2", common::smollm2()), ("gemma3", common::gemma3())];
    let manifest = zoo::build::build(dir.path(), &bases, true).expect("zoo builds");
    assert_eq!(manifest.members.len(), 5);
    // Recipes and hashes are recorded, and building again reuses what is there.
    let noisy = manifest
        .members
        .iter()
        .find(|m| matches!(m.recipe, Recipe::Noise { .. }))
        .expect("a noisy member");
    assert_eq!(noisy.class, Class::Derived);
    assert_eq!(noisy.sha256.len(), 64);
    let again = zoo::build::build(dir.path(), &bases, true).expect("rebuild");
    assert_eq!(again, manifest);

    let set = provenance::probes::load_dir(std::path::Path::new("probes/default")).expect("probes");
    let set = provenance::fingerprint::subset(&set, 6, 2);
    let opts = zoo::eval::EvalOptions {
        run: provenance::fingerprint::RunOptions {
            progress: false,
            ..Default::default()
        },
        compare: provenance::compare::CompareOptions::default(),
    };
    let report = zoo::eval::run(dir.path(), &manifest, &set, &opts)
        .await
        .expect("evaluation runs");
    eprintln!("{}", zoo::eval::to_table(&report));
    // Two references times five members.
    assert_eq!(report.pairs.len(), 10);
    for p in &report.pairs {
        assert_eq!(
            p.verdict,
            p.class.verdict(),
            "{} vs {}: {:?}",
            p.reference,
            p.member,
            p.reasons
        );
    }
    assert_eq!(report.accuracy, 1.0);
    assert_eq!(report.false_accusation_rate, Some(0.0));
    let json = serde_json::to_value(&report).expect("json");
    for key in ["accuracy", "false_accusation_rate", "confusion", "pairs"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
}

#[test]
fn a_dropped_layer_leaves_a_loadable_smaller_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("dropped.gguf");
    provenance::zoo::build::drop_layer(&common::smollm2(), &out, 15).expect("drop a layer");
    let g = provenance::model::gguf::GgufFile::open(&out).expect("readable");
    assert_eq!(g.u32("llama.block_count"), Some(29));
    assert!(g.content.tensor_infos.contains_key("blk.28.attn_q.weight"));
    assert!(!g.content.tensor_infos.contains_key("blk.29.attn_q.weight"));
    let handle = provenance::model::ModelHandle::spawn(
        out.to_str().expect("utf-8"),
        &provenance::model::LoadOptions::default(),
        4,
    )
    .expect("the pruned model loads");
    drop(handle);
}
