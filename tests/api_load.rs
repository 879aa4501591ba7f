//! A bounded load test of the REST API on loopback: N stored fingerprints (default 1000;
//! the long form stores 10 000), then C concurrent clients for D seconds mixing browse
//! pages, fingerprint details, scan status reads and submissions. It asserts what a user
//! cares about under load (every request answered correctly, no 5xx, no dropped
//! connection) and prints the figures; timings are reported, never asserted.
//!
//! Long form: `PROVENANCE_LOAD_FINGERPRINTS=10000 PROVENANCE_LOAD_SECS=30 cargo test
//! --release --test api_load -- --nocapture`.

#[path = "common/pg.rs"]
mod pg;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use provenance::store::Role;
use reqwest::StatusCode;
use serde_json::json;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Browse,
    Detail,
    Status,
    Submit,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_holds_under_a_bounded_load() {
    let fingerprints = env_usize("PROVENANCE_LOAD_FINGERPRINTS", 1000).max(2);
    let seconds = env_usize("PROVENANCE_LOAD_SECS", 3) as u64;
    let clients = env_usize("PROVENANCE_LOAD_CLIENTS", 16);

    let db = pg::TestDb::new().await;
    let (set, reference) = db.register_stub_reference().await;

    // Seed: one scan per two fingerprints, both complete, as workers leave them.
    let started = Instant::now();
    let mut scan_ids = Vec::new();
    let mut fingerprint_ids = Vec::new();
    for chunk in (0..fingerprints / 2).collect::<Vec<_>>().chunks(16) {
        let made = join_all(
            chunk
                .iter()
                .map(|&i| pg::seed_scan(&db.store, i, reference.id, set.id, None)),
        )
        .await;
        for (scan, ids) in made {
            scan_ids.push(scan);
            fingerprint_ids.extend(ids);
        }
    }
    let seeded = started.elapsed();

    let (_, key) = db
        .store
        .create_api_key(Role::Admin, "load")
        .await
        .expect("key");
    let base = db.api(true, "default").await;

    let client = reqwest::Client::new();
    let scan_ids = Arc::new(scan_ids);
    let fingerprint_ids = Arc::new(fingerprint_ids);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks = (0..clients).map(|c| {
        let (client, base, key) = (client.clone(), base.clone(), key.clone());
        let (scans, prints) = (scan_ids.clone(), fingerprint_ids.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(Kind, Duration)> = Vec::new();
            let mut failures: Vec<String> = Vec::new();
            let mut n = c;
            while Instant::now() < deadline {
                n += clients;
                // 4 browse : 3 detail : 2 status : 1 submit.
                let (kind, req, want) = match n % 10 {
                    0..=3 => (
                        Kind::Browse,
                        client.get(format!("{base}/v1/fingerprints?limit=50")),
                        StatusCode::OK,
                    ),
                    4..=6 => (
                        Kind::Detail,
                        client.get(format!(
                            "{base}/v1/fingerprints/{}",
                            prints[n % prints.len()]
                        )),
                        StatusCode::OK,
                    ),
                    7 | 8 => (
                        Kind::Status,
                        client.get(format!("{base}/v1/scans/{}", scans[n % scans.len()])),
                        StatusCode::OK,
                    ),
                    _ => (
                        Kind::Submit,
                        client.post(format!("{base}/v1/scans")).json(&json!({
                            "suspect_url": "http://127.0.0.1:9/v1",
                            "suspect_model": "m",
                            "reference": "smollm2",
                        })),
                        StatusCode::ACCEPTED,
                    ),
                };
                let t = Instant::now();
                match req.bearer_auth(&key).send().await {
                    Ok(resp) if resp.status() == want => {
                        // The body is part of the answer: read it before stopping the clock.
                        if resp.bytes().await.is_err() {
                            failures.push(format!("{kind:?}: body cut"));
                        }
                        seen.push((kind, t.elapsed()));
                    }
                    Ok(resp) => failures.push(format!("{kind:?}: {}", resp.status())),
                    Err(e) => failures.push(format!("{kind:?}: {e}")),
                }
            }
            (seen, failures)
        })
    });
    let mut all: Vec<(Kind, Duration)> = Vec::new();
    let mut failures = Vec::new();
    for result in join_all(tasks).await {
        let (seen, failed) = result.expect("client task");
        all.extend(seen);
        failures.extend(failed);
    }
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    eprintln!(
        "{fingerprints} fingerprints seeded in {:.1} s; {clients} clients for {seconds} s",
        seeded.as_secs_f64()
    );
    eprintln!("| request | count | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|");
    let mut kinds: Vec<Kind> = all.iter().map(|(k, _)| *k).collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds.into_iter().map(Some).chain([None]) {
        let mut lat: Vec<Duration> = all
            .iter()
            .filter(|(k, _)| kind.is_none_or(|want| *k == want))
            .map(|(_, d)| *d)
            .collect();
        lat.sort();
        eprintln!(
            "| {} | {} | {:.0} | {:.1} | {:.1} |",
            kind.map(|k| format!("{k:?}"))
                .unwrap_or_else(|| "all".into()),
            lat.len(),
            lat.len() as f64 / seconds.max(1) as f64,
            percentile(&lat, 0.5).as_secs_f64() * 1e3,
            percentile(&lat, 0.99).as_secs_f64() * 1e3
        );
    }
    assert!(!all.is_empty(), "no request completed");
}
