//! A fresh PostgreSQL database per test on 127.0.0.1:5432 (user postgres, trust auth),
//! dropped when the guard goes.
#![allow(dead_code)]

use provenance::store::Store;
use sqlx::{Connection, Executor, PgConnection};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestDb {
    pub name: String,
    pub url: String,
    pub store: Store,
    /// Flips to stop what [`TestDb::launch`] started (also when the guard goes).
    pub shutdown: tokio::sync::watch::Sender<bool>,
}

impl TestDb {
    /// Creates the database and applies the migrations.
    pub async fn new() -> TestDb {
        let name = format!("provenance_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432 (user postgres)");
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create database");
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let store = Store::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let (shutdown, _) = tokio::sync::watch::channel(false);
        TestDb {
            name,
            url,
            store,
            shutdown,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // Drop runs outside any runtime guarantee, so a short-lived thread does the work.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            // Not `pool.close()`: its connections belong to the test's runtime, which is
            // blocked on this join, so closing would wait forever. FORCE ends them instead.
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(ADMIN_URL).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}

/// Serves `app` on a free loopback port; returns its base URL (`http://127.0.0.1:PORT`).
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

impl TestDb {
    /// Registers the default probe set and `source` as the local reference `name`.
    pub async fn register_reference(
        &self,
        name: &str,
        source: &str,
    ) -> (provenance::store::ProbeSetRow, provenance::store::ModelRow) {
        let set =
            provenance::probes::load_dir(std::path::Path::new("probes/default")).expect("probes");
        let row = self.store.upsert_probe_set(&set).await.expect("set");
        let model = self
            .store
            .create_model(&provenance::store::NewModel {
                name: name.into(),
                role: provenance::store::ModelRole::Reference,
                kind: provenance::store::ModelKind::Local,
                source: source.into(),
                description: String::new(),
                served_model: String::new(),
                secret: None,
            })
            .await
            .expect("reference");
        (row, model)
    }

    /// The REST API over this database (no rate limit) on loopback; returns its base URL.
    pub async fn api(&self, allow_private_targets: bool, default_probe_set: &str) -> String {
        self.launch(provenance::launch::Settings::api_only(app_config(
            allow_private_targets,
            default_probe_set,
        )))
        .await
    }

    /// The service over this database on a free loopback port, started as `provenance
    /// serve` starts it; returns its base URL. It stops with [`TestDb::stop`] or the guard.
    pub async fn launch(&self, settings: provenance::launch::Settings) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let running = provenance::launch::launch_with_tcp_listener(
            self.store.clone(),
            settings,
            listener,
            self.shutdown.subscribe(),
        )
        .await
        .expect("launch");
        format!("http://{}", running.addr)
    }

    /// Stops what [`TestDb::launch`] started.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// The API's settings in tests: no rate limit, users' models in the fetched models' dir.
pub fn app_config(
    allow_private_targets: bool,
    default_probe_set: &str,
) -> provenance::app::AppConfig {
    provenance::app::AppConfig {
        allow_private_targets,
        default_probe_set: default_probe_set.into(),
        rate_limit_per_key: None,
        secure_cookies: false,
        models: provenance::model::allowed::ModelAccess::new(
            &[provenance::fetch::default_dir()],
            false,
        ),
    }
}

impl TestDb {
    /// A scan worker in this process (short lease and poll, loopback suspects allowed);
    /// sending `true` on the returned channel stops it.
    pub fn spawn_worker(
        &self,
        references: provenance::jobs::ReferenceCache,
    ) -> tokio::sync::watch::Sender<bool> {
        self.spawn_worker_with(references, Self::worker_config())
    }

    /// The test worker's settings, for callers that change one.
    pub fn worker_config() -> provenance::jobs::WorkerConfig {
        provenance::jobs::WorkerConfig {
            lease: std::time::Duration::from_secs(10),
            poll: std::time::Duration::from_millis(200),
            allow_private_targets: true,
            concurrency: 2,
            ..Default::default()
        }
    }

    pub fn spawn_worker_with(
        &self,
        references: provenance::jobs::ReferenceCache,
        config: provenance::jobs::WorkerConfig,
    ) -> tokio::sync::watch::Sender<bool> {
        // The same wiring `serve` and `provenance worker` use, with one worker.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        provenance::launch::spawn_workers(&self.store, &config, 1, &references, &stop_rx);
        stop_tx
    }
}

/// A scan of the OpenAI-compatible suspect at `url`: every option at its default
/// (early stop on, three attempts); callers override fields with `..http_scan(..)`.
pub fn http_scan(
    url: &str,
    reference_model_id: uuid::Uuid,
    probe_set_id: uuid::Uuid,
) -> provenance::store::NewScan {
    provenance::store::NewScan {
        api_key_id: None,
        idempotency_key: None,
        suspect_kind: provenance::store::SuspectKind::Http,
        suspect_source: url.into(),
        suspect_model: "suspect".into(),
        suspect_secret: None,
        reference_model_id,
        probe_set_id,
        probes_per_kind: None,
        max_samples: None,
        early_stop: true,
        schedule_id: None,
        max_attempts: 3,
    }
}

impl TestDb {
    /// A reference named `smollm2` whose file does not exist and an empty probe set named
    /// `default`: enough for API tests that never run a scan.
    pub async fn register_stub_reference(
        &self,
    ) -> (provenance::store::ProbeSetRow, provenance::store::ModelRow) {
        let model = self
            .store
            .create_model(&provenance::store::NewModel {
                name: "smollm2".into(),
                role: provenance::store::ModelRole::Reference,
                kind: provenance::store::ModelKind::Local,
                source: "/nonexistent.gguf".into(),
                description: String::new(),
                served_model: String::new(),
                secret: None,
            })
            .await
            .expect("reference");
        let set = self
            .store
            .upsert_probe_set(&provenance::probes::ProbeSet {
                name: "default".into(),
                version: "1".into(),
                hash: "h".into(),
                probes: Vec::new(),
            })
            .await
            .expect("set");
        (set, model)
    }
}

/// Bulk data for load and paging tests: scan `i` of a dead suspect with both fingerprints
/// complete (empty documents), the fingerprints' model set to `model_id`. Returns the scan
/// and its [reference, suspect] fingerprint ids.
pub async fn seed_scan(
    store: &provenance::store::Store,
    i: usize,
    reference_id: uuid::Uuid,
    set_id: uuid::Uuid,
    model_id: Option<uuid::Uuid>,
) -> (uuid::Uuid, [uuid::Uuid; 2]) {
    let (scan, _) = store
        .submit_scan(&provenance::store::NewScan {
            suspect_model: format!("suspect-{i}"),
            ..http_scan("http://127.0.0.1:9/v1", reference_id, set_id)
        })
        .await
        .expect("scan");
    let document = serde_json::json!({"format_version": 1, "observations": []});
    let mut ids = [uuid::Uuid::nil(); 2];
    for (slot, side) in [
        provenance::store::Side::Reference,
        provenance::store::Side::Suspect,
    ]
    .into_iter()
    .enumerate()
    {
        let fp = store
            .scan_fingerprint(scan.id, side, model_id, &format!("model {i}"), set_id)
            .await
            .expect("fingerprint");
        store
            .complete_fingerprint(fp.id, &document)
            .await
            .expect("complete");
        ids[slot] = fp.id;
    }
    (scan.id, ids)
}
