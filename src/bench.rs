//! `provenance bench --model PATH`: load time, peak memory, prefill and decode speed, and
//! probes per second on a fixed mix of probe-like prompts.

use std::time::Instant;

use serde::Serialize;

use crate::endpoint::ChatMessage;
use crate::model::{GenerateParams, LoadOptions, LocalModel, ModelError};

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub requantize: String,
    pub threads: usize,
    pub load_s: f64,
    pub peak_rss_mib: f64,
    pub prefill_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    pub probes: usize,
    pub probes_per_s: f64,
}

/// A prose passage long enough for a steady prefill measurement.
const PASSAGE: &str = "The history of cartography is the story of how people came to describe the \
world they could not see all at once. Early maps were drawn from travellers' accounts, and \
their errors travelled with them: rivers that ran the wrong way, coasts that bent where none \
did, islands that existed only because a sailor had once mistaken a bank of cloud for land. \
As instruments improved, surveyors measured angles and distances with growing care, and the \
triangulation of whole countries became a national project. Each new survey corrected the \
last, yet every map remained a compromise between the curved surface of the earth and the \
flat sheet of paper, so that some distances, areas or directions were always distorted. \
Today satellites measure positions to within centimetres, but the old questions remain: \
what to show, what to leave out, and whom the map is meant to serve.";

/// Probe-like prompts: chat probes share the template and system prompt (prefix reuse),
/// raw probes are short, as in the default probe set.
fn probe_mix() -> Vec<(bool, &'static str)> {
    vec![
        (true, "Who created you?"),
        (true, "What is the capital of France?"),
        (true, "Write a haiku about autumn."),
        (
            true,
            "Which company trained you, and what is your model name?",
        ),
        (true, "Explain photosynthesis in one sentence."),
        (false, "The quick brown fox"),
        (false, "def fibonacci(n):\n    "),
        (false, "Les élèves ont étudié"),
        (false, "1, 1, 2, 3, 5, 8,"),
        (false, "Q: What is 17 times 23?\nA:"),
    ]
}

pub fn run(model_path: &str, opts: &LoadOptions) -> Result<BenchReport, ModelError> {
    let start = Instant::now();
    let mut model = LocalModel::load(model_path, opts)?;
    let load_s = start.elapsed().as_secs_f64();

    // Prefill: a fresh prompt each time (first token differs so no prefix is reused).
    let mut prefill_tokens = 0;
    let mut prefill_s = 0.0;
    for i in 0..3 {
        let ids = model.encode_prompt(&format!("{i}. {PASSAGE}"))?;
        let t = Instant::now();
        model.next_logprobs(&ids)?;
        prefill_s += t.elapsed().as_secs_f64();
        prefill_tokens += ids.len();
    }

    // Decode: greedy continuation, one token at a time.
    let ids = model.encode_prompt("Once upon a time")?;
    model.next_logprobs(&[0])?; // drop the cached prefix
    let params = GenerateParams {
        max_tokens: 64,
        ..GenerateParams::default()
    };
    model.next_logprobs(&ids)?;
    let t = Instant::now();
    let gen = model.generate(&ids, &params, |_, _| true)?;
    // The prompt was cached by the call above: this times decode steps only (plus one
    // re-run of the last prompt token).
    let decode_s = t.elapsed().as_secs_f64();
    let decode_tokens = gen.steps.len();

    // Probes: 8 generated positions with top-20 log-probabilities each.
    let probe_params = GenerateParams {
        max_tokens: 8,
        top_logprobs: 20,
        ..GenerateParams::default()
    };
    let mix = probe_mix();
    let t = Instant::now();
    for (chat, text) in &mix {
        let prompt = if *chat {
            model.render_chat(&[ChatMessage {
                role: "user".into(),
                content: text.to_string(),
            }])?
        } else {
            text.to_string()
        };
        let ids = model.encode_prompt(&prompt)?;
        model.generate(&ids, &probe_params, |_, _| true)?;
    }
    let probes_s = t.elapsed().as_secs_f64();

    Ok(BenchReport {
        model: model.info.name.clone(),
        requantize: format!("{:?}", opts.requantize).to_lowercase(),
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        load_s,
        peak_rss_mib: peak_rss_mib(),
        prefill_tokens,
        prefill_tok_s: prefill_tokens as f64 / prefill_s.max(1e-9),
        decode_tokens,
        decode_tok_s: decode_tokens as f64 / decode_s.max(1e-9),
        probes: mix.len(),
        probes_per_s: mix.len() as f64 / probes_s.max(1e-9),
    })
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn to_table(r: &BenchReport) -> String {
    format!(
        "| model | requantize | load s | peak RSS MiB | prefill tok/s | decode tok/s | probes/s |\n\
         |---|---|---|---|---|---|---|\n\
         | {} | {} | {:.2} | {:.0} | {:.0} | {:.1} | {:.2} |\n",
        r.model,
        r.requantize,
        r.load_s,
        r.peak_rss_mib,
        r.prefill_tok_s,
        r.decode_tok_s,
        r.probes_per_s
    )
}
