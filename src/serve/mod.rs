//! `provenance serve-model`: a local model behind an OpenAI-compatible API, so any OpenAI
//! client (and our own suspect client) can talk to it. A thin HTTP shell: the model runs
//! on its own thread (see `model::runner`), handlers only translate.

mod error;
pub mod types;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::endpoint::ChatMessage;
use crate::model::tokenizer::Tokenizer;
use crate::model::{GenerateParams, Generation, LocalModel, ModelError, ModelHandle, Step};

pub use error::ServeError;
use types::*;

/// Most alternatives per position (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: usize = 20;
/// Default completion length when a request names none.
const DEFAULT_MAX_TOKENS: usize = 256;
/// Most choices per request.
const MAX_N: usize = 16;

pub struct ServerConfig {
    /// The name the model is served under.
    pub name: String,
    /// Injected as a system message when a chat request has none (a suspect hiding behind
    /// a persona).
    pub system_prompt: Option<String>,
    /// Used in place of every request's temperature: an API that ignores the caller's
    /// (as reasoning models' APIs and some proxies do), for testing scans against one.
    pub fixed_temperature: Option<f32>,
    /// Report the log-probabilities of the distribution sampled from, the listed tokens'
    /// `log_softmax(logits / T)` renormalised over them, as SGLang and llama.cpp's
    /// `post_sampling_probs` do, instead of the model's own: for testing scans against
    /// such stacks. Greedy requests (temperature 0) report the model's own.
    pub logprobs_after_temperature: bool,
}

struct AppState {
    model: ModelHandle,
    config: ServerConfig,
}

pub fn router(model: ModelHandle, config: ServerConfig) -> Router {
    let state = Arc::new(AppState { model, config });
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/tokenize", post(tokenize))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .with_state(state)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

async fn list_models(State(st): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let info = &st.model.info;
    Json(json!({
        "object": "list",
        "data": [{
            "id": st.config.name,
            "object": "model",
            "created": now(),
            "owned_by": "provenance",
            "meta": {
                "architecture": info.architecture,
                "format": info.format,
                "source": info.source_name(),
                "n_ctx": st.model.context_length,
                "n_vocab": info.vocab_size,
                "tokenizer": info.tokenizer,
                "chat_template": info.chat_template,
                "requantize": info.requantize,
            }
        }]
    }))
}

/// Settings shared by both endpoints, validated.
struct Sampling {
    params: GenerateParams,
    n: usize,
}

fn sampling(
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    stop: Option<Stop>,
    n: Option<usize>,
    top_logprobs: usize,
) -> Result<Sampling, ServeError> {
    if top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ServeError::bad_request(format!(
            "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {top_logprobs}"
        )));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) || temperature.is_nan() {
        return Err(ServeError::bad_request(format!(
            "temperature must be within [0, 2], got {temperature}"
        )));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ServeError::bad_request(format!(
            "top_p must be within (0, 1], got {top_p}"
        )));
    }
    let n = n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ServeError::bad_request(format!(
            "n must be within 1..={MAX_N}, got {n}"
        )));
    }
    let max_tokens = max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        return Err(ServeError::bad_request("max_tokens must be at least 1"));
    }
    Ok(Sampling {
        params: GenerateParams {
            max_tokens,
            temperature,
            top_p,
            seed,
            top_logprobs,
            stop: stop.map(Stop::into_vec).unwrap_or_default(),
        },
        n,
    })
}

/// Runs `n` generations of one prompt; choice `i` samples with `seed + i`.
fn generate_n(
    model: &mut LocalModel,
    ids: &[u32],
    s: &Sampling,
    after_temperature: bool,
) -> Result<Vec<Generation>, ModelError> {
    (0..s.n)
        .map(|i| {
            let mut p = s.params.clone();
            p.seed = p.seed.map(|seed| seed.wrapping_add(i as u64));
            let mut generation = model.generate(ids, &p, |_, _| true)?;
            if after_temperature && p.temperature > 0.0 {
                for step in &mut generation.steps {
                    report_after_temperature(step, p.temperature);
                }
            }
            Ok(generation)
        })
        .collect()
}

/// `step`'s log-probabilities as the distribution sampled at `temperature`, cut to the
/// listed tokens (and the chosen one) and renormalised over them.
fn report_after_temperature(step: &mut Step, temperature: f32) {
    let scaled = |lp: f32| lp / temperature;
    let chosen_listed = step.top.iter().any(|(id, _)| *id == step.token);
    let mut all: Vec<f32> = step.top.iter().map(|(_, lp)| scaled(*lp)).collect();
    if !chosen_listed {
        all.push(scaled(step.logprob));
    }
    let hi = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !hi.is_finite() {
        return;
    }
    let norm = hi + all.iter().map(|v| (v - hi).exp()).sum::<f32>().ln();
    step.logprob = scaled(step.logprob) - norm;
    for (_, lp) in &mut step.top {
        *lp = scaled(*lp) - norm;
    }
}

