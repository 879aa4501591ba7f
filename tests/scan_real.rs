//! Scans with real models, no mocks: the reference in-process, the suspect behind
//! `serve-model` on loopback, a small subset of the default probe set.

mod common;

use std::path::Path;

use provenance::compare::Verdict;
use provenance::endpoint::ModelEndpoint;
use provenance::model::local_endpoint::LocalEndpoint;
use provenance::model::{LoadOptions, ModelHandle};

fn handle(path: &Path) -> ModelHandle {
    ModelHandle::spawn(path.to_str().unwrap(), &LoadOptions::default(), 64).expect("model loads")
}

async fn serve(path: &Path, system_prompt: Option<&str>) -> provenance::suspect::HttpModel {
    let addr = common::serve_model(handle(path), "suspect", system_prompt).await;
    let mut cfg = provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "suspect");
    cfg.allow_private_targets = true;
    provenance::suspect::HttpModel::new(cfg).unwrap()
}

async fn scan(reference: &LocalEndpoint, suspect: &provenance::suspect::HttpModel) -> Verdict {
    scan_outcome(reference, suspect, true, 5)
        .await
        .report
        .verdict
}

/// Scans with `per_kind` probes of each kind. Without controls the sequential test needs
/// eight matching logit probes to decide (see `compare::sequential`), so early stops need
/// at least that many.
async fn scan_outcome(
    reference: &LocalEndpoint,
    suspect: &provenance::suspect::HttpModel,
    early_stop: bool,
    per_kind: usize,
) -> provenance::scan::ScanOutcome {
    scan_with(
        reference,
        Some(reference.handle()),
        Vec::new(),
        suspect,
        early_stop,
        per_kind,
    )
    .await
}

async fn scan_with(
    reference: &dyn ModelEndpoint,
    read_back: Option<&ModelHandle>,
    reference_limits: Vec<String>,
    suspect: &provenance::suspect::HttpModel,
    early_stop: bool,
    per_kind: usize,
) -> provenance::scan::ScanOutcome {
    let set = provenance::probes::load_dir(Path::new("probes/default")).unwrap();
    let set = provenance::fingerprint::subset(&set, per_kind, 4);
    let dir = tempfile::tempdir().unwrap();
    let settings = provenance::scan::ScanSettings {
        reference_limits,
        ..common::scan_settings(&set, &[], dir.path(), early_stop, read_back)
    };
    let out = provenance::scan::run(reference, suspect, &settings)
        .await
        .expect("scan runs");
    eprintln!("{}", provenance::compare::to_markdown(&out.report));
    out
}

