//! The scan queue against the real PostgreSQL: idempotency, exclusive claims, leases,
//! attempt caps and cancellation.

#[path = "common/pg.rs"]
mod pg;

use std::collections::HashSet;

use provenance::probes::ProbeSet;
use provenance::store::{
    ModelKind, ModelRole, NewModel, NewScan, Role, ScanStatus, Side, Store, SuspectKind,
};
use uuid::Uuid;

async fn new_scan(
    store: &Store,
    key: Option<Uuid>,
    idem: Option<&str>,
    max_attempts: i32,
) -> NewScan {
    let reference = match store.find_model("ref").await {
        Ok(m) => m,
        Err(_) => store
            .create_model(&NewModel {
                name: "ref".into(),
                role: ModelRole::Reference,
                kind: ModelKind::Local,
                source: "/models/ref.gguf".into(),
                description: String::new(),
                served_model: String::new(),
                secret: None,
            })
            .await
            .expect("model"),
    };
    let set = store
        .upsert_probe_set(&ProbeSet {
            name: "tiny".into(),
            version: "1".into(),
            hash: "abc".into(),
            probes: Vec::new(),
        })
        .await
        .expect("probe set");
    NewScan {
        api_key_id: key,
        idempotency_key: idem.map(str::to_string),
        suspect_kind: SuspectKind::Http,
        suspect_source: "https://example.invalid/v1".into(),
        suspect_model: "m".into(),
        suspect_secret: None,
        reference_model_id: reference.id,
        probe_set_id: set.id,
        probes_per_kind: None,
        max_samples: None,
        early_stop: true,
        schedule_id: None,
        max_attempts,
    }
}

#[tokio::test]
async fn idempotent_submission_returns_the_same_scan() {
    let db = pg::TestDb::new().await;
    let (key, _) = db
        .store
        .create_api_key(Role::Submitter, "k")
        .await
        .expect("key");
    let (other, _) = db
        .store
        .create_api_key(Role::Submitter, "o")
        .await
        .expect("key");
    let s = new_scan(&db.store, Some(key.id), Some("abc"), 3).await;
    let (first, created) = db.store.submit_scan(&s).await.expect("submit");
    assert!(created);
    let (again, created) = db.store.submit_scan(&s).await.expect("resubmit");
    assert!(!created);
    assert_eq!(first.id, again.id);
    // The same idempotency key from another API key is another scan.
    let s2 = new_scan(&db.store, Some(other.id), Some("abc"), 3).await;
    let (theirs, created) = db.store.submit_scan(&s2).await.expect("submit");
    assert!(created);
    assert_ne!(theirs.id, first.id);
}

#[tokio::test]
async fn concurrent_workers_never_claim_the_same_scan() {
    let db = pg::TestDb::new().await;
    let n = 24;
    for _ in 0..n {
        let s = new_scan(&db.store, None, None, 3).await;
        db.store.submit_scan(&s).await.expect("submit");
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = db.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(c) = store
                .claim_scan(&format!("w{w}"), 60.0)
                .await
                .expect("claim")
            {
                got.push(c.scan.id);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), n, "every scan claimed once");
    assert_eq!(unique.len(), n, "no scan claimed twice");
}

#[tokio::test]
async fn an_expired_lease_passes_the_scan_on_and_attempts_are_capped() {
    let db = pg::TestDb::new().await;
    let s = new_scan(&db.store, None, None, 2).await;
    let (scan, _) = db.store.submit_scan(&s).await.expect("submit");
    let a = db
        .store
        .claim_scan("a", 1.0)
        .await
        .expect("claim")
        .expect("a scan");
    assert_eq!(a.scan.attempts, 1);
    // While A's lease is live nobody else gets the scan.
    assert!(db
        .store
        .claim_scan("b", 1.0)
        .await
        .expect("claim")
        .is_none());
    let fp = db
        .store
        .scan_fingerprint(scan.id, Side::Suspect, None, "m", scan.probe_set_id)
        .await
        .expect("fingerprint");
    let data = serde_json::json!({"probe_id": "p1"});
    assert!(db
        .store
        .add_observation(scan.id, "a", fp.id, "p1", "logit", 0, true, &data)
        .await
        .expect("write"));

    // A stops renewing; after expiry B takes over.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let b = db
        .store
        .claim_scan("b", 1.0)
        .await
        .expect("claim")
        .expect("taken over");
    assert_eq!(b.scan.id, scan.id);
    assert_eq!(b.scan.attempts, 2);
    assert!(!db
        .store
        .renew_lease(scan.id, "a", 1.0)
        .await
        .expect("renew"));
    assert!(!db
        .store
        .add_observation(scan.id, "a", fp.id, "p2", "logit", 0, true, &data)
        .await
        .expect("write refused"));
    // B resumes from what is stored and never duplicates it.
    let keys = db.store.observed_keys(fp.id).await.expect("keys");
    assert_eq!(keys, vec![("p1".to_string(), 0)]);
    assert!(db
        .store
        .add_observation(scan.id, "b", fp.id, "p1", "logit", 0, true, &data)
        .await
        .expect("write"));
    assert_eq!(db.store.observations(fp.id).await.expect("obs").len(), 1);

    // B dies too: that was the last attempt, so the scan fails instead of running again.
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    assert!(db
        .store
        .claim_scan("c", 1.0)
        .await
        .expect("claim")
        .is_none());
    let failed = db.store.get_scan(scan.id).await.expect("scan");
    assert_eq!(failed.status, ScanStatus::Failed);
    assert!(failed.error.unwrap_or_default().contains("lease expired"));
}

#[tokio::test]
async fn cancelling_stops_queued_and_running_scans() {
    let db = pg::TestDb::new().await;
    let s = new_scan(&db.store, None, None, 3).await;
    let (queued, _) = db.store.submit_scan(&s).await.expect("submit");
    let (running, _) = db.store.submit_scan(&s).await.expect("submit");
    // Oldest first: the first claim gets `queued`; cancel it after, take the second.
    let c1 = db
        .store
        .claim_scan("w", 60.0)
        .await
        .expect("claim")
        .expect("scan");
    assert_eq!(c1.scan.id, queued.id);
    assert_eq!(
        db.store
            .cancel_scan(running.id)
            .await
            .expect("cancel")
            .status,
        ScanStatus::Cancelled
    );
    assert!(db
        .store
        .claim_scan("w2", 60.0)
        .await
        .expect("claim")
        .is_none());
    let cancelled = db.store.cancel_scan(c1.scan.id).await.expect("cancel");
    assert_eq!(cancelled.status, ScanStatus::Cancelled);
    assert!(!db
        .store
        .renew_lease(c1.scan.id, "w", 60.0)
        .await
        .expect("renew"));
    assert!(!db
        .store
        .finish_scan(c1.scan.id, "w", None, &serde_json::json!({}))
        .await
        .expect("finish"));
}
