//! Reads another model's answers back through the local reference, token by token, for
//! the likelihood signal (`compare::likelihood` says what it measures and why). Blocking:
//! call it on a model thread or from `spawn_blocking`, never inside an async handler.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::likelihood::AnswerScore;
use crate::compare::sampled::{self, SampledToken};
use crate::endpoint::{with_system_prompt, PromptForm};
use crate::fingerprint::{Fingerprint, Observation};
use crate::model::chat::TurnFormat;
use crate::model::rope::{RopeScaling, Yarn};
use crate::model::{LocalModel, ModelError, ModelHandle, QueueError, TokenScore};
use crate::probes::{identity, ProbeKind};

/// Probes whose greedy chat answers are read back: open-ended text a student imitates.
pub const KINDS: [ProbeKind; 3] = [ProbeKind::Style, ProbeKind::Refusal, ProbeKind::Identity];

/// Reference tokens read per answer at most; answers are capped at 64 generated tokens
/// anyway, and another tokenizer may need a few more for the same text.
pub const MAX_TOKENS: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error("probe {probe}: {source}")]
    Model { probe: String, source: ModelError },
    #[error("stretching the reference's context: {0}")]
    Stretch(ModelError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Every greedy chat answer of [`KINDS`] in `print`, as `model` reads it after the same
/// messages rendered in its own chat template, then every greedy raw completion after its
/// prompt (marked `raw`). Empty answers are skipped.
///
/// A serving stack may wrap the conversation in another turn format than the reference's
/// own template (llama.cpp uses ChatML for a file that ships none): each of llama.cpp's
/// common formats is tried as a context first, the way hidden prompts are below.
///
/// A hidden system prompt moves every chat answer, and the read-back cannot see it. When
/// the answers give one away (a line most of them open with, as small models repeat their
/// system prompt) or the identity answers name a persona, the chat answers are read again
/// after each such prompt, and the context under which the reference finds the
/// non-identity answers most likely is kept (marked in `system`): a copy behind
/// a persona is then read in something near its own context, while a model with other
/// weights stays as far from the reference's choices as before once the text it copied
/// from that context is left out. Controls go through the same choice, so the comparison
/// against them stays fair.
pub fn score_fingerprint(
    model: &mut LocalModel,
    print: &Fingerprint,
) -> Result<Vec<AnswerScore>, ReadBackError> {
    score_in_context(model, print, print, Formats::Try)
}

/// How a serving stack presents a conversation to the weights, as far as the read-back
/// tries it: a turn format (`None`: the reference's own template) and a stretched context
/// (`None`: as the file says).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Serving {
    pub format: Option<TurnFormat>,
    pub stretch: Option<RopeScaling>,
}

impl Serving {
    /// How a reason names it: `chatml`, `the reference's own template, yarn x4`.
    pub fn name(&self) -> String {
        let format = self
            .format
            .map_or("the reference's own template", |f| f.name());
        match self.stretch {
            Some(s) => format!("{format}, {}", s.name()),
            None => format.to_string(),
        }
    }
}

/// Context stretches a server may be told to use, tried after the turn formats: YaRN two-
/// and fourfold, the settings Qwen's model cards give operators for 64K and 128K inputs,
/// and linear position interpolation by the same factors
/// (`crate::quantized_forms::LADDER` holds the same as forms for the logit probes).
pub const STRETCHES: [RopeScaling; 4] = [
    RopeScaling::Yarn(Yarn::new(2.0, 0)),
    RopeScaling::Yarn(Yarn::new(4.0, 0)),
    RopeScaling::Linear { factor: 2.0 },
    RopeScaling::Linear { factor: 4.0 },
];

/// How the read-back chooses how the suspect is served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Formats {
    /// Each of [`TurnFormat::ALL`] and [`STRETCHES`], over a print of at least
    /// [`FIRST_LOOK`] answers.
    Try,
    /// This one, chosen beforehand.
    Fixed(Serving),
}

