//! The REST API load generator, shared by the bounded load test (`tests/api_load.rs`) and
//! the benchmark suite (`benches/suite.rs`): N stored fingerprints, then C concurrent
//! clients for D seconds mixing browse pages, fingerprint details, scan status reads and
//! submissions, every response checked (status and whole body).
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use provenance::store::Role;
use reqwest::StatusCode;
use serde_json::json;

use crate::pg;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Browse,
    Detail,
    Status,
    Submit,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Browse => "browse (50 per page)",
            Kind::Detail => "fingerprint detail",
            Kind::Status => "scan status",
            Kind::Submit => "scan submission (audited write)",
        }
    }
}

pub struct LoadSettings {
    pub fingerprints: usize,
    pub clients: usize,
    pub seconds: u64,
}

/// Figures for one kind of request (`kind` None: all of them).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadRow {
    pub request: String,
    pub count: usize,
    pub req_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct LoadOutcome {
    pub seeded_s: f64,
    pub rows: Vec<LoadRow>,
    /// What went wrong, one line per failed request.
    pub failures: Vec<String>,
    pub completed: usize,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Seeds `db` (one scan per two fingerprints, both complete, as workers leave them), serves
/// the API on a free loopback port and runs the mixed load against it.
pub async fn run(db: &pg::TestDb, s: &LoadSettings) -> LoadOutcome {
    let (set, reference) = db.register_stub_reference().await;
    let started = Instant::now();
    let mut scan_ids = Vec::new();
    let mut fingerprint_ids = Vec::new();
    for chunk in (0..s.fingerprints.max(2) / 2)
        .collect::<Vec<_>>()
        .chunks(16)
    {
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
    let seeded_s = started.elapsed().as_secs_f64();

    let (_, key) = db
        .store
        .create_api_key(Role::Admin, "load")
        .await
        .expect("key");
    let base = db.api(true, "default").await;

    let client = reqwest::Client::new();
    let scan_ids = Arc::new(scan_ids);
    let fingerprint_ids = Arc::new(fingerprint_ids);
    let clients = s.clients.max(1);
    let deadline = Instant::now() + Duration::from_secs(s.seconds);
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

    let mut kinds: Vec<Kind> = all.iter().map(|(k, _)| *k).collect();
    kinds.sort();
    kinds.dedup();
    let rows = kinds
        .into_iter()
        .map(Some)
        .chain([None])
        .map(|kind| {
            let mut lat: Vec<Duration> = all
                .iter()
                .filter(|(k, _)| kind.is_none_or(|want| *k == want))
                .map(|(_, d)| *d)
                .collect();
            lat.sort();
            LoadRow {
                request: kind.map(Kind::label).unwrap_or("all").to_string(),
                count: lat.len(),
                req_per_s: lat.len() as f64 / s.seconds.max(1) as f64,
                p50_ms: percentile(&lat, 0.5).as_secs_f64() * 1e3,
                p99_ms: percentile(&lat, 0.99).as_secs_f64() * 1e3,
            }
        })
        .collect();
    LoadOutcome {
        seeded_s,
        rows,
        failures,
        completed: all.len(),
    }
}

pub fn table(rows: &[LoadRow]) -> String {
    let mut out =
        String::from("| request | count | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|\n");
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} |\n",
            r.request, r.count, r.req_per_s, r.p50_ms, r.p99_ms
        ));
    }
    out
}
