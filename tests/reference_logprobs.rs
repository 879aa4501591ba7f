//! Our runner against llama.cpp on the same GGUF files: the recorded token ids and top-10
//! log-probabilities in tests/fixtures/reference-logprobs are the yardstick.

mod common;

use provenance::endpoint::ChatMessage;
use provenance::model::{LoadOptions, LocalModel, Requantize};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    form: String,
    prompt: String,
    prompt_token_ids: Vec<u32>,
    steps: Vec<RecordedStep>,
}

#[derive(Deserialize)]
struct RecordedStep {
    token_id: u32,
    token: String,
    top: Vec<(u32, String, f32)>,
}

struct Agreement {
    mean_abs: f32,
    max_abs: f32,
    compared: usize,
    greedy_mismatches: Vec<String>,
    greedy_checked: usize,
}

fn check(model_file: std::path::PathBuf, fixture: &str, requantize: Requantize) -> Agreement {
    let fx: Fixture =
        serde_json::from_slice(&std::fs::read(common::fixture(fixture)).expect("fixture readable"))
            .expect("fixture parses");
    let opts = LoadOptions {
        requantize,
        ..LoadOptions::default()
    };
    let mut model = LocalModel::load(model_file.to_str().unwrap(), &opts).expect("model loads");
    let (mut sum, mut max, mut n) = (0f32, 0f32, 0usize);
    let mut greedy_mismatches = Vec::new();
    let mut greedy_checked = 0;
    for case in &fx.cases {
        let ids = model.tokenizer.encode(&case.prompt).unwrap();
        assert_eq!(
            ids, case.prompt_token_ids,
            "prompt ids for {:?}",
            case.prompt
        );
        let mut seq = model.encode_prompt(&case.prompt).unwrap();
        let mut tied = false;
        for (i, step) in case.steps.iter().enumerate() {
            // llama.cpp reports a character split over several tokens as one step: the
            // text of the whole character, the id and alternatives of one of its tokens.
            // Tokens before that one were not reported: rebuild them from the bytes.
            let first = model.tokenizer.token_bytes(step.token_id).to_vec();
            let whole = step.token.as_bytes();
            let at = if whole.starts_with(&first) {
                Some(0)
            } else {
                whole
                    .windows(first.len().max(1))
                    .position(|w| w == first.as_slice())
            };
            let Some(at) = at else { break };
            if at > 0 {
                match model.tokenizer.token_for_bytes(&whole[..at]) {
                    Some(t) => seq.push(t),
                    None => break,
                }
            }
            let lp = model.next_logprobs(&seq).unwrap();
            let ours = provenance::model::argmax(&lp);
            // Greedy agreement holds up to the first near-tie in llama.cpp's own list.
            if step.top.len() >= 2 && step.top[0].2 - step.top[1].2 < 0.1 {
                tied = true;
            }
            if !tied {
                greedy_checked += 1;
            }
            if !tied && ours != step.token_id {
                greedy_mismatches.push(format!(
                    "{:?} step {i}: ours {ours} vs llama.cpp {}",
                    case.prompt, step.token_id
                ));
            }
            for (id, _, theirs) in &step.top {
                let d = (lp[*id as usize] - theirs).abs();
                sum += d;
                max = max.max(d);
                n += 1;
            }
            // Teacher forcing keeps both runs on the same text.
            seq.push(step.token_id);
            for b in whole.iter().skip(at + first.len()) {
                seq.push(model.tokenizer.token_for_bytes(&[*b]).expect("byte token"));
            }
        }
    }
    Agreement {
        mean_abs: sum / n as f32,
        max_abs: max,
        compared: n,
        greedy_mismatches,
        greedy_checked,
    }
}

/// What we hold ourselves to today. The target is stricter (greedy identical up to
/// the first near-tie, mean |diff| <= 0.05, max <= 0.3); we measure mean 0.10-0.15 and max
/// 0.8-1.3 against llama.cpp, because both engines quantize activations to 8 bits before
/// every quantized matmul, which turns sub-ulp differences upstream into steps of a few
/// hundredths to tenths of a nat. See README "Agreement with llama.cpp".
fn assert_agrees(a: &Agreement, steps_before_tie: usize) {
    eprintln!(
        "compared {} log-probabilities: mean |diff| {:.4}, max {:.4}; greedy mismatches {}/{}",
        a.compared,
        a.mean_abs,
        a.max_abs,
        a.greedy_mismatches.len(),
        steps_before_tie
    );
    assert!(
        a.greedy_mismatches.len() * 20 <= steps_before_tie,
        "more than 5% greedy mismatches: {:#?}",
        a.greedy_mismatches
    );
    assert!(a.mean_abs <= 0.2, "mean |diff| {} > 0.2", a.mean_abs);
    assert!(a.max_abs <= 1.5, "max |diff| {} > 1.5", a.max_abs);
}