/// How `print`'s greedy chat answers are best read (turn format, then stretch): for the
/// text early stop, which reads one answer at a time and so chooses once, from the first
/// few answers (its warm-up), and keeps the choice for every answer after them. Identity
/// answers count here: a format moves them as much as any other. The model is left as
/// loaded.
pub fn choose_serving(
    model: &mut LocalModel,
    print: &Fingerprint,
) -> Result<Serving, ReadBackError> {
    let chosen = choose_serving_stretched(model, print);
    model
        .set_rope_scaling(None)
        .map_err(ReadBackError::Stretch)?;
    chosen
}

fn choose_serving_stretched(
    model: &mut LocalModel,
    print: &Fingerprint,
) -> Result<Serving, ReadBackError> {
    let fit = |scores: &[Read]| -> f64 { scores.iter().map(|r| r.all.logprob).sum() };
    let own = read_chat_answers(model, print, Context::default(), usize::MAX, None)?;
    if own.is_empty() {
        return Ok(Serving::default());
    }
    let mut best = (fit(&own), Context::default());
    let formats = TurnFormat::ALL.into_iter().map(|format| Context {
        format: Some(format),
        ..Context::default()
    });
    for context in formats {
        let scores = read_chat_answers(model, print, context, usize::MAX, None)?;
        if scores.len() == own.len() && fit(&scores) > best.0 {
            best = (fit(&scores), context);
        }
    }
    for format in stretch_formats(best.1.format) {
        for stretch in STRETCHES {
            let context = Context {
                format,
                stretch: Some(stretch),
                ..Context::default()
            };
            let scores = read_chat_answers(model, print, context, usize::MAX, None)?;
            if scores.len() == own.len() && fit(&scores) > best.0 {
                best = (fit(&scores), context);
            }
        }
    }
    Ok(best.1.serving())
}

/// The turn formats a stretch is tried in: the one chosen unstretched, and the reference's
/// own template where another was chosen. A strong stretch (linear x4) moves answers so far
/// that some other format can fit them best unstretched; measured on SmolLM2 served in its
/// own template, Gemma's turns were chosen and no stretch in them explained the answers.
fn stretch_formats(chosen: Option<TurnFormat>) -> Vec<Option<TurnFormat>> {
    match chosen {
        Some(format) => vec![Some(format), None],
        None => vec![None],
    }
}

/// [`score_fingerprint`] of `print`, with the hidden prompts to try inferred from the
/// answers of `context` (a print holding `print`'s answers and others): the early stop
/// reads one answer at a time, and one answer gives no prompt away.
pub fn score_in_context(
    model: &mut LocalModel,
    print: &Fingerprint,
    context: &Fingerprint,
    formats: Formats,
) -> Result<Vec<AnswerScore>, ReadBackError> {
    let scores = score_stretched(model, print, context, formats);
    model
        .set_rope_scaling(None)
        .map_err(ReadBackError::Stretch)?;
    scores
}

