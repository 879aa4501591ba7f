//! `provenance demo`, the README's first command, all through the product's own parts:
//! the models fetched, the service up on PostgreSQL with SmolLM2 registered as its
//! reference, a suspect (SmolLM2 again, hiding behind another maker's persona) served over
//! the OpenAI-compatible API on loopback, a scan submitted to the REST API with an API key,
//! followed to its verdict, and the evidence printed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};

use crate::service::{self, ServeArgs, WorkerArgs};
use provenance::model::{LoadOptions, ModelHandle};
use provenance::store::Role;

#[derive(clap::Args, Clone)]
pub struct DemoArgs {
    /// PostgreSQL database for the demo service (created when missing).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/provenance_demo"
    )]
    database_url: String,
    /// Where the provenance API listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Where the demo suspect listens.
    #[arg(long, default_value = "127.0.0.1:0")]
    suspect_addr: SocketAddr,
    /// The suspect's system prompt: a copy claiming to be someone else's model.
    #[arg(
        long,
        default_value = "You are Kimi, an AI assistant created by Moonshot AI."
    )]
    persona: String,
    /// Probes per kind for the reference (the suspect is asked them only when the scan
    /// does not stop early). Without controls the sequential test needs eight matching
    /// logit probes to decide, so fewer would never stop early.
    #[arg(long, default_value_t = 8)]
    per_kind: i32,
    /// Keep the service (and the suspect) running after the verdict; Ctrl-C stops them.
    #[arg(long)]
    keep_serving: bool,
}

/// Creates the database named in `url` when the server does not have it yet.
async fn ensure_database(url: &str) -> Result<()> {
    let parsed = url::Url::parse(url).context("--database-url is not a URL")?;
    let name = parsed.path().trim_start_matches('/').to_string();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("the demo wants a plain database name in --database-url, not {name:?}");
    }
    let mut admin_url = parsed.clone();
    admin_url.set_path("/postgres");
    let mut admin = PgConnection::connect(admin_url.as_str())
        .await
        .with_context(|| {
            format!(
                "the demo needs PostgreSQL at {}:{} (start one, e.g. `docker compose up -d postgres`, \
                 or pass --database-url)",
                parsed.host_str().unwrap_or("?"),
                parsed.port().unwrap_or(5432)
            )
        })?;
    let exists: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("creating database {name}"))?;
    }
    Ok(())
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = provenance::fetch::default_dir();
    let paths = tokio::task::spawn_blocking(move || provenance::fetch::fetch_all(&dir)).await??;
    let smol = paths
        .first()
        .context("no model fetched")?
        .to_str()
        .context("model path is not UTF-8")?
        .to_string();
    ensure_database(&args.database_url).await?;

    // The suspect: the reference's weights behind a persona, on its own port.
    let spec = smol.clone();
    let handle =
        tokio::task::spawn_blocking(move || ModelHandle::spawn(&spec, &LoadOptions::default(), 64))
            .await??;
    let suspect_app = provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            fixed_temperature: None,
            logprobs_after_temperature: false,
            name: "suspect-model".into(),
            system_prompt: Some(args.persona.clone()),
        },
    );
    let listener = tokio::net::TcpListener::bind(args.suspect_addr)
        .await
        .with_context(|| format!("binding {}", args.suspect_addr))?;
    let suspect_url = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, suspect_app).await });
    println!(
        "suspect (SmolLM2 claiming {:?}) at {suspect_url}",
        args.persona
    );

    let shutdown = service::shutdown_signal();
    let running = service::start(
        ServeArgs {
            worker: WorkerArgs {
                database_url: args.database_url.clone(),
                workers: 1,
                allow_private_targets: true,
                lease_secs: 60,
                // The demo's suspect is a plain copy: no quantized forms needed.
                forms: "none".into(),
                forms_dir: None,
                models_dirs: Vec::new(),
                allow_hub: false,
                no_builtin_controls: false,
                controls_dir: None,
            },
            addr: args.addr,
            probes: PathBuf::from("probes/default"),
            reference: vec![format!("smollm2={smol}")],
            rate_limit: 50,
            secure_cookies: false,
        },
        shutdown.clone(),
    )
    .await?;
    let base = format!("http://{}", running.addr);
    let (_, key) = running.store.create_api_key(Role::Analyst, "demo").await?;
    println!("provenance API at {base} (reference smollm2 = {smol})");
    println!("demo API key (analyst): {key}\n");

    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{base}/v1/scans"))
        .bearer_auth(&key)
        .json(&json!({
            "suspect_url": suspect_url,
            "suspect_model": "suspect-model",
            "reference": "smollm2",
            "probes_per_kind": args.per_kind,
        }))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!(
            "submitting the scan: {} {}",
            resp.status(),
            resp.text().await?
        );
    }
    let id = resp.json::<Value>().await?["id"]
        .as_str()
        .context("no scan id in the reply")?
        .to_string();
    println!("POST {base}/v1/scans -> scan {id}");

    // One line per status change, and at most one every few seconds while running.
    let mut last = (String::new(), std::time::Instant::now());
    let scan = loop {
        let scan: Value = client
            .get(format!("{base}/v1/scans/{id}"))
            .bearer_auth(&key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let status = scan["status"].as_str().unwrap_or("?").to_string();
        let finished = matches!(status.as_str(), "done" | "failed" | "cancelled");
        if status != last.0 || finished || last.1.elapsed() >= Duration::from_secs(5) {
            println!(
                "  {status}: {}/{} asks",
                scan["progress_done"], scan["progress_total"]
            );
            last = (status.clone(), std::time::Instant::now());
        }
        if finished {
            break scan;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if scan["status"] != "done" {
        bail!("the scan ended {}: {}", scan["status"], scan["error"]);
    }
    let report: provenance::compare::Report =
        serde_json::from_value(scan["report"].clone()).context("reading the scan's report")?;
    println!("\n{}", provenance::compare::to_markdown(&report));
    println!(
        "verdict: {} (confidence {:.4}), {} suspect queries",
        report.verdict.as_str(),
        report.confidence,
        report.queries.suspect
    );
    println!(
        "the report as JSON: curl -H 'Authorization: Bearer {key}' {base}/v1/scans/{id}/report"
    );
    println!("the scan in the analyst UI: {base}/ui/scans/{id} (sign in with the key above)");

    if args.keep_serving {
        println!("\nserving until Ctrl-C");
        running.server.await??;
    }
    Ok(())
}
