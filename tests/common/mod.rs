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
