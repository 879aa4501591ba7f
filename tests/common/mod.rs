//! Shared test helpers: where the real models live.
#![allow(dead_code)]

use std::path::PathBuf;

/// Path of a fetched model; fails loudly when it is missing (CI fetches them first with
/// `provenance models fetch`).
pub fn model_path(file: &str) -> PathBuf {
    let p = provenance::fetch::default_dir().join(file);
    assert!(
        p.exists(),
        "{} is missing: run `cargo run --release -- models fetch` first",
        p.display()
    );
    p
}

pub fn smollm2() -> PathBuf {
    model_path(provenance::fetch::SMOLLM2.file)
}

pub fn gemma3() -> PathBuf {
    model_path(provenance::fetch::GEMMA3.file)
}

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Serves a loaded model over the OpenAI-compatible API on a free loopback port.
pub async fn serve_model(
    handle: provenance::model::ModelHandle,
    name: &str,
    system_prompt: Option<&str>,
) -> std::net::SocketAddr {
    let app = provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: name.into(),
            system_prompt: system_prompt.map(str::to_string),
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A scan's settings as the tests run it: no progress bar, the default comparison, no
/// quantized forms, the controls' read-backs kept in `work_dir`, nothing the reference
/// lacks.
pub fn scan_settings<'a>(
    probes: &'a provenance::probes::ProbeSet,
    controls: &'a [provenance::fingerprint::Fingerprint],
    work_dir: &'a std::path::Path,
    early_stop: bool,
    read_back: Option<&'a provenance::model::ModelHandle>,
) -> provenance::scan::ScanSettings<'a> {
    provenance::scan::ScanSettings {
        probes,
        controls,
        controls_origin: None,
        work_dir,
        run: provenance::fingerprint::RunOptions {
            progress: false,
            ..Default::default()
        },
        compare: provenance::compare::CompareOptions::default(),
        early_stop,
        forms: &[],
        read_back,
        controls_read_back: None,
        reference_limits: Vec::new(),
    }
}
