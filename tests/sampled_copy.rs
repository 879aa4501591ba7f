//! A suspect that samples whatever temperature it is asked for, read back by the real
//! reference: its tokens, and how often its samples of one prompt agree, against the
//! reference's own samples at the fitted temperature (`compare::sampled`). The copy fits
//! both; Gemma 3 fits the ranks (any fluent text does) but agrees with itself far more
//! often than SmolLM2's samples would.

mod common;

use std::path::Path;

use provenance::compare::{sampled, Verdict};
use provenance::endpoint::AccessMode;
use provenance::fingerprint::{ObservationLog, RunOptions};
use provenance::model::{LoadOptions, ModelHandle};

async fn spawn(path: std::path::PathBuf) -> ModelHandle {
    tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(path.to_str().unwrap(), &LoadOptions::default(), 8).expect("model loads")
    })
    .await
    .unwrap()
}

/// `handle` behind `serve-model`'s router, sampling at `temperature` whatever it is asked.
async fn sampling_suspect(handle: ModelHandle, temperature: f32) -> provenance::suspect::HttpModel {
    sampling_suspect_as(handle, temperature, AccessMode::Full).await
}

/// The same, used only as `access` allows (a restricted API).
async fn sampling_suspect_as(
    handle: ModelHandle,
    temperature: f32,
    access: AccessMode,
) -> provenance::suspect::HttpModel {
    serve(handle, temperature, access, false).await
}

/// `handle` sampling at `temperature`, reporting the log-probabilities of the distribution
/// it samples from when `after_temperature` (as SGLang does).
async fn serve(
    handle: ModelHandle,
    temperature: f32,
    access: AccessMode,
    after_temperature: bool,
) -> provenance::suspect::HttpModel {
    let app = provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            name: "suspect".into(),
            system_prompt: None,
            fixed_temperature: Some(temperature),
            logprobs_after_temperature: after_temperature,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "suspect");
    cfg.allow_private_targets = true;
    cfg.access = access;
    provenance::suspect::HttpModel::new(cfg).unwrap()
}

async fn judged(
    reference: &ModelHandle,
    suspect: &provenance::suspect::HttpModel,
) -> (sampled::SampledFit, Option<sampled::Collisions>) {
    let set = provenance::probes::load_dir(Path::new("probes/default")).unwrap();
    let set = provenance::fingerprint::subset(&set, 12, 4);
    let opts = RunOptions {
        progress: false,
        ..RunOptions::default()
    };
    let print =
        provenance::fingerprint::run(&set, suspect, &opts, &mut ObservationLog::in_memory())
            .await
            .expect("fingerprint");
    assert!(print.model.capabilities.ignores_temperature);
    let scores = provenance::read_back::read_back(reference, &print, None)
        .await
        .expect("read back");
    let reads: Vec<sampled::Read> = scores
        .iter()
        .map(provenance::compare::likelihood::AnswerScore::sampled_read)
        .collect();
    let (fit, agree) = sampled::judge(&reads);
    let fit = fit.expect("enough tokens to fit");
    eprintln!("{fit:?}\n{agree:?}");
    (fit, agree)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_copy_writes_the_references_samples_and_another_model_does_not() {
    let reference = spawn(common::smollm2()).await;
    let copy = sampling_suspect(reference.clone(), 0.7).await;
    let (fit, agree) = judged(&reference, &copy).await;
    assert!((fit.temperature - 0.7).abs() <= 0.1, "{fit:?}");
    assert!(fit.distance <= sampled::RANKS_BAND, "{fit:?}");
    let agree = agree.expect("enough pairs of samples");
    assert!(agree.z.abs() <= sampled::MAX_COLLISION_Z, "{agree:?}");

    let gemma = sampling_suspect(spawn(common::gemma3()).await, 0.7).await;
    let (fit, agree) = judged(&reference, &gemma).await;
    // Ranks alone cannot tell: SmolLM2 reads Gemma's samples as its own near 1.0.
    assert!(fit.temperature > 0.85, "{fit:?}");
    let agree = agree.expect("enough pairs of samples");
    assert!(agree.z > sampled::MAX_COLLISION_Z, "{agree:?}");
}

/// The scan's own early stop on samples (`scan::sampled_phase`), as a newcomer's scan runs
/// it (built-in controls, cached beside the fetched models): a sampling copy behind a
/// chat-only API without log-probabilities is `identical` within 32 queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_copy_without_log_probabilities_is_decided_within_32_queries() {
    let reference = spawn(common::smollm2()).await;
    let copy = sampling_suspect_as(reference.clone(), 0.7, AccessMode::ChatOnlyNoLogprobs).await;
    let out = scan(&reference, &copy, true).await;
    let markdown = provenance::compare::to_markdown(&out.report);
    assert_eq!(out.report.verdict, Verdict::Identical, "{markdown}");
    assert!(out.stopped_early, "{markdown}");
    assert!(
        out.report.queries.suspect <= 32,
        "{} queries: {markdown}",
        out.report.queries.suspect
    );
}

/// A copy whose API fixes the temperature and reports the log-probabilities it samples
/// from (SGLang's default): every gap below the top token 1/0.7 times the reference's.
/// The whole probe set is compared, so the logit signals decide, read back at one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_reporting_log_probabilities_after_its_temperature_is_identical() {
    let reference = spawn(common::smollm2()).await;
    let copy = serve(reference.clone(), 0.7, AccessMode::Full, true).await;
    let out = scan(&reference, &copy, false).await;
    let markdown = provenance::compare::to_markdown(&out.report);
    assert_eq!(out.report.verdict, Verdict::Identical, "{markdown}");
    assert!(
        markdown.contains("reported after a temperature of 0.7"),
        "{markdown}"
    );
}

/// A scan of `suspect` against the SmolLM2 reference with its built-in controls, on the
/// subset the tests here use.
async fn scan(
    reference: &ModelHandle,
    suspect: &provenance::suspect::HttpModel,
    early_stop: bool,
) -> provenance::scan::ScanOutcome {
    let set = provenance::probes::load_dir(Path::new("probes/default")).unwrap();
    let set = provenance::fingerprint::subset(&set, 12, 4);
    let run = RunOptions {
        progress: false,
        ..RunOptions::default()
    };
    let controls = provenance::controls::ensure(
        &common::smollm2(),
        &set,
        &run,
        &provenance::controls::default_cache(),
    )
    .await
    .expect("built-in controls")
    .expect("a fetched reference has built-in controls");
    let work = tempfile::tempdir().unwrap();
    let controls_read_back = controls.dir.join("read-back");
    let settings = provenance::scan::ScanSettings {
        probes: &set,
        controls: &controls.prints,
        controls_origin: Some(controls.origin()),
        work_dir: work.path(),
        run,
        compare: provenance::compare::CompareOptions::default(),
        early_stop,
        forms: &[],
        read_back: Some(reference),
        controls_read_back: Some(&controls_read_back),
        reference_limits: Vec::new(),
    };
    let local = provenance::model::local_endpoint::LocalEndpoint::new(reference.clone());
    provenance::scan::run(&local, suspect, &settings)
        .await
        .expect("scan runs")
}