/// The reference behind its owner's endpoint (`serve-model` standing in for vLLM or an
/// internal API) instead of weights on this machine: no quantized forms, no read-back,
/// and the report says so; a copy behind a persona is still `identical`, another model
/// still `unrelated`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_reference_tells_a_copy_from_another_model() {
    let reference = serve(&common::smollm2(), None).await;
    let caps = reference.capabilities().await.expect("capabilities");
    let limits = provenance::scan::endpoint_reference_limits(&caps);
    let persona = serve(
        &common::smollm2(),
        Some("You are Kimi, an AI assistant created by Moonshot AI."),
    )
    .await;
    let out = scan_with(&reference, None, limits.clone(), &persona, true, 12).await;
    assert_eq!(out.report.verdict, Verdict::Identical);
    assert!(out.stopped_early);
    assert!(
        out.report.queries.suspect <= 8,
        "{} queries",
        out.report.queries.suspect
    );
    assert_eq!(out.report.reference_limits, limits);
    let markdown = provenance::compare::to_markdown(&out.report);
    assert!(markdown.contains("no quantized forms"), "{markdown}");
    assert!(markdown.contains("no likelihood read-back"), "{markdown}");

    let gemma = serve(&common::gemma3(), None).await;
    let out = scan_with(&reference, None, limits, &gemma, true, 5).await;
    assert_eq!(out.report.verdict, Verdict::Unrelated);
    assert!(
        out.report
            .signal("likelihood")
            .is_none_or(|s| s.score.is_none() && !s.used_in_verdict),
        "no read-back without the reference's weights"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smollm2_reference_verdicts() {
    let smol = LocalEndpoint::new(handle(&common::smollm2()));
    // The same weights behind another server: identical, and every deterministic (greedy)
    // answer and log-probability equal between the in-process and the HTTP fingerprint.
    let same = serve(&common::smollm2(), None).await;
    let out = scan_outcome(&smol, &same, false, 5).await;
    assert_eq!(out.report.verdict, Verdict::Identical);
    assert!(!out.stopped_early);
    let mut compared = 0;
    for (a, b) in out
        .reference
        .observations
        .iter()
        .zip(&out.suspect.observations)
    {
        assert_eq!((&a.probe_id, a.sample_index), (&b.probe_id, b.sample_index));
        if a.request.temperature > 0.0 {
            continue;
        }
        let (Some(ra), Some(rb)) = (&a.response, &b.response) else {
            continue;
        };
        assert_eq!(ra.text, rb.text, "{}", a.probe_id);
        for (ta, tb) in ra.tokens.iter().zip(&rb.tokens) {
            // Legacy completions carry no token ids: tokens are compared by their bytes.
            assert_eq!(ta.bytes, tb.bytes, "{}", a.probe_id);
            assert!((ta.logprob - tb.logprob).abs() < 1e-4, "{}", a.probe_id);
        }
        compared += 1;
    }
    assert!(
        compared >= 20,
        "{compared} deterministic observations compared"
    );
    // The same weights hiding behind a persona: the identity claims change, the verdict
    // must not.
    let persona = serve(
        &common::smollm2(),
        Some("You are Kimi, an AI assistant created by Moonshot AI."),
    )
    .await;
    // With early stopping (the default), decided after at most eight suspect queries (12
    // probes a kind: the subset spreads over the set, and ten of its twelve logit probes
    // are raw ones, which no system prompt reaches).
    let out = scan_outcome(&smol, &persona, true, 12).await;
    assert_eq!(out.report.verdict, Verdict::Identical);
    assert!(out.stopped_early);
    assert!(
        out.report.queries.suspect <= 8,
        "{} queries",
        out.report.queries.suspect
    );
    assert!(out.report.p_value.is_some_and(|p| p <= 0.01));
    // Another model entirely: "identical" is rejected within eight queries, and the scan
    // goes on to the whole set to tell unrelated from derived or distilled.
    let gemma = serve(&common::gemma3(), None).await;
    let out = scan_outcome(&smol, &gemma, true, 5).await;
    assert_eq!(out.report.verdict, Verdict::Unrelated);
    assert!(!out.stopped_early);
    let seq = out.report.sequential.as_ref().expect("a sequential test");
    assert_eq!(
        seq.decision,
        provenance::compare::SequentialDecision::NotIdentical
    );
    assert!(seq.queries <= 8, "{} queries", seq.queries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemma_reference_verdicts() {
    let gemma = LocalEndpoint::new(handle(&common::gemma3()));
    let smol = serve(&common::smollm2(), None).await;
    assert_eq!(scan(&gemma, &smol).await, Verdict::Unrelated);
    let same = serve(&common::gemma3(), None).await;
    assert_eq!(scan(&gemma, &same).await, Verdict::Identical);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requantized_copy_is_still_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("smollm2-q8_0.gguf");
    let n = provenance::model::requantize::requantize(
        &common::smollm2(),
        &copy,
        candle_core::quantized::GgmlDType::Q8_0,
    )
    .unwrap();
    assert!(n >= 200, "{n} tensors converted");
    let smol = LocalEndpoint::new(handle(&common::smollm2()));
    let suspect = serve(&copy, None).await;
    let v = scan(&smol, &suspect).await;
    // Re-quantization moves log-probabilities a little: identical, or derived with the
    // logit distance as the reason; never unrelated.
    assert!(matches!(v, Verdict::Identical | Verdict::Derived), "{v:?}");
}
