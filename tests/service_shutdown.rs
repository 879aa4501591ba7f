//! The service SIGTERMed mid-request: the request already in flight is answered in full,
//! new connections are refused, and the process exits cleanly.

#[path = "common/pg.rs"]
mod pg;

use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_request_in_flight() {
    let db = pg::TestDb::new().await;
    let (_, key) = db
        .store
        .create_api_key(provenance::store::Role::Analyst, "t")
        .await
        .expect("key");
    // A free port: bind, note it, release it for the service.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut service = Command::new(env!("CARGO_BIN_EXE_provenance"))
        .args([
            "serve",
            "--database-url",
            &db.url,
            "--addr",
            &addr,
            "--workers",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start the service");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let client = reqwest::Client::new();
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the service never came up"
        );
        if let Ok(r) = client.get(format!("http://{addr}/healthz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A request whose body is only half sent when the signal arrives.
    let body = serde_json::json!({
        "reference_fingerprint_id": uuid::Uuid::new_v4(),
        "suspect_fingerprint_id": uuid::Uuid::new_v4(),
    })
    .to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/comparisons HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send half");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    conn.write_all(rest.as_bytes())
        .await
        .expect("send the rest");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut reply))
        .await
        .expect("the reply came before the deadline")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply);
    // Both fingerprints are unknown: a complete problem+json 404, not a cut connection.
    assert!(reply.starts_with("HTTP/1.1 404"), "{reply}");
    assert!(reply.contains("application/problem+json"), "{reply}");

    let exit = tokio::task::spawn_blocking(move || service.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    assert!(
        tokio::net::TcpStream::connect(&addr).await.is_err(),
        "still accepting connections after shutdown"
    );
}