fn chat_messages(st: &AppState, req: &ChatRequest) -> Result<Vec<ChatMessage>, ServeError> {
    if req.messages.is_empty() {
        return Err(ServeError::bad_request("'messages' must not be empty"));
    }
    Ok(st
        .config
        .system_prompt
        .as_deref()
        .and_then(|sys| crate::endpoint::with_system_prompt(&req.messages, sys))
        .unwrap_or_else(|| req.messages.clone()))
}

/// One generated position in OpenAI's chat shape (also streamed chunk by chunk).
fn logprob_entry(tok: &Tokenizer, step: &Step) -> LogprobEntry {
    LogprobEntry {
        id: step.token,
        token: tok.token_string(step.token),
        bytes: tok.token_bytes(step.token).to_vec(),
        logprob: step.logprob,
        top_logprobs: step
            .top
            .iter()
            .map(|(id, lp)| TopLogprobEntry {
                id: *id,
                token: tok.token_string(*id),
                bytes: tok.token_bytes(*id).to_vec(),
                logprob: *lp,
            })
            .collect(),
    }
}

fn logprob_entries(model: &LocalModel, gen: &Generation) -> Vec<LogprobEntry> {
    gen.steps
        .iter()
        .map(|s| logprob_entry(&model.tokenizer, s))
        .collect()
}

async fn chat_completions(
    State(st): State<Arc<AppState>>,
    body: Result<Json<ChatRequest>, JsonRejection>,
) -> Result<Response, ServeError> {
    let Json(req) = body.map_err(ServeError::from)?;
    let want_logprobs = req.logprobs.unwrap_or(false);
    let top = if want_logprobs {
        req.top_logprobs.unwrap_or(0)
    } else if req.top_logprobs.is_some_and(|t| t > 0) {
        return Err(ServeError::bad_request("top_logprobs needs logprobs: true"));
    } else {
        0
    };
    let mut s = sampling(
        req.max_tokens,
        req.temperature,
        req.top_p,
        req.seed,
        req.stop.clone(),
        req.n,
        top,
    )?;
    if let Some(t) = st.config.fixed_temperature {
        s.params.temperature = t;
    }
    let messages = chat_messages(&st, &req)?;
    let name = st.config.name.clone();
    let after_temperature = st.config.logprobs_after_temperature;
    if req.stream.unwrap_or(false) {
        return stream_chat(st, messages, s, want_logprobs).await;
    }
    let template = st.model.info.chat_template.clone();
    let (choices, usage) = st
        .model
        .call(move |m| -> Result<_, ModelError> {
            let text = m.render_chat(&messages)?;
            let ids = m.encode_prompt(&text)?;
            let gens = generate_n(m, &ids, &s, after_temperature)?;
            let mut completion = 0;
            let choices: Vec<ChatChoice> = gens
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    completion += g.steps.len();
                    ChatChoice {
                        index: i,
                        message: AssistantMessage {
                            role: "assistant",
                            content: g.text.clone(),
                        },
                        logprobs: want_logprobs.then(|| ChatLogprobs {
                            content: logprob_entries(m, g),
                        }),
                        finish_reason: g.finish_reason.as_str(),
                    }
                })
                .collect();
            Ok((choices, usage(ids.len(), completion)))
        })
        .await??;
    Ok(Json(ChatResponse {
        id: request_id("chatcmpl"),
        object: "chat.completion",
        created: now(),
        model: name,
        choices,
        usage,
        chat_template: template,
    })
    .into_response())
}

fn usage(prompt: usize, completion: usize) -> UsageBody {
    UsageBody {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
    }
}