#[test]
fn smollm2_matches_llama_cpp() {
    let a = check(
        common::smollm2(),
        "reference-logprobs/smollm2-135m-instruct-q4_1.json",
        Requantize::Auto,
    );
    assert_agrees(&a, a.greedy_checked);
}

#[test]
fn smollm2_exact_weights_match_llama_cpp() {
    let a = check(
        common::smollm2(),
        "reference-logprobs/smollm2-135m-instruct-q4_1.json",
        Requantize::Off,
    );
    assert_agrees(&a, a.greedy_checked);
}

#[test]
fn gemma3_matches_llama_cpp() {
    let a = check(
        common::gemma3(),
        "reference-logprobs/gemma-3-270m-q4_k_m.json",
        Requantize::Auto,
    );
    assert_agrees(&a, a.greedy_checked);
}

// The same llama.cpp, built the same way, on a CPU without AVX-512
// (bench/llama-cpp/record-reference.sh): the yardstick moves as far as we are from it.
const SMOLLM2_AVX2: &str = "reference-logprobs/avx2/smollm2-135m-instruct-q4_1.json";
const GEMMA3_AVX2: &str = "reference-logprobs/avx2/gemma-3-270m-q4_k_m.json";

#[test]
fn smollm2_matches_llama_cpp_on_another_cpu() {
    let a = check(common::smollm2(), SMOLLM2_AVX2, Requantize::Auto);
    assert_agrees(&a, a.greedy_checked);
}

#[test]
fn gemma3_matches_llama_cpp_on_another_cpu() {
    let a = check(common::gemma3(), GEMMA3_AVX2, Requantize::Auto);
    assert_agrees(&a, a.greedy_checked);
}

/// Two recordings of the same prompts by the same llama.cpp build, one per CPU: mean and
/// max |diff| over the top-10 tokens both list, while their greedy paths agree.
fn recordings_agree(a: &str, b: &str) -> (f32, f32, usize) {
    let read = |rel: &str| -> Fixture {
        serde_json::from_slice(&std::fs::read(common::fixture(rel)).expect("fixture readable"))
            .expect("fixture parses")
    };
    let (a, b) = (read(a), read(b));
    let (mut sum, mut max, mut n) = (0f32, 0f32, 0usize);
    for (ca, cb) in a.cases.iter().zip(&b.cases) {
        assert_eq!(ca.prompt_token_ids, cb.prompt_token_ids);
        for (sa, sb) in ca.steps.iter().zip(&cb.steps) {
            for (id, _, la) in &sa.top {
                if let Some((_, _, lb)) = sb.top.iter().find(|t| t.0 == *id) {
                    sum += (la - lb).abs();
                    max = max.max((la - lb).abs());
                    n += 1;
                }
            }
            if sa.token_id != sb.token_id {
                break;
            }
        }
    }
    (sum / n as f32, max, n)
}

/// The yardstick's own reach: llama.cpp on this repository's AVX2 machine against its
/// recording on the fixtures' machine, same version, build flags and threads. Thread count
/// changes nothing on one machine (-t 1 and -t 2 agree bit for bit); the CPU's instruction
/// set changes the summation order of every SIMD reduction, and 8-bit activations turn
/// that into ~0.1 nats, so no engine but the recording one can meet the 0.05.
#[test]
fn llama_cpp_moves_from_its_own_recording_on_another_cpu() {
    for (model, recorded, here) in [
        (
            "SmolLM2",
            "reference-logprobs/smollm2-135m-instruct-q4_1.json",
            SMOLLM2_AVX2,
        ),
        (
            "Gemma 3",
            "reference-logprobs/gemma-3-270m-q4_k_m.json",
            GEMMA3_AVX2,
        ),
    ] {
        let (mean, max, n) = recordings_agree(recorded, here);
        eprintln!("{model}: llama.cpp vs llama.cpp over {n}: mean |diff| {mean:.4}, max {max:.4}");
        assert!(n > 500, "{model}: only {n} compared");
        assert!((0.05..0.2).contains(&mean), "{model}: mean {mean}");
    }
}

#[test]
fn smollm2_chat_template_renders_recorded_prompts() {
    let fx: Fixture = serde_json::from_slice(
        &std::fs::read(common::fixture(
            "reference-logprobs/smollm2-135m-instruct-q4_1.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let model =
        LocalModel::load(common::smollm2().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let mut checked = 0;
    for case in fx.cases.iter().filter(|c| c.form == "chat") {
        let user = case
            .prompt
            .split("<|im_start|>user\n")
            .nth(1)
            .and_then(|s| s.split("<|im_end|>").next())
            .expect("a user turn");
        let rendered = model
            .render_chat(&[ChatMessage {
                role: "user".into(),
                content: user.into(),
            }])
            .unwrap();
        assert_eq!(rendered, case.prompt);
        checked += 1;
    }
    assert!(checked >= 5);
}
