//! The REST API against the real PostgreSQL: roles on every route, idempotent
//! resubmission, problem documents, the OpenAPI document and metrics.

#[path = "common/pg.rs"]
mod pg;

use provenance::app::AppConfig;
use provenance::store::Role;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

struct Api {
    base: String,
    client: reqwest::Client,
    _db: pg::TestDb,
    keys: Vec<(Option<Role>, Option<String>)>,
    /// The API's model directory, holding `x.gguf`.
    _models: tempfile::TempDir,
}

async fn start() -> Api {
    start_with(None).await
}

async fn start_with(rate_limit_per_key: Option<std::num::NonZeroU32>) -> Api {
    let db = pg::TestDb::new().await;
    db.register_stub_reference().await;
    let mut keys = vec![(None, None)];
    for role in [Role::Submitter, Role::Analyst, Role::Admin] {
        let (_, key) = db.store.create_api_key(role, "t").await.expect("key");
        keys.push((Some(role), Some(key)));
    }
    let models = tempfile::tempdir().expect("models dir");
    std::fs::write(models.path().join("x.gguf"), b"not a model").expect("x.gguf");
    let base = db
        .launch(provenance::launch::Settings::api_only(AppConfig {
            allow_private_targets: false,
            default_probe_set: "default".into(),
            rate_limit_per_key,
            secure_cookies: false,
            models: provenance::model::allowed::ModelAccess::new(
                &[models.path().to_path_buf()],
                false,
            ),
        }))
        .await;
    Api {
        base,
        client: reqwest::Client::new(),
        _db: db,
        keys,
        _models: models,
    }
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            ctype,
        )
    }

    fn key(&self, role: Role) -> &str {
        self.keys
            .iter()
            .find(|(r, _)| *r == Some(role))
            .and_then(|(_, k)| k.as_deref())
            .expect("key")
    }
}

fn scan_body() -> Value {
    json!({"suspect_url": "https://suspect.example.com/v1", "suspect_model": "m", "reference": "smollm2"})
}

#[tokio::test]
async fn roles_are_enforced_on_every_route() {
    let api = start().await;
    let uuid = uuid::Uuid::new_v4();
    // (method, path, body, least role allowed)
    let table: Vec<(Method, String, Option<Value>, Role)> = vec![
        (
            Method::POST,
            "/v1/scans".into(),
            Some(scan_body()),
            Role::Submitter,
        ),
        (Method::GET, "/v1/scans".into(), None, Role::Submitter),
        (
            Method::GET,
            format!("/v1/scans/{uuid}"),
            None,
            Role::Submitter,
        ),
        (
            Method::GET,
            format!("/v1/scans/{uuid}/report"),
            None,
            Role::Submitter,
        ),
        (
            Method::DELETE,
            format!("/v1/scans/{uuid}"),
            None,
            Role::Submitter,
        ),
        (Method::GET, "/v1/fingerprints".into(), None, Role::Analyst),
        (
            Method::GET,
            format!("/v1/fingerprints/{uuid}"),
            None,
            Role::Analyst,
        ),
        (
            Method::POST,
            "/v1/comparisons".into(),
            Some(json!({"reference_fingerprint_id": uuid, "suspect_fingerprint_id": uuid})),
            Role::Analyst,
        ),
        (Method::GET, "/v1/models".into(), None, Role::Submitter),
        (
            Method::POST,
            "/v1/models".into(),
            Some(json!({"name": "ctl", "role": "control", "kind": "local", "source": "x.gguf"})),
            Role::Analyst,
        ),
        (Method::GET, "/v1/probe-sets".into(), None, Role::Submitter),
        (Method::GET, "/v1/schedules".into(), None, Role::Admin),
        (
            Method::POST,
            "/v1/schedules".into(),
            Some(
                json!({"name": "s", "cron": "0 * * * *", "suspect_url": "https://suspect.example.com/v1", "suspect_model": "m", "reference": "smollm2"}),
            ),
            Role::Admin,
        ),
        (
            Method::DELETE,
            format!("/v1/schedules/{uuid}"),
            None,
            Role::Admin,
        ),
    ];
    for (method, path, body, least) in &table {
        for (role, key) in &api.keys {
            // Names must stay unique across the roles that may create them.
            let body = body.clone().map(|mut b| {
                if let Some(name) = b.get_mut("name") {
                    *name = json!(format!("{}-{:?}", name.as_str().unwrap_or(""), role));
                }
                b
            });
            let (status, problem, ctype) =
                api.call(method.clone(), path, key.as_deref(), body).await;
            let expected_denied = match role {
                None => Some(StatusCode::UNAUTHORIZED),
                Some(r) if r < least => Some(StatusCode::FORBIDDEN),
                Some(_) => None,
            };
            match expected_denied {
                Some(code) => {
                    assert_eq!(status, code, "{method} {path} as {role:?}");
                    assert_eq!(ctype, "application/problem+json", "{method} {path}");
                    assert_eq!(problem["status"], code.as_u16());
                }
                None => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} as {role:?} got {status}: {problem}"
                ),
            }
        }
    }
    // Every write made it into the audit log with its key.
    let audit = api._db.store.audit_log(100).await.expect("audit");
    assert!(audit
        .iter()
        .any(|e| e.action == "scan.submit" && e.api_key_id.is_some()));
    assert!(audit.iter().any(|e| e.action == "model.create"));
    assert!(audit.iter().any(|e| e.action == "schedule.create"));
}

