//! The suspect client against local fault-injecting servers on 127.0.0.1. Nothing here
//! reaches any other address.

#[path = "common/fault_server.rs"]
mod fault_server;

use std::time::{Duration, Instant};

use fault_server::{FaultServer, Recorded, Reply};
use provenance::endpoint::{
    Capabilities, ChatMessage, EndpointError, ModelEndpoint, ProbeRequest, PromptForm,
};
use provenance::suspect::{HttpModel, HttpModelConfig, SuspectError};
use serde_json::json;

const CHAT: &str = include_str!("fixtures/openai-compatible/llama-cpp/chat-logprobs.json");
const COMPLETION: &str =
    include_str!("fixtures/openai-compatible/llama-cpp/completions-logprobs.json");
const STREAM: &str = include_str!("fixtures/openai-compatible/llama-cpp/chat-stream-logprobs.sse");
const OVERFLOW: &str =
    include_str!("fixtures/openai-compatible/llama-cpp/error-context-overflow.json");
const MODELS: &str = include_str!("fixtures/openai-compatible/llama-cpp/models.json");

/// Short timeouts and backoff so every test finishes in well under a few seconds.
fn config(base_url: &str) -> HttpModelConfig {
    HttpModelConfig {
        connect_timeout: Duration::from_millis(300),
        read_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(2),
        max_retries: 3,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        retry_after_cap: Duration::from_secs(3),
        requests_per_second: 0.0,
        max_concurrency: 4,
        max_response_bytes: 1024 * 1024,
        allow_private_targets: true,
        ..HttpModelConfig::new(base_url, "test-model")
    }
}

fn model(config: HttpModelConfig) -> HttpModel {
    HttpModel::new(config).expect("valid test config")
}

fn chat_request(top_logprobs: usize) -> ProbeRequest {
    ProbeRequest {
        prompt: PromptForm::Chat {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "Say hello".into(),
            }],
        },
        max_tokens: 16,
        temperature: 0.0,
        top_p: 1.0,
        seed: Some(7),
        top_logprobs,
        stop: vec!["\n\n".into()],
    }
}

fn raw_request(top_logprobs: usize) -> ProbeRequest {
    ProbeRequest {
        prompt: PromptForm::Raw {
            prompt: "The quick brown fox".into(),
        },
        top_logprobs,
        stop: Vec::new(),
        seed: None,
        ..chat_request(0)
    }
}

