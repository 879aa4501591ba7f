//! Entry points for fuzzing: one function per untrusted input the service parses. The
//! cargo-fuzz targets in `fuzz/` call them under libFuzzer, and `tests/fuzz_smoke.rs`
//! replays the corpus in `fuzz/corpus/` through them on every test run. Each must return
//! (with a value or an error) for any input; a panic is the bug being looked for.

use std::path::Path;

/// The suspect's responses: chat completion, legacy completion, SSE stream.
pub fn openai_response(data: &[u8]) {
    let _ = crate::suspect::parse::parse_chat_completion(data);
    let _ = crate::suspect::parse::parse_completion(data);
    let _ = crate::suspect::parse::parse_stream(data);
}

const SET_TOML: &[u8] = include_bytes!("../probes/default/set.toml");

/// A probe file beside the default set's `set.toml`; a refusal must say why.
pub fn probe_file(data: &[u8]) {
    let sources = vec![
        ("set.toml".to_string(), SET_TOML.to_vec()),
        ("fuzzed.toml".to_string(), data.to_vec()),
    ];
    if let Err(err) = crate::probes::load_sources(Path::new("fuzz"), &sources) {
        assert!(
            !err.diagnostics.is_empty(),
            "a refused probe set names its problems"
        );
    }
}

/// A GGUF file: header, metadata, the model config and the tokenizer built from metadata.
pub fn gguf_header(data: &[u8]) {
    let Ok(mut file) = tempfile::NamedTempFile::new() else {
        return;
    };
    if std::io::Write::write_all(&mut file, data).is_err() {
        return;
    }
    if let Ok(g) = crate::model::gguf::GgufFile::open(file.path()) {
        let _ = g.config(4096);
        let _ = crate::model::tokenizer::Tokenizer::from_gguf(&g);
    }
}

/// An API body: the first byte picks the route, the rest is its JSON, decoded and put
/// through the validation that needs no database.
pub fn api_body(data: &[u8]) {
    let Some((&route, json)) = data.split_first() else {
        return;
    };
    let guard = crate::suspect::UrlGuard::new(false);
    match route % 4 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<crate::app::SubmitScan>(json) {
                if let Some(url) = &req.suspect_url {
                    let _ = guard.check_url(url);
                }
                if let Some(secret) = &req.suspect_secret {
                    let _ = crate::secrets::valid_secret_name(secret);
                }
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<crate::app::CreateSchedule>(json) {
                if crate::jobs::validate_cron(&req.cron).is_ok() {
                    let _ = crate::jobs::next_run(&req.cron, chrono::Utc::now());
                }
                for url in [&req.suspect_url, &req.webhook_url].into_iter().flatten() {
                    let _ = guard.check_url(url);
                }
            }
        }
        2 => {
            let _ = serde_json::from_slice::<crate::api::NewComparison>(json);
        }
        _ => {
            let _ = serde_json::from_slice::<crate::api::ModelsWrite>(json);
        }
    }
}
