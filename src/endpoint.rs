//! The one interface every model sits behind: the local reference (candle) and a remote
//! suspect (OpenAI-compatible HTTP) answer the same probe requests, so the fingerprint
//! runner never cares where a model lives.

use serde::{Deserialize, Serialize};

/// A chat message in the OpenAI shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// `messages` with `system` in front as the system message, or `None` when the
/// conversation has a system message of its own: how a persona reaches a conversation,
/// whether an operator serves it (`serve-model --system-prompt`) or the read-back infers it.
pub fn with_system_prompt(messages: &[ChatMessage], system: &str) -> Option<Vec<ChatMessage>> {
    if messages.iter().any(|m| m.role == "system") {
        return None;
    }
    let mut with = Vec::with_capacity(messages.len() + 1);
    with.push(ChatMessage {
        role: "system".to_string(),
        content: system.to_string(),
    });
    with.extend(messages.iter().cloned());
    Some(with)
}

/// What to send: a chat conversation or a raw completion prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "form", rename_all = "snake_case")]
pub enum PromptForm {
    Chat { messages: Vec<ChatMessage> },
    Raw { prompt: String },
}

impl PromptForm {
    /// Whether the prompt is sent as raw text (no chat template).
    pub fn is_raw(&self) -> bool {
        matches!(self, PromptForm::Raw { .. })
    }
}

/// One request to a model, independent of transport.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeRequest {
    pub prompt: PromptForm,
    pub max_tokens: usize,
    /// 0.0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    /// How many alternatives per generated position (0 = no log-probabilities asked).
    pub top_logprobs: usize,
    pub stop: Vec<String>,
}

/// One alternative at a generated position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// Token id when the endpoint reports it (llama.cpp and our own server do).
    pub id: Option<u32>,
    pub token: String,
    /// The token's raw bytes; tokens are aligned across tokenizers by these.
    pub bytes: Vec<u8>,
    pub logprob: f32,
}

/// One generated position: the token chosen and the top alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprobs {
    pub id: Option<u32>,
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<TopLogprob>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResponse {
    pub text: String,
    /// Empty when the endpoint gives no log-probabilities.
    pub tokens: Vec<TokenLogprobs>,
    pub usage: Option<Usage>,
    pub finish_reason: Option<String>,
    pub latency_ms: u64,
}

/// What an endpoint can do, detected once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub chat: bool,
    pub raw_completion: bool,
    /// Largest `top_logprobs` accepted (0 = no log-probabilities).
    pub max_top_logprobs: usize,
    pub usage: bool,
    pub tokenize: bool,
    /// Greedy requests (temperature 0) gave different answers under different seeds: the
    /// endpoint samples whatever temperature it is asked for.
    #[serde(default)]
    pub ignores_temperature: bool,
    /// Request parameters the endpoint refused, each with what the client sends instead
    /// (`max_tokens (sent as max_completion_tokens)`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_params: Vec<String>,
}

fn refused_summary(refused: &[String]) -> String {
    if refused.is_empty() {
        String::new()
    } else {
        format!("; refused {}", refused.join(", "))
    }
}

impl Capabilities {
    /// One line for a report: what the endpoint offered.
    pub fn summary(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        format!(
            "chat completions {}, raw completions {}, log-probabilities {}, tokenize {}, usage counts {}, temperature 0 honoured {}",
            yes(self.chat),
            yes(self.raw_completion),
            match self.max_top_logprobs {
                0 => "none".to_string(),
                k => format!("top-{k}"),
            },
            yes(self.tokenize),
            yes(self.usage),
            yes(!self.ignores_temperature)
        ) + &refused_summary(&self.refused_params)
    }

    /// What a scan cannot tell through an endpoint that offers only this.
    pub fn limits(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.max_top_logprobs == 0 {
            out.push(
                "no log-probabilities: the logit signals, the shift test, the quantized forms \
                 and the early stop are unavailable; same weights are judged from the answers' \
                 text alone",
            );
        }
        if !self.raw_completion {
            out.push(
                "no raw completions: every probe passes through the suspect's chat template \
                 and any hidden system prompt, which move all answers the same way",
            );
        }
        if !self.tokenize && !self.usage {
            out.push("no tokenize endpoint and no usage counts: the tokenizer is not compared");
        }
        if self.ignores_temperature {
            out.push(
                "temperature not honoured (greedy requests answered differently under different \
                 seeds): every answer is a sample, so the first generated position is compared \
                 as given and later ones on another prefix, exact-answer and greedy-token \
                 shares fall for a copy too, and text reads nearer `derived` than it is",
            );
        }
        out
    }
}

