//! Fingerprints and comparisons end to end: constructed fingerprints with known lineage
//! (identical, derived, distilled, unrelated, unusable) against a population of
//! constructed controls, the fixture files, the sequential test, and real local models.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use provenance::compare::sequential::{self, SequentialDecision, SequentialOptions};
use provenance::compare::{self, CompareOptions, Report, Verdict};
use provenance::endpoint::{
    Capabilities, EndpointError, ModelEndpoint, ProbeRequest, ProbeResponse, PromptForm,
    TokenLogprobs, TopLogprob, Usage,
};
use provenance::fingerprint::{
    self, Fingerprint, ModelDescription, Observation, ObservationLog, ProbeSetRef, RunOptions,
};
use provenance::probes::{ProbeKind, ProbeSet};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---------------------------------------------------------------------------------------
// Constructed models: every model shares a "language" component (so unrelated models are
// not trivially different), has its own deviation from it, and may copy parts of another
// model (the reference) to play a derivative or a distillation.

const VOCAB: usize = 60;
const LOGIT_PROBES: usize = 24;
const TOKENIZER_PROBES: usize = 24;
const REFUSAL_PROBES: usize = 16;
const IDENTITY_PROBES: usize = 8;
const STYLE_PROBES: usize = 12;
const SAMPLING_PROBES: usize = 4;
const SAMPLES: usize = 16;

const WORDS: [&str; 40] = [
    "the", "model", "answer", "data", "is", "a", "of", "to", "and", "we", "can", "use", "simple",
    "method", "result", "value", "first", "then", "because", "example", "time", "water", "light",
    "system", "people", "small", "large", "good", "new", "world", "way", "make", "show", "know",
    "long", "city", "often", "around", "under", "between",
];

const IDENTITIES: [&str; 6] = [
    "I am SmolLM, a small language model made by Hugging Face.",
    "I am Gemma, an open model from Google DeepMind.",
    "I'm Llama, a large language model trained by Meta AI.",
    "I am Qwen, created by Alibaba Cloud.",
    "I'm Claude, an AI assistant made by Anthropic.",
    "I am Mistral, a model from Mistral AI.",
];

const REFUSALS: [&str; 4] = [
    "I can't help with that request.",
    "I'm sorry, but I cannot assist with that.",
    "I won't provide instructions for this.",
    "I am unable to help with that.",
];

#[derive(Clone)]
struct Logits {
    /// Seed of the model's own deviation from the shared component.
    own: u64,
    own_sd: f64,
    /// Extra noise on top (engine noise, fine-tuning).
    jitter: u64,
    jitter_sd: f64,
    /// A shift per token, the same in every probe: what changed weights add.
    shift: u64,
    shift_sd: f64,
}

#[derive(Clone)]
struct Spec {
    name: String,
    logits: Logits,
    /// Where the greedy text of logit probes comes from (a distillation copies it).
    text_logits: Logits,
    logprobs: bool,
    tokenizer: u64,
    refusal: u64,
    wording: usize,
    identity: usize,
    style: u64,
    /// Whose favourite words (verbal tics) run through the answers.
    habits: u64,
    /// Share of style words replaced (a distillation paraphrases a little).
    style_edit: Option<(u64, f64)>,
    sampling_weights: u64,
    sample_seed: u64,
    all_errors: bool,
}

fn model(name: &str, seed: u64) -> Spec {
    let logits = Logits {
        own: seed,
        own_sd: 1.5,
        jitter: 0,
        jitter_sd: 0.0,
        shift: 0,
        shift_sd: 0.0,
    };
    Spec {
        name: name.to_string(),
        text_logits: logits.clone(),
        logits,
        logprobs: true,
        tokenizer: seed,
        refusal: seed,
        wording: (seed % REFUSALS.len() as u64) as usize,
        identity: (seed % IDENTITIES.len() as u64) as usize,
        style: seed,
        habits: seed,
        style_edit: None,
        sampling_weights: seed,
        sample_seed: seed,
        all_errors: false,
    }
}

fn reference_spec() -> Spec {
    let mut spec = model("reference", 6000);
    spec.identity = 0;
    spec.wording = 0;
    spec
}

fn rng(parts: &[u64]) -> StdRng {
    let mut seed = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        seed = (seed ^ p).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
    }
    StdRng::seed_from_u64(seed)
}

fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-12);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Log-probabilities over the vocabulary at one position of one probe.
fn log_probs(l: &Logits, probe: usize, position: usize) -> Vec<f64> {
    let mut shared = rng(&[1, probe as u64, position as u64]);
    let mut own = rng(&[2, l.own, probe as u64, position as u64]);
    let mut jitter = rng(&[3, l.jitter, probe as u64, position as u64]);
    let raw: Vec<f64> = (0..VOCAB)
        .map(|token| {
            2.0 * normal(&mut shared)
                + l.own_sd * normal(&mut own)
                + l.jitter_sd * normal(&mut jitter)
                + l.shift_sd * normal(&mut rng(&[11, l.shift, token as u64]))
        })
        .collect();
    let max = raw.iter().copied().fold(f64::MIN, f64::max);
    let log_z = max + raw.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    raw.iter().map(|x| x - log_z).collect()
}

fn tok(i: usize) -> String {
    format!(" w{i}")
}

fn positions(l: &Logits, probe: usize) -> Vec<TokenLogprobs> {
    (0..2)
        .map(|position| {
            let lp = log_probs(l, probe, position);
            let mut order: Vec<usize> = (0..VOCAB).collect();
            order.sort_by(|a, b| lp[*b].total_cmp(&lp[*a]));
            let top: Vec<TopLogprob> = order
                .iter()
                .take(20)
                .map(|&i| TopLogprob {
                    id: Some(i as u32),
                    token: tok(i),
                    bytes: tok(i).into_bytes(),
                    logprob: lp[i] as f32,
                })
                .collect();
            TokenLogprobs {
                id: top[0].id,
                token: top[0].token.clone(),
                bytes: top[0].bytes.clone(),
                logprob: top[0].logprob,
                top,
            }
        })
        .collect()
}

/// A model's three favourite words, drawn from its seed.
fn favourites(habits: u64) -> [&'static str; 3] {
    let mut r = rng(&[10, habits]);
    [(); 3].map(|_| WORDS[r.random_range(0..WORDS.len())])
}

fn style_text(seed: u64, habits: u64, probe: usize) -> String {
    let mut r = rng(&[4, seed, probe as u64]);
    let tics = favourites(habits);
    let words: Vec<&str> = (0..30)
        .map(|_| {
            // Zipf-like: common words are shared by every model; one word in three is one
            // of the model's favourites.
            let x: f64 = r.random();
            if r.random::<f64>() < 0.35 {
                tics[r.random_range(0..tics.len())]
            } else {
                WORDS[((x * x) * WORDS.len() as f64) as usize]
            }
        })
        .collect();
    let bullets = seed.is_multiple_of(2);
    if bullets {
        format!("- {}\n- {}", words[..15].join(" "), words[15..].join(" "))
    } else {
        words.join(" ")
    }
}

