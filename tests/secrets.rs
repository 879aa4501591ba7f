//! A suspect's API key lives only in the server's environment: after a scan that used it,
//! the key appears in no API response, no row of any table and no log line.

mod common;
#[path = "common/logs.rs"]
mod logs;
#[path = "common/pg.rs"]
mod pg;

use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use provenance::jobs::ReferenceCache;
use provenance::model::{LoadOptions, ModelHandle};
use provenance::store::Role;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

const SECRET: &str = "sk-test-7f3a9c21d4e8b6a5";

/// The suspect insists on the key, like a paid API.
async fn require_key(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SECRET}"));
    if !ok {
        return (StatusCode::UNAUTHORIZED, "missing key").into_response();
    }
    next.run(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suspects_key_is_in_no_response_row_or_log() {
    let logs = logs::capture();
    std::env::set_var("PROVENANCE_SECRET_SUSPECT_KEY", SECRET);

    let db = pg::TestDb::new().await;
    let model = common::smollm2().to_string_lossy().into_owned();
    let handle = ModelHandle::spawn(&model, &LoadOptions::default(), 16).expect("load");
    let suspect = provenance::serve::router(
        handle.clone(),
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: None,
        },
    )
    .layer(axum::middleware::from_fn(require_key));
    let suspect_url = format!("{}/v1", pg::serve(suspect).await);
    // The key may go to this suspect and nowhere else.
    std::env::set_var("PROVENANCE_SECRET_SUSPECT_KEY__URL", &suspect_url);

    let (set, _) = db.register_reference("smollm2", &model).await;
    let (_, key) = db
        .store
        .create_api_key(Role::Admin, "t")
        .await
        .expect("key");
    let base = db.api(true, &set.name).await;
    let references = ReferenceCache::new();
    references.insert(&model, handle).await;
    let stop_tx = db.spawn_worker(references);

    let client = reqwest::Client::new();
    let mut bodies: Vec<String> = Vec::new();
    let resp = client
        .post(format!("{base}/v1/scans"))
        .bearer_auth(&key)
        .json(&json!({
            "suspect_url": suspect_url,
            "suspect_model": "suspect",
            "suspect_secret": "suspect_key",
            "reference": "smollm2",
            "probes_per_kind": 5,
            "max_samples": 2
        }))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status(), 202);
    let accepted = resp.text().await.expect("text");
    bodies.push(accepted.clone());
    let id = serde_json::from_str::<Value>(&accepted).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "scan did not finish"
        );
        let text = client
            .get(format!("{base}/v1/scans/{id}"))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        let scan: Value = serde_json::from_str(&text).expect("json");
        bodies.push(text);
        if scan["status"] == "done" || scan["status"] == "failed" {
            // The key was used: the suspect answered, so the scan reached a verdict.
            assert_eq!(scan["status"], "done", "{scan}");
            assert_eq!(scan["verdict"], "identical", "{scan}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let _ = stop_tx.send(true);
    for path in [
        format!("/v1/scans/{id}/report"),
        "/v1/scans".to_string(),
        "/v1/fingerprints".to_string(),
        "/v1/models".to_string(),
        "/openapi.json".to_string(),
    ] {
        bodies.push(
            client
                .get(format!("{base}{path}"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get")
                .text()
                .await
                .expect("text"),
        );
    }
    for body in &bodies {
        assert!(!body.contains(SECRET), "the key is in a response");
    }
    // The name of the secret is stored; its value is not, in any column of any table.
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_all(&mut conn)
    .await
    .expect("tables");
    assert!(tables.len() >= 8, "{tables:?}");
    let mut rows_seen = 0usize;
    for (table,) in tables {
        let rows: Vec<(String,)> =
            sqlx::query_as(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
                .fetch_all(&mut conn)
                .await
                .expect("dump");
        rows_seen += rows.len();
        for (row,) in rows {
            assert!(!row.contains(SECRET), "the key is stored in {table}");
        }
    }
    assert!(rows_seen > 50, "only {rows_seen} rows looked at");
    let logs = logs.text();
    assert!(!logs.is_empty(), "nothing was logged");
    assert!(!logs.contains(SECRET), "the key is in the logs");
}