/// What a scan may use of a suspect's API: the whole of it, or only what a restricted
/// provider offers. The client applies it to what it detects and to every request, so a
/// restricted mode takes the very path a restricted API would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccessMode {
    /// Whatever the endpoint offers.
    #[default]
    Full,
    /// `/v1/chat/completions` only: no raw completions, no `/tokenize`.
    ChatOnly,
    /// No log-probabilities.
    NoLogprobs,
    /// Chat only, without log-probabilities (what most hosted APIs give).
    ChatOnlyNoLogprobs,
}

impl AccessMode {
    pub const ALL: [AccessMode; 4] = [
        AccessMode::Full,
        AccessMode::ChatOnly,
        AccessMode::NoLogprobs,
        AccessMode::ChatOnlyNoLogprobs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Full => "full",
            AccessMode::ChatOnly => "chat-only",
            AccessMode::NoLogprobs => "no-logprobs",
            AccessMode::ChatOnlyNoLogprobs => "chat-only-no-logprobs",
        }
    }

    pub fn allows_raw(self) -> bool {
        matches!(self, AccessMode::Full | AccessMode::NoLogprobs)
    }

    pub fn allows_logprobs(self) -> bool {
        matches!(self, AccessMode::Full | AccessMode::ChatOnly)
    }

    /// `caps` cut to what this mode lets a scan use.
    pub fn restrict(self, mut caps: Capabilities) -> Capabilities {
        if !self.allows_raw() {
            caps.raw_completion = false;
            caps.tokenize = false;
        }
        if !self.allows_logprobs() {
            caps.max_top_logprobs = 0;
        }
        caps
    }
}

impl std::str::FromStr for AccessMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        AccessMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown access mode {s:?}: one of {}",
                    AccessMode::ALL.map(AccessMode::as_str).join(", ")
                )
            })
    }
}

impl std::fmt::Display for AccessMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request failed, classified so a person knows what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum EndpointError {
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("rate limited: {0}")]
    RateLimited(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("prompt exceeds the context window: {0}")]
    ContextOverflow(String),
    #[error("server error: {0}")]
    Server(String),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("refused by the outbound URL guard: {0}")]
    Forbidden(String),
    #[error("not supported by this endpoint: {0}")]
    Unsupported(String),
}

impl EndpointError {
    /// The same kind of error with its message rewritten (to scrub or shorten it).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        match self {
            Self::Auth(m) => Self::Auth(f(&m)),
            Self::RateLimited(m) => Self::RateLimited(f(&m)),
            Self::BadRequest(m) => Self::BadRequest(f(&m)),
            Self::ContextOverflow(m) => Self::ContextOverflow(f(&m)),
            Self::Server(m) => Self::Server(f(&m)),
            Self::Malformed(m) => Self::Malformed(f(&m)),
            Self::Timeout(m) => Self::Timeout(f(&m)),
            Self::Connection(m) => Self::Connection(f(&m)),
            Self::Forbidden(m) => Self::Forbidden(f(&m)),
            Self::Unsupported(m) => Self::Unsupported(f(&m)),
        }
    }

    /// Worth retrying with backoff (429, 5xx, connection trouble, timeouts).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited(_) | Self::Server(_) | Self::Timeout(_) | Self::Connection(_)
        )
    }
}

/// Any model the runner can fingerprint.
#[async_trait::async_trait]
pub trait ModelEndpoint: Send + Sync {
    /// A short human-readable description (file, URL and model name).
    fn describe(&self) -> String;
    /// Asks cost nothing (the model runs in this process), so the runner may ask extra
    /// questions that only help comparisons; a remote endpoint's asks cost money.
    fn asks_are_free(&self) -> bool {
        false
    }
    async fn capabilities(&self) -> Result<Capabilities, EndpointError>;
    async fn run(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError>;
    /// Token ids of `text` without special tokens, when the endpoint can say.
    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EndpointError>;
}
