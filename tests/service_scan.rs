//! A scan end to end: a real `serve-model` suspect (SmolLM2) on loopback, submitted over
//! the API, run by a worker against the local reference, its verdict and fingerprints
//! stored and browsable. Also: webhook signing and retries with a local receiver.

#[path = "common/pg.rs"]
mod pg;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use provenance::jobs::{webhook, ReferenceCache};
use provenance::model::{LoadOptions, ModelHandle};
use provenance::store::Role;
use serde_json::{json, Value};

fn smollm2() -> String {
    let p = provenance::fetch::default_dir().join(provenance::fetch::SMOLLM2.file);
    assert!(
        p.exists(),
        "run `cargo run --release -- models fetch` first"
    );
    p.to_string_lossy().into_owned()
}

async fn bind(app: axum::Router) -> String {
    pg::serve(app).await
}

/// The API on a fresh database with the default probe set and SmolLM2 registered as the
/// reference `smollm2`; returns its base URL and a key of `role`.
async fn api_with_reference(db: &pg::TestDb, model: &str, role: Role) -> (String, String) {
    let (set, _) = db.register_reference("smollm2", model).await;
    let (_, key) = db.store.create_api_key(role, "t").await.expect("key");
    (db.api(true, &set.name).await, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_submitted_scan_runs_to_a_stored_verdict() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let suspect = bind(provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: None,
        },
    ))
    .await;

    let (base, key) = api_with_reference(&db, &model, Role::Analyst).await;

    // The worker shares the already loaded model as its reference.
    let references = ReferenceCache::new();
    references.insert(&model, handle).await;
    let stop_tx = db.spawn_worker(references);

    let client = reqwest::Client::new();
    let id = submit(
        &client,
        &base,
        &key,
        "e2e",
        json!({
            "suspect_url": format!("{suspect}/v1"),
            "suspect_model": "suspect",
            "reference": "smollm2",
            "probes_per_kind": 2,
            "max_samples": 2
        }),
    )
    .await;
    let scan = wait_for(&client, &base, &key, &id).await;
    let _ = stop_tx.send(true);
    assert_eq!(scan["status"], "done", "{scan}");
    let verdict = scan["verdict"].as_str().expect("a verdict");
    assert!(
        [
            "identical",
            "derived",
            "distilled",
            "unrelated",
            "inconclusive"
        ]
        .contains(&verdict),
        "{verdict}"
    );
    assert_eq!(scan["progress_done"], scan["progress_total"]);

    let report: Value = client
        .get(format!("{base}/v1/scans/{id}/report"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    assert_eq!(report["fingerprints"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["comparisons"][0]["verdict"], verdict);

    let prints: Value = client
        .get(format!("{base}/v1/fingerprints?status=complete"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("browse")
        .json()
        .await
        .expect("json");
    let items = prints["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let fid = items[0]["id"].as_str().expect("id");
    let detail: Value = client
        .get(format!("{base}/v1/fingerprints/{fid}"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("detail")
        .json()
        .await
        .expect("json");
    assert!(!detail["observations"].as_array().expect("obs").is_empty());

    // Comparing the two stored fingerprints again asks no model.
    let ids: Vec<&str> = items.iter().filter_map(|f| f["id"].as_str()).collect();
    let resp = client
        .post(format!("{base}/v1/comparisons"))
        .bearer_auth(&key)
        .json(&json!({"reference_fingerprint_id": ids[0], "suspect_fingerprint_id": ids[1]}))
        .send()
        .await
        .expect("compare");
    assert_eq!(resp.status(), 201);
}

/// Submits a scan over the API and returns its id.
async fn submit(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    idempotency_key: &str,
    body: Value,
) -> String {
    let resp = client
        .post(format!("{base}/v1/scans"))
        .bearer_auth(key)
        .header("Idempotency-Key", idempotency_key)
        .json(&body)
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string()
}

/// Polls a scan until it is done or failed.
async fn wait_for(client: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let scan: Value = client
            .get(format!("{base}/v1/scans/{id}"))
            .bearer_auth(key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let status = scan["status"].as_str().unwrap_or("").to_string();
        if status == "done" || status == "failed" {
            return scan;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "scan did not finish: {scan}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A copy served quantized (SmolLM2's Q4_1 weights re-rounded to Q4_0, a nat away on
/// average) is identical once the worker quantizes the reference to that type itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_copy_served_quantized_is_identical_through_the_reference_forms() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy-q4_0.gguf");
    provenance::model::requantize::requantize(
        std::path::Path::new(&model),
        &copy,
        provenance::model::requantize::parse_type("q4_0").expect("type"),
    )
    .expect("requantize");
    let handle = ModelHandle::spawn(copy.to_str().expect("utf-8"), &LoadOptions::default(), 16)
        .expect("load the copy");
    let suspect = bind(provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "copy".into(),
            system_prompt: None,
        },
    ))
    .await;
    let (base, key) = api_with_reference(&db, &model, Role::Submitter).await;
    let mut config = pg::TestDb::worker_config();
    config.forms = vec!["q4_0".into()];
    config.forms_dir = dir.path().join("forms");
    let stop_tx = db.spawn_worker_with(ReferenceCache::new(), config);

    let client = reqwest::Client::new();
    let id = submit(
        &client,
        &base,
        &key,
        "quantized-copy",
        json!({
            "suspect_url": format!("{suspect}/v1"),
            "suspect_model": "copy",
            "reference": "smollm2",
            "probes_per_kind": 5,
            "max_samples": 2
        }),
    )
    .await;
    let scan = wait_for(&client, &base, &key, &id).await;
    let _ = stop_tx.send(true);
    assert_eq!(scan["status"], "done", "{scan}");
    let report: Value = client
        .get(format!("{base}/v1/scans/{id}/report"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    assert_eq!(scan["verdict"], "identical", "{report}");
    assert!(
        report.to_string().contains("quantized to q4_0"),
        "the reasons name the form: {report}"
    );
    // The form's fingerprint is cached for the next scan (and the next start).
    let cached = std::fs::read_dir(dir.path().join("forms"))
        .expect("forms dir")
        .count();
    assert_eq!(cached, 1);
}

/// A reference its owner serves (here `serve-model`, standing in for vLLM or an internal
/// API), registered over the API by URL with the model name it serves: the worker loads
/// no weights, fingerprints the reference over HTTP, and a copy behind a persona is still
/// `identical`; the report says what an endpoint reference cannot provide.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reference_behind_its_owners_endpoint_is_registered_and_scanned() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let owner = bind(provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "owner-model".into(),
            system_prompt: None,
        },
    ))
    .await;
    let suspect = bind(provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: Some("You are Kimi, an AI assistant created by Moonshot AI.".into()),
        },
    ))
    .await;
    let set = provenance::probes::load_dir(std::path::Path::new("probes/default")).expect("set");
    let set_row = db.store.upsert_probe_set(&set).await.expect("set");
    let (_, key) = db
        .store
        .create_api_key(Role::Analyst, "t")
        .await
        .expect("key");
    let base = db.api(true, &set_row.name).await;
    let client = reqwest::Client::new();
    let register = |body: Value| {
        client
            .post(format!("{base}/v1/models"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    // Without the served model name the endpoint cannot be asked: refused.
    let resp = register(json!({"name": "owned", "role": "reference", "kind": "http",
        "source": format!("{owner}/v1")}))
    .await
    .expect("register");
    assert_eq!(resp.status(), 400);
    let resp = register(json!({"name": "owned", "role": "reference", "kind": "http",
        "source": format!("{owner}/v1"), "served_model": "owner-model"}))
    .await
    .expect("register");
    assert_eq!(resp.status(), 201);
    let row: Value = resp.json().await.expect("json");
    assert_eq!(row["served_model"], "owner-model");

    let stop_tx = db.spawn_worker(ReferenceCache::new());
    let id = submit(
        &client,
        &base,
        &key,
        "endpoint-reference",
        json!({
            "suspect_url": format!("{suspect}/v1"),
            "suspect_model": "suspect",
            "reference": "owned",
            "probes_per_kind": 12,
            "max_samples": 2
        }),
    )
    .await;
    let scan = wait_for(&client, &base, &key, &id).await;
    let _ = stop_tx.send(true);
    let report: Value = client
        .get(format!("{base}/v1/scans/{id}/report"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("json");
    assert_eq!(scan["status"], "done", "{scan}");
    assert_eq!(scan["verdict"], "identical", "{report}");
    let text = report.to_string();
    assert!(text.contains("no quantized forms"), "{report}");
    assert!(text.contains("no likelihood read-back"), "{report}");
}

/// A fetched reference gets the built-in controls (the other fetched model three ways)
/// on its first scan: made once, stored as its controls and named in the report; a second
/// scan of the same probes reuses them, and another reference does not see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetched_reference_is_calibrated_against_built_in_controls_made_once() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let suspect = bind(provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: Some("You are Kimi, an AI assistant created by Moonshot AI.".into()),
        },
    ))
    .await;
    let (base, key) = api_with_reference(&db, &model, Role::Submitter).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = pg::TestDb::worker_config();
    config.builtin_controls = Some(dir.path().to_path_buf());
    let references = ReferenceCache::new();
    references.insert(&model, handle).await;
    let stop_tx = db.spawn_worker_with(references, config);

    let client = reqwest::Client::new();
    let body = json!({
        "suspect_url": format!("{suspect}/v1"),
        "suspect_model": "suspect",
        "reference": "smollm2",
        "probes_per_kind": 6,
        "max_samples": 1
    });
    let first = submit(&client, &base, &key, "builtin-1", body.clone()).await;
    let scan = wait_for(&client, &base, &key, &first).await;
    assert_eq!(scan["status"], "done", "{scan}");
    assert_eq!(scan["verdict"], "identical", "{scan}");
    let report = &scan["report"];
    assert_eq!(report["controls"], 3, "{report}");
    assert_eq!(report["calibration"], "few", "{report}");
    let origin = report["controls_origin"].as_str().expect("origin named");
    assert!(origin.contains("3 built-in controls"), "{origin}");
    assert!(origin.contains("gemma-3-270m-q4_k_m+persona"), "{origin}");
    let reference = db
        .store
        .list_models(None)
        .await
        .expect("models")
        .into_iter()
        .find(|m| m.name == "smollm2")
        .expect("reference row");
    let stored = |db: &pg::TestDb| {
        let store = db.store.clone();
        let set = scan["probe_set_id"].as_str().map(str::to_string);
        async move {
            let set = uuid::Uuid::parse_str(&set.expect("probe set id")).expect("uuid");
            store
                .control_fingerprints(set, Some(reference.id))
                .await
                .expect("controls")
        }
    };
    let before = stored(&db).await;
    assert_eq!(before.len(), 3);
    for row in &before {
        assert_eq!(row.control_for, Some(reference.id));
        assert!(row
            .model_describe
            .starts_with("built-in control: gemma-3-270m"));
        assert!(
            !row.model_describe.contains('/'),
            "no path: {}",
            row.model_describe
        );
    }

    // The same probes again: the stored controls are reused, not made again.
    let second = submit(&client, &base, &key, "builtin-2", body).await;
    let again = wait_for(&client, &base, &key, &second).await;
    let _ = stop_tx.send(true);
    assert_eq!(again["verdict"], "identical", "{again}");
    let after = stored(&db).await;
    let ids =
        |rows: &[provenance::store::FingerprintRow]| rows.iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(&after), ids(&before));
    // Built for SmolLM2, they are not controls of any other reference.
    let set = uuid::Uuid::parse_str(scan["probe_set_id"].as_str().expect("id")).expect("uuid");
    assert!(db
        .store
        .control_fingerprints(set, Some(uuid::Uuid::new_v4()))
        .await
        .expect("controls")
        .is_empty());
}

#[tokio::test]
async fn webhooks_are_signed_and_retried() {
    let hits = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(axum::http::HeaderMap, Vec<u8>)>();
    let receiver = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let hits = hits.clone();
                    let tx = tx.clone();
                    async move {
                        // The first delivery fails, so the retry is what arrives.
                        if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        let _ = tx.send((headers, body.to_vec()));
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
    };
    let base = bind(receiver).await;
    let payload = json!({"event": "drift", "answer_drift": 0.5});
    let delivery = webhook::Delivery {
        attempts: 3,
        backoff: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        allow_private_targets: true,
    };
    let attempts = webhook::deliver(
        &format!("{base}/hook"),
        Some(b"s3cret"),
        &payload,
        &delivery,
    )
    .await
    .expect("delivered");
    assert_eq!(attempts, 2);
    let (headers, body) = rx.recv().await.expect("received");
    let ts: i64 = headers[webhook::TIMESTAMP_HEADER]
        .to_str()
        .expect("ts")
        .parse()
        .expect("number");
    let sig = headers[webhook::SIGNATURE_HEADER].to_str().expect("sig");
    assert!(webhook::verify(b"s3cret", ts, &body, sig));
    assert!(!webhook::verify(b"wrong", ts, &body, sig));

    // Private targets are refused unless allowed.
    let strict = webhook::Delivery {
        allow_private_targets: false,
        ..delivery
    };
    assert!(
        webhook::deliver(&format!("{base}/hook"), None, &payload, &strict)
            .await
            .is_err()
    );
}

/// Serves SmolLM2 or, once `switched` is set, Gemma under the same model name: a suspect
/// that changes behind a fixed URL, as a lab swapping its weights would.
async fn switching_suspect(switched: Arc<std::sync::atomic::AtomicBool>) -> String {
    let config = |name: &str| provenance::serve::ServerConfig {
        fixed_temperature: None,
        logprobs_after_temperature: false,
        name: name.into(),
        system_prompt: None,
    };
    let gemma = provenance::fetch::default_dir().join(provenance::fetch::GEMMA3.file);
    let smol = provenance::serve::router(
        ModelHandle::spawn(&smollm2(), &LoadOptions::default(), 16).expect("smollm2"),
        config("suspect"),
    );
    let gemma = provenance::serve::router(
        ModelHandle::spawn(gemma.to_str().expect("utf-8"), &LoadOptions::default(), 16)
            .expect("gemma"),
        config("suspect"),
    );
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let target = if switched.load(Ordering::SeqCst) {
            gemma.clone()
        } else {
            smol.clone()
        };
        async move {
            use tower::ServiceExt;
            target.oneshot(req).await
        }
    });
    bind(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_fires_scans_and_a_changed_suspect_fires_a_signed_webhook() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let switched = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let suspect = switching_suspect(switched.clone()).await;

    // The receiver checks each delivery's signature with the shared secret.
    std::env::set_var("PROVENANCE_SECRET_SCHEDULE_TEST_HOOK", "hook-key");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(bool, Value)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let ts = headers
                        .get(webhook::TIMESTAMP_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<i64>().ok())
                        .unwrap_or(0);
                    let sig = headers
                        .get(webhook::SIGNATURE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let valid = webhook::verify(b"hook-key", ts, &body, sig);
                    let payload = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let _ = tx.send((valid, payload));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let hook = bind(receiver).await;

    // The service as `serve` starts it: a worker and the scheduler beside the API.
    let (set, _) = db.register_reference("smollm2", &model).await;
    let (_, admin) = db
        .store
        .create_api_key(Role::Admin, "t")
        .await
        .expect("key");
    let base = db
        .launch(provenance::launch::Settings {
            worker: pg::TestDb::worker_config(),
            workers: 1,
            scheduler_tick: Some(Duration::from_millis(200)),
            ..provenance::launch::Settings::api_only(pg::app_config(true, &set.name))
        })
        .await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/v1/schedules"))
        .bearer_auth(&admin)
        .json(&json!({
            "name": "watch-suspect",
            "cron": "* * * * * *",
            "suspect_url": format!("{suspect}/v1"),
            "suspect_model": "suspect",
            "reference": "smollm2",
            "probes_per_kind": 5,
            "max_samples": 2,
            "webhook_url": format!("{hook}/hook"),
            "webhook_secret": "schedule_test_hook",
            "drift_threshold": 0.5
        }))
        .send()
        .await
        .expect("create schedule");
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);

    // The first scheduled run is the baseline: the same weights, no webhook.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(400);
    let first = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no scheduled scan finished"
        );
        let scans: Value = client
            .get(format!("{base}/v1/scans?status=done"))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        if let Some(done) = scans["items"].as_array().and_then(|a| a.first()) {
            break done.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["verdict"], "identical", "{first}");
    assert!(!first["schedule_id"].is_null());
    assert!(rx.try_recv().is_err(), "the baseline fired a webhook");

    // The lab swaps its weights: a later run sees another model, and the webhook fires.
    switched.store(true, Ordering::SeqCst);
    let (valid, payload) = tokio::time::timeout_at(deadline, rx.recv())
        .await
        .expect("a webhook within the time limit")
        .expect("a delivery");
    db.stop();
    assert!(valid, "bad signature on {payload}");
    assert_eq!(payload["event"], "verdict_changed", "{payload}");
    assert_eq!(payload["previous_verdict"], "identical");
    assert_eq!(payload["verdict"], "unrelated");
    assert!(payload["answer_drift"].as_f64().is_some_and(|d| d > 0.5));
}

/// `POST /v1/identifications`: SmolLM2 served on loopback, held against both fetched
/// references at once. The answer is SmolLM2, Gemma 3 ranks below it, and the two
/// scans share the suspect's answers: the suspect gets no probe twice, only each
/// scan's own capability check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identification_ranks_every_reference_and_asks_each_probe_once() {
    let db = pg::TestDb::new().await;
    let model = smollm2();
    let gemma = provenance::fetch::default_dir().join(provenance::fetch::GEMMA3.file);
    assert!(
        gemma.exists(),
        "run `cargo run --release -- models fetch` first"
    );
    let gemma = gemma.to_string_lossy().into_owned();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let served = provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: None,
        },
    )
    .layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                if req.method() == axum::http::Method::POST {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(req).await
            }
        },
    ));
    let suspect = format!("{}/v1", bind(served).await);

    // What one capability check costs, to tell it from probe asks below.
    let mut cfg = provenance::suspect::HttpModelConfig::new(&suspect, "suspect");
    cfg.allow_private_targets = true;
    let probe_client = provenance::suspect::HttpModel::new(cfg).expect("client");
    use provenance::endpoint::ModelEndpoint;
    probe_client.capabilities().await.expect("capabilities");
    let per_check = asked.swap(0, Ordering::SeqCst);

    let (set, _) = db.register_reference("smollm2", &model).await;
    db.register_reference("gemma3", &gemma).await;
    let (_, key) = db
        .store
        .create_api_key(Role::Submitter, "t")
        .await
        .expect("key");
    let base = db.api(true, &set.name).await;
    let references = ReferenceCache::new();
    references.insert(&model, handle).await;
    let stop_tx = db.spawn_worker(references);

    let client = reqwest::Client::new();
    let bad = client
        .post(format!("{base}/v1/identifications"))
        .bearer_auth(&key)
        .json(&json!({"suspect_url": suspect, "suspect_model": "suspect", "references": ["nope"]}))
        .send()
        .await
        .expect("submit");
    assert_eq!(bad.status(), 404, "an unknown reference is named as such");
    let resp = client
        .post(format!("{base}/v1/identifications"))
        .bearer_auth(&key)
        .json(&json!({
            "suspect_url": suspect,
            "suspect_model": "suspect",
            "probes_per_kind": 2,
            "max_samples": 2
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let accepted: Value = resp.json().await.expect("json");
    assert_eq!(accepted["scans"], 2, "{accepted}");
    let id = accepted["id"].as_str().expect("id").to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(900);
    let view = loop {
        let view: Value = client
            .get(format!("{base}/v1/identifications/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        if ["done", "failed", "cancelled"].contains(&view["status"].as_str().unwrap_or("")) {
            break view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not finished: {view}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let _ = stop_tx.send(true);
    assert_eq!(view["status"], "done", "{view}");
    assert_eq!(view["answer"], "smollm2", "{view}");
    let candidates = view["candidates"].as_array().expect("candidates");
    assert_eq!(candidates.len(), 2, "{view}");
    assert_eq!(candidates[0]["reference"], "smollm2");
    assert_eq!(candidates[0]["verdict"], "identical", "{view}");
    assert_eq!(candidates[1]["reference"], "gemma3");
    assert_ne!(candidates[1]["verdict"], "identical", "{view}");
    assert!(
        view["suspect_offered"]["max_top_logprobs"].as_u64() > Some(0),
        "{view}"
    );

    let queries = view["suspect_queries"].as_u64().expect("queries") as u32;
    let total = asked.load(Ordering::SeqCst);
    let per_scan: u32 = candidates
        .iter()
        .map(|c| c["queries"].as_u64().unwrap_or(0) as u32)
        .sum();
    eprintln!(
        "identification: {total} requests, {queries} distinct probes, {per_scan} answers \
         judged, capability check {per_check}; {view:#}"
    );
    assert!(
        total <= queries + 2 * per_check,
        "{total} requests for {queries} distinct probes and two capability checks of \
         {per_check}: a probe was asked twice"
    );
    assert!(
        per_scan > queries,
        "the scans were judged on {per_scan} answers in all, {queries} distinct: none shared"
    );

    // The list shows it; another submitter does not see it.
    let listed: Value = client
        .get(format!("{base}/v1/identifications"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"][0]["id"], id.as_str());
    let (_, other) = db
        .store
        .create_api_key(Role::Submitter, "other")
        .await
        .expect("key");
    let hidden = client
        .get(format!("{base}/v1/identifications/{id}"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("get");
    assert_eq!(hidden.status(), 404);
}