/// [`score_in_context`], leaving the model stretched as the answers were last read.
fn score_stretched(
    model: &mut LocalModel,
    print: &Fingerprint,
    context: &Fingerprint,
    formats: Formats,
) -> Result<Vec<AnswerScore>, ReadBackError> {
    let greedy_chat = |kind| {
        context
            .answered(kind)
            .filter(|o| o.sample_index == 0 && matches!(o.request.prompt, PromptForm::Chat { .. }))
    };
    let asks_prompt = |o: &&Observation| identity::asks_for_system_prompt(&o.probe_id);
    let candidates = identity::hidden_prompts(
        greedy_chat(ProbeKind::Identity)
            .filter(|o| !asks_prompt(o))
            .filter_map(|o| o.text()),
        KINDS
            .into_iter()
            .flat_map(|k| greedy_chat(k).filter_map(|o| o.text())),
        greedy_chat(ProbeKind::Identity)
            .filter(asks_prompt)
            .filter_map(|o| o.text()),
    );
    // Chosen on every token, so contexts are compared on the same text.
    let fit = |scores: &[Read]| -> f64 {
        scores
            .iter()
            .filter(|r| r.all.kind != ProbeKind::Identity)
            .map(|r| r.all.logprob)
            .sum()
    };
    // A suspect that samples whatever temperature it is asked for is judged by where its
    // tokens fall in the reference's whole distribution (`compare::sampled`), which only
    // the read-back sees; for every other print the summary is not worth its time.
    let spread = print
        .model
        .capabilities
        .ignores_temperature
        .then(crate::compare::sampled::temperatures);
    let spread = spread.as_deref();
    let own = match formats {
        Formats::Try => Context::default(),
        Formats::Fixed(serving) => Context {
            format: serving.format,
            stretch: serving.stretch,
            system: None,
        },
    };
    let mut best = read_chat_answers(model, print, own, usize::MAX, spread)?;
    let mut chosen = own;
    // The stack's turn format first (llama.cpp wraps a file without a template in ChatML),
    // then the hidden prompts in the format that fits best. Only over a print's worth of
    // answers: one answer read in whichever of nine formats suits it best would be judged
    // against controls whose format was chosen once over all of theirs.
    let judged = best
        .iter()
        .filter(|r| r.all.kind != ProbeKind::Identity)
        .count();
    let trying = formats == Formats::Try && judged >= FIRST_LOOK;
    let formats: &[TurnFormat] = if trying { &TurnFormat::ALL } else { &[] };
    for &format in formats {
        let context = Context {
            format: Some(format),
            ..Context::default()
        };
        let looks = [FORMAT_LOOK, FIRST_LOOK];
        if let Some(scores) = fits_better(model, print, context, &best, spread, &fit, &looks)? {
            best = scores;
            chosen = context;
        }
    }
    // A stretched context moves tokens less than a wrong format: judged on eight answers.
    let stretches: &[RopeScaling] = if trying { &STRETCHES } else { &[] };
    for format in stretch_formats(chosen.format) {
        for &stretch in stretches {
            let context = Context {
                format,
                stretch: Some(stretch),
                ..Context::default()
            };
            let looks = [FIRST_LOOK];
            if let Some(scores) = fits_better(model, print, context, &best, spread, &fit, &looks)? {
                best = scores;
                chosen = context;
            }
        }
    }
    for system in &candidates {
        let context = Context {
            system: Some(system),
            ..chosen
        };
        let looks = [FIRST_LOOK];
        if let Some(scores) = fits_better(model, print, context, &best, spread, &fit, &looks)? {
            best = scores;
            chosen = context;
        }
    }
    let mut out: Vec<AnswerScore> = best.into_iter().filter_map(|r| r.kept).collect();
    // Samples and raw completions reach the weights the way the chat answers did.
    model
        .set_rope_scaling(chosen.stretch)
        .map_err(ReadBackError::Stretch)?;
    if let Some(temperatures) = spread {
        out.extend(read_samples(model, print, chosen, temperatures)?);
    }
    // Greedy raw completions of every kind, for the greedy-token share: no template, so a
    // hidden system prompt cannot move them.
    for o in print
        .observations
        .iter()
        .filter(|o| o.is_ok() && o.sample_index == 0 && o.request.temperature == 0.0)
    {
        if let PromptForm::Raw { prompt } = &o.request.prompt {
            let prompt = model.encode_prompt(prompt);
            if let Some(read) = read_answer(model, o, prompt, false, spread)? {
                out.push(AnswerScore {
                    raw: true,
                    ..read.all
                });
            }
        }
    }
    Ok(out)
}

/// Where a chat answer is read: in a turn format (the reference's own template when
/// `None`), by the reference with its context stretched (as loaded when `None`), with a
/// system prompt put in front of conversations that have none.
#[derive(Debug, Clone, Copy, Default)]
struct Context<'a> {
    format: Option<TurnFormat>,
    stretch: Option<RopeScaling>,
    system: Option<&'a str>,
}