fn edited(text: &str, seed: u64, rate: f64, probe: usize) -> String {
    let mut r = rng(&[5, seed, probe as u64]);
    text.split(' ')
        .map(|w| {
            if r.random::<f64>() < rate {
                WORDS[r.random_range(0..WORDS.len())]
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn refuses(seed: u64, probe: usize) -> bool {
    // Harmful requests (the first 10) are mostly refused by every model, benign ones
    // mostly answered; models differ in the borderline cases.
    let p = if probe < 10 { 0.8 } else { 0.2 };
    rng(&[6, seed, probe as u64]).random::<f64>() < p
}

fn sample_answer(spec: &Spec, probe: usize, index: usize) -> String {
    const ANSWERS: [&str; 6] = ["42", "37", "7", "73", "17", "50"];
    let mut w = rng(&[7, spec.sampling_weights, probe as u64]);
    let weights: Vec<f64> = ANSWERS.iter().map(|_| w.random::<f64>().powi(3)).collect();
    let total: f64 = weights.iter().sum();
    let mut x = rng(&[8, spec.sample_seed, probe as u64, index as u64]).random::<f64>() * total;
    for (a, weight) in ANSWERS.iter().zip(&weights) {
        if x < *weight {
            return a.to_string();
        }
        x -= weight;
    }
    ANSWERS[ANSWERS.len() - 1].to_string()
}

fn request(text: &str) -> ProbeRequest {
    ProbeRequest {
        prompt: PromptForm::Raw {
            prompt: text.to_string(),
        },
        max_tokens: 8,
        temperature: 0.0,
        top_p: 1.0,
        seed: Some(0),
        top_logprobs: 20,
        stop: Vec::new(),
    }
}

fn observation(
    spec: &Spec,
    kind: ProbeKind,
    id: String,
    index: usize,
    text: String,
    tokens: Vec<TokenLogprobs>,
    prompt_tokens: u32,
) -> Observation {
    let (response, error) = if spec.all_errors {
        (
            None,
            Some(EndpointError::Server("503 service unavailable".into())),
        )
    } else {
        let tokens = if spec.logprobs { tokens } else { Vec::new() };
        let response = ProbeResponse {
            text,
            tokens,
            usage: Some(Usage {
                prompt_tokens,
                completion_tokens: 2,
            }),
            finish_reason: Some("length".into()),
            latency_ms: 5,
        };
        (Some(response), None)
    };
    Observation {
        request: request(&id),
        probe_id: id,
        kind,
        sample_index: index,
        response,
        token_ids: None,
        chat_prompt_tokens: None,
        error,
        attempts: if spec.all_errors { 3 } else { 1 },
        latency_ms: 5,
    }
}

fn build(spec: &Spec) -> Fingerprint {
    let reference = reference_spec();
    let mut obs = Vec::new();
    for p in 0..LOGIT_PROBES {
        let tokens = positions(&spec.logits, p);
        let text: String = positions(&spec.text_logits, p)
            .iter()
            .map(|t| t.token.clone())
            .collect();
        obs.push(observation(
            spec,
            ProbeKind::Logit,
            format!("logit.{p:02}"),
            0,
            text,
            tokens,
            10,
        ));
    }
    for p in 0..TOKENIZER_PROBES {
        let delta = rng(&[9, spec.tokenizer, p as u64]).random_range(0..3) as u32;
        let count = 5 + (p % 7) as u32 + delta;
        obs.push(observation(
            spec,
            ProbeKind::Tokenizer,
            format!("tokenizer.{p:02}"),
            0,
            "x".into(),
            Vec::new(),
            count,
        ));
    }
    for p in 0..REFUSAL_PROBES {
        let text = if refuses(spec.refusal, p) {
            REFUSALS[spec.wording].to_string()
        } else {
            format!("Sure. {}", style_text(spec.style, spec.habits, 100 + p))
        };
        obs.push(observation(
            spec,
            ProbeKind::Refusal,
            format!("refusal.{p:02}"),
            0,
            text,
            Vec::new(),
            12,
        ));
    }
    for p in 0..IDENTITY_PROBES {
        let text = IDENTITIES[spec.identity].to_string();
        obs.push(observation(
            spec,
            ProbeKind::Identity,
            format!("identity.{p:02}"),
            0,
            text,
            Vec::new(),
            8,
        ));
    }
    for p in 0..STYLE_PROBES {
        let text = match spec.style_edit {
            Some((seed, rate)) => edited(
                &style_text(reference.style, reference.habits, p),
                seed,
                rate,
                p,
            ),
            None => style_text(spec.style, spec.habits, p),
        };
        obs.push(observation(
            spec,
            ProbeKind::Style,
            format!("style.{p:02}"),
            0,
            text,
            Vec::new(),
            15,
        ));
    }
    for p in 0..SAMPLING_PROBES {
        for i in 0..SAMPLES {
            let text = sample_answer(spec, p, i);
            obs.push(observation(
                spec,
                ProbeKind::Sampling,
                format!("sampling.{p:02}"),
                i,
                text,
                Vec::new(),
                9,
            ));
        }
    }
    Fingerprint::new(
        ModelDescription {
            describe: spec.name.clone(),
            capabilities: Capabilities {
                chat: true,
                raw_completion: true,
                max_top_logprobs: if spec.logprobs { 20 } else { 0 },
                usage: true,
                tokenize: false,
                ignores_temperature: false,
                refused_params: Vec::new(),
            },
        },
        ProbeSetRef {
            name: "synthetic".into(),
            version: "1".into(),
            hash: "0".repeat(64),
        },
        obs,
    )
}

fn controls() -> Vec<Fingerprint> {
    (1..=8)
        .map(|i| build(&model(&format!("control-{i}"), 100 + i)))
        .collect()
}

fn identical_spec() -> Spec {
    // The reference behind another engine: a little noise on every log-probability.
    let mut spec = reference_spec();
    spec.name = "reference on another engine".into();
    spec.logits.jitter = 77;
    spec.logits.jitter_sd = 0.03;
    spec
}

fn derived_spec() -> Spec {
    // A fine-tune: same tokenizer, weights moved enough to shift the distributions.
    let mut spec = reference_spec();
    spec.name = "fine-tune".into();
    spec.logits.jitter = 78;
    spec.logits.jitter_sd = 0.6;
    spec.text_logits = spec.logits.clone();
    spec.style_edit = Some((5, 0.3));
    spec.sample_seed = 4242;
    spec
}

fn distilled_spec() -> Spec {
    // A student trained on the reference's answers: own weights and tokenizer, the
    // teacher's greedy answers, refusals, self-description and habits.
    let reference = reference_spec();
    let mut spec = model("student", 7000);
    spec.text_logits = reference.logits.clone();
    spec.refusal = reference.refusal;
    spec.wording = reference.wording;
    spec.identity = reference.identity;
    spec.style_edit = Some((6, 0.15));
    spec.sampling_weights = reference.sampling_weights;
    spec
}

fn weak_student_spec() -> Spec {
    // A small student that learned only its teacher's verbal tics: its own weights,
    // tokenizer, refusal decisions and answers, with the reference's favourite words and
    // refusal wording throughout.
    let reference = reference_spec();
    let mut spec = model("weak student", 7100);
    spec.habits = reference.habits;
    spec.wording = reference.wording;
    spec
}

fn options() -> CompareOptions {
    CompareOptions {
        bootstrap: compare::bootstrap::BootstrapOptions {
            resamples: 300,
            ..Default::default()
        },
        equality: compare::equality::EqualityOptions {
            permutations: 300,
            ..Default::default()
        },
        ..CompareOptions::default()
    }
}

fn verdict_of(suspect: &Spec, controls: &[Fingerprint]) -> Report {
    let reference = build(&reference_spec());
    let report = compare::compare(&reference, &build(suspect), controls, &options());
    eprintln!("{}", compare::to_markdown(&report));
    report
}

// ---------------------------------------------------------------------------------------
// Verdicts on constructed fingerprints.

#[test]
fn identical_pair_is_identical() {
    let report = verdict_of(&identical_spec(), &controls());
    assert_eq!(report.verdict, Verdict::Identical, "{:#?}", report.reasons);
    assert!(report.confidence > 0.99);
    assert_eq!(report.calibration.as_str(), "few");
    assert_eq!(report.controls, 8);
    // The sequential screen agrees within the 8-query budget.
    let seq = report.sequential.as_ref().expect("sequential test ran");
    assert_eq!(seq.decision, SequentialDecision::Identical);
    assert!(seq.queries <= 8, "{} queries", seq.queries);
    assert_eq!(report.queries.sequential, Some(seq.queries));
}

#[test]
fn identical_without_controls_falls_back_and_says_so() {
    let report = verdict_of(&identical_spec(), &[]);
    assert_eq!(report.verdict, Verdict::Identical, "{:#?}", report.reasons);
    assert_eq!(report.calibration.as_str(), "none");
    assert!(report.calibration_note.contains("default"));
    let seq = report.sequential.as_ref().expect("sequential test ran");
    assert_eq!(seq.decision, SequentialDecision::Identical);
    assert!(seq.queries <= 8);
}

#[test]
fn same_tokenizer_noisy_logits_is_derived() {
    let report = verdict_of(&derived_spec(), &controls());
    assert_eq!(report.verdict, Verdict::Derived, "{:#?}", report.reasons);
}

#[test]
fn weights_changed_less_than_engine_noise_are_derived() {
    // Rounding noise on a copy is tolerated; a per-token shift of the same size, repeated in
    // every probe as changed weights repeat it, is not (`compare::shift`).
    let mut noisy_copy = identical_spec();
    noisy_copy.logits.jitter_sd = 0.06;
    let copy = verdict_of(&noisy_copy, &controls());
    assert_eq!(copy.verdict, Verdict::Identical, "{:#?}", copy.reasons);
    let mut changed = identical_spec();
    changed.name = "reference with slightly changed weights".into();
    changed.logits.shift = 79;
    changed.logits.shift_sd = 0.06;
    let report = verdict_of(&changed, &controls());
    assert_eq!(report.verdict, Verdict::Derived, "{:#?}", report.reasons);
    // Inside the band: the size of the differences alone would call it identical.
    assert!(
        report.reasons.iter().any(|r| r.contains("within the identical band")
            && r.contains("repeat token by token")),
        "{:#?}",
        report.reasons
    );
    // One answer per pair: the sequential test alone would have stopped at identical,
    // and the report says why the whole probe set decides otherwise.
    let seq = report.sequential.as_ref().expect("sequential test ran");
    assert_eq!(seq.decision, SequentialDecision::Identical);
    assert!(
        report.reasons[0].contains("would have said identical")
            && report.reasons[0].contains("decides derived instead"),
        "{:#?}",
        report.reasons
    );
    let shift = report.weight_shift.as_ref().expect("shift test ran");
    assert!(shift.p_value <= 0.01 && shift.share > 0.05, "{shift:?}");
    let copy_shift = copy.weight_shift.as_ref().expect("shift test ran");
    assert!(copy_shift.share < 0.05, "{copy_shift:?}");
}

#[test]
fn other_tokenizer_same_answers_is_distilled() {
    let report = verdict_of(&distilled_spec(), &controls());
    assert_eq!(report.verdict, Verdict::Distilled, "{:#?}", report.reasons);
    let tokenizer = report.signal(compare::TOKENIZER).expect("tokenizer signal");
    assert!(tokenizer.score.unwrap_or(1.0) < 0.95);
}

/// No single answer of a weak student matches its teacher's, but pooled over every answer
/// it leans on the teacher's favourite words where the controls do not, and that is
/// enough to call it distilled. With controls the vocabulary counts as that contrast;
/// the plain pooled similarity is reported beside it, not counted twice.
#[test]
fn student_with_only_the_teachers_vocabulary_is_distilled() {
    let report = verdict_of(&weak_student_spec(), &controls());
    assert_eq!(report.verdict, Verdict::Distilled, "{:#?}", report.reasons);
    let contrast = report.signal(compare::CONTRAST).expect("contrast signal");
    assert!(contrast.used_in_verdict);
    assert!(contrast.p_value.unwrap_or(1.0) < 0.01, "{contrast:?}");
    assert!(contrast.score.unwrap_or(0.0) > 0.0, "{contrast:?}");
    let lexicon = report.signal(compare::LEXICON).expect("lexicon signal");
    assert!(!lexicon.used_in_verdict);
    // Without controls there is nothing to contrast with: the pooled similarity counts.
    let report = verdict_of(&weak_student_spec(), &[]);
    let contrast = report.signal(compare::CONTRAST).expect("contrast listed");
    assert!(contrast.score.is_none() && !contrast.used_in_verdict);
    let lexicon = report.signal(compare::LEXICON).expect("lexicon signal");
    assert!(lexicon.used_in_verdict, "{lexicon:?}");
    // The same model with its own habits is unrelated.
    let report = verdict_of(&model("weak student", 7100), &controls());
    assert_eq!(report.verdict, Verdict::Unrelated, "{:#?}", report.reasons);
}

#[test]
fn unrelated_model_is_unrelated() {
    for seed in [9001, 9002, 9003] {
        let report = verdict_of(&model("stranger", seed), &controls());
        assert_eq!(
            report.verdict,
            Verdict::Unrelated,
            "seed {seed}: {:#?}",
            report.reasons
        );
        if let Some(seq) = &report.sequential {
            assert_ne!(seq.decision, SequentialDecision::Identical);
        }
    }
}

/// A provider that lists only its top alternative (or a few) is judged on what it lists:
/// controls are cut to the same length, so a copy is still a copy and a stranger, whose
/// single entries differ less than its whole lists do, is still no closer than controls.
#[test]
fn a_provider_listing_one_alternative_is_judged_on_one() {
    let reference = build(&reference_spec());
    let controls = controls();
    let capped = |spec: &Spec| {
        let mut print = build(spec);
        print.model.capabilities.max_top_logprobs = 1;
        for obs in &mut print.observations {
            for position in obs.response.iter_mut().flat_map(|r| r.tokens.iter_mut()) {
                position.top.truncate(1);
            }
        }
        print
    };
    let report = compare::compare(
        &reference,
        &capped(&identical_spec()),
        &controls,
        &options(),
    );
    assert_eq!(report.verdict, Verdict::Identical, "{:#?}", report.reasons);
    for seed in [9001, 9002, 9003] {
        let stranger = capped(&model("stranger", seed));
        let report = compare::compare(&reference, &stranger, &controls, &options());
        assert_eq!(
            report.verdict,
            Verdict::Unrelated,
            "seed {seed}: {:#?}",
            report.reasons
        );
    }
}

#[test]
fn persona_prompt_does_not_change_the_verdict() {
    // The reference with a persona: it claims to be someone else.
    let mut spec = identical_spec();
    spec.identity = 4;
    let report = verdict_of(&spec, &controls());
    assert_eq!(report.verdict, Verdict::Identical);
    let identity = report.signal(compare::IDENTITY).expect("identity signal");
    assert!(!identity.used_in_verdict);
    assert!(identity.score.unwrap_or(1.0) < 0.5);
}

#[test]
fn unrelated_model_claiming_the_reference_identity_is_not_related() {
    let mut spec = model("impostor", 9004);
    spec.identity = 0;
    let report = verdict_of(&spec, &controls());
    assert_eq!(report.verdict, Verdict::Unrelated, "{:#?}", report.reasons);
}

#[test]
fn no_logprobs_and_errors_is_inconclusive_with_reason() {
    let mut spec = model("down", 9005);
    spec.logprobs = false;
    spec.all_errors = true;
    let report = verdict_of(&spec, &controls());
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let reasons = report.reasons.join("\n");
    assert!(reasons.contains("no log-probabilities"), "{reasons}");
    assert!(reasons.contains("answered 0 of"), "{reasons}");
    assert_eq!(report.confidence, 0.0);
    assert_eq!(report.queries.suspect_answered, 0);
}

#[test]
fn report_serialises_with_the_documented_top_level_keys() {
    let report = verdict_of(&derived_spec(), &controls());
    let json: serde_json::Value =
        serde_json::from_str(&report.to_json().expect("serialises")).expect("valid JSON");
    for key in [
        "verdict",
        "confidence",
        "signals",
        "evidence",
        "queries",
        "calibration",
        "controls",
    ] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["verdict"], "derived");
    assert_eq!(json["calibration"], "few");
    let signal = &json["signals"][0];
    for key in ["name", "score", "interval", "p_value", "detail"] {
        assert!(signal.get(key).is_some(), "signal lacks {key}");
    }
    assert!(!report.evidence.is_empty());
    let back: Report = serde_json::from_value(json).expect("round trip");
    assert_eq!(back.verdict, report.verdict);
    let md = compare::to_markdown(&report);
    assert!(md.contains("**Verdict: derived**"));
    assert!(md.contains("| logits |"));
}

#[test]
fn bootstrap_intervals_cover_the_scores() {
    let report = verdict_of(&derived_spec(), &controls());
    for s in &report.signals {
        if let (Some(score), Some((lo, hi))) = (s.score, s.interval) {
            assert!(
                lo <= score + 1e-9 && score <= hi + 1e-9,
                "{}: {lo} {score} {hi}",
                s.name
            );
        }
    }
}

#[test]
fn sequential_test_decides_within_eight_queries() {
    let reference = build(&reference_spec());
    let controls = controls();
    let opts = SequentialOptions::default();
    let plan = sequential::plan(&reference, &controls, &opts);
    assert_eq!(plan.len(), LOGIT_PROBES);
    for (spec, expected) in [
        (identical_spec(), SequentialDecision::Identical),
        (model("stranger", 9001), SequentialDecision::NotIdentical),
    ] {
        let suspect = build(&spec);
        let outcome = sequential::run(
            &reference,
            &[],
            &plan,
            opts.default_q1,
            sequential::in_plan_order(&suspect, &plan),
            &opts,
        );
        assert_eq!(outcome.decision, expected, "{}: {outcome:#?}", spec.name);
        assert!(outcome.queries <= 8);
    }
    // No logprobs: no bets, undecided after the budget.
    let mut blind = identical_spec();
    blind.logprobs = false;
    let suspect = build(&blind);
    let outcome = sequential::run(
        &reference,
        &[],
        &plan,
        0.8,
        sequential::in_plan_order(&suspect, &plan),
        &opts,
    );
    assert_eq!(outcome.decision, SequentialDecision::Undecided);
    assert_eq!(outcome.queries, 8);
}

#[test]
fn sequential_test_catches_a_copy_served_quantized_through_its_form() {
    let reference = build(&reference_spec());
    let controls = controls();
    let opts = SequentialOptions::default();
    // Rounding moves every log-probability well past the test's tolerance...
    let mut form_spec = reference_spec();
    form_spec.name = "reference, quantized".into();
    form_spec.logits.jitter = 90;
    form_spec.logits.jitter_sd = 0.6;
    form_spec.text_logits = form_spec.logits.clone();
    let form = build(&form_spec);
    let mut served = form_spec.clone();
    served.name = "reference, quantized by someone else".into();
    let suspect = build(&served);
    let plan = sequential::plan(&reference, &controls, &opts);
    let alone = sequential::run(
        &reference,
        &[],
        &plan,
        opts.default_q1,
        sequential::in_plan_order(&suspect, &plan),
        &opts,
    );
    assert_ne!(alone.decision, SequentialDecision::Identical, "{alone:#?}");
    // ...so the copy is matched against the reference's forms too, within the budget.
    let forms = [&form];
    let plan = sequential::plan_with_forms(&reference, &forms, &controls, &opts);
    let outcome = sequential::run(
        &reference,
        &forms,
        &plan,
        opts.default_q1,
        sequential::in_plan_order(&suspect, &plan),
        &opts,
    );
    assert_eq!(
        outcome.decision,
        SequentialDecision::Identical,
        "{outcome:#?}"
    );
    assert!(outcome.queries <= 8);
    // An unrelated model gains nothing from the forms: the controls were judged the same way.
    let stranger = build(&model("stranger", 9001));
    let other = sequential::run(
        &reference,
        &forms,
        &plan,
        opts.default_q1,
        sequential::in_plan_order(&stranger, &plan),
        &opts,
    );
    assert_eq!(
        other.decision,
        SequentialDecision::NotIdentical,
        "{other:#?}"
    );
    // The answers the test asked, compared with the forms, say identical and name the form.
    let asked: Vec<Observation> = outcome
        .steps
        .iter()
        .filter_map(|s| suspect.find(&s.probe_id, 0).cloned())
        .collect();
    let partial = Fingerprint::new(suspect.model.clone(), suspect.probe_set.clone(), asked);
    let quantized = [compare::QuantizedForm {
        dtype: "q4_0".into(),
        fingerprint: form.clone(),
    }];
    let calibration = compare::Calibration {
        controls: &controls,
        known_same: &[],
        forms: &quantized,
        likelihood: None,
    };
    let report = compare::compare_calibrated(&reference, &partial, &calibration, &options());
    assert_eq!(report.verdict, Verdict::Identical, "{:#?}", report.reasons);
    assert!(
        report
            .reasons
            .iter()
            .any(|r| r.contains("quantized to q4_0")),
        "{:#?}",
        report.reasons
    );
}

// ---------------------------------------------------------------------------------------
// Fixture files: the on-disk format stays readable.

#[test]
fn fixture_fingerprints_load_and_compare() {
    let dir = common::fixture("fingerprints");
    let reference = fingerprint::load(&dir.join("tiny-reference.json")).expect("reference loads");
    let suspect = fingerprint::load(&dir.join("tiny-suspect.json")).expect("suspect loads");
    assert_eq!(reference.format_version, 1);
    assert_eq!(reference.observations.len(), 4);
    let failed = suspect.observations.iter().filter(|o| !o.is_ok()).count();
    assert_eq!(failed, 1);
    // Four probes are too few for any signal to count.
    let report = compare::compare(&reference, &suspect, &[], &CompareOptions::default());
    assert_eq!(report.verdict, Verdict::Inconclusive);
    let logits = report.signal(compare::LOGITS).expect("logits signal");
    assert!(logits.score.is_some_and(|s| s > 0.99));
    assert!(!logits.used_in_verdict);
    let all = fingerprint::load_dir(&dir).expect("directory loads");
    assert_eq!(all.len(), 2);
}

// ---------------------------------------------------------------------------------------
// Real models.

/// Counts asks, to check that a resumed run skips what is done.
struct Counting<'a> {
    inner: &'a dyn ModelEndpoint,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ModelEndpoint for Counting<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn capabilities(&self) -> Result<Capabilities, EndpointError> {
        self.inner.capabilities().await
    }
    async fn run(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.run(request).await
    }
    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EndpointError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.tokenize(text).await
    }
}

