//! Reading text back through the reference (teacher forcing) for the likelihood signal: it
//! must see exactly what the model saw while writing the text.

mod common;

use provenance::compare::likelihood::AnswerScore;
use provenance::endpoint::ChatMessage;
use provenance::model::{GenerateParams, LoadOptions, LocalModel};
use provenance::probes::ProbeKind;

fn prompt(model: &LocalModel, text: &str) -> Vec<u32> {
    let rendered = model
        .render_chat(&[ChatMessage {
            role: "user".into(),
            content: text.into(),
        }])
        .expect("template renders");
    model.encode_prompt(&rendered).expect("prompt encodes")
}

fn read_back(model: &mut LocalModel, prompt: &[u32], text: &[u32]) -> AnswerScore {
    let tokens = model.score_continuation(prompt, text).expect("scores");
    assert_eq!(tokens.len(), text.len());
    provenance::read_back::answer_score("p", ProbeKind::Style, "", &tokens, text)
}

#[test]
fn reading_back_sees_what_generation_saw() {
    let mut model = LocalModel::load(
        common::smollm2().to_str().expect("utf-8 path"),
        &LoadOptions::default(),
    )
    .expect("SmolLM2 loads (run `provenance models fetch`)");
    let ids = prompt(&model, "Write a short poem about the sea.");

    // Greedy text: every token read back has the log-probability it was generated with,
    // and is the model's top choice; such text is less surprising than the model expects.
    let greedy = model
        .generate(
            &ids,
            &GenerateParams {
                max_tokens: 40,
                ..GenerateParams::default()
            },
            |_, _| true,
        )
        .expect("generates");
    let written: Vec<u32> = greedy.steps.iter().map(|s| s.token).collect();
    // Something else ran in between, so the cache must be cut back to the shared prefix.
    let other = prompt(&model, "Name three colours.");
    model.next_logprobs(&other).expect("runs");
    let tokens = model.score_continuation(&ids, &written).expect("scores");
    assert_eq!(tokens.len(), written.len());
    for (i, (read, step)) in tokens.iter().zip(&greedy.steps).enumerate() {
        assert!(
            (read.logprob - f64::from(step.logprob)).abs() < 1e-4,
            "position {i}: read back {} but generated with {}",
            read.logprob,
            step.logprob
        );
        assert!(read.top1, "position {i}: a greedy token is the top choice");
        assert!(read.expected <= 0.0 && read.second >= read.expected * read.expected - 1e-9);
    }
    let greedy_score = read_back(&mut model, &ids, &written);
    let d_greedy = greedy_score.discrepancy().expect("has spread");
    assert!(
        d_greedy > 1.0,
        "greedy text reads as unsurprising: {d_greedy}"
    );

    // Text the model samples at temperature 1 is exactly as surprising as it expects, on
    // average: its discrepancy is a standard score near 0.
    let sampled = model
        .generate(
            &ids,
            &GenerateParams {
                max_tokens: 48,
                temperature: 1.0,
                seed: Some(7),
                ..GenerateParams::default()
            },
            |_, _| true,
        )
        .expect("samples");
    let written: Vec<u32> = sampled.steps.iter().map(|s| s.token).collect();
    let d_sampled = read_back(&mut model, &ids, &written)
        .discrepancy()
        .expect("has spread");
    assert!(d_sampled.abs() < 4.0, "sampled text: {d_sampled}");
    assert!(d_sampled < d_greedy);

    // Text from elsewhere (here, the greedy answer reversed) surprises it more than it expects.
    let mut scrambled = greedy.steps.iter().map(|s| s.token).collect::<Vec<_>>();
    scrambled.reverse();
    let d_scrambled = read_back(&mut model, &ids, &scrambled)
        .discrepancy()
        .expect("has spread");
    assert!(
        d_scrambled < -2.0 && d_scrambled < d_sampled - 2.0,
        "scrambled text: {d_scrambled} (sampled {d_sampled})"
    );
    assert!(model
        .score_continuation(&ids, &[])
        .expect("empty")
        .is_empty());
}