#[tokio::test]
async fn idempotent_resubmission_and_private_targets() {
    let api = start().await;
    let key = api.key(Role::Submitter).to_string();
    let submit = |idem: &'static str, body: Value| {
        let req = api
            .client
            .post(format!("{}/v1/scans", api.base))
            .bearer_auth(&key)
            .header("Idempotency-Key", idem)
            .json(&body);
        async move { req.send().await.expect("send") }
    };
    let first = submit("one", scan_body()).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await.expect("json");
    let again: Value = submit("one", scan_body()).await.json().await.expect("json");
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["created"], false);
    let other: Value = submit("two", scan_body()).await.json().await.expect("json");
    assert_ne!(first["id"], other["id"]);

    // Loopback suspects are refused unless the server allows private targets.
    let body = json!({"suspect_url": "http://127.0.0.1:9/v1", "reference": "smollm2"});
    let (status, problem, ctype) = api
        .call(Method::POST, "/v1/scans", Some(&key), Some(body))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(ctype, "application/problem+json");
    assert!(problem["detail"]
        .as_str()
        .unwrap_or("")
        .contains("suspect_url"));

    // A submitter sees only its own scans.
    let (_, page, _) = api.call(Method::GET, "/v1/scans", Some(&key), None).await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let analyst = api.key(Role::Analyst).to_string();
    let id = first["id"].as_str().expect("id");
    let (status, _, _) = api
        .call(
            Method::GET,
            &format!("/v1/scans/{id}"),
            Some(&analyst),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let other_submitter = api
        ._db
        .store
        .create_api_key(Role::Submitter, "x")
        .await
        .expect("key")
        .1;
    let (status, _, _) = api
        .call(
            Method::GET,
            &format!("/v1/scans/{id}"),
            Some(&other_submitter),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Cursor pagination walks every scan once.
    let (_, p1, _) = api
        .call(Method::GET, "/v1/scans?limit=1", Some(&analyst), None)
        .await;
    let cursor = p1["next_cursor"].as_str().expect("more").to_string();
    let (_, p2, _) = api
        .call(
            Method::GET,
            &format!("/v1/scans?limit=1&cursor={cursor}"),
            Some(&analyst),
            None,
        )
        .await;
    assert_ne!(p1["items"][0]["id"], p2["items"][0]["id"]);
    assert!(p2["next_cursor"].is_null());

    // Cancel.
    let (status, cancelled, _) = api
        .call(Method::DELETE, &format!("/v1/scans/{id}"), Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
}

#[tokio::test]
async fn limits_health_metrics_and_openapi() {
    let api = start().await;
    let key = api.key(Role::Submitter).to_string();
    let big = json!({"suspect_url": "x".repeat(200_000), "reference": "smollm2"});
    let (status, _, ctype) = api
        .call(Method::POST, "/v1/scans", Some(&key), Some(big))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(ctype, "application/problem+json");
    let (status, _, _) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = reqwest::get(format!("{}/metrics", api.base))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("provenance_http_requests_total"));
    let (status, doc, _) = api.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/scans",
        "/v1/scans/{id}/report",
        "/v1/fingerprints",
        "/v1/schedules/{id}",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}

#[tokio::test]
async fn each_key_has_its_own_request_budget() {
    // One request per second, bursts of two.
    let api = start_with(std::num::NonZeroU32::new(1)).await;
    let busy = api.key(Role::Analyst).to_string();
    let mut limited = None;
    for _ in 0..6 {
        let resp = api
            .client
            .get(format!("{}/v1/fingerprints", api.base))
            .bearer_auth(&busy)
            .send()
            .await
            .expect("request");
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), StatusCode::OK);
    }
    let resp = limited.expect("the busy key is limited within six quick requests");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        resp.headers()["content-type"].to_str().expect("text"),
        "application/problem+json"
    );
    // Another key is not held back by the busy one.
    let (status, _, _) = api
        .call(
            Method::GET,
            "/v1/fingerprints",
            Some(api.key(Role::Admin)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}
