//! Bounded fuzzing in the test suite: real inputs (the recorded llama.cpp responses, the
//! default probe set, API bodies) mutated at random — bytes flipped, cut, inserted,
//! spliced — and fed to the parsers and the API. Each must answer with a value or an error,
//! never a panic or a 5xx. Random rather than coverage-guided (the toolchain here is
//! stable-only, which cargo-fuzz's sanitizers need nightly for); the seeds are the corpus.
//! The coverage-guided targets live in `fuzz/` (cargo-fuzz); their corpus, crashes found
//! included, is replayed here through the same entry points (`provenance::fuzz`).

mod common;
#[path = "common/pg.rs"]
mod pg;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    /// Copies a run from one place over another (keeps the input's own vocabulary).
    Splice(usize, usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Flip(p, b)),
        any::<usize>().prop_map(Edit::Cut),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Edit::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Edit::Remove(p, n)),
        (any::<usize>(), any::<usize>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match e {
            Edit::Flip(p, b) => {
                if !bytes.is_empty() {
                    let i = p % bytes.len();
                    bytes[i] ^= b | 1;
                }
            }
            Edit::Cut(p) => bytes.truncate(p % len),
            Edit::Insert(p, b) => {
                let i = p % len;
                let i = i.min(bytes.len());
                bytes.splice(i..i, b.iter().copied());
            }
            Edit::Remove(p, n) => {
                let i = (p % len).min(bytes.len());
                let j = (i + n).min(bytes.len());
                bytes.drain(i..j);
            }
            Edit::Splice(a, b, n) => {
                if !bytes.is_empty() {
                    let (a, b) = (a % bytes.len(), b % bytes.len());
                    let n = (*n).min(bytes.len() - a).min(bytes.len() - b);
                    let run: Vec<u8> = bytes[a..a + n].to_vec();
                    bytes[b..b + n].copy_from_slice(&run);
                }
            }
        }
    }
    bytes
}

/// `n` cases, times `PROVENANCE_FUZZ_SCALE` for the long form (e.g. 100 for a run of
/// minutes: `PROVENANCE_FUZZ_SCALE=100 cargo test --release --test fuzz_smoke`).
fn cases(n: u32) -> Config {
    let scale: u32 = std::env::var("PROVENANCE_FUZZ_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Config {
        cases: n.saturating_mul(scale.max(1)),
        failure_persistence: None,
        ..Config::default()
    }
}

#[test]
fn openai_response_parsers_never_panic() {
    let corpus: Vec<Vec<u8>> = [
        "openai-compatible/llama-cpp/chat-logprobs.json",
        "openai-compatible/llama-cpp/chat-plain.json",
        "openai-compatible/llama-cpp/chat-stream-logprobs.sse",
        "openai-compatible/llama-cpp/completions-logprobs.json",
        "openai-compatible/llama-cpp/error-context-overflow.json",
        "openai-compatible/llama-cpp/models.json",
    ]
    .iter()
    .map(|f| std::fs::read(common::fixture(f)).expect("corpus file"))
    .collect();
    let mut runner = TestRunner::new(cases(2000));
    runner
        .run(
            &(0..corpus.len(), prop::collection::vec(edit(), 1..8)),
            |(i, edits)| {
                provenance::fuzz::openai_response(&apply(corpus[i].clone(), &edits));
                Ok(())
            },
        )
        .expect("no panic");
}