impl Context<'_> {
    fn serving(&self) -> Serving {
        Serving {
            format: self.format,
            stretch: self.stretch,
        }
    }
}

/// The answers read in `context` when they fit better than `best`, judged first on the
/// first `looks[0]` answers, then `looks[1]`, … (a context that does not explain them
/// better is not read in full: a plain copy claims its own name too, and reading every
/// answer again for nothing slows every scan). Each look reads on from where the last one
/// stopped.
fn fits_better(
    model: &mut LocalModel,
    print: &Fingerprint,
    context: Context<'_>,
    best: &[Read],
    spread: Option<&[f32]>,
    fit: &dyn Fn(&[Read]) -> f64,
    looks: &[usize],
) -> Result<Option<Vec<Read>>, ReadBackError> {
    let mut reading = ChatReading::new(print);
    for &n in looks {
        reading.read_to(model, context, n, spread)?;
        let look = &reading.reads;
        if fit(look) <= fit(&best[..look.len().min(best.len())]) {
            tracing::debug!(format = ?context.format, stretch = ?context.stretch, system = ?context.system, read = look.len(), "context fits no better");
            return Ok(None);
        }
    }
    reading.read_to(model, context, usize::MAX, spread)?;
    tracing::debug!(format = ?context.format, stretch = ?context.stretch, system = ?context.system, read = reading.reads.len(), "context read in full");
    Ok((fit(&reading.reads) > fit(best)).then_some(reading.reads))
}

/// Every sample of each sampling probe the suspect answered at least twice, read after its
/// messages (in `system`'s context, as the chat answers were), marked with its sample
/// index: two samples of one prompt say how often the suspect agrees with itself
/// (`compare::sampled::collisions`).
fn read_samples(
    model: &mut LocalModel,
    print: &Fingerprint,
    context: Context<'_>,
    temperatures: &[f32],
) -> Result<Vec<AnswerScore>, ReadBackError> {
    let mut out = Vec::new();
    let answered: Vec<&Observation> = print.answered(ProbeKind::Sampling).collect();
    for o in &answered {
        if answered.iter().filter(|a| a.probe_id == o.probe_id).count() < 2 {
            continue;
        }
        let prompt = match &o.request.prompt {
            PromptForm::Chat { messages } => chat_prompt(model, messages, context).0,
            PromptForm::Raw { prompt } => model.encode_prompt(prompt),
        };
        if let Some(read) = read_answer(model, o, prompt, false, Some(temperatures))? {
            out.push(AnswerScore {
                sample_index: o.sample_index,
                ..read.all
            });
        }
    }
    Ok(out)
}

/// Answers a candidate context is first tried on.
const FIRST_LOOK: usize = 8;

/// Answers another turn format is tried on before [`FIRST_LOOK`]: a wrong format moves
/// every token (the model reads its own end-of-turn marker as text), so two answers show
/// it, and the eight formats cost every print two reads each instead of eight.
const FORMAT_LOOK: usize = 2;

/// The first `limit` greedy chat answers of [`KINDS`], read after their messages in
/// `context`.
fn read_chat_answers(
    model: &mut LocalModel,
    print: &Fingerprint,
    context: Context<'_>,
    limit: usize,
    spread: Option<&[f32]>,
) -> Result<Vec<Read>, ReadBackError> {
    let mut reading = ChatReading::new(print);
    reading.read_to(model, context, limit, spread)?;
    Ok(reading.reads)
}

/// The greedy chat answers of [`KINDS`] in one context, read a few at a time: a context
/// judged on its first answers, then on more, is read on from where it stopped.
struct ChatReading<'p> {
    /// A repeated system prompt is the operator's text, not the model's: it only says
    /// which context to read the other answers in.
    answers: Vec<&'p Observation>,
    next: usize,
    reads: Vec<Read>,
}

