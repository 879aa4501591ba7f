//! The service's subcommands: `serve`, `worker`, `db migrate`, `keys create`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Subcommand;
use tokio::sync::watch;

use provenance::app::AppConfig;
use provenance::jobs::{ReferenceCache, WorkerConfig};
use provenance::launch::{launch_with_tcp_listener, Running, Settings};
use provenance::store::{Role, Store};

#[derive(clap::Args, Clone)]
pub struct WorkerArgs {
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Scan workers in this process.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Let suspects and webhooks live on loopback or private networks (tests, demos).
    #[arg(long)]
    pub allow_private_targets: bool,
    /// Lease on a running scan; a worker that stops renewing loses it after this long.
    #[arg(long, default_value_t = 60)]
    pub lease_secs: u64,
    /// Also quantize a GGUF reference to these forms (see `scan --forms`: weight types,
    /// llama-quantize file types as `lq-<type>`, `ladder` or `none`), so that a copy
    /// served quantized is called identical. Made once per reference and probe set: one
    /// reference fingerprint on the logit probes each.
    #[arg(long, default_value = "ladder")]
    pub forms: String,
    /// Where the quantized forms' fingerprints are cached.
    #[arg(long)]
    pub forms_dir: Option<PathBuf>,
    /// A directory users' model paths (`suspect_path`, local models registered through the
    /// API) must lie in; repeatable. Without one, the fetched models' directory.
    #[arg(long = "models-dir")]
    pub models_dirs: Vec<PathBuf>,
    /// Let users name hub repo ids (`owner/name`) as models, which the service downloads.
    #[arg(long)]
    pub allow_hub: bool,
    /// A fetched reference is calibrated against built-in controls (the other fetched
    /// model, plain, behind a persona and as Q8_0), made on its first scan, cached and
    /// stored as its controls. This leaves them out.
    #[arg(long)]
    pub no_builtin_controls: bool,
    /// Where built-in controls' fingerprints are cached (default: beside the fetched
    /// models).
    #[arg(long)]
    pub controls_dir: Option<PathBuf>,
}

impl WorkerArgs {
    /// Where users' model paths may point.
    pub fn model_access(&self) -> provenance::model::allowed::ModelAccess {
        let dirs = if self.models_dirs.is_empty() {
            vec![provenance::fetch::default_dir()]
        } else {
            self.models_dirs.clone()
        };
        provenance::model::allowed::ModelAccess::new(&dirs, self.allow_hub)
    }
}

#[derive(clap::Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub worker: WorkerArgs,
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Probe set registered at start-up and used when a scan names none.
    #[arg(long, default_value = "probes/default")]
    pub probes: PathBuf,
    /// Register a reference model at start-up: NAME=PATH (GGUF, safetensors dir or repo id).
    #[arg(long)]
    pub reference: Vec<String>,
    /// Requests per second each API key may make, bursts up to twice that (0: no limit).
    #[arg(long, default_value_t = 50)]
    pub rate_limit: u32,
    /// Mark the UI's session cookies Secure (set when users reach the service over HTTPS).
    #[arg(long)]
    pub secure_cookies: bool,
}

#[derive(Subcommand)]
pub enum DbCommand {
    /// Apply the migrations.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make an API key and print it (the only time it is shown).
    Create {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// submitter, analyst or admin.
        #[arg(long)]
        role: Role,
        #[arg(long, default_value = "")]
        name: String,
    },
}

async fn open(url: &str) -> Result<Store> {
    let store = Store::connect(url)
        .await
        .context("connecting to PostgreSQL")?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

pub async fn db(cmd: DbCommand) -> Result<()> {
    match cmd {
        DbCommand::Migrate { database_url } => {
            open(&database_url).await?;
            println!("migrations applied");
            Ok(())
        }
    }
}

pub async fn keys(cmd: KeysCommand) -> Result<()> {
    match cmd {
        KeysCommand::Create {
            database_url,
            role,
            name,
        } => {
            let store = open(&database_url).await?;
            let (row, key) = store.create_api_key(role, &name).await?;
            store
                .audit(None, "key.create", &format!("api_key/{}", row.id), None)
                .await?;
            eprintln!(
                "key {} ({}) created; it is shown only once:",
                row.id,
                role.as_str()
            );
            println!("{key}");
            Ok(())
        }
    }
}

/// Flips to true on Ctrl-C or SIGTERM (what `docker stop` and systemd send).
pub fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

fn worker_config(args: &WorkerArgs) -> Result<WorkerConfig> {
    let defaults = WorkerConfig::default();
    Ok(WorkerConfig {
        lease: Duration::from_secs(args.lease_secs.max(3)),
        allow_private_targets: args.allow_private_targets,
        forms: provenance::quantized_forms::parse_list(&args.forms).context("--forms")?,
        forms_dir: args.forms_dir.clone().unwrap_or(defaults.forms_dir.clone()),
        models: args.model_access(),
        builtin_controls: (!args.no_builtin_controls).then(|| {
            args.controls_dir
                .clone()
                .unwrap_or_else(provenance::controls::default_cache)
        }),
        ..defaults
    })
}

pub async fn worker(args: WorkerArgs) -> Result<()> {
    let store = open(&args.database_url).await?;
    let mut shutdown = shutdown_signal();
    provenance::launch::spawn_workers(
        &store,
        &worker_config(&args)?,
        args.workers,
        &ReferenceCache::new(),
        &shutdown,
    );
    let _ = shutdown.changed().await;
    Ok(())
}

/// Binds `args.addr` and starts the service there (`provenance::launch`).
pub async fn start(args: ServeArgs, shutdown: watch::Receiver<bool>) -> Result<Running> {
    let store = open(&args.worker.database_url).await?;
    let settings = Settings {
        app: AppConfig {
            allow_private_targets: args.worker.allow_private_targets,
            default_probe_set: "default".to_string(),
            rate_limit_per_key: std::num::NonZeroU32::new(args.rate_limit),
            secure_cookies: args.secure_cookies,
            models: args.worker.model_access(),
        },
        worker: worker_config(&args.worker)?,
        workers: args.worker.workers,
        references: ReferenceCache::new(),
        probes: Some(args.probes.clone()),
        register: args.reference.clone(),
        scheduler_tick: Some(Duration::from_secs(1)),
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding {}", args.addr))?;
    Ok(launch_with_tcp_listener(store, settings, listener, shutdown).await?)
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    let running = start(args, shutdown_signal()).await?;
    Ok(running.server.await??)
}