#[test]
fn probe_set_loader_never_panics() {
    let dir = std::path::Path::new("probes/default");
    let set_toml = std::fs::read(dir.join("set.toml")).expect("set.toml");
    let files = [
        "logit.toml",
        "refusal.toml",
        "sampling.toml",
        "tokenizer.toml",
    ];
    let corpus: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(dir.join(f)).expect("probe file"))
        .collect();
    let mut runner = TestRunner::new(cases(200));
    runner
        .run(
            &(0..corpus.len(), prop::collection::vec(edit(), 1..6)),
            |(i, edits)| {
                let tmp = tempfile::tempdir().expect("tempdir");
                std::fs::write(tmp.path().join("set.toml"), &set_toml).expect("write");
                std::fs::write(tmp.path().join(files[i]), apply(corpus[i].clone(), &edits))
                    .expect("write");
                if let Err(err) = provenance::probes::load_dir(tmp.path()) {
                    prop_assert!(!err.diagnostics.is_empty());
                }
                Ok(())
            },
        )
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bodies_never_cause_a_server_error() {
    let db = pg::TestDb::new().await;
    let (_, key) = db
        .store
        .create_api_key(provenance::store::Role::Admin, "fuzz")
        .await
        .expect("key");
    let base = db.api(false, "default").await;

    let corpus: Vec<(&str, Vec<u8>)> = vec![
        (
            "/v1/scans",
            br#"{"suspect_url":"https://api.example.com/v1","suspect_model":"m","reference":"smollm2","probes_per_kind":3,"early_stop":true}"#.to_vec(),
        ),
        (
            "/v1/schedules",
            br#"{"name":"s","cron":"0 * * * *","suspect_url":"https://api.example.com/v1","reference":"smollm2","drift_threshold":0.2}"#.to_vec(),
        ),
        (
            "/v1/comparisons",
            br#"{"reference_fingerprint_id":"00000000-0000-0000-0000-000000000000","suspect_fingerprint_id":"00000000-0000-0000-0000-000000000001"}"#.to_vec(),
        ),
        (
            "/v1/models",
            br#"{"name":"m","role":"control","kind":"local","source":"/x.gguf"}"#.to_vec(),
        ),
    ];
    // Generate the inputs up front (the runner is synchronous), then send them.
    let config = cases(300);
    let count = config.cases;
    let mut runner = TestRunner::new(config);
    let strategy = (0..corpus.len(), prop::collection::vec(edit(), 1..6));
    let mut inputs = Vec::new();
    for _ in 0..count {
        let (i, edits) = strategy.new_tree(&mut runner).expect("input").current();
        inputs.push((corpus[i].0, apply(corpus[i].1.clone(), &edits)));
    }
    let client = reqwest::Client::new();
    for (path, body) in inputs {
        let resp = client
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answered");
        assert!(
            resp.status().as_u16() < 500,
            "{} on {path} for {:?}",
            resp.status(),
            String::from_utf8_lossy(&body)
        );
    }
}

#[test]
fn gguf_header_reader_never_panics() {
    // The header, the metadata (tokenizer included) and the tensor table live in the first
    // megabytes; edits land in the first 4 KiB, where the counts and lengths are.
    let bytes = std::fs::read(common::smollm2()).expect("model");
    let head = bytes[..bytes.len().min(8 << 20)].to_vec();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fuzzed.gguf");
    let mut runner = TestRunner::new(cases(100));
    runner
        .run(
            &prop::collection::vec((0usize..4096, any::<u8>()), 1..5),
            |flips| {
                let mut input = head.clone();
                for (p, b) in flips {
                    input[p] ^= b | 1;
                }
                std::fs::write(&path, &input).expect("write");
                if let Ok(g) = provenance::model::gguf::GgufFile::open(&path) {
                    let _ = g.config(4096);
                    let _ = provenance::model::tokenizer::Tokenizer::from_gguf(&g);
                }
                Ok(())
            },
        )
        .expect("no panic");
}

/// Every file of the cargo-fuzz corpus (seeds, and any crash found and kept as a
/// regression case) goes through its target's entry point without a panic.
#[test]
fn the_fuzz_corpus_replays_cleanly() {
    type Target = (&'static str, fn(&[u8]));
    let targets: [Target; 4] = [
        ("openai_response", provenance::fuzz::openai_response),
        ("probe_file", provenance::fuzz::probe_file),
        ("gguf_header", provenance::fuzz::gguf_header),
        ("api_body", provenance::fuzz::api_body),
    ];
    for (target, run) in targets {
        let dir = std::path::Path::new("fuzz/corpus").join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("entry").path();
            run(&std::fs::read(&path).expect("corpus file"));
            n += 1;
        }
        assert!(n > 0, "{target} has no seeds in {}", dir.display());
    }
    // The seeds are valid inputs: the loaders accept them (a broken seed would leave the
    // fuzzer exploring error paths only).
    let g = provenance::model::gguf::GgufFile::open(std::path::Path::new(
        "fuzz/corpus/gguf_header/tiny-llama.gguf",
    ))
    .expect("the llama seed is a GGUF file");
    provenance::model::tokenizer::Tokenizer::from_gguf(&g).expect("its tokenizer builds");
}
