//! The benchmark table in one command: `cargo bench --bench suite`.
//!
//! It measures, on this machine: the reference runner on both models (`provenance bench`,
//! one process per model so peak RSS is the model's own), llama.cpp on the same prompts
//! where `bench/llama-cpp` is installed (`npm install` there), full scans from a probe to a
//! verdict (a persona-spoofing copy and an unrelated model) with the suspect queries each
//! verdict took, the comparison alone, and the REST API under a mixed load with 10 000
//! stored fingerprints. It prints Markdown tables and writes the figures as JSON to
//! `$PROVENANCE_BENCH_OUT` (default `bench-suite.json` in the target directory's tmp).
//!
//! `cargo test` runs it too (it is a `test = true` target), in a short form: SmolLM2 only,
//! one scan, 1 000 fingerprints for 3 s; there it asserts the scan's verdict and that no
//! request failed, never a timing.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/load.rs"]
mod load;
#[path = "../tests/common/pg.rs"]
mod pg;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use provenance::compare::{CompareOptions, Verdict};
use provenance::model::local_endpoint::LocalEndpoint;
use provenance::model::{LoadOptions, ModelHandle};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
struct Suite {
    machine: String,
    long_form: bool,
    runner: Vec<Value>,
    llama_cpp: Vec<Value>,
    llama_cpp_note: Option<String>,
    scans: Vec<ScanRow>,
    compare: CompareRow,
    api: ApiFigures,
}

#[derive(Serialize, Clone)]
struct ScanRow {
    case: String,
    verdict: Verdict,
    expected: Verdict,
    per_kind: usize,
    early_stop: bool,
    reference_load_s: f64,
    wall_s: f64,
    suspect_queries: usize,
    reference_asks: usize,
}

#[derive(Serialize)]
struct CompareRow {
    case: String,
    median_ms: f64,
    runs: usize,
}

#[derive(Serialize)]
struct ApiFigures {
    fingerprints: usize,
    clients: usize,
    seconds: u64,
    seeded_s: f64,
    failures: usize,
    rows: Vec<load::LoadRow>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

/// `provenance bench --model PATH --json` in its own process.
fn runner(model: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_provenance"))
        .args(["bench", "--json", "--model"])
        .arg(model)
        .output()
        .expect("run provenance bench");
    assert!(
        out.status.success(),
        "provenance bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench JSON")
}

/// llama.cpp's figures on the same prompts, or why there are none.
fn llama_cpp(models: &[PathBuf]) -> Result<Vec<Value>, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/llama-cpp");
    if !dir.join("node_modules").exists() {
        return Err("not installed: `cd bench/llama-cpp && npm install`".into());
    }
    // Its threads spin-wait for each other: never more threads than cores.
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut rows = Vec::new();
    for model in models {
        let out = Command::new("node")
            .current_dir(&dir)
            .env("THREADS", threads.to_string())
            .arg("bench.mjs")
            .arg(model)
            .arg("--json")
            .output()
            .map_err(|e| format!("node: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "bench.mjs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // node-llama-cpp may log before the report: the report is the last line.
        let line = text.lines().last().unwrap_or_default();
        let mut v: Value =
            serde_json::from_str(line).map_err(|e| format!("bench.mjs output: {e}"))?;
        v["model"] = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into();
        rows.push(v);
    }
    Ok(rows)
}

/// One scan from probe to verdict: the reference in-process, the suspect behind
/// `serve-model` on loopback. Returns the row and the scan's work directory (its two
/// fingerprints), for the comparison timing.
async fn scan(
    case: &str,
    reference: &Path,
    suspect: &Path,
    system_prompt: Option<&str>,
    expected: Verdict,
    per_kind: usize,
) -> (ScanRow, tempfile::TempDir) {
    let t = Instant::now();
    let spec = reference.to_string_lossy().into_owned();
    let handle = tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(&spec, &LoadOptions::default(), 64).expect("reference loads")
    })
    .await
    .expect("load task");
    let reference_load_s = t.elapsed().as_secs_f64();
    let local = LocalEndpoint::new(handle);