impl<'p> ChatReading<'p> {
    fn new(print: &'p Fingerprint) -> Self {
        let answers = KINDS
            .into_iter()
            .flat_map(|kind| print.answered(kind))
            .filter(|o| o.sample_index == 0 && !identity::asks_for_system_prompt(&o.probe_id))
            .collect();
        ChatReading {
            answers,
            next: 0,
            reads: Vec::new(),
        }
    }

    /// Reads answers (empty ones count for nothing) until `limit` are read or none is left.
    fn read_to(
        &mut self,
        model: &mut LocalModel,
        context: Context<'_>,
        limit: usize,
        spread: Option<&[f32]>,
    ) -> Result<(), ReadBackError> {
        model
            .set_rope_scaling(context.stretch)
            .map_err(ReadBackError::Stretch)?;
        while self.reads.len() < limit && self.next < self.answers.len() {
            let o = self.answers[self.next];
            self.next += 1;
            let PromptForm::Chat { messages } = &o.request.prompt else {
                continue;
            };
            let (prompt, added) = chat_prompt(model, messages, context);
            if let Some(mut read) = read_answer(model, o, prompt, added.is_some(), spread)? {
                if let Some(kept) = &mut read.kept {
                    kept.system = added.map(str::to_string);
                    kept.format = context.format.map(|f| f.name().to_string());
                    kept.stretch = context.stretch.map(|s| s.name());
                }
                self.reads.push(read);
            }
        }
        Ok(())
    }
}

/// `messages` rendered in `context`'s format and encoded, with its system prompt put in
/// front when the conversation has no system message of its own; the system prompt that
/// was added, if any.
fn chat_prompt<'a>(
    model: &LocalModel,
    messages: &[crate::endpoint::ChatMessage],
    context: Context<'a>,
) -> (Result<Vec<u32>, ModelError>, Option<&'a str>) {
    let with = context
        .system
        .and_then(|text| with_system_prompt(messages, text));
    let added = context.system.filter(|_| with.is_some());
    let messages = with.as_deref().unwrap_or(messages);
    let rendered = match context.format {
        Some(format) => Ok(format.render(messages)),
        None => model.render_chat(messages),
    };
    let prompt = rendered.and_then(|p| model.encode_prompt(&p));
    (prompt, added)
}

/// One answer read back: over every token, and as reported.
struct Read {
    all: AnswerScore,
    /// `all`, or without the tokens copied from the prompt when asked; `None` when nothing
    /// is left.
    kept: Option<AnswerScore>,
}

/// Tokens that repeat this many prompt tokens in a row count as copied from the prompt.
const COPY_RUN: usize = 4;

/// `o`'s answer read back after `prompt` (the reference's own encoding of what was asked);
/// `None` for an empty answer. With `drop_copied`, the reported score leaves out tokens
/// inside a run of [`COPY_RUN`] tokens that also stands in the prompt: any model can copy
/// a system prompt it was given (small ones open every answer with it), so copied text
/// would lift an unrelated model read in an inferred context as much as a copy.
fn read_answer(
    model: &mut LocalModel,
    o: &Observation,
    prompt: Result<Vec<u32>, ModelError>,
    drop_copied: bool,
    spread: Option<&[f32]>,
) -> Result<Option<Read>, ReadBackError> {
    let Some(text) = o.text().filter(|t| !t.trim().is_empty()) else {
        return Ok(None);
    };
    let failed = |source| ReadBackError::Model {
        probe: o.probe_id.clone(),
        source,
    };
    let prompt = prompt.map_err(failed)?;
    let mut answer = model.tokenizer.encode(text).map_err(failed)?;
    let cut = answer.len() > MAX_TOKENS;
    answer.truncate(MAX_TOKENS);
    // A sampled answer that stopped on its own drew its end too: scored as one more
    // sampled position (the stop token the reference finds likeliest), so that samples
    // of one prompt that end where others go on count as differing there.
    let stopped = !cut
        && o.response
            .as_ref()
            .is_some_and(|r| r.finish_reason.as_deref() == Some("stop"));
    let (tokens, end) = match spread {
        Some(temperatures) if stopped => {
            model.score_continuation_spread_to_end(&prompt, &answer, temperatures)
        }
        Some(temperatures) => model
            .score_continuation_spread(&prompt, &answer, temperatures)
            .map(|t| (t, None)),
        None => model
            .score_continuation(&prompt, &answer)
            .map(|t| (t, None)),
    }
    .map_err(failed)?;
    let end = end.and_then(|t| sampled_token(&t, sampled::END));
    let mut all = answer_score(&o.probe_id, o.kind, text, &tokens, &answer);
    all.sampled.extend(end.clone());
    let kept = if drop_copied {
        let copied = copied_from(&prompt, &answer);
        let (left, left_ids): (Vec<TokenScore>, Vec<u32>) = tokens
            .iter()
            .zip(&answer)
            .zip(&copied)
            .filter(|(_, c)| !**c)
            .map(|((t, id), _)| (t.clone(), *id))
            .unzip();
        (!left.is_empty()).then(|| {
            let mut kept = answer_score(&o.probe_id, o.kind, text, &left, &left_ids);
            kept.sampled.extend(end);
            kept
        })
    } else {
        Some(all.clone())
    };
    Ok(Some(Read { all, kept }))
}

