//! What a hostile submitter or analyst tries against the service, black-box over the REST
//! API on a real PostgreSQL (every listener on loopback): server-side secrets sent to
//! their own server, files read through `suspect_path`, cloud metadata through the
//! private-targets flag, and the smaller leaks (long URLs, empty model names, HTML 404s,
//! missing browser headers, server paths in `/v1/models`, refused scans retried).

mod common;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/pg.rs"]
mod pg;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use provenance::jobs::ReferenceCache;
use provenance::model::allowed::ModelAccess;
use provenance::store::Role;
use serde_json::{json, Value};

fn logged() -> String {
    logs::capture().text()
}

/// What a server controlled by the attacker saw: every Authorization header sent to it.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

/// A server that answers every request 401 with the request's Authorization header in
/// the error message, as a careless or hostile endpoint would.
async fn echo_server(seen: Seen) -> String {
    async fn echo(State(seen): State<Seen>, req: Request) -> Response {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Ok(mut s) = seen.0.lock() {
            s.push(auth.clone());
        }
        let body = json!({"error": {"message": format!("invalid key: {auth}"), "type": "auth"}});
        (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response()
    }
    let app = axum::Router::new().fallback(echo).with_state(seen);
    format!("{}/v1", pg::serve(app).await)
}

struct Service {
    db: pg::TestDb,
    set_id: uuid::Uuid,
    reference_id: uuid::Uuid,
    base: String,
    client: reqwest::Client,
    submitter: String,
    analyst: String,
    admin: String,
}

impl Service {
    /// The API over a fresh database with SmolLM2 as reference `smollm2`, users' models
    /// confined to `models`, and a worker with the same rules.
    async fn start(allow_private: bool, models: &ModelAccess) -> Service {
        logs::capture();
        let db = pg::TestDb::new().await;
        let smol = common::smollm2().to_string_lossy().into_owned();
        let (set, reference) = db.register_reference("smollm2", &smol).await;
        let base = db
            .launch(provenance::launch::Settings::api_only(
                provenance::app::AppConfig {
                    allow_private_targets: allow_private,
                    default_probe_set: "default".into(),
                    rate_limit_per_key: None,
                    secure_cookies: false,
                    models: models.clone(),
                },
            ))
            .await;
        let key = |role| {
            let store = db.store.clone();
            async move { store.create_api_key(role, "t").await.expect("key").1 }
        };
        Service {
            submitter: key(Role::Submitter).await,
            analyst: key(Role::Analyst).await,
            admin: key(Role::Admin).await,
            set_id: set.id,
            reference_id: reference.id,
            db,
            base,
            client: reqwest::Client::new(),
        }
    }

    fn worker(&self, models: &ModelAccess) -> tokio::sync::watch::Sender<bool> {
        let config = provenance::jobs::WorkerConfig {
            models: models.clone(),
            ..pg::TestDb::worker_config()
        };
        self.db.spawn_worker_with(ReferenceCache::new(), config)
    }

    async fn post(&self, key: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: &str, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("get");
        (resp.status(), resp.text().await.expect("text"))
    }

    /// Polls a scan until it is done or failed.
    async fn wait(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            let (_, text) = self.get(&self.admin, &format!("/v1/scans/{id}")).await;
            let scan: Value = serde_json::from_str(&text).expect("json");
            if scan["status"] == "done" || scan["status"] == "failed" {
                return scan;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {scan}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn scan_id(accepted: &Value) -> String {
    accepted["id"].as_str().expect("id").to_string()
}

fn detail(problem: &Value) -> String {
    problem["detail"].as_str().unwrap_or("").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_secret_is_sent_only_where_it_is_bound_and_never_shown() {
    const VALUE: &str = "sk-bound-5e1f0c9a7d3b";
    let service = Service::start(true, &ModelAccess::default()).await;
    let attacker = Seen::default();
    let attacker_url = echo_server(attacker.clone()).await;
    let owner = Seen::default();
    let owner_url = echo_server(owner.clone()).await;
    std::env::set_var("PROVENANCE_SECRET_SEC_BOUND", VALUE);
    std::env::set_var("PROVENANCE_SECRET_SEC_BOUND__URL", &owner_url);
    std::env::set_var("PROVENANCE_SECRET_SEC_BOUND__ROLE", "submitter");
    std::env::set_var("PROVENANCE_SECRET_SEC_UNBOUND", "sk-unbound-99aa77bb55");
    std::env::set_var("PROVENANCE_SECRET_SEC_ANALYST", "sk-analyst-1234567890");
    std::env::set_var("PROVENANCE_SECRET_SEC_ANALYST__URL", &attacker_url);
    let stop = service.worker(&ModelAccess::default());

    let scan = |url: &str, secret: &str| {
        json!({"suspect_url": url, "suspect_model": "m", "suspect_secret": secret,
               "reference": "smollm2", "probes_per_kind": 1})
    };
    // A submitter cannot point a bound secret at their own server, use one bound to no
    // URL, or one kept for analysts; the refusals do not tell which secrets exist.
    let (status, problem) = service
        .post(
            &service.submitter,
            "/v1/scans",
            scan(&attacker_url, "sec_bound"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(detail(&problem).contains("may not be sent to this URL"));
    let (status, unbound) = service
        .post(
            &service.submitter,
            "/v1/scans",
            scan(&attacker_url, "sec_unbound"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, missing) = service
        .post(
            &service.submitter,
            "/v1/scans",
            scan(&attacker_url, "sec_missing"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        detail(&unbound).replace("sec_unbound", "X"),
        detail(&missing).replace("sec_missing", "X")
    );
    let (status, _) = service
        .post(
            &service.submitter,
            "/v1/scans",
            scan(&attacker_url, "sec_analyst"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An admin is told why.
    let (status, problem) = service
        .post(
            &service.admin,
            "/v1/scans",
            scan(&attacker_url, "sec_unbound"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("bound to no URL"), "{problem}");

    // A scan already queued for a foreign URL (as if the binding changed after it was
    // submitted) is failed by the worker without a single request carrying the key.
    let (queued, _) = service
        .db
        .store
        .submit_scan(&provenance::store::NewScan {
            suspect_secret: Some("sec_bound".into()),
            probes_per_kind: Some(1),
            ..pg::http_scan(&attacker_url, service.reference_id, service.set_id)
        })
        .await
        .expect("queue");
    let failed = service.wait(&queued.id.to_string()).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 1, "a refusal is not retried: {failed}");
    assert!(failed["error"]
        .as_str()
        .unwrap_or("")
        .contains("may not be sent"));

    // Sent where it belongs, to a server that echoes it back: the scan fails, and the
    // echoed key reaches no response, row or log line.
    let (status, accepted) = service
        .post(
            &service.submitter,
            "/v1/scans",
            scan(&owner_url, "sec_bound"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = scan_id(&accepted);
    let done = service.wait(&id).await;
    assert_eq!(done["status"], "failed", "{done}");
    let error = done["error"].as_str().unwrap_or("").to_string();
    assert!(error.contains("[redacted]"), "{error}");
    assert!(
        error.len() < 700,
        "error not cut short: {} chars",
        error.len()
    );
    let _ = stop.send(true);

    assert!(owner
        .0
        .lock()
        .expect("seen")
        .iter()
        .any(|a| a == &format!("Bearer {VALUE}")));
    assert!(
        attacker
            .0
            .lock()
            .expect("seen")
            .iter()
            .all(|a| a.is_empty()),
        "the attacker's server received a key"
    );
    let mut texts = vec![error];
    for path in [
        format!("/v1/scans/{id}"),
        format!("/v1/scans/{id}/report"),
        format!("/v1/scans/{}", queued.id),
        "/v1/scans".into(),
    ] {
        texts.push(service.get(&service.admin, &path).await.1);
    }
    let rows = service.db.store.get_scan(id.parse().expect("uuid")).await;
    texts.push(format!("{rows:?}"));
    texts.push(logged());
    for text in &texts {
        assert!(!text.contains(VALUE), "the key leaked: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_paths_resolve_only_inside_the_model_directories() {
    let root = tempfile::tempdir().expect("tmp");
    let models = root.path().join("models");
    std::fs::create_dir_all(&models).expect("dir");
    std::fs::write(
        models.join("junk.gguf"),
        b"root:x:0:0:root:/root:/bin/bash\n",
    )
    .expect("junk");
    std::os::unix::fs::symlink("/etc/passwd", models.join("escape.gguf")).expect("link");
    let access = ModelAccess::new(std::slice::from_ref(&models), false);
    let service = Service::start(true, &access).await;
    std::env::set_var("RUST_BACKTRACE", "1");
    let stop = service.worker(&access);
    let server_dir = std::fs::canonicalize(&models).expect("canonical");
    let server_dir = server_dir.to_string_lossy().into_owned();

    let scan =
        |path: &str| json!({"suspect_path": path, "reference": "smollm2", "probes_per_kind": 1});
    let mut refusals = Vec::new();
    for path in [
        "/etc/shadow",
        "/etc/passwd",
        "/proc/self/environ",
        "/nonexistent/file.gguf",
        "/",
        "../../../../etc/passwd",
        "escape.gguf",
    ] {
        let (status, problem) = service
            .post(&service.analyst, "/v1/scans", scan(path))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        let d = detail(&problem);
        assert!(d.contains("not in the service's model directories"), "{d}");
        assert!(!d.contains(&server_dir) && !d.contains("magic"), "{d}");
        // Whether the path exists, is a directory or a link is not told.
        refusals.push(d.replace(path, "PATH"));
    }
    refusals.dedup();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let (status, problem) = service
        .post(&service.analyst, "/v1/scans", scan("owner/name"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("does not download from the hub"));
    let (status, _) = service
        .post(
            &service.analyst,
            "/v1/models",
            json!({"name": "x", "role": "control", "kind": "local", "source": "/etc/passwd"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A file inside that is no model: the scan names it as typed, nothing more.
    let (status, accepted) = service
        .post(&service.analyst, "/v1/scans", scan("junk.gguf"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let id = scan_id(&accepted);
    let failed = service.wait(&id).await;
    let _ = stop.send(true);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    let error = failed["error"].as_str().unwrap_or("");
    assert!(error.contains("junk.gguf"), "{error}");
    for leak in [
        server_dir.as_str(),
        "root:x",
        "magic",
        "backtrace",
        "0x",
        "\n",
    ] {
        assert!(!error.contains(leak), "{leak:?} in {error}");
    }
    // Neither the report nor the model list shows a server path.
    let (_, report) = service
        .get(&service.analyst, &format!("/v1/scans/{id}/report"))
        .await;
    assert!(!report.contains(&server_dir), "{report}");
    let (status, listed) = service.get(&service.submitter, "/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    let smol_dir = common::smollm2()
        .parent()
        .expect("dir")
        .to_string_lossy()
        .into_owned();
    assert!(!listed.contains(&smol_dir), "{listed}");
    assert!(listed.contains(provenance::fetch::SMOLLM2.file), "{listed}");
}

#[tokio::test]
async fn metadata_addresses_stay_refused_with_private_targets_allowed() {
    let service = Service::start(true, &ModelAccess::default()).await;
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fd00:ec2::254]/v1",
        "http://[::ffff:169.254.169.254]/v1",
        "http://169.254.170.2/v2/credentials",
    ] {
        let body = json!({"suspect_url": url, "suspect_model": "m", "reference": "smollm2"});
        let (status, problem) = service.post(&service.submitter, "/v1/scans", body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {problem}");
        let schedule = json!({"name": "s", "cron": "0 * * * *", "reference": "smollm2",
            "suspect_url": "http://127.0.0.1:9/v1", "suspect_model": "m", "webhook_url": url});
        let (status, problem) = service
            .post(&service.admin, "/v1/schedules", schedule)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "webhook {url}: {problem}");
    }
    // What the flag is for still works.
    let body = json!({"suspect_url": "http://127.0.0.1:9/v1", "suspect_model": "m",
                      "reference": "smollm2"});
    let (status, _) = service.post(&service.submitter, "/v1/scans", body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_holes_are_closed() {
    let service = Service::start(true, &ModelAccess::default()).await;

    // A 60 KB URL and an empty model name are refused at the door.
    let long = format!("http://127.0.0.1:9/v1/{}", "a".repeat(60_000));
    let (status, problem) = service
        .post(
            &service.submitter,
            "/v1/scans",
            json!({"suspect_url": long, "suspect_model": "m", "reference": "smollm2"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(detail(&problem).contains("at most 2048"), "{problem}");
    for model in ["", "   "] {
        let (status, problem) = service
            .post(
                &service.submitter,
                "/v1/scans",
                json!({"suspect_url": "http://127.0.0.1:9/v1", "suspect_model": model,
                       "reference": "smollm2"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(detail(&problem).contains("suspect_model"), "{problem}");
    }

    // Unknown API paths answer a problem document, not the UI's HTML page.
    for (method, path) in [
        (reqwest::Method::GET, "/v1/nope"),
        (reqwest::Method::POST, "/v1/scans/x/y"),
        (reqwest::Method::GET, "/v1"),
    ] {
        let resp = service
            .client
            .request(method, format!("{}{path}", service.base))
            .bearer_auth(&service.submitter)
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }

    // The UI's pages carry headers against framing, sniffing and injected scripts.
    let resp = service
        .client
        .get(format!("{}/ui/login", service.base))
        .send()
        .await
        .expect("login");
    let headers = resp.headers();
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    let csp = headers["content-security-policy"].to_str().expect("csp");
    for part in [
        "default-src 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }

    // A suspect refused by the outbound policy (here: it redirects) fails once.
    let redirect = axum::Router::new().fallback(|| async {
        (
            StatusCode::FOUND,
            [("location", "http://169.254.169.254/")],
            "",
        )
    });
    let url = format!("{}/v1", pg::serve(redirect).await);
    let stop = service.worker(&ModelAccess::default());
    let (status, accepted) = service
        .post(
            &service.submitter,
            "/v1/scans",
            json!({"suspect_url": url, "suspect_model": "m", "reference": "smollm2",
                   "probes_per_kind": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let failed = service.wait(&scan_id(&accepted)).await;
    let _ = stop.send(true);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert_eq!(failed["max_attempts"], 3);
}