    let suspect_spec = suspect.to_string_lossy().into_owned();
    let suspect_handle = tokio::task::spawn_blocking(move || {
        ModelHandle::spawn(&suspect_spec, &LoadOptions::default(), 64).expect("suspect loads")
    })
    .await
    .expect("load task");
    let addr = common::serve_model(suspect_handle, "suspect", system_prompt).await;
    let mut cfg = provenance::suspect::HttpModelConfig::new(format!("http://{addr}/v1"), "suspect");
    cfg.allow_private_targets = true;
    let client = provenance::suspect::HttpModel::new(cfg).expect("client");

    let set =
        provenance::probes::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/default"))
            .expect("probe set");
    let set = provenance::fingerprint::subset(&set, per_kind, 4);
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = provenance::scan::ScanSettings {
        probes: &set,
        controls: &[],
        controls_origin: None,
        work_dir: dir.path(),
        run: provenance::fingerprint::RunOptions {
            progress: false,
            ..Default::default()
        },
        compare: CompareOptions::default(),
        early_stop: true,
        forms: &[],
        read_back: Some(local.handle()),
        controls_read_back: None,
        reference_limits: Vec::new(),
    };
    let t = Instant::now();
    let out = provenance::scan::run(&local, &client, &settings)
        .await
        .expect("scan runs");
    let row = ScanRow {
        case: case.into(),
        verdict: out.report.verdict,
        expected,
        per_kind,
        early_stop: true,
        reference_load_s,
        wall_s: t.elapsed().as_secs_f64(),
        suspect_queries: out.report.queries.suspect,
        reference_asks: out.report.queries.reference,
    };
    (row, dir)
}

/// The comparison alone (no queries), median of a few runs.
fn compare_time(case: &str, dir: &Path) -> CompareRow {
    let reference = provenance::fingerprint::load(&dir.join("reference.json")).expect("reference");
    let suspect = provenance::fingerprint::load(&dir.join("suspect.json")).expect("suspect");
    let runs = 5;
    let mut ms: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let report =
                provenance::compare::compare(&reference, &suspect, &[], &CompareOptions::default());
            std::hint::black_box(report);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    CompareRow {
        case: case.into(),
        median_ms: ms[runs / 2],
        runs,
    }
}