/// For each answer token, whether it lies in a run of [`COPY_RUN`] tokens found in `prompt`.
fn copied_from(prompt: &[u32], answer: &[u32]) -> Vec<bool> {
    let runs: std::collections::HashSet<&[u32]> = prompt.windows(COPY_RUN).collect();
    let mut copied = vec![false; answer.len()];
    for (start, window) in answer.windows(COPY_RUN).enumerate() {
        if runs.contains(window) {
            copied[start..start + COPY_RUN].fill(true);
        }
    }
    copied
}

/// Tokens within [`NEAR_TOP_NATS`](crate::compare::likelihood::NEAR_TOP_NATS) of the
/// reference's top choice, as given or under the one serving penalty
/// (`crate::model::serving_penalty`) that puts most there: a serving stack's penalty is
/// one setting for a whole answer. Every print is read so, the controls' included.
fn near_top(tokens: &[TokenScore]) -> usize {
    let near = |gap: f64| gap <= crate::compare::likelihood::NEAR_TOP_NATS;
    let plain = tokens.iter().filter(|t| near(t.gap)).count();
    (0..crate::model::serving_penalty::SERVING_PENALTIES.len())
        .map(|k| {
            tokens
                .iter()
                .filter(|t| t.penalized_gaps.get(k).is_some_and(|g| near(*g)))
                .count()
        })
        .fold(plain, usize::max)
}

/// One answer's teacher-forced positions summed into its score.
pub fn answer_score(
    probe_id: &str,
    kind: ProbeKind,
    text: &str,
    tokens: &[TokenScore],
    answer_ids: &[u32],
) -> AnswerScore {
    AnswerScore {
        probe_id: probe_id.to_string(),
        kind,
        text: crate::compare::clip(text),
        tokens: tokens.len(),
        logprob: tokens.iter().map(|t| t.logprob).sum(),
        expected: tokens.iter().map(|t| t.expected).sum(),
        // Var = E[x²] − E[x]², floored at 0 against rounding.
        variance: tokens
            .iter()
            .map(|t| (t.second - t.expected * t.expected).max(0.0))
            .sum(),
        top1: tokens.iter().filter(|t| t.top1).count(),
        raw: false,
        system: None,
        format: None,
        stretch: None,
        near_top: near_top(tokens),
        sample_index: 0,
        sampled: tokens
            .iter()
            .zip(answer_ids)
            .filter_map(|(t, &token)| sampled_token(t, token))
            .collect(),
    }
}

