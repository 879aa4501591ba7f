//! A bounded load test of the REST API on loopback: N stored fingerprints (default 1000;
//! the long form stores 10 000), then C concurrent clients for D seconds mixing browse
//! pages, fingerprint details, scan status reads and submissions (`common/load.rs`). It
//! asserts what a user cares about under load (every request answered correctly, no 5xx,
//! no dropped connection) and prints the figures; timings are reported, never asserted.
//!
//! Long form: `PROVENANCE_LOAD_FINGERPRINTS=10000 PROVENANCE_LOAD_SECS=30 cargo test
//! --release --test api_load -- --nocapture`; `cargo bench --bench suite` puts the same
//! figures in the benchmark table.

#[path = "common/load.rs"]
mod load;
#[path = "common/pg.rs"]
mod pg;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_holds_under_a_bounded_load() {
    let settings = load::LoadSettings {
        fingerprints: env_usize("PROVENANCE_LOAD_FINGERPRINTS", 1000).max(2),
        seconds: env_usize("PROVENANCE_LOAD_SECS", 3) as u64,
        clients: env_usize("PROVENANCE_LOAD_CLIENTS", 16),
    };
    let db = pg::TestDb::new().await;
    let outcome = load::run(&db, &settings).await;
    assert!(
        outcome.failures.is_empty(),
        "{} failed: {:?}",
        outcome.failures.len(),
        &outcome.failures[..outcome.failures.len().min(10)]
    );
    assert!(outcome.completed > 0, "no request completed");
    eprintln!(
        "{} fingerprints seeded in {:.1} s; {} clients for {} s",
        settings.fingerprints, outcome.seeded_s, settings.clients, settings.seconds
    );
    eprint!("{}", load::table(&outcome.rows));
}