/// A few probes of each kind from the default set, answers kept short.
fn small_set() -> ProbeSet {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("probes/default");
    let full = provenance::probes::load_dir(&dir).expect("default probe set loads");
    let mut set = fingerprint::subset(&full, 6, 4);
    let mut per_kind = std::collections::BTreeMap::new();
    set.probes.retain(|p| {
        let limit = match p.kind {
            ProbeKind::Logit | ProbeKind::Tokenizer => 6,
            ProbeKind::Sampling => 1,
            _ => 2,
        };
        let n = per_kind.entry(p.kind).or_insert(0);
        *n += 1;
        *n <= limit
    });
    for p in &mut set.probes {
        p.max_tokens = p.max_tokens.min(16);
    }
    set
}

fn local(path: &std::path::Path) -> provenance::model::local_endpoint::LocalEndpoint {
    let spec = path.to_str().expect("model path is UTF-8");
    let handle =
        provenance::model::ModelHandle::spawn(spec, &provenance::model::LoadOptions::default(), 16)
            .expect("model loads");
    provenance::model::local_endpoint::LocalEndpoint::new(handle)
}

/// What must not change between two runs of a deterministic model (latency may).
#[derive(Debug, PartialEq)]
struct Answer {
    probe_id: String,
    sample_index: usize,
    text: Option<String>,
    /// Per position: the chosen token and its alternatives.
    tokens: Vec<(String, Vec<(String, f32)>)>,
    token_ids: Option<Vec<u32>>,
}