/// Server-sent events, one chunk per token, as OpenAI and llama.cpp stream them.
async fn stream_chat(
    st: Arc<AppState>,
    messages: Vec<ChatMessage>,
    s: Sampling,
    want_logprobs: bool,
) -> Result<Response, ServeError> {
    if s.n != 1 {
        return Err(ServeError::bad_request("stream supports n = 1 only"));
    }
    // Render and tokenize first, so bad input is a 400 rather than a broken stream.
    let prompt = {
        let messages = messages.clone();
        st.model
            .call(move |m| -> Result<Vec<u32>, ModelError> {
                let text = m.render_chat(&messages)?;
                let ids = m.encode_prompt(&text)?;
                let need = ids.len() + s.params.max_tokens;
                if need > m.context_length() {
                    return Err(ModelError::ContextOverflow {
                        prompt: ids.len(),
                        max_tokens: s.params.max_tokens,
                        context: m.context_length(),
                    });
                }
                Ok(ids)
            })
            .await??
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<serde_json::Value>(64);
    let id = request_id("chatcmpl");
    let name = st.config.name.clone();
    let created = now();
    let chunk = {
        let (id, name) = (id.clone(), name.clone());
        move |delta: serde_json::Value, logprobs: serde_json::Value, finish: serde_json::Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created, "model": name,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]
            })
        }
    };
    let params = s.params.clone();
    let params_temperature = params.temperature;
    let after_temperature = st.config.logprobs_after_temperature && params_temperature > 0.0;
    let job_chunk = chunk.clone();
    let handle = st.model.clone();
    let job = async move {
        handle
            .call(move |m| {
                let _ = tx.blocking_send(job_chunk(
                    json!({"role": "assistant", "content": ""}),
                    serde_json::Value::Null,
                    serde_json::Value::Null,
                ));
                // The tokenizer is shared, so steps can be rendered while the model generates.
                let tok = m.tokenizer.clone();
                let result = m.generate(&prompt, &params, |step, piece| {
                    let logprobs = if want_logprobs && after_temperature {
                        let mut step = step.clone();
                        report_after_temperature(&mut step, params_temperature);
                        json!({"content": [logprob_entry(&tok, &step)]})
                    } else if want_logprobs {
                        json!({"content": [logprob_entry(&tok, step)]})
                    } else {
                        serde_json::Value::Null
                    };
                    // A closed channel means the client went away: stop generating.
                    tx.blocking_send(job_chunk(
                        json!({"content": piece}),
                        logprobs,
                        serde_json::Value::Null,
                    ))
                    .is_ok()
                });
                let finish = match result {
                    Ok(g) => json!(g.finish_reason.as_str()),
                    Err(e) => json!(format!("error: {e}")),
                };
                let _ = tx.blocking_send(job_chunk(json!({}), serde_json::Value::Null, finish));
            })
            .await
    };
    // Enqueue now so that a full queue is answered with 429 before the stream starts.
    let pending = tokio::spawn(job);
    let events = async_stream::stream! {
        while let Some(v) = rx.recv().await {
            yield Ok::<_, Infallible>(Event::default().data(v.to_string()));
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    tokio::task::yield_now().await;
    if pending.is_finished() {
        if let Ok(Err(e)) = pending.await {
            return Err(e.into());
        }
    }
    Ok(Sse::new(events).into_response())
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Json<CompletionRequest>, JsonRejection>,
) -> Result<Response, ServeError> {
    let Json(req) = body.map_err(ServeError::from)?;
    if req.stream.unwrap_or(false) {
        return Err(ServeError::bad_request(
            "stream is supported on /v1/chat/completions only",
        ));
    }
    if req.prompt.is_empty() {
        return Err(ServeError::bad_request("'prompt' must not be empty"));
    }
    let top = req.logprobs.unwrap_or(0);
    let want_logprobs = req.logprobs.is_some();
    let mut s = sampling(
        req.max_tokens,
        req.temperature,
        req.top_p,
        req.seed,
        req.stop.clone(),
        req.n,
        top,
    )?;
    if let Some(t) = st.config.fixed_temperature {
        s.params.temperature = t;
    }
    let prompt = req.prompt.clone();
    let name = st.config.name.clone();
    let after_temperature = st.config.logprobs_after_temperature;
    let (choices, usage) = st
        .model
        .call(move |m| -> Result<_, ModelError> {
            let ids = m.encode_prompt(&prompt)?;
            let gens = generate_n(m, &ids, &s, after_temperature)?;
            let mut completion = 0;
            let tok = &m.tokenizer;
            let choices: Vec<CompletionChoice> = gens
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    completion += g.steps.len();
                    let logprobs = want_logprobs.then(|| {
                        let mut offset = prompt.len();
                        let mut lp = LegacyLogprobs {
                            tokens: Vec::new(),
                            token_logprobs: Vec::new(),
                            top_logprobs: Vec::new(),
                            text_offset: Vec::new(),
                        };
                        for st in &g.steps {
                            let t = tok.token_string(st.token);
                            lp.text_offset.push(offset);
                            offset += t.len();
                            lp.tokens.push(t);
                            lp.token_logprobs.push(st.logprob);
                            let mut map = BTreeMap::new();
                            for (id, l) in &st.top {
                                map.entry(tok.token_string(*id)).or_insert(*l);
                            }
                            lp.top_logprobs.push(map);
                        }
                        lp
                    });
                    CompletionChoice {
                        index: i,
                        text: g.text.clone(),
                        logprobs,
                        finish_reason: g.finish_reason.as_str(),
                    }
                })
                .collect();
            Ok((choices, usage(ids.len(), completion)))
        })
        .await??;
    Ok(Json(CompletionResponse {
        id: request_id("cmpl"),
        object: "text_completion",
        created: now(),
        model: name,
        choices,
        usage,
    })
    .into_response())
}

async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Json<TokenizeRequest>, JsonRejection>,
) -> Result<Json<TokenizeResponse>, ServeError> {
    let Json(req) = body.map_err(ServeError::from)?;
    let tokens = st
        .model
        .call(move |m| {
            if req.add_special {
                m.encode_prompt(&req.content)
            } else {
                m.tokenizer.encode(&req.content)
            }
        })
        .await??;
    Ok(Json(TokenizeResponse { tokens }))
}
