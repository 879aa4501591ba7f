//! Loading through hf-hub, against a local HTTP server that mimics the hub's file
//! endpoints (repo info, `resolve` with Range requests, ETag and commit headers), pointed at
//! by `HF_ENDPOINT`. Also checks the safetensors loader: SmolLM2 exported from GGUF to a
//! Hugging Face checkpoint must predict what the GGUF predicts.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use provenance::model::{LoadOptions, LocalModel};

/// repo id -> (file name -> local path)
type Repos = Arc<HashMap<String, HashMap<String, PathBuf>>>;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

async fn info(
    State(repos): State<Repos>,
    Path((owner, name, _rev)): Path<(String, String, String)>,
) -> Response {
    match repos.get(&format!("{owner}/{name}")) {
        Some(files) => {
            let siblings: Vec<_> = files
                .keys()
                .map(|f| serde_json::json!({ "rfilename": f }))
                .collect();
            axum::Json(serde_json::json!({"sha": COMMIT, "siblings": siblings})).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn resolve(
    State(repos): State<Repos>,
    Path((owner, name, _rev, file)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(path) = repos
        .get(&format!("{owner}/{name}"))
        .and_then(|f| f.get(&file))
    else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let data = std::fs::read(path).unwrap();
    let total = data.len();
    let (start, end) = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .unwrap_or((0, total - 1));
    let end = end.min(total - 1);
    let etag = format!("\"{:x}-{}\"", total, file.len());
    (
        StatusCode::PARTIAL_CONTENT,
        [
            ("etag", etag),
            ("x-repo-commit", COMMIT.to_string()),
            ("content-range", format!("bytes {start}-{end}/{total}")),
        ],
        data[start..=end].to_vec(),
    )
        .into_response()
}

fn greedy(model: &mut LocalModel, prompt: &str) -> (u32, Vec<f32>) {
    let ids = model.encode_prompt(prompt).unwrap();
    let lp = model.next_logprobs(&ids).unwrap();
    (provenance::model::argmax(&lp), lp)
}

#[test]
fn loads_gguf_and_safetensors_through_a_mimic_hub() {
    let smol = common::smollm2();
    let tmp = tempfile::tempdir().unwrap();
    let st_dir = tmp.path().join("export");
    provenance::model::safetensors::export_gguf_llama(&smol, &st_dir, candle_core::DType::F16)
        .unwrap();

    let mut repos = HashMap::new();
    repos.insert(
        "test-org/smol-gguf".to_string(),
        HashMap::from([(provenance::fetch::SMOLLM2.file.to_string(), smol.clone())]),
    );
    let st_files: HashMap<String, PathBuf> = std::fs::read_dir(&st_dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    assert!(st_files.contains_key("model.safetensors"));
    repos.insert("test-org/smol-st".to_string(), st_files);
    let app = Router::new()
        .route("/api/models/{owner}/{name}/revision/{rev}", get(info))
        .route("/{owner}/{name}/resolve/{rev}/{*file}", get(resolve))
        .with_state(Arc::new(repos));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    // This test binary holds only this test, so setting the process environment is safe.
    std::env::set_var("HF_ENDPOINT", format!("http://{addr}"));
    std::env::set_var("HF_HOME", tmp.path().join("hf-home"));

    let opts = LoadOptions::default();
    let mut local = LocalModel::load(smol.to_str().unwrap(), &opts).unwrap();
    let mut via_hub = LocalModel::load("test-org/smol-gguf", &opts).unwrap();
    assert_eq!(via_hub.info.format, "gguf");
    let mut st = LocalModel::load("test-org/smol-st", &opts).unwrap();
    assert_eq!(st.info.format, "safetensors");
    assert_eq!(st.info.chat_template, "embedded");

    let prompts = [
        "The capital of France is",
        "def fibonacci(n):\n    ",
        "Once upon a time, in a small village,",
        "<|im_start|>user\nWho created you?<|im_end|>\n<|im_start|>assistant\n",
    ];
    let mut agree = 0;
    for p in prompts {
        let (a, lp_a) = greedy(&mut local, p);
        let (b, lp_b) = greedy(&mut via_hub, p);
        assert_eq!(a, b);
        assert_eq!(lp_a, lp_b, "the same file gives the same numbers");
        // The safetensors tokenizer (tokenizer.json) must match the GGUF one exactly.
        assert_eq!(
            st.tokenizer.encode(p).unwrap(),
            local.tokenizer.encode(p).unwrap()
        );
        let (c, lp_c) = greedy(&mut st, p);
        // Dense f16 weights versus quantized activations: close, not equal.
        let top = provenance::model::top_k(&lp_a, 10);
        let mean: f32 = top
            .iter()
            .map(|(id, l)| (lp_c[*id as usize] - l).abs())
            .sum::<f32>()
            / 10.0;
        assert!(mean < 0.5, "{p:?}: mean |diff| {mean}");
        agree += usize::from(a == c);
    }
    assert!(agree >= 3, "greedy agreement {agree}/4");
    // The chat template travelled with the checkpoint.
    let msgs = [provenance::endpoint::ChatMessage {
        role: "user".into(),
        content: "Hi".into(),
    }];
    assert_eq!(
        st.render_chat(&msgs).unwrap(),
        local.render_chat(&msgs).unwrap()
    );
}
