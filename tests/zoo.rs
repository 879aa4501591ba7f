//! The quick ground-truth zoo, built from the real models and evaluated end to end: every
//! pair must get its true verdict, and no unrelated pair may be accused.

mod common;

use provenance::zoo::{self, Class, Recipe};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_zoo_pairs_get_their_true_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bases = [("smollm2", common::smollm2()), ("gemma3", common::gemma3())];
    let manifest = zoo::build::build(dir.path(), &bases, true, None).expect("zoo builds");
    assert_eq!(manifest.members.len(), 6);
    // Recipes and hashes are recorded, and building again reuses what is there.
    let noisy = manifest
        .members
        .iter()
        .find(|m| matches!(m.recipe, Recipe::Noise { .. }))
        .expect("a noisy member");
    assert_eq!(noisy.class, Class::Derived);
    assert_eq!(noisy.sha256.len(), 64);
    let again = zoo::build::build(dir.path(), &bases, true, None).expect("rebuild");
    assert_eq!(again, manifest);

    let set = provenance::probes::load_dir(std::path::Path::new("probes/default")).expect("probes");
    let set = provenance::fingerprint::subset(&set, 6, 2);
    let mut opts = zoo::eval::EvalOptions {
        run: provenance::fingerprint::RunOptions {
            progress: false,
            ..Default::default()
        },
        compare: provenance::compare::CompareOptions::default(),
        forms: Vec::new(),
        access: Default::default(),
        calibration: Default::default(),
        identify: false,
    };
    // Without its quantized forms the engine takes SmolLM2 re-rounded from Q4_1 to Q4_0
    // for a derivative: a nat away on average, as far as weight noise.
    let report = zoo::eval::run(dir.path(), &manifest, &set, &opts)
        .await
        .expect("evaluation runs");
    let q4_0 = |r: &zoo::eval::EvalReport| {
        r.pairs
            .iter()
            .find(|p| p.reference == "smollm2" && p.member == "smollm2-q4_0")
            .expect("the q4_0 pair")
            .verdict
    };
    assert_ne!(q4_0(&report), provenance::compare::Verdict::Identical);
    // With one form (to keep the test short) the copy is identical, and the 3%-noise
    // derivative is not taken for that form. The prints are cached: only the form is new.
    opts.forms = vec!["q4_0".to_string()];
    let report = zoo::eval::run(dir.path(), &manifest, &set, &opts)
        .await
        .expect("evaluation runs");
    eprintln!("{}", zoo::eval::to_table(&report));
    // Two references times six members.
    assert_eq!(report.pairs.len(), 12);
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

/// Smaller than the zoo's student recipe, so that a student learns a few answers by heart
/// in seconds.
const SMALL_STUDENT: zoo::student::StudentShape = zoo::student::StudentShape {
    hidden: 128,
    layers: 2,
    heads: 4,
    ffn: 320,
    window: 64,
    batch: 4,
    steps: 150,
    learning_rate: 3e-3,
};

/// The token stream SmolLM2's template and tokenizer make of `pairs`.
fn smollm2_stream(pairs: &[(String, String)]) -> zoo::student::Stream {
    let speaker = provenance::model::LocalModel::load(
        common::smollm2().to_str().expect("utf-8"),
        &provenance::model::LoadOptions::default(),
    )
    .expect("SmolLM2 loads");
    let render = |p: &str| {
        speaker.render_chat(&[provenance::endpoint::ChatMessage {
            role: "user".into(),
            content: p.to_string(),
        }])
    };
    zoo::student::training_stream(&speaker.tokenizer, render, pairs).expect("stream")
}

