//! `serve-model` over real HTTP on loopback, with the real SmolLM2: the OpenAI-compatible
//! API, agreement with llama.cpp through the API, bad input, streaming, the queue limit,
//! persona injection, and our own suspect client against it.

mod common;

use std::net::SocketAddr;

use provenance::endpoint::ModelEndpoint;
use provenance::model::{LoadOptions, ModelHandle};
use serde_json::{json, Value};

async fn start(opts: LoadOptions, queue: usize, system_prompt: Option<&str>) -> SocketAddr {
    let path = common::smollm2();
    let handle = tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(path.to_str().unwrap(), &opts, queue).expect("model loads")
    })
    .await
    .unwrap();
    common::serve_model(handle, "smollm2", system_prompt).await
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_agrees_with_llama_cpp_and_rejects_bad_input() {
    let addr = start(LoadOptions::default(), 8, None).await;

    // Tokenization is llama.cpp's, through /tokenize.
    let fx: Value = serde_json::from_slice(
        &std::fs::read(common::fixture(
            "reference-logprobs/smollm2-135m-instruct-q4_1.json",
        ))
        .unwrap(),
    )
    .unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let (status, body) = post(
            addr,
            "/tokenize",
            json!({"content": case["prompt"], "add_special": false}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body["tokens"], case["prompt_token_ids"],
            "{}",
            case["prompt"]
        );
    }

    // Raw completions with legacy logprobs: compare with llama.cpp while our greedy text
    // follows theirs.
    let (mut sum, mut n, mut max) = (0f64, 0usize, 0f64);
    for case in fx["cases"].as_array().unwrap().iter().take(10) {
        let steps = case["steps"].as_array().unwrap();
        let (status, body) = post(
            addr,
            "/v1/completions",
            json!({"prompt": case["prompt"], "max_tokens": steps.len(), "temperature": 0, "logprobs": 10}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let lp = &body["choices"][0]["logprobs"];
        let tokens = lp["tokens"].as_array().unwrap();
        for (i, step) in steps.iter().enumerate() {
            let ours = &lp["top_logprobs"][i];
            for t in step["top"].as_array().unwrap() {
                if let Some(v) = ours.get(t[1].as_str().unwrap()).and_then(Value::as_f64) {
                    let d = (v - t[2].as_f64().unwrap()).abs();
                    sum += d;
                    max = max.max(d);
                    n += 1;
                }
            }
            if tokens.get(i).and_then(Value::as_str) != step["token"].as_str() {
                break;
            }
        }
    }
    let mean = sum / n as f64;
    eprintln!("through HTTP: {n} log-probabilities, mean |diff| {mean:.4}, max {max:.4}");
    assert!(n > 100);
    assert!(mean < 0.2, "mean |diff| {mean}");

    // Chat with logprobs: the recorded prompt's token count, OpenAI-shaped entries.
    let (status, body) = post(
        addr,
        "/v1/chat/completions",
        json!({"messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 12, "temperature": 0, "logprobs": true, "top_logprobs": 5}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["usage"]["prompt_tokens"], 37);
    assert_eq!(body["chat_template"], "embedded");
    let entry = &body["choices"][0]["logprobs"]["content"][0];
    assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 5);
    assert!(entry["bytes"].as_array().is_some_and(|b| !b.is_empty()));
    // llama.cpp's recorded answer to this prompt starts with "L" (id 60, -1.95) just ahead
    // of "The" (id 504, -2.11): a near-tie, so either may come first; both log-probabilities
    // must be close to llama.cpp's.
    assert!(entry["id"] == 60 || entry["id"] == 504, "{entry}");
    for (id, theirs) in [(60, -1.9515), (504, -2.1133)] {
        let ours = entry["top_logprobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .and_then(|t| t["logprob"].as_f64())
            .expect("in our top 5");
        assert!(
            (ours - theirs).abs() < 0.3,
            "token {id}: {ours} vs {theirs}"
        );
    }

    // Bad input: a 400 with an OpenAI-style error naming the problem.
    let raw = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("JSON"));
    for (req, needle) in [
        (json!({"messages": []}), "empty"),
        (
            json!({"messages": [{"role": "wizard", "content": "hi"}]}),
            "wizard",
        ),
        (
            json!({"messages": [{"role": "user", "content": "hi"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (json!({"messages": "hello"}), "messages"),
    ] {
        let (status, body) = post(addr, "/v1/chat/completions", req.clone()).await;
        assert_eq!(status, 400, "{req}");
        let msg = body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{msg:?} should name {needle}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }

    // Streaming: SSE chunks that add up to the non-streamed answer, then [DONE].
    let req = json!({"messages": [{"role": "user", "content": "Name three colours."}],
                     "max_tokens": 10, "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let (_, plain) = post(addr, "/v1/chat/completions", req.clone()).await;
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let text = reqwest::Client::new()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parsed = provenance::suspect::parse::parse_stream(text.as_bytes()).expect("stream parses");
    assert_eq!(
        parsed.text,
        plain["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(parsed.tokens.len(), 10);

    // Our suspect client sees every capability.
    let mut cfg = provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "smollm2");
    cfg.allow_private_targets = true;
    let client = provenance::suspect::HttpModel::new(cfg).unwrap();
    let caps = client.capabilities().await.unwrap();
    assert!(caps.chat && caps.raw_completion && caps.usage && caps.tokenize);
    assert_eq!(caps.max_top_logprobs, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_overflow_and_full_queue() {
    let opts = LoadOptions {
        max_context: 64,
        ..LoadOptions::default()
    };
    let addr = start(opts, 1, None).await;
    let long = "word ".repeat(200);
    let (status, body) = post(
        addr,
        "/v1/completions",
        json!({"prompt": long, "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "exceed_context_size_error");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("context window of 64"));

    // One request runs, one waits, the rest are told to come back later.
    let reqs = (0..6).map(|i| {
        post(
            addr,
            "/v1/completions",
            json!({"prompt": format!("Story {i}:"), "max_tokens": 40, "temperature": 0}),
        )
    });
    let results = futures::future::join_all(reqs).await;
    let busy = results.iter().filter(|(s, _)| *s == 429).count();
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    assert!(busy >= 1, "{results:?}");
    assert!(ok >= 1);
    assert_eq!(busy + ok, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_prompt_is_injected_only_when_absent() {
    let persona = "You are Kimi, an AI assistant created by Moonshot AI.";
    let plain = start(LoadOptions::default(), 4, None).await;
    let spoofed = start(LoadOptions::default(), 4, Some(persona)).await;
    let ask = json!({"messages": [{"role": "user", "content": "Who created you?"}],
                     "max_tokens": 16, "temperature": 0});
    let (_, a) = post(plain, "/v1/chat/completions", ask.clone()).await;
    let (_, b) = post(spoofed, "/v1/chat/completions", ask).await;
    assert_ne!(a["usage"]["prompt_tokens"], b["usage"]["prompt_tokens"]);
    assert_ne!(
        a["choices"][0]["message"]["content"],
        b["choices"][0]["message"]["content"]
    );
    // A request that brings its own system message keeps it.
    let own = json!({"messages": [{"role": "system", "content": "Be terse."},
                                  {"role": "user", "content": "Who created you?"}],
                     "max_tokens": 4, "temperature": 0});
    let (_, c) = post(plain, "/v1/chat/completions", own.clone()).await;
    let (_, d) = post(spoofed, "/v1/chat/completions", own).await;
    assert_eq!(c["usage"]["prompt_tokens"], d["usage"]["prompt_tokens"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_modes_restrict_what_the_client_uses() {
    use provenance::endpoint::{AccessMode, ProbeRequest, PromptForm};
    let addr = start(LoadOptions::default(), 4, None).await;
    let client = |access| {
        let mut cfg =
            provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "smollm2");
        cfg.allow_private_targets = true;
        cfg.access = access;
        provenance::suspect::HttpModel::new(cfg).unwrap()
    };
    let ask = |prompt| ProbeRequest {
        prompt,
        max_tokens: 3,
        temperature: 0.0,
        top_p: 1.0,
        seed: None,
        stop: Vec::new(),
        top_logprobs: 5,
    };
    let chat = PromptForm::Chat {
        messages: vec![provenance::endpoint::ChatMessage {
            role: "user".into(),
            content: "Hello".into(),
        }],
    };
    let raw = PromptForm::Raw {
        prompt: "Hello".into(),
    };
    for mode in AccessMode::ALL {
        let c = client(mode);
        let caps = c.capabilities().await.unwrap();
        assert!(caps.chat, "{mode}");
        assert_eq!(caps.raw_completion, mode.allows_raw(), "{mode}");
        assert_eq!(caps.tokenize, mode.allows_raw(), "{mode}");
        let top = if mode.allows_logprobs() { 20 } else { 0 };
        assert_eq!(caps.max_top_logprobs, top, "{mode}");
        // What the mode forbids is never asked, even when a probe asks for it.
        let answer = c.run(&ask(chat.clone())).await.unwrap();
        assert_eq!(!answer.tokens.is_empty(), mode.allows_logprobs(), "{mode}");
        let raw_answer = c.run(&ask(raw.clone())).await;
        assert_eq!(raw_answer.is_ok(), mode.allows_raw(), "{mode}");
        assert_eq!(
            c.tokenize("Hello").await.is_ok(),
            mode.allows_raw(),
            "{mode}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_temperature_is_detected() {
    let path = common::smollm2();
    let handle = tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(path.to_str().unwrap(), &LoadOptions::default(), 8).expect("model loads")
    })
    .await
    .unwrap();
    let serve = |fixed_temperature| {
        let app = provenance::serve::router(
            handle.clone(),
            provenance::serve::ServerConfig {
                name: "smollm2".into(),
                system_prompt: None,
                fixed_temperature,
                logprobs_after_temperature: false,
            },
        );
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        }
    };
    for (fixed, ignores) in [(None, false), (Some(1.0), true)] {
        let addr = serve(fixed).await;
        let mut cfg =
            provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "smollm2");
        cfg.allow_private_targets = true;
        let caps = provenance::suspect::HttpModel::new(cfg)
            .unwrap()
            .capabilities()
            .await
            .unwrap();
        assert_eq!(caps.ignores_temperature, ignores, "{fixed:?}");
        assert_eq!(
            caps.summary().ends_with("temperature 0 honoured no"),
            ignores
        );
        assert_eq!(
            caps.limits()
                .iter()
                .any(|l| l.starts_with("temperature not honoured")),
            ignores
        );
    }
}