fn markdown(s: &Suite) -> String {
    let mut out = format!("Machine: {}\n\n", s.machine);
    out.push_str("| engine | model | load s | peak RSS MiB | prefill tok/s | decode tok/s | probes/s |\n|---|---|---|---|---|---|---|\n");
    let num = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    for r in &s.runner {
        out.push_str(&format!(
            "| provenance | {} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} |\n",
            r["model"].as_str().unwrap_or("?"),
            num(r, "load_s"),
            num(r, "peak_rss_mib"),
            num(r, "prefill_tok_s"),
            num(r, "decode_tok_s"),
            num(r, "probes_per_s"),
        ));
    }
    for r in &s.llama_cpp {
        out.push_str(&format!(
            "| llama.cpp, {} threads | {} | {:.2} | — | {:.0} | {:.1} | — |\n",
            r["threads"],
            r["model"].as_str().unwrap_or("?"),
            num(r, "load_s"),
            num(r, "prefill_tok_s"),
            num(r, "decode_tok_s"),
        ));
    }
    if let Some(note) = &s.llama_cpp_note {
        out.push_str(&format!("| llama.cpp | {note} | | | | | |\n"));
    }
    out.push_str("\n| scan | probes per kind | verdict | suspect queries | reference asks | reference load s | scan s |\n|---|---|---|---|---|---|---|\n");
    for r in &s.scans {
        out.push_str(&format!(
            "| {} | {} | {} (expected {}) | {} | {} | {:.2} | {:.1} |\n",
            r.case,
            r.per_kind,
            r.verdict.as_str(),
            r.expected.as_str(),
            r.suspect_queries,
            r.reference_asks,
            r.reference_load_s,
            r.wall_s
        ));
    }
    out.push_str(&format!(
        "\nCompare alone ({}): median {:.1} ms of {} runs\n",
        s.compare.case, s.compare.median_ms, s.compare.runs
    ));
    out.push_str(&format!(
        "\nREST API: {} stored fingerprints (seeded in {:.1} s), {} clients for {} s, {} failed\n\n",
        s.api.fingerprints, s.api.seeded_s, s.api.clients, s.api.seconds, s.api.failures
    ));
    out.push_str(&load::table(&s.api.rows));
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Test runners list targets first (`--list`); a name filter that does not match this
    // target means another test was asked for.
    if args.iter().any(|a| a == "--list") {
        println!("suite: test");
        return;
    }
    if args
        .iter()
        .any(|a| !a.starts_with('-') && !"suite".contains(a.as_str()))
    {
        return;
    }
    // `cargo bench` passes --bench; `cargo test` does not, and gets the short form.
    let long_form = args.iter().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let smollm2 = common::smollm2();
    let gemma3 = common::gemma3();
    let models = if long_form {
        vec![smollm2.clone(), gemma3.clone()]
    } else {
        vec![smollm2.clone()]
    };

    eprintln!("suite: reference runner");
    let runner: Vec<Value> = models.iter().map(|m| runner(m)).collect();
    eprintln!("suite: llama.cpp");
    let (llama_cpp, llama_cpp_note) = match llama_cpp(&models) {
        Ok(rows) => (rows, None),
        Err(note) => (Vec::new(), Some(note)),
    };

    eprintln!("suite: scans");
    let per_kind = 8;
    let (scans, compare) = rt.block_on(async {
        let (copy, copy_dir) = scan(
            "SmolLM2 behind a persona (a copy)",
            &smollm2,
            &smollm2,
            Some("You are Kimi, an AI assistant created by Moonshot AI."),
            Verdict::Identical,
            per_kind,
        )
        .await;
        let mut rows = vec![copy];
        let compare = if long_form {
            let (other, other_dir) = scan(
                "Gemma-3-270m against SmolLM2 (unrelated)",
                &smollm2,
                &gemma3,
                None,
                Verdict::Unrelated,
                per_kind,
            )
            .await;
            rows.push(other);
            compare_time("SmolLM2 vs Gemma, whole subset", other_dir.path())
        } else {
            compare_time("SmolLM2 vs its copy, early-stopped", copy_dir.path())
        };
        (rows, compare)
    });

    eprintln!("suite: REST API load");
    let settings = if long_form {
        load::LoadSettings {
            fingerprints: 10_000,
            clients: 16,
            seconds: 10,
        }
    } else {
        load::LoadSettings {
            fingerprints: 1000,
            clients: 16,
            seconds: 3,
        }
    };
    let outcome = rt.block_on(async {
        let db = pg::TestDb::new().await;
        load::run(&db, &settings).await
    });

    let suite = Suite {
        machine: machine(),
        long_form,
        runner,
        llama_cpp,
        llama_cpp_note,
        scans: scans.clone(),
        compare,
        api: ApiFigures {
            fingerprints: settings.fingerprints,
            clients: settings.clients,
            seconds: settings.seconds,
            seeded_s: outcome.seeded_s,
            failures: outcome.failures.len(),
            rows: outcome.rows,
        },
    };
    println!("{}", markdown(&suite));
    let out = std::env::var_os("PROVENANCE_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-suite.json"));
    match serde_json::to_string_pretty(&suite) {
        Ok(text) => match std::fs::write(&out, text) {
            Ok(()) => eprintln!("figures written to {}", out.display()),
            Err(e) => eprintln!("could not write {}: {e}", out.display()),
        },
        Err(e) => eprintln!("could not encode the figures: {e}"),
    }

    // What a user relies on, whatever the timings: verdicts right, no request failed.
    for r in &scans {
        assert_eq!(r.verdict, r.expected, "{}: wrong verdict", r.case);
    }
    assert!(
        outcome.failures.is_empty(),
        "API requests failed: {:?}",
        &outcome.failures[..outcome.failures.len().min(10)]
    );
    assert!(outcome.completed > 0, "no API request completed");
}