#[tokio::test]
async fn retry_after_is_honoured_then_succeeds() {
    let server = FaultServer::start(|_, i| match i {
        0 => Reply::json(
            429,
            r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
        )
        .header("Retry-After", "1"),
        _ => Reply::json(200, CHAT),
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let started = Instant::now();
    let response = suspect.run(&chat_request(5)).await.unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "waited only {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    assert_eq!(response.tokens.len(), 16);
    assert_eq!(server.request_count(), 2);
    assert_eq!(suspect.requests_sent(), 2);
}

#[tokio::test]
async fn burst_of_server_errors_then_success() {
    let server = FaultServer::start(|_, i| match i {
        0 => Reply::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#),
        1 => Reply::with_content_type(502, "text/html", "<html>bad gateway</html>"),
        2 => Reply::json(503, ""),
        _ => Reply::json(200, CHAT),
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let response = suspect.run(&chat_request(5)).await.unwrap();
    assert_eq!(response.text, "L'\u{c9}toile, la Marseillaise, la femme au");
    assert_eq!(server.request_count(), 4);
}

#[tokio::test]
async fn persistent_server_error_gives_up_after_max_retries() {
    let server = FaultServer::start(|_, _| {
        Reply::json(
            500,
            r#"{"error":{"message":"out of memory","type":"server_error"}}"#,
        )
    })
    .await;
    let suspect = model(HttpModelConfig {
        max_retries: 2,
        ..config(&server.base_url())
    });
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Server(msg) => {
            assert!(msg.contains("out of memory"), "{msg}");
            assert!(msg.contains("after 3 attempts"), "{msg}");
            assert!(msg.contains(&server.addr.to_string()), "{msg}");
        }
        other => panic!("expected Server, got {other:?}"),
    }
    assert_eq!(server.request_count(), 3);
}

#[tokio::test]
async fn hang_times_out() {
    let server = FaultServer::start(|_, _| Reply::Hang).await;
    let suspect = model(HttpModelConfig {
        max_retries: 1,
        ..config(&server.base_url())
    });
    let started = Instant::now();
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    assert!(matches!(err, EndpointError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(server.request_count(), 2, "a timeout is retried");
}

#[tokio::test]
async fn slow_drip_hits_the_total_timeout() {
    // Each byte arrives well within read_timeout, but the whole body never does.
    let server = FaultServer::start(|_, _| Reply::Drip {
        content_length: 200,
        interval: Duration::from_millis(40),
    })
    .await;
    let suspect = model(HttpModelConfig {
        total_timeout: Duration::from_millis(400),
        max_retries: 0,
        ..config(&server.base_url())
    });
    let started = Instant::now();
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Timeout(msg) => assert!(msg.contains("total_timeout"), "{msg}"),
        other => panic!("expected Timeout, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(380), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test]
async fn truncated_json_is_malformed_and_not_retried() {
    let truncated = &CHAT[..CHAT.len() / 2];
    let server = FaultServer::start(move |_, _| Reply::json(200, truncated)).await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.run(&chat_request(5)).await.unwrap_err();
    assert!(matches!(err, EndpointError::Malformed(_)), "{err:?}");
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn connection_reset_mid_body_is_retried() {
    // The first answer is cut by a reset halfway through its body; the retry gets it all.
    let server = FaultServer::start(|_, n| {
        if n == 0 {
            Reply::Reset {
                content_length: CHAT.len(),
                partial: CHAT.as_bytes()[..CHAT.len() / 2].to_vec(),
            }
        } else {
            Reply::json(200, CHAT)
        }
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let answer = suspect.run(&chat_request(5)).await.expect("retried");
    assert!(!answer.tokens.is_empty());
    assert_eq!(server.request_count(), 2);
}

#[tokio::test]
async fn logprobs_of_the_wrong_shape_are_malformed_not_a_panic() {
    let original: serde_json::Value = serde_json::from_str(CHAT).expect("fixture");
    let mut variants = Vec::new();
    // `content` an object instead of a list.
    let mut v = original.clone();
    v["choices"][0]["logprobs"]["content"] = serde_json::json!({"token": "x"});
    variants.push(v);
    // A log-probability given as text.
    let mut v = original.clone();
    v["choices"][0]["logprobs"]["content"][0]["logprob"] = serde_json::json!("-0.5");
    variants.push(v);
    // Alternatives that are not a list.
    let mut v = original.clone();
    v["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = serde_json::json!(3);
    variants.push(v);
    // A positive log-probability (a probability above one).
    let mut v = original.clone();
    v["choices"][0]["logprobs"]["content"][0]["logprob"] = serde_json::json!(2.5);
    variants.push(v);
    for body in variants {
        let text = body.to_string();
        let server = FaultServer::start(move |_, _| Reply::json(200, text.clone())).await;
        let suspect = model(config(&server.base_url()));
        let err = suspect
            .run(&chat_request(5))
            .await
            .expect_err("a wrong shape is an error");
        assert!(
            matches!(err, EndpointError::Malformed(_)),
            "{err:?} for {body}"
        );
        assert_eq!(
            server.request_count(),
            1,
            "malformed answers are not retried"
        );
    }
}

#[tokio::test]
async fn announced_gigantic_body_is_refused() {
    let server = FaultServer::start(|_, _| Reply::Announce {
        content_length: 50 * 1024 * 1024 * 1024,
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let started = Instant::now();
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Malformed(msg) => assert!(msg.contains("max_response_bytes"), "{msg}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn streamed_gigantic_body_is_aborted_at_the_cap() {
    // No Content-Length: the cap must be enforced while reading.
    let server = FaultServer::start(|_, _| Reply::Chunked {
        chunk: vec![b'x'; 64 * 1024],
        count: 10_000,
    })
    .await;
    let suspect = model(HttpModelConfig {
        max_response_bytes: 256 * 1024,
        ..config(&server.base_url())
    });
    let started = Instant::now();
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Malformed(msg) => {
            assert!(msg.contains("max_response_bytes (262144 bytes)"), "{msg}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn garbage_with_wrong_content_type_is_malformed() {
    let server = FaultServer::start(|_, _| {
        Reply::with_content_type(
            200,
            "text/html",
            "<html><body>Welcome to nginx!</body></html>",
        )
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Malformed(msg) => {
            assert!(msg.contains("text/html"), "{msg}");
            assert!(msg.contains("Welcome to nginx"), "{msg}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn unauthorized_is_auth_without_retries_and_the_key_stays_secret() {
    const VAR: &str = "PROVENANCE_TEST_SUSPECT_KEY_401";
    const SECRET: &str = "sk-test-0123456789abcdef";
    std::env::set_var(VAR, SECRET);
    let server = FaultServer::start(|_, _| {
        Reply::json(
            401,
            r#"{"error":{"message":"Invalid API Key","type":"authentication_error"}}"#,
        )
    })
    .await;
    let suspect = model(HttpModelConfig {
        api_key_env: Some(VAR.into()),
        ..config(&server.base_url())
    });
    let debug = format!("{suspect:?}");
    assert!(!debug.contains(SECRET), "{debug}");
    assert!(debug.contains("redacted"), "{debug}");

    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Auth(msg) => {
            assert!(msg.starts_with("401 from http://127.0.0.1"), "{msg}");
            assert!(msg.contains(VAR), "{msg}");
            assert!(!msg.contains(SECRET), "{msg}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
    let seen = server.requests();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
}

#[tokio::test]
async fn missing_api_key_variable_fails_at_construction() {
    let err = HttpModel::new(HttpModelConfig {
        api_key_env: Some("PROVENANCE_TEST_SUSPECT_KEY_NEVER_SET".into()),
        ..config("http://127.0.0.1:9/v1")
    })
    .unwrap_err();
    assert!(matches!(err, SuspectError::MissingApiKey(_)), "{err:?}");
    assert!(matches!(EndpointError::from(err), EndpointError::Auth(_)));
}

#[tokio::test]
async fn context_overflow_is_classified() {
    let server = FaultServer::start(|_, _| Reply::json(400, OVERFLOW)).await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::ContextOverflow(msg) => assert!(msg.contains("5031 tokens"), "{msg}"),
        other => panic!("expected ContextOverflow, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = FaultServer::start(|_, _| {
        Reply::json(302, "").header("Location", "http://169.254.169.254/latest/meta-data/")
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    match &err {
        EndpointError::Forbidden(msg) => assert!(msg.contains("169.254.169.254"), "{msg}"),
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert_eq!(server.request_count(), 1);
}

#[tokio::test]
async fn private_targets_are_refused_before_connecting() {
    let server = FaultServer::start(|_, _| Reply::json(200, CHAT)).await;
    let port = server.addr.port();
    for base in [
        server.base_url(),
        format!("http://localhost:{port}/v1"),
        format!("http://2130706433:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
    ] {
        let err = HttpModel::new(HttpModelConfig {
            allow_private_targets: false,
            ..config(&base)
        })
        .unwrap_err();
        assert!(matches!(err, SuspectError::Guard(_)), "{base}: {err:?}");
        let err = EndpointError::from(err);
        assert!(
            matches!(err, EndpointError::Forbidden(_)),
            "{base}: {err:?}"
        );
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn chat_request_carries_the_probe_parameters() {
    let server = FaultServer::start(|_, _| {
        Reply::Delayed(Duration::from_millis(30), Box::new(Reply::json(200, CHAT)))
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let response = suspect.run(&chat_request(5)).await.unwrap();
    assert_eq!(response.tokens.len(), 16);
    assert_eq!(response.tokens[0].token, "L");
    assert!(response.latency_ms >= 30, "{}", response.latency_ms);

    let seen = server.requests();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].header("content-type"), Some("application/json"));
    assert_eq!(
        seen[0].json(),
        json!({
            "model": "test-model",
            "messages": [{"role": "user", "content": "Say hello"}],
            "max_tokens": 16,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 7,
            "stop": ["\n\n"],
            "logprobs": true,
            "top_logprobs": 5,
            "stream": false
        })
    );
}

#[tokio::test]
async fn raw_completion_asks_for_legacy_logprobs() {
    let server = FaultServer::start(|_, _| Reply::json(200, COMPLETION)).await;
    let suspect = model(config(&server.base_url()));
    let response = suspect.run(&raw_request(5)).await.unwrap();
    assert_eq!(response.text, " with a quick brown bear.\n\n");
    assert_eq!(response.tokens.len(), 8);
    let seen = server.requests();
    assert_eq!(seen[0].path, "/v1/completions");
    let body = seen[0].json();
    assert_eq!(body["prompt"], "The quick brown fox");
    assert_eq!(body["logprobs"], 5);
    assert!(body.get("top_logprobs").is_none());
}

#[tokio::test]
async fn event_stream_replies_are_assembled() {
    let server = FaultServer::start(|_, _| {
        Reply::with_content_type(200, "text/event-stream; charset=utf-8", STREAM)
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let response = suspect.run(&chat_request(3)).await.unwrap();
    assert_eq!(response.tokens.len(), 8);
    assert!(
        response.text.starts_with("Hello there"),
        "{}",
        response.text
    );
    assert_eq!(response.finish_reason.as_deref(), Some("length"));
}

/// Answers like llama.cpp but refuses `top_logprobs` above 5 and has no raw completions.
fn picky_server(req: &Recorded, _: usize) -> Reply {
    match req.path.as_str() {
        "/v1/chat/completions" => {
            let body = req.json();
            let top = body["top_logprobs"].as_u64().unwrap_or(0);
            if top > 5 {
                return Reply::json(
                    400,
                    r#"{"error":{"code":400,"message":"top_logprobs must be between 0 and 5","type":"invalid_request_error"}}"#,
                );
            }
            let logprobs = if body["logprobs"] == json!(true) {
                let alternatives: Vec<_> = (0..top)
                    .map(|i| json!({"token": format!("t{i}"), "logprob": -(i as f64)}))
                    .collect();
                json!({"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": alternatives}]})
            } else {
                serde_json::Value::Null
            };
            let reply = json!({
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                             "logprobs": logprobs, "finish_reason": "length"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1}
            });
            Reply::json(200, reply.to_string())
        }
        "/v1/completions" => Reply::json(
            404,
            r#"{"error":{"message":"File Not Found","type":"not_found_error"}}"#,
        ),
        "/tokenize" => Reply::json(200, r#"{"tokens":[9906,1917]}"#),
        _ => Reply::json(404, "{}"),
    }
}

#[tokio::test]
async fn capabilities_fall_back_to_the_largest_accepted_top_logprobs() {
    let server = FaultServer::start(picky_server).await;
    let suspect = model(config(&server.base_url()));
    let caps = suspect.capabilities().await.unwrap();
    assert_eq!(
        caps,
        Capabilities {
            chat: true,
            raw_completion: false,
            max_top_logprobs: 5,
            usage: true,
            tokenize: true,
            ignores_temperature: false,
            refused_params: Vec::new(),
        }
    );
    let asked: Vec<u64> = server
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json()["top_logprobs"].as_u64())
        .collect();
    // The ladder, then the temperature check's three greedy requests, which list up to
    // five alternatives to tell replicas that differ from a sampler.
    assert_eq!(asked, vec![20, 10, 5, 5, 5, 5]);

    // Detected once.
    let count = server.request_count();
    assert_eq!(suspect.capabilities().await.unwrap(), caps);
    assert_eq!(server.request_count(), count);

    let tokens = suspect.tokenize("Hello world").await.unwrap();
    assert_eq!(tokens, vec![9906, 1917]);
    let seen = server.requests();
    let last = seen.last().unwrap();
    assert_eq!(last.path, "/tokenize");
    assert_eq!(
        last.json(),
        json!({"content": "Hello world", "add_special": false})
    );
}

#[tokio::test]
async fn capabilities_of_a_plain_endpoint() {
    // Chat only, logprobs silently ignored, no usage, no /tokenize.
    let server = FaultServer::start(|req, _| match req.path.as_str() {
        "/v1/chat/completions" => Reply::json(
            200,
            r#"{"choices":[{"message":{"role":"assistant","content":"Hi"},"logprobs":null}]}"#,
        ),
        _ => Reply::json(404, r#"{"detail":"Not Found"}"#),
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let caps = suspect.capabilities().await.unwrap();
    assert_eq!(
        caps,
        Capabilities {
            chat: true,
            ..Capabilities::default()
        }
    );
    let err = suspect.tokenize("Hello").await.unwrap_err();
    assert!(matches!(err, EndpointError::Unsupported(_)), "{err:?}");
}

/// llama.cpp's `post_sampling_probs`: at each position asked for, the `kept(position)`
/// tokens the sampler kept (the first at `first` nats, one nat apart), every other
/// alternative ruled out (null).
fn post_sampling_reply(req: &Recorded, kept: fn(usize) -> usize, first: f64) -> Reply {
    let body = req.json();
    let top = body["top_logprobs"].as_u64().unwrap_or(0) as usize;
    let positions = body["max_tokens"].as_u64().unwrap_or(1) as usize;
    let content: Vec<_> = (0..positions)
        .map(|p| {
            let alternatives: Vec<_> = (0..top)
                .map(|i| {
                    let lp = if i < kept(p) {
                        json!(first - i as f64)
                    } else {
                        json!(null)
                    };
                    json!({"token": format!("t{i}"), "logprob": lp})
                })
                .collect();
            json!({"token": "t0", "logprob": first, "top_logprobs": alternatives})
        })
        .collect();
    let reply = json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "t0"},
                     "logprobs": {"content": content}, "finish_reason": "length"}]
    });
    Reply::json(200, reply.to_string())
}

#[tokio::test]
async fn a_greedy_samplers_probabilities_are_not_log_probabilities() {
    // At temperature 0: the chosen token at probability one at every position.
    let server = FaultServer::start(|req, _| match req.path.as_str() {
        "/v1/chat/completions" => post_sampling_reply(req, |_| 1, 0.0),
        _ => Reply::json(404, r#"{"detail":"Not Found"}"#),
    })
    .await;
    let caps = model(config(&server.base_url()))
        .capabilities()
        .await
        .unwrap();
    assert_eq!(caps.max_top_logprobs, 0, "{caps:?}");
    assert!(caps.chat);
}

#[tokio::test]
async fn lists_cut_by_a_sampler_do_not_cap_the_top_logprobs_asked() {
    // Behind a temperature with top-p: each position lists what the sampler kept, two
    // tokens here and four there, whatever was asked.
    let server = FaultServer::start(|req, _| match req.path.as_str() {
        "/v1/chat/completions" => post_sampling_reply(req, |p| [2, 4, 1, 3][p % 4], -0.2),
        _ => Reply::json(404, r#"{"detail":"Not Found"}"#),
    })
    .await;
    let caps = model(config(&server.base_url()))
        .capabilities()
        .await
        .unwrap();
    assert_eq!(caps.max_top_logprobs, 20, "{caps:?}");
}

#[tokio::test]
async fn capabilities_report_a_wrong_model_name() {
    let server = FaultServer::start(|_, _| {
        Reply::json(
            404,
            r#"{"error":{"message":"The model `nope` does not exist","type":"invalid_request_error","code":"model_not_found"}}"#,
        )
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.capabilities().await.unwrap_err();
    match &err {
        EndpointError::Unsupported(msg) => assert!(msg.contains("does not exist"), "{msg}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[tokio::test]
async fn models_are_listed() {
    let server = FaultServer::start(|_, _| Reply::json(200, MODELS)).await;
    let suspect = model(config(&server.base_url()));
    assert_eq!(suspect.list_models().await.unwrap(), vec!["smollm2-135m"]);
    assert_eq!(server.requests()[0].method, "GET");
    assert_eq!(server.requests()[0].path, "/v1/models");
}

#[tokio::test]
async fn requests_are_paced_by_the_rate_limit() {
    let server = FaultServer::start(|_, _| Reply::json(200, CHAT)).await;
    let suspect = model(HttpModelConfig {
        requests_per_second: 20.0,
        ..config(&server.base_url())
    });
    let started = Instant::now();
    for _ in 0..5 {
        suspect.run(&chat_request(0)).await.unwrap();
    }
    // The first goes at once, the other four 50 ms apart.
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(180), "{elapsed:?}");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let server = FaultServer::start(|_, _| {
        Reply::Delayed(Duration::from_millis(80), Box::new(Reply::json(200, CHAT)))
    })
    .await;
    let suspect = model(HttpModelConfig {
        max_concurrency: 2,
        ..config(&server.base_url())
    });
    let request = chat_request(0);
    let runs = (0..6).map(|_| suspect.run(&request));
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
    assert_eq!(server.request_count(), 6);
    assert!(server.max_in_flight() <= 2, "{}", server.max_in_flight());
}

/// A base URL given as a bare host (`http://host:8000`, as users paste it) reaches the API
/// under `/v1/` where the server lists its models there, and stays at the root where it
/// does not.
#[tokio::test]
async fn a_bare_host_finds_the_api_under_v1() {
    let server = FaultServer::start(|req, _| match req.path.as_str() {
        "/v1/models" => Reply::json(200, MODELS),
        "/v1/chat/completions" => Reply::json(200, CHAT),
        _ => Reply::json(404, r#"{"error":{"message":"not found"}}"#),
    })
    .await;
    let bare = server.base_url().trim_end_matches("/v1").to_string();
    let suspect = model(config(&bare));
    let response = suspect.run(&chat_request(5)).await.unwrap();
    assert_eq!(response.tokens.len(), 16);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/models", "/v1/chat/completions"]);

    let root_only = FaultServer::start(|req, _| match req.path.as_str() {
        "/chat/completions" => Reply::json(200, CHAT),
        _ => Reply::json(404, r#"{"error":{"message":"not found"}}"#),
    })
    .await;
    let bare = root_only.base_url().trim_end_matches("/v1").to_string();
    let suspect = model(config(&bare));
    suspect.run(&chat_request(5)).await.unwrap();
    let paths: Vec<String> = root_only.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v1/models", "/chat/completions"]);
}

/// OpenAI's newer models and several gateways: `max_tokens` refused for
/// `max_completion_tokens`, `seed` unknown, any temperature but the default refused.
fn strict_server(req: &Recorded, _: usize) -> Reply {
    let body = req.json();
    let refuse = |message: &str| {
        Reply::json(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error"}}).to_string(),
        )
    };
    if req.path != "/v1/chat/completions" {
        return Reply::json(404, "{}");
    }
    if body.get("max_tokens").is_some() {
        return refuse("Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.");
    }
    if body.get("seed").is_some() {
        return refuse("Unrecognized request argument supplied: seed");
    }
    if body.get("temperature").is_some_and(|t| t != 1.0) {
        return refuse("Unsupported value: 'temperature' does not support 0.0 with this model. Only the default (1) value is supported.");
    }
    Reply::json(200, CHAT)
}

#[tokio::test]
async fn refused_parameters_are_left_out_or_renamed_and_reported() {
    let server = FaultServer::start(strict_server).await;
    let suspect = model(config(&server.base_url()));
    let caps = suspect.capabilities().await.unwrap();
    assert!(caps.chat);
    assert_eq!(
        caps.refused_params,
        vec![
            "seed (left out)".to_string(),
            "max_tokens (sent as max_completion_tokens)".to_string(),
            "temperature (left out: the server samples at its own temperature)".to_string(),
        ]
    );
    assert!(
        caps.summary().contains("refused seed"),
        "{}",
        caps.summary()
    );

    // Later requests go out without them at once.
    let before = server.request_count();
    let response = suspect.run(&chat_request(5)).await.unwrap();
    assert_eq!(response.tokens.len(), 16);
    assert_eq!(server.request_count(), before + 1);
    let last = server.requests().last().unwrap().json();
    assert_eq!(last["max_completion_tokens"], 16);
    for absent in ["max_tokens", "seed", "temperature"] {
        assert!(last.get(absent).is_none(), "{absent} still sent: {last}");
    }
}

/// A 400 that names a parameter but is not cured by leaving it out is returned as it
/// came, and the parameter is sent again afterwards.
#[tokio::test]
async fn a_remedy_that_does_not_help_is_undone() {
    let server = FaultServer::start(|_, _| {
        Reply::json(
            400,
            r#"{"error":{"message":"Invalid request: unsupported model for seed or top_p","type":"invalid_request_error"}}"#,
        )
    })
    .await;
    let suspect = model(config(&server.base_url()));
    let err = suspect.run(&chat_request(0)).await.unwrap_err();
    assert!(matches!(err, EndpointError::BadRequest(_)), "{err:?}");
    // top_p named first (it changes nothing), then seed: the same refusal both times.
    assert_eq!(server.request_count(), 2);
    suspect.run(&chat_request(0)).await.unwrap_err();
    let next = server.requests()[2].json();
    assert_eq!(next["top_p"], 1.0);
    assert_eq!(next["seed"], 7);
}