/// A student trained on two answers learns them by heart; served through the runner it
/// must give them back. That holds only if training and the runner agree on the layout
/// (RoPE pairing, norms, tied output) and the chat format the student was trained on.
#[test]
fn a_student_learns_its_teachers_text_and_loads_as_gguf() {
    use provenance::model::{GenerateParams, LoadOptions, LocalModel};
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs = vec![
        (
            "Name a colour.".to_string(),
            "Green is the colour of spring leaves.".to_string(),
        ),
        (
            "Name a fruit.".to_string(),
            "A ripe pear is sweet and soft.".to_string(),
        ),
    ];
    let stream = smollm2_stream(&pairs).repeated(8);
    let out = dir.path().join("student.gguf");
    let trained = zoo::student::train_and_write(
        &stream,
        &common::smollm2(),
        &SMALL_STUDENT,
        1,
        "test-student",
        &out,
    )
    .expect("trains");
    eprintln!("loss {} -> {}", trained.first_loss, trained.final_loss);
    assert!(
        trained.final_loss < trained.first_loss * 0.2,
        "loss {} -> {}",
        trained.first_loss,
        trained.final_loss
    );

    let mut student =
        LocalModel::load(out.to_str().expect("utf-8"), &LoadOptions::default()).expect("loads");
    assert_eq!(student.info.architecture, "llama");
    // The whole vocabulary, though the training text used a few dozen tokens of it.
    assert_eq!(student.info.vocab_size, 49152);
    let prompt = student.render_chat(&[provenance::endpoint::ChatMessage {
        role: "user".into(),
        content: "Name a colour.".into(),
    }]);
    let ids = student
        .encode_prompt(&prompt.expect("template"))
        .expect("encode");
    let answer = student
        .generate(
            &ids,
            &GenerateParams {
                max_tokens: 12,
                ..GenerateParams::default()
            },
            |_, _| true,
        )
        .expect("generates")
        .text;
    assert!(
        answer.starts_with("Green is the colour"),
        "the student answered {answer:?}"
    );
}

/// Trained on the teacher's distributions (logit-level distillation), a student learns
/// more than the teacher's words: where the teacher hesitated between two tokens, the
/// student ranks the teacher's runner-up high too, which training on the sampled text
/// alone never shows it.
#[test]
fn a_student_on_the_teachers_distributions_learns_its_runner_up_tokens() {
    use provenance::model::{GenerateParams, LoadOptions, LocalModel};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut teacher = LocalModel::load(
        common::smollm2().to_str().expect("utf-8"),
        &LoadOptions::default(),
    )
    .expect("SmolLM2 loads");
    let prompt = "Name a colour.";
    let ask = |model: &mut LocalModel, max_tokens: usize| {
        let text = model
            .render_chat(&[provenance::endpoint::ChatMessage {
                role: "user".into(),
                content: prompt.into(),
            }])
            .expect("template");
        let ids = model.encode_prompt(&text).expect("encode");
        model
            .generate(
                &ids,
                &GenerateParams {
                    max_tokens,
                    top_logprobs: 20,
                    ..GenerateParams::default()
                },
                |_, _| true,
            )
            .expect("generates")
    };
    let said = ask(&mut teacher, 10);
    let answer = zoo::corpus::TokenAnswer {
        tokens: said.steps.iter().map(|s| s.token).collect(),
        top: said.steps.iter().map(|s| s.top.clone()).collect(),
    };
    let render = |p: &str| {
        teacher.render_chat(&[provenance::endpoint::ChatMessage {
            role: "user".into(),
            content: p.to_string(),
        }])
    };
    let stream =
        zoo::student::soft_training_stream(&teacher.tokenizer, render, &[prompt], &[answer])
            .expect("stream")
            .repeated(16);
    let out = dir.path().join("student.gguf");
    zoo::student::train_and_write(
        &stream,
        &common::smollm2(),
        &SMALL_STUDENT,
        1,
        "soft-student",
        &out,
    )
    .expect("trains");
    let mut student =
        LocalModel::load(out.to_str().expect("utf-8"), &LoadOptions::default()).expect("loads");
    let first = &ask(&mut student, 1).steps[0];
    let teacher_first = &said.steps[0];
    let rank = |id: u32| first.top.iter().position(|t| t.0 == id);
    assert_eq!(
        first.token, teacher_first.token,
        "the student's first token differs from the teacher's"
    );
    let runner_up = teacher_first.top[1].0;
    assert!(
        rank(runner_up).is_some_and(|r| r <= 4),
        "the teacher's runner-up {runner_up} ranks {:?} with the student (top: {:?}, teacher's: {:?})",
        rank(runner_up),
        &first.top[..5],
        &teacher_first.top[..5]
    );
}