/// A position's spread as the sampled-token tests read it; `None` without a spread.
fn sampled_token(t: &TokenScore, token: u32) -> Option<SampledToken> {
    let s = t.spread.as_ref()?;
    Some(SampledToken {
        token,
        top: s.top.clone(),
        gap: s.gap,
        rank: s.rank,
        tail: s
            .tail
            .iter()
            .map(|t| if t.is_finite() { *t } else { sampled::NO_TAIL })
            .collect(),
    })
}

/// [`score_in_context`] on the model thread behind `reference`, uncached.
pub async fn read_back_in_context(
    reference: &ModelHandle,
    print: &Fingerprint,
    context: &Fingerprint,
    formats: Formats,
) -> Result<Vec<AnswerScore>, ReadBackError> {
    let (print, context) = (print.clone(), context.clone());
    reference
        .call(move |model| score_in_context(model, &print, &context, formats))
        .await?
}

/// [`choose_serving`] on the reference's model thread.
pub async fn choose_serving_on(
    reference: &ModelHandle,
    print: &Fingerprint,
) -> Result<Serving, ReadBackError> {
    let print = print.clone();
    reference
        .call(move |model| choose_serving(model, &print))
        .await?
}

/// What [`score_fingerprint`] reads; a cache written by another version is read again.
/// 2: raw completions too; 3: tokens near the top counted; 4: a persona's context tried;
/// 5: tokens copied from an inferred context left out; 6: a sampling suspect's tokens
/// seen whole and its sampling probes' samples read; 7: the system prompt a model repeats
/// tried as a context, and its repetition not read; 8: echoes and loops not tried as one;
/// 9: tokens near the top under a repetition penalty counted; 10: under each stack's
/// penalties (whole-context repetition, presence, frequency), and other stacks' turn
/// formats tried as a context; 11: each format judged on two answers before eight; 12:
/// the reference's context stretched by YaRN tried; 13: and linearly.
const READ_BACK_VERSION: u32 = 13;

/// Scores cached with the print they came from and the reference that read them.
#[derive(Serialize, Deserialize)]
struct Cached {
    #[serde(default)]
    version: u32,
    reference: String,
    print_created_at: String,
    scores: Vec<AnswerScore>,
}

/// [`score_fingerprint`] on the model thread behind `reference`, reusing `cache` (a JSON
/// file) when it holds this print read back by this reference, and writing it otherwise.
pub async fn read_back(
    reference: &ModelHandle,
    print: &Fingerprint,
    cache: Option<&Path>,
) -> Result<Vec<AnswerScore>, ReadBackError> {
    let who = reference.info.source.clone();
    if let Some(path) = cache {
        let hit = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Cached>(&b).ok())
            .filter(|c| {
                c.version == READ_BACK_VERSION
                    && c.reference == who
                    && c.print_created_at == print.created_at
            });
        if let Some(c) = hit {
            return Ok(c.scores);
        }
    }
    let owned = print.clone();
    let scores = reference
        .call(move |model| score_fingerprint(model, &owned))
        .await??;
    if let Some(path) = cache {
        let record = Cached {
            version: READ_BACK_VERSION,
            reference: who,
            print_created_at: print.created_at.clone(),
            scores,
        };
        let io = |source| ReadBackError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Serializing plain numbers and strings cannot fail.
        let json = serde_json::to_vec(&record).unwrap_or_default();
        std::fs::write(path, json).map_err(io)?;
        return Ok(record.scores);
    }
    Ok(scores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_prompt_tokens_count_as_copied() {
        let prompt = [1, 2, 3, 4, 5, 6, 7];
        // 2 3 4 5 is in the prompt; 9 and 3 4 5 8 are not (a run of three is not enough).
        assert_eq!(
            copied_from(&prompt, &[9, 2, 3, 4, 5, 3, 4, 5, 8]),
            vec![false, true, true, true, true, false, false, false, false]
        );
        assert_eq!(copied_from(&prompt, &[1, 2]), vec![false, false]);
        assert!(copied_from(&[], &[1, 2, 3, 4]).iter().all(|c| !c));
    }
}
