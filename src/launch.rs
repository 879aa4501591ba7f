//! The service started in this process: probe set and references registered, scan workers,
//! the scheduler and the HTTP API on a listener the caller bound. `provenance serve`, the
//! demo and the service tests all start it here, so what they run is one wiring (in the
//! style of atuin's `launch_with_tcp_listener`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::AppConfig;
use crate::jobs::{ReferenceCache, WorkerConfig};
use crate::store::{ModelKind, ModelRole, NewModel, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("loading the probe set {}: {message}", path.display())]
    Probes { path: PathBuf, message: String },
    #[error("a reference is given as NAME=PATH, not `{0}`")]
    Reference(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the listener: {0}")]
    Listener(#[source] std::io::Error),
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// What runs beside the API.
#[derive(Clone)]
pub struct Settings {
    /// The API's and UI's settings; `default_probe_set` is replaced by the name of the set
    /// in `probes` when one is registered.
    pub app: AppConfig,
    pub worker: WorkerConfig,
    /// Scan workers in this process (0: workers run elsewhere, `provenance worker`).
    pub workers: usize,
    /// Loaded references, shared by this process's workers.
    pub references: ReferenceCache,
    /// A probe set directory registered (or updated) at start.
    pub probes: Option<PathBuf>,
    /// Reference models registered at start, as `NAME=PATH`; one already registered is kept.
    pub register: Vec<String>,
    /// How often the scheduler looks for schedules due; `None` runs no scheduler here.
    pub scheduler_tick: Option<Duration>,
}

impl Settings {
    /// The API alone: no workers, no scheduler, nothing registered.
    pub fn api_only(app: AppConfig) -> Settings {
        Settings {
            app,
            worker: WorkerConfig::default(),
            workers: 0,
            references: ReferenceCache::new(),
            probes: None,
            register: Vec::new(),
            scheduler_tick: None,
        }
    }
}

/// The started service; everything in it stops when the `shutdown` given to
/// [`launch_with_tcp_listener`] flips to true.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    /// Ends when the API has shut down.
    pub server: tokio::task::JoinHandle<Result<(), LaunchError>>,
}

/// Registers what `settings` names, starts its workers and scheduler, and serves the API on
/// `listener`; returns once the API accepts connections.
pub async fn launch_with_tcp_listener(
    store: Store,
    mut settings: Settings,
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
) -> Result<Running, LaunchError> {
    if let Some(dir) = settings.probes.as_deref().filter(|d| d.is_dir()) {
        settings.app.default_probe_set = register_probe_set(&store, dir).await?;
    }
    for spec in &settings.register {
        register_reference(&store, spec).await?;
    }
    spawn_workers(
        &store,
        &settings.worker,
        settings.workers,
        &settings.references,
        &shutdown,
    );
    if let Some(tick) = settings.scheduler_tick {
        tokio::spawn(crate::jobs::run_scheduler(
            store.clone(),
            tick,
            shutdown.clone(),
        ));
    }
    let app = crate::http::router(store.clone(), settings.app);
    let addr = listener.local_addr().map_err(LaunchError::Listener)?;
    tracing::info!(%addr, "serving the provenance API");
    let mut stop = shutdown;
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await
            .map_err(LaunchError::Serve)
    });
    Ok(Running {
        addr,
        store,
        server,
    })
}

/// `n` scan workers on this runtime, sharing `references`; `provenance worker` starts
/// these alone, without the API.
pub fn spawn_workers(
    store: &Store,
    config: &WorkerConfig,
    n: usize,
    references: &ReferenceCache,
    shutdown: &watch::Receiver<bool>,
) {
    for _ in 0..n {
        tokio::spawn(crate::jobs::run_worker(
            store.clone(),
            config.clone(),
            references.clone(),
            shutdown.clone(),
        ));
    }
}

/// The probe set in `dir`, stored; returns its name.
async fn register_probe_set(store: &Store, dir: &Path) -> Result<String, LaunchError> {
    let set = crate::probes::load_dir(dir).map_err(|e| LaunchError::Probes {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let row = store.upsert_probe_set(&set).await?;
    tracing::info!(name = %row.name, version = %row.version, probes = row.probe_count, "probe set registered");
    Ok(row.name)
}

/// `NAME=PATH`, both parts non-empty.
fn parse_reference(spec: &str) -> Result<(&str, &str), LaunchError> {
    spec.split_once('=')
        .filter(|(n, p)| !n.is_empty() && !p.is_empty())
        .ok_or_else(|| LaunchError::Reference(spec.to_string()))
}

async fn register_reference(store: &Store, spec: &str) -> Result<(), LaunchError> {
    let (name, path) = parse_reference(spec)?;
    let model = NewModel {
        name: name.to_string(),
        role: ModelRole::Reference,
        kind: ModelKind::Local,
        source: path.to_string(),
        description: String::new(),
        served_model: String::new(),
        secret: None,
    };
    match store.create_model(&model).await {
        Ok(row) => tracing::info!(name = %row.name, "reference registered"),
        Err(StoreError::Conflict(_)) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_needs_a_name_and_a_path() {
        for bad in ["smollm2", "=x.gguf", "smollm2=", ""] {
            assert!(
                matches!(parse_reference(bad), Err(LaunchError::Reference(_))),
                "{bad}"
            );
        }
        assert_eq!(
            parse_reference("smol=/m/a=b.gguf").ok(),
            Some(("smol", "/m/a=b.gguf"))
        );
    }
}