/// A fine-tune trains the last block only: its loss on the training windows falls, the
/// other tensors stay exactly as stored, and the result loads.
#[test]
fn a_finetune_changes_only_its_last_blocks() {
    use provenance::model::gguf::GgufFile;
    use provenance::model::{LoadOptions, LocalModel};
    let dir = tempfile::tempdir().expect("tempdir");
    let pairs = vec![(
        "Name a colour.".to_string(),
        "Green, the colour of spring leaves and of old bottles.".to_string(),
    )];
    let stream = smollm2_stream(&pairs);
    let shape = zoo::finetune::FinetuneShape {
        blocks: 1,
        window: 32,
        batch: 2,
        steps: 30,
        learning_rate: 1e-3,
        windows: 4,
    };
    let out = dir.path().join("finetuned.gguf");
    let trained = zoo::finetune::finetune(&common::smollm2(), &stream.ids, &shape, 3, &out)
        .expect("fine-tunes");
    assert!(
        trained.final_loss < trained.first_loss,
        "loss {} -> {}",
        trained.first_loss,
        trained.final_loss
    );
    let mut before = GgufFile::open(&common::smollm2()).expect("base");
    let mut after = GgufFile::open(&out).expect("fine-tune");
    let raw = |g: &mut GgufFile, name: &str| {
        let t = g.raw_tensor(name).expect("tensor");
        (t.dtype(), t.data().expect("bytes").to_vec())
    };
    assert_eq!(
        raw(&mut before, "blk.0.attn_q.weight"),
        raw(&mut after, "blk.0.attn_q.weight"),
        "a frozen block changed"
    );
    assert_ne!(
        raw(&mut before, "blk.29.ffn_up.weight"),
        raw(&mut after, "blk.29.ffn_up.weight"),
        "the trained block did not change"
    );
    LocalModel::load(out.to_str().expect("utf-8"), &LoadOptions::default())
        .expect("the fine-tune loads");
}

/// The shift test on real models: SmolLM2 through candle's kernels instead of ours (the same
/// weights, other rounding) against SmolLM2 with 1% weight noise, over every logit probe.
/// The noise moves log-probabilities about as far as the other kernels do; only the
/// noise's differences repeat token by token across probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_changed_below_engine_noise_are_told_from_rounding() {
    use provenance::compare::{self, Verdict};
    use provenance::fingerprint::{self, ObservationLog, RunOptions};
    use provenance::model::gguf::Requantize;
    use provenance::model::{local_endpoint::LocalEndpoint, LoadOptions, ModelHandle};

    let dir = tempfile::tempdir().expect("tempdir");
    let noisy = dir.path().join("smollm2-noise-0.01.gguf");
    zoo::build::add_noise(&common::smollm2(), &noisy, 0.01, 1).expect("noise added");
    let full =
        provenance::probes::load_dir(std::path::Path::new("probes/default")).expect("probes");
    // Every logit probe and nothing else: the test needs many probes, and they are short.
    let set = fingerprint::subset_with_logits(&full, 0, usize::MAX, 1);
    let print = |path: std::path::PathBuf, requantize: Requantize| {
        let set = set.clone();
        async move {
            let opts = LoadOptions {
                requantize,
                ..LoadOptions::default()
            };
            let spec = path.to_str().expect("UTF-8 path").to_string();
            let endpoint = LocalEndpoint::new(ModelHandle::spawn(&spec, &opts, 16).expect("loads"));
            let run = RunOptions {
                progress: false,
                ..RunOptions::default()
            };
            fingerprint::run(&set, &endpoint, &run, &mut ObservationLog::in_memory())
                .await
                .expect("fingerprint")
        }
    };
    let reference = print(common::smollm2(), Requantize::Auto).await;
    let other_kernels = print(common::smollm2(), Requantize::Off).await;
    let changed = print(noisy, Requantize::Auto).await;

    let opts = compare::CompareOptions::default();
    let same = compare::compare(&reference, &other_kernels, &[], &opts);
    let noise = compare::compare(&reference, &changed, &[], &opts);
    let (same_shift, noise_shift) = (
        same.weight_shift.clone().expect("shift test ran"),
        noise.weight_shift.clone().expect("shift test ran"),
    );
    eprintln!("other kernels: {same_shift:?}\n1% noise: {noise_shift:?}");
    // Most of the 113 raw logit probes: those whose first token is a byte piece of a
    // character cannot be aligned across engines and are left out (99 here).
    assert!(same_shift.probes > 90 && noise_shift.probes > 90);
    // Measured: -0.7% (p 0.81) against 9.6% (p 0.0005).
    assert!(same_shift.share < 0.05, "{same_shift:?}");
    assert!(
        noise_shift.share > 0.05 && noise_shift.p_value <= 0.01,
        "{noise_shift:?}"
    );
    assert_eq!(noise.verdict, Verdict::Derived, "{:#?}", noise.reasons);
    assert_eq!(same.verdict, Verdict::Identical, "{:#?}", same.reasons);
}