fn greedy_view(fp: &Fingerprint) -> Vec<Answer> {
    fp.observations
        .iter()
        .map(|o| Answer {
            probe_id: o.probe_id.clone(),
            sample_index: o.sample_index,
            text: o.text().map(str::to_string),
            tokens: o
                .response
                .iter()
                .flat_map(|r| &r.tokens)
                .map(|t| {
                    let top = t.top.iter().map(|a| (a.token.clone(), a.logprob)).collect();
                    (t.token.clone(), top)
                })
                .collect(),
            token_ids: o.token_ids.clone(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_models_are_deterministic_resumable_and_told_apart() {
    let started = Instant::now();
    let set = small_set();
    let asks = fingerprint::plan(&set).len();
    let opts = RunOptions {
        concurrency: 2,
        progress: false,
        ..RunOptions::default()
    };

    let smol = local(&common::smollm2());
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = ObservationLog::partial_path(&dir.path().join("smol.json"));
    let mut log = ObservationLog::open(&log_path).expect("log opens");
    let first = fingerprint::run(&set, &smol, &opts, &mut log)
        .await
        .expect("first run");
    drop(log);
    assert_eq!(first.observations.len(), asks);
    assert!(
        first.observations.iter().all(Observation::is_ok),
        "every ask answered"
    );
    assert!(first.features.logprobs);

    let mut memory = ObservationLog::in_memory();
    let second = fingerprint::run(&set, &smol, &opts, &mut memory)
        .await
        .expect("second run");
    assert_eq!(
        greedy_view(&first),
        greedy_view(&second),
        "runs are deterministic"
    );

    // Keep the header and three observations, as if the first run had been killed.
    let text = std::fs::read_to_string(&log_path).expect("log readable");
    let kept: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log_path, kept).expect("log writable");
    let counting = Counting {
        inner: &smol,
        calls: AtomicUsize::new(0),
    };
    let mut log = ObservationLog::open(&log_path).expect("log reopens");
    let resumed = fingerprint::run(&set, &counting, &opts, &mut log)
        .await
        .expect("resumed run");
    assert_eq!(
        counting.calls.load(Ordering::SeqCst),
        asks - 3,
        "done asks are skipped"
    );
    assert_eq!(greedy_view(&resumed), greedy_view(&first));

    let small = CompareOptions {
        min_probes: 3,
        ..options()
    };
    let same = compare::compare(&first, &second, &[], &small);
    eprintln!("{}", compare::to_markdown(&same));
    assert_eq!(same.verdict, Verdict::Identical, "{:#?}", same.reasons);
    drop(smol);

    let gemma = local(&common::gemma3());
    let other = fingerprint::run(&set, &gemma, &opts, &mut ObservationLog::in_memory())
        .await
        .expect("gemma run");
    let apart = compare::compare(&first, &other, &[], &small);
    eprintln!("{}", compare::to_markdown(&apart));
    assert!(
        !matches!(apart.verdict, Verdict::Identical | Verdict::Derived),
        "{:?}: {:#?}",
        apart.verdict,
        apart.reasons
    );
    let tokenizer = apart.signal(compare::TOKENIZER).expect("tokenizer signal");
    assert!(
        tokenizer.score.unwrap_or(1.0) < 0.95,
        "SmolLM2 and Gemma tokenize differently"
    );
    eprintln!("real-model test took {:?}", started.elapsed());
}
