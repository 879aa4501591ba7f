//! How many scans at once the service sustains against a local suspect: S scans of a
//! `serve-model` SmolLM2 suspect submitted together, run by W worker loops in one process
//! sharing one reference model. Asserts every scan reaches its true verdict (identical);
//! reports wall time, scans per minute and latency (never asserted).
//!
//! Long form: `PROVENANCE_THROUGHPUT_SCANS=8 PROVENANCE_THROUGHPUT_WORKERS=4 cargo test
//! --release --test worker_throughput -- --nocapture`.

mod common;
#[path = "common/pg.rs"]
mod pg;

use std::time::{Duration, Instant};

use provenance::jobs::{run_worker, ReferenceCache, WorkerConfig};
use provenance::model::{LoadOptions, ModelHandle};
use provenance::store::{NewScan, ScanStatus};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_run_concurrent_scans_to_their_verdicts() {
    let scans = env_usize("PROVENANCE_THROUGHPUT_SCANS", 2);
    let workers = env_usize("PROVENANCE_THROUGHPUT_WORKERS", 2);
    let model = provenance::fetch::default_dir().join(provenance::fetch::SMOLLM2.file);
    assert!(
        model.exists(),
        "run `cargo run --release -- models fetch` first"
    );
    let model = model.to_string_lossy().into_owned();

    let db = pg::TestDb::new().await;
    // The suspect is its own model thread, as another process would be.
    let suspect_model = ModelHandle::spawn(&model, &LoadOptions::default(), 64).expect("load");
    let suspect = pg::serve(provenance::serve::router(
        suspect_model,
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect".into(),
            system_prompt: None,
        },
    ))
    .await;
    let (set, reference) = db.register_reference("smollm2", &model).await;
    let references = ReferenceCache::new();
    references
        .insert(
            &model,
            ModelHandle::spawn(&model, &LoadOptions::default(), 64).expect("load"),
        )
        .await;

    let mut ids = Vec::new();
    for i in 0..scans {
        let (row, _) = db
            .store
            .submit_scan(&NewScan {
                suspect_model: format!("suspect-{i}"),
                probes_per_kind: Some(8),
                ..pg::http_scan(&format!("{suspect}/v1"), reference.id, set.id)
            })
            .await
            .expect("submit");
        ids.push(row.id);
    }
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for _ in 0..workers {
        tokio::spawn(run_worker(
            db.store.clone(),
            WorkerConfig {
                lease: Duration::from_secs(30),
                poll: Duration::from_millis(100),
                allow_private_targets: true,
                concurrency: 2,
                ..Default::default()
            },
            references.clone(),
            stop_rx.clone(),
        ));
    }

    let deadline = started + Duration::from_secs(300 * scans as u64);
    let mut latencies = Vec::new();
    for id in &ids {
        let scan = loop {
            let scan = db.store.get_scan(*id).await.expect("scan");
            if scan.status.is_final() {
                break scan;
            }
            assert!(Instant::now() < deadline, "scan {id} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(scan.status, ScanStatus::Done, "{:?}", scan.error);
        assert_eq!(scan.verdict.as_deref(), Some("identical"), "scan {id}");
        if let (Some(a), Some(b)) = (scan.started_at, scan.finished_at) {
            latencies.push((b - a).num_milliseconds() as f64 / 1e3);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    latencies.sort_by(f64::total_cmp);
    eprintln!(
        "| {workers} | {scans} | {wall:.1} | {:.2} | {:.1} | {:.1} |",
        scans as f64 * 60.0 / wall,
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1]
    );
}
