//! `HttpModel`: a suspect model behind an OpenAI-compatible HTTP API.
//!
//! Every request goes through the same path: outbound URL guard (the host is resolved once
//! and the client is pinned to the checked address), concurrency limit, rate limit, one
//! attempt bounded in time and size, and retries with backoff on transient failures.
//!
//! Redirects are never followed: a 3xx is an error that names its target, so a person can
//! point `base_url` at the final address (which then passes the guard on its own).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::Method;
use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};
use url::{Host, Url};

use super::params::{self, Param, Refused};
use super::parse::{self, ErrorContext};
use super::retry::{backoff_delay, parse_retry_after};
use super::url_guard::{GuardError, UrlGuard};
use crate::endpoint::{
    AccessMode, Capabilities, ChatMessage, EndpointError, ModelEndpoint, ProbeRequest,
    ProbeResponse, PromptForm,
};

/// Why an `HttpModel` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SuspectError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("environment variable {0} (named by api_key_env) is not set or is empty")]
    MissingApiKey(String),
    #[error(
        "the API key in environment variable {0} contains characters not allowed in an HTTP header"
    )]
    InvalidApiKey(String),
    #[error("invalid suspect configuration: {0}")]
    Config(String),
}

impl From<SuspectError> for EndpointError {
    fn from(err: SuspectError) -> Self {
        match err {
            SuspectError::Guard(guard) => guard.into(),
            SuspectError::MissingApiKey(_) | SuspectError::InvalidApiKey(_) => {
                EndpointError::Auth(err.to_string())
            }
            SuspectError::Config(_) => EndpointError::BadRequest(err.to_string()),
        }
    }
}

/// How to reach and how hard to push one suspect endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpModelConfig {
    /// The OpenAI-compatible base, usually ending in `/v1`.
    pub base_url: String,
    pub model: String,
    /// The NAME of the environment variable holding the API key (never the key itself).
    pub api_key_env: Option<String>,
    /// The URL prefix the key may be sent under (`crate::secrets::url_within`); a request
    /// elsewhere goes without it. `None` sends it wherever `base_url` points (the command
    /// line, where the person running it named both).
    pub api_key_scope: Option<Url>,
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response bytes.
    pub read_timeout: Duration,
    /// Longest time for one attempt, from sending to the last body byte.
    pub total_timeout: Duration,
    /// Retries after the first attempt, for 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Longest wait honoured from a `Retry-After` header; longer asks are cut to this.
    pub retry_after_cap: Duration,
    /// Requests per second to this endpoint, retries included; 0 means unlimited.
    pub requests_per_second: f64,
    /// Requests in flight at once.
    pub max_concurrency: usize,
    /// Largest response body read; a longer one is aborted as malformed.
    pub max_response_bytes: usize,
    /// Lets the client reach loopback and private addresses (tests, local demos).
    pub allow_private_targets: bool,
    /// What of the API the client may use (`eval --access`, `scan --access`).
    pub access: AccessMode,
}

impl HttpModelConfig {
    /// Defaults suited to a paid public API: patient timeouts, gentle pacing.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            api_key_scope: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(180),
            max_retries: 4,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
            requests_per_second: 5.0,
            max_concurrency: 4,
            max_response_bytes: 16 * 1024 * 1024,
            allow_private_targets: false,
            access: AccessMode::Full,
        }
    }
}

/// The key, kept out of `Debug` output and logs; its value is kept to scrub it from any
/// text the server sends back.
#[derive(Clone)]
struct ApiKey {
    header: HeaderValue,
    value: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// A reqwest resolver that resolves nothing: the only name the client may reach is
/// pinned with `ClientBuilder::resolve` to the address the guard checked, so any other
/// lookup is a bug or an attack and fails.
struct NoLookups;

impl reqwest::dns::Resolve for NoLookups {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let name = name.as_str().to_string();
        Box::pin(async move {
            Err(format!(
                "refusing to look up {name}: only the checked suspect host may be contacted"
            )
            .into())
        })
    }
}

/// The URLs one endpoint is reached at.
#[derive(Debug, Clone)]
struct Routes {
    base: Url,
    chat: Url,
    completions: Url,
    models: Url,
    /// llama.cpp serves `/tokenize` at the server root, not under `/v1`.
    tokenize: Url,
}

impl Routes {
    fn new(mut base: Url) -> Result<Self, SuspectError> {
        if base.query().is_some() || base.fragment().is_some() {
            return Err(SuspectError::Config(
                "base_url must not have a query string or fragment".into(),
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let join = |url: &Url, path: &str| {
            url.join(path)
                .map_err(|err| SuspectError::Config(format!("cannot join {path} to {url}: {err}")))
        };
        let root = match base.path().strip_suffix("v1/") {
            Some(parent) if parent.ends_with('/') => {
                let mut root = base.clone();
                root.set_path(parent);
                root
            }
            _ => base.clone(),
        };
        Ok(Self {
            chat: join(&base, "chat/completions")?,
            completions: join(&base, "completions")?,
            models: join(&base, "models")?,
            tokenize: join(&root, "tokenize")?,
            base,
        })
    }
}

/// A completed HTTP exchange with a 2xx status.
struct Reply {
    body: Vec<u8>,
    content_type: String,
    latency: Duration,
}

/// A failed attempt, with the server's `Retry-After` when it sent one.
struct Failure {
    error: EndpointError,
    retry_after: Option<Duration>,
}

impl From<EndpointError> for Failure {
    fn from(error: EndpointError) -> Self {
        Self {
            error,
            retry_after: None,
        }
    }
}

/// Bodies of error responses are only read for their message; a huge one is cut short
/// instead of turning a clear status into a size error.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Top-k sizes tried when detecting log-probability support, largest first.
const TOP_LOGPROBS_LADDER: [usize; 4] = [20, 10, 5, 1];
const LADDER_PING_TOKENS: usize = 4;

/// A suspect model behind an OpenAI-compatible API.
pub struct HttpModel {
    config: HttpModelConfig,
    /// The routes under the base URL as given.
    routes: Routes,
    /// The routes requests go to: `routes`, or those under `/v1/` for a base URL given as
    /// a bare host whose server answers there (see `api_routes`).
    api: OnceCell<Routes>,
    api_key: Option<ApiKey>,
    /// Every value to keep out of text the server sends: this client's key and every
    /// configured secret, read once here rather than from the environment per token.
    scrubbed: Vec<String>,
    guard: UrlGuard,
    /// Built on first use, after the host is resolved and checked.
    client: OnceCell<reqwest::Client>,
    limiter: Option<DefaultDirectRateLimiter>,
    permits: Semaphore,
    capabilities: OnceCell<Capabilities>,
    /// Request parameters this server answered 400 to, left out or renamed since.
    refused: Refused,
    requests_sent: AtomicU64,
}

impl std::fmt::Debug for HttpModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpModel")
            .field("base_url", &self.routes.base.as_str())
            .field("model", &self.config.model)
            .field("api_key_env", &self.config.api_key_env)
            .field("api_key", &self.api_key)
            .field("allow_private_targets", &self.config.allow_private_targets)
            .finish_non_exhaustive()
    }
}

impl HttpModel {
    /// Checks the configuration and the base URL (without any lookup) and reads the API
    /// key from the environment. Names are resolved on the first request.
    pub fn new(config: HttpModelConfig) -> Result<Self, SuspectError> {
        validate(&config)?;
        let guard = UrlGuard::new(config.allow_private_targets);
        let routes = Routes::new(guard.check_url(&config.base_url)?)?;
        if let Some(scope) = &config.api_key_scope {
            if !crate::secrets::url_within(scope, &routes.base) {
                return Err(SuspectError::Config(
                    "the API key may not be sent to this base URL (outside its binding)".into(),
                ));
            }
        }
        let api_key = match &config.api_key_env {
            Some(var) => Some(read_api_key(var)?),
            None => None,
        };
        let limiter = rate_limiter(config.requests_per_second);
        let mut scrubbed = crate::secrets::configured_values();
        scrubbed.extend(api_key.as_ref().map(|k| k.value.clone()));
        Ok(Self {
            scrubbed,
            permits: Semaphore::new(config.max_concurrency),
            config,
            routes,
            api: OnceCell::new(),
            api_key,
            guard,
            client: OnceCell::new(),
            limiter,
            capabilities: OnceCell::new(),
            refused: Refused::default(),
            requests_sent: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &HttpModelConfig {
        &self.config
    }

    /// HTTP requests sent so far, retries and capability detection included (what a scan
    /// cost on a paid API).
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Ordering::Relaxed)
    }

    /// Where the API lives. A base URL given as a bare host (`http://host:8000`) most often
    /// means the OpenAI convention's `/v1/`: vLLM, TGI, SGLang and Ollama serve nothing at
    /// the root, and llama.cpp serves its own, differently shaped `/completions` there. So
    /// for a bare host the server's `/v1/models` is asked once; where it answers with a
    /// model list, every request goes under `/v1/`, otherwise under the root as given.
    async fn api_routes(&self) -> &Routes {
        self.api
            .get_or_init(|| async {
                if self.routes.base.path() != "/" {
                    return self.routes.clone();
                }
                let v1 = self.routes.base.join("v1/").ok();
                let Some(v1) = v1.and_then(|url| Routes::new(url).ok()) else {
                    return self.routes.clone();
                };
                match self.send(Method::GET, &v1.models, None).await {
                    Ok(reply) if parse::parse_models(&reply.body).is_ok() => {
                        tracing::info!(base = %v1.base, "the bare host serves the API under /v1/");
                        v1
                    }
                    _ => self.routes.clone(),
                }
            })
            .await
    }

    /// Model ids the server lists at `/v1/models`.
    pub async fn list_models(&self) -> Result<Vec<String>, EndpointError> {
        let url = self.api_routes().await.models.clone();
        let reply = self.send(Method::GET, &url, None).await?;
        parse::parse_models(&reply.body).map_err(|err| self.malformed(&url, &reply, err))
    }

    /// The reqwest client, built once the host has been resolved and every address
    /// checked; the client connects only to that address.
    async fn client(&self) -> Result<&reqwest::Client, EndpointError> {
        self.client
            .get_or_try_init(|| async {
                let base = &self.routes.base;
                let addr =
                    tokio::time::timeout(self.config.connect_timeout, self.guard.resolve(base))
                        .await
                        .map_err(|_| {
                            EndpointError::Timeout(format!(
                                "resolving {} took longer than connect_timeout ({:?})",
                                base.host_str().unwrap_or_default(),
                                self.config.connect_timeout
                            ))
                        })??;
                let mut builder = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    // A proxy would make its own lookup and defeat the pinning.
                    .no_proxy()
                    .connect_timeout(self.config.connect_timeout)
                    .read_timeout(self.config.read_timeout)
                    .user_agent(concat!("provenance/", env!("CARGO_PKG_VERSION")))
                    .dns_resolver(Arc::new(NoLookups));
                if let Some(Host::Domain(name)) = base.host() {
                    builder = builder.resolve(name, addr);
                }
                tracing::debug!(base = %base, %addr, "suspect client pinned to checked address");
                builder.build().map_err(|err| {
                    EndpointError::Connection(format!("could not build the HTTP client: {err}"))
                })
            })
            .await
    }

    /// One request with retries; returns the 2xx reply or the classified error.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<Reply, EndpointError> {
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(method.clone(), url, body).await {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            if !failure.error.is_transient() {
                return Err(failure.error);
            }
            if attempt > self.config.max_retries {
                return Err(if attempt > 1 {
                    append(
                        failure.error,
                        &format!(" (gave up after {attempt} attempts)"),
                    )
                } else {
                    failure.error
                });
            }
            let delay = self.retry_delay(attempt, failure.retry_after);
            tracing::warn!(
                url = %url,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %failure.error,
                "suspect request failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) if !wait.is_zero() => {
                if wait > self.config.retry_after_cap {
                    tracing::warn!(
                        asked_s = wait.as_secs(),
                        cap_s = self.config.retry_after_cap.as_secs(),
                        "Retry-After longer than retry_after_cap; waiting the cap"
                    );
                }
                wait.min(self.config.retry_after_cap)
            }
            _ => backoff_delay(
                attempt,
                self.config.backoff_base,
                self.config.backoff_max,
                rand::random::<f64>(),
            ),
        }
    }

    /// One attempt: waits for a concurrency slot and the rate limiter, then sends and
    /// reads the whole body within `total_timeout`.
    async fn attempt(
        &self,
        method: Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<Reply, Failure> {
        let client = self.client().await?;
        let _permit = self.permits.acquire().await.map_err(|_| {
            EndpointError::Connection("the suspect client is shutting down".to_string())
        })?;
        if let Some(limiter) = &self.limiter {
            limiter.until_ready().await;
        }
        self.requests_sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let exchange = async {
            let mut request = client
                .request(method, url.clone())
                .header(ACCEPT, "application/json, text/event-stream");
            if let Some(key) = &self.api_key {
                let in_scope = self
                    .config
                    .api_key_scope
                    .as_ref()
                    .is_none_or(|scope| crate::secrets::url_within(scope, url));
                if in_scope {
                    request = request.header(AUTHORIZATION, key.header.clone());
                }
            }
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
            let response = request
                .send()
                .await
                .map_err(|err| self.transport_error(url, &err))?;
            self.read_response(url, response, started).await
        };
        match tokio::time::timeout(self.config.total_timeout, exchange).await {
            Ok(result) => result.map_err(|failure| Failure {
                error: self.scrub_error(failure.error),
                retry_after: failure.retry_after,
            }),
            Err(_) => Err(EndpointError::Timeout(format!(
                "no complete response from {url} within total_timeout ({:?})",
                self.config.total_timeout
            ))
            .into()),
        }
    }

    fn scrub_text(&self, text: &str) -> String {
        crate::secrets::scrub_values(text, &self.scrubbed)
    }

    fn scrub_error(&self, err: EndpointError) -> EndpointError {
        err.map_message(|m| self.scrub_text(m))
    }

    /// An answer whose text (or any token of it) holds a secret: the server echoed it.
    fn scrub_response(&self, mut response: ProbeResponse) -> ProbeResponse {
        let clean = self.scrub_text(&response.text);
        if clean != response.text {
            response.text = clean;
            // The key may be spread over several tokens; none of them is kept.
            for token in &mut response.tokens {
                token.token = crate::secrets::REDACTED.to_string();
                token.bytes = token.token.as_bytes().to_vec();
                token.top.clear();
            }
        }
        for token in &mut response.tokens {
            let clean = self.scrub_text(&token.token);
            if clean != token.token {
                token.bytes = clean.as_bytes().to_vec();
                token.token = clean;
            }
            for alt in &mut token.top {
                let clean = self.scrub_text(&alt.token);
                if clean != alt.token {
                    alt.bytes = clean.as_bytes().to_vec();
                    alt.token = clean;
                }
            }
        }
        response
    }

    async fn read_response(
        &self,
        url: &Url,
        response: reqwest::Response,
        started: Instant,
    ) -> Result<Reply, Failure> {
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after =
            header(RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        if status.is_redirection() {
            let target = header(LOCATION).unwrap_or_else(|| "(no Location header)".into());
            return Err(EndpointError::Forbidden(format!(
                "{status} from {url} redirects to {target}; redirects are not followed, \
                 set base_url to the final address"
            ))
            .into());
        }
        if !status.is_success() {
            let limit = ERROR_BODY_LIMIT.min(self.config.max_response_bytes);
            // The status says what went wrong; a body that breaks off only loses detail.
            let body = read_capped(url, response, limit, true)
                .await
                .unwrap_or_default();
            // Scrubbed before it is cut to an excerpt, so no cut leaves part of a key.
            let body = self
                .scrub_text(&String::from_utf8_lossy(&body))
                .into_bytes();
            return Err(Failure {
                error: parse::classify_error(status.as_u16(), &body, &self.error_context(url)),
                retry_after,
            });
        }
        let body = read_capped(url, response, self.config.max_response_bytes, false).await?;
        Ok(Reply {
            body,
            content_type,
            latency: started.elapsed(),
        })
    }

    fn error_context(&self, url: &Url) -> ErrorContext {
        ErrorContext {
            url: url.to_string(),
            api_key_env: self.config.api_key_env.clone(),
        }
    }

    fn transport_error(&self, url: &Url, err: &reqwest::Error) -> EndpointError {
        let detail = error_chain(err);
        if err.is_timeout() {
            EndpointError::Timeout(format!(
                "{url}: {detail} (connect_timeout {:?}, read_timeout {:?})",
                self.config.connect_timeout, self.config.read_timeout
            ))
        } else if err.is_connect() {
            EndpointError::Connection(format!("could not connect to {url}: {detail}"))
        } else {
            EndpointError::Connection(format!("request to {url} failed: {detail}"))
        }
    }

    fn malformed(&self, url: &Url, reply: &Reply, err: parse::ParseError) -> EndpointError {
        match EndpointError::from(err) {
            EndpointError::Malformed(msg) => EndpointError::Malformed(format!(
                "{url} answered {} with a body that does not parse: {msg}; it starts: {}",
                if reply.content_type.is_empty() {
                    "no content type"
                } else {
                    &reply.content_type
                },
                parse::snippet(
                    self.scrub_text(&String::from_utf8_lossy(&reply.body))
                        .as_bytes(),
                    200
                )
            )),
            other => other,
        }
    }

    /// The URL and JSON body for a request, and whether it is a chat request. The body is
    /// serialised straight from f32 fields so that 0.7 goes out as `0.7`.
    fn generation_body(&self, routes: &Routes, request: &ProbeRequest) -> (Url, Vec<u8>, bool) {
        let refused = |p| self.refused.contains(p);
        let common = |top| GenerationBody {
            model: &self.config.model,
            messages: None,
            prompt: None,
            max_tokens: (!refused(Param::MaxTokens)).then_some(request.max_tokens),
            max_completion_tokens: refused(Param::MaxTokens).then_some(request.max_tokens),
            temperature: (!refused(Param::Temperature)).then_some(request.temperature),
            top_p: (!refused(Param::TopP)).then_some(request.top_p),
            seed: request.seed.filter(|_| !refused(Param::Seed)),
            stop: (!request.stop.is_empty() && !refused(Param::Stop))
                .then_some(request.stop.as_slice()),
            logprobs: None,
            top_logprobs: top,
            stream: false,
        };
        let top = request.top_logprobs;
        let (url, body, chat) = match &request.prompt {
            PromptForm::Chat { messages } => {
                let mut body = common((top > 0).then_some(top));
                body.messages = Some(messages);
                body.logprobs = (top > 0).then_some(LogprobsField::Flag(true));
                (&routes.chat, body, true)
            }
            PromptForm::Raw { prompt } => {
                let mut body = common(None);
                body.prompt = Some(prompt);
                body.logprobs = (top > 0).then_some(LogprobsField::Count(top));
                (&routes.completions, body, false)
            }
        };
        (url.clone(), to_json(&body), chat)
    }

    /// The parameters a request sends that a server may refuse.
    fn refusable_params(&self, request: &ProbeRequest) -> Vec<Param> {
        let mut sent = vec![Param::TopP, Param::MaxTokens, Param::Temperature];
        if request.seed.is_some() {
            sent.push(Param::Seed);
        }
        if !request.stop.is_empty() {
            sent.push(Param::Stop);
        }
        sent.retain(|&p| !self.refused.contains(p));
        sent
    }

    /// Sends a generation request; a 400 naming a parameter the request sent is answered
    /// by leaving that parameter out (or renaming it) for this and every later request.
    /// A remedy that brings back the same refusal is undone.
    async fn send_generation(
        &self,
        routes: &Routes,
        request: &ProbeRequest,
    ) -> Result<(Url, Reply, bool), EndpointError> {
        let mut tried: Option<(Param, String)> = None;
        loop {
            let (url, body, chat) = self.generation_body(routes, request);
            let message = match self.send(Method::POST, &url, Some(&body)).await {
                Ok(reply) => return Ok((url, reply, chat)),
                Err(EndpointError::BadRequest(message)) => message,
                Err(err) => return Err(err),
            };
            if let Some((param, before)) = tried.take() {
                if before == message {
                    self.refused.remove(param);
                    return Err(EndpointError::BadRequest(message));
                }
            }
            match params::named_in(&message, &self.refusable_params(request)) {
                Some(param) if self.refused.insert(param) => {
                    tracing::warn!(
                        endpoint = %self.describe(),
                        parameter = param.name(),
                        "the server refused a request parameter; sending without it from now on"
                    );
                    tried = Some((param, message));
                }
                _ => return Err(EndpointError::BadRequest(message)),
            }
        }
    }

    /// Detection probe: `Ok(None)` when the server says it does not support the request.
    async fn probe(&self, request: &ProbeRequest) -> Result<Option<ProbeResponse>, EndpointError> {
        match self.run(request).await {
            Ok(response) => Ok(Some(response)),
            Err(err) if means_unsupported(&err) => {
                tracing::debug!(error = %err, "capability probe rejected");
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    async fn detect_capabilities(&self) -> Result<Capabilities, EndpointError> {
        let chat_ping = ping(PromptForm::Chat {
            messages: vec![ChatMessage {
                role: "user".into(),
                content: "Hello".into(),
            }],
        });
        let raw_ping = ping(PromptForm::Raw {
            prompt: "Hello".into(),
        });
        let mut caps = Capabilities::default();

        let chat_error = match self.run(&chat_ping).await {
            Ok(response) => {
                caps.chat = true;
                caps.usage |= response.usage.is_some();
                None
            }
            Err(err) if means_unsupported(&err) => Some(err),
            Err(err) => return Err(err),
        };
        if self.config.access.allows_raw() {
            if let Some(response) = self.probe(&raw_ping).await? {
                caps.raw_completion = true;
                caps.usage |= response.usage.is_some();
            }
        }
        if let (Some(err), false) = (chat_error, caps.raw_completion) {
            // Neither form works: most likely a wrong model name or base URL.
            return Err(err);
        }

        let form = if caps.chat { chat_ping } else { raw_ping };
        let ladder: &[usize] = if self.config.access.allows_logprobs() {
            &TOP_LOGPROBS_LADDER
        } else {
            &[]
        };
        for &top in ladder {
            // A few positions: one list alone cannot tell a server's cap from a sampler's cut.
            let request = ProbeRequest {
                top_logprobs: top,
                max_tokens: LADDER_PING_TOKENS,
                ..form.clone()
            };
            let Some(response) = self.probe(&request).await? else {
                continue;
            };
            // Accepted: the server may still give fewer alternatives than asked, or none.
            let lengths: Vec<usize> = response
                .tokens
                .iter()
                .map(|t| {
                    t.top
                        .iter()
                        .filter(|a| a.logprob.is_finite())
                        .count()
                        .min(top)
                })
                .collect();
            let longest = lengths.iter().copied().max().unwrap_or(0);
            // One certain token and every other ruled out at each position, though more were
            // asked for: the probabilities after a greedy sampler (llama.cpp's
            // `post_sampling_probs`), which say which token came and nothing about the
            // model's distribution.
            let after_greedy = top >= 2
                && longest == 1
                && response.tokens.iter().all(|t| {
                    t.top
                        .iter()
                        .any(|a| a.logprob.is_finite() && a.logprob >= -1e-6)
                });
            // Lists of one length are the server's cap (or all that was asked); lists whose
            // length varies are what a sampler kept at each position (top-p, min-p after a
            // temperature), so the server takes `top` and a later position may list more.
            let listed = if lengths.windows(2).all(|w| w[0] == w[1]) {
                longest
            } else {
                top
            };
            if after_greedy {
                tracing::warn!(
                    endpoint = %self.describe(),
                    "log-probabilities are a greedy sampler's (one token at probability 1): not used"
                );
            }
            caps.max_top_logprobs = if after_greedy { 0 } else { listed };
            break;
        }

        caps.ignores_temperature = self
            .ignores_temperature(caps.chat, caps.max_top_logprobs)
            .await;
        caps.tokenize = self.config.access.allows_raw()
            && match self.tokenize_once("Hello world").await {
                Ok(tokens) => !tokens.is_empty(),
                Err(err) if err.is_transient() => return Err(err),
                Err(_) => false,
            };
        caps.refused_params = self.refused.described();
        let caps = self.config.access.restrict(caps);
        tracing::info!(endpoint = %self.describe(), ?caps, "detected suspect capabilities");
        Ok(caps)
    }

    /// Three greedy requests for the same short answer under different seeds: an endpoint
    /// that honours temperature 0 gives one answer, one that samples whatever it is asked
    /// gives several. A failed request tells nothing, so it counts as honoured.
    ///
    /// Greedy answers may still differ: replicas behind a load balancer on other hardware
    /// or quantizations, batches that change a GPU's arithmetic. Where the server lists
    /// alternatives (`top`), answers that took their own list's first token at every
    /// position are greedy however they differ; a sampler that made them differ took
    /// another token somewhere.
    async fn ignores_temperature(&self, chat: bool, top: usize) -> bool {
        let prompt = if chat {
            PromptForm::Chat {
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "Write one sentence about the sea.".into(),
                }],
            }
        } else {
            PromptForm::Raw {
                prompt: "Once upon a time, by the sea,".into(),
            }
        };
        let mut answers = Vec::with_capacity(3);
        for seed in 1..=3 {
            let request = ProbeRequest {
                max_tokens: 16,
                seed: Some(seed),
                top_logprobs: top.min(5),
                ..ping(prompt.clone())
            };
            match self.run(&request).await {
                Ok(response) => answers.push(response),
                Err(err) => {
                    tracing::debug!(error = %err, "temperature check failed; taken as honoured");
                    return false;
                }
            }
        }
        let differ = answers.windows(2).any(|w| w[0].text != w[1].text);
        if differ && answers.iter().all(took_its_first_choice) {
            tracing::info!(
                endpoint = %self.describe(),
                "greedy answers differ, each on its own list's first token: replicas or batches, not sampling"
            );
            return false;
        }
        differ
    }

    async fn tokenize_once(&self, text: &str) -> Result<Vec<u32>, EndpointError> {
        let url = self.api_routes().await.tokenize.clone();
        let body = to_json(&serde_json::json!({ "content": text, "add_special": false }));
        let reply = self
            .send(Method::POST, &url, Some(&body))
            .await
            .map_err(|err| match err {
                EndpointError::Unsupported(msg) | EndpointError::BadRequest(msg) => {
                    EndpointError::Unsupported(format!(
                        "{msg} (token counts need llama.cpp's /tokenize at the server root)"
                    ))
                }
                other => other,
            })?;
        parse::parse_tokenize(&reply.body).map_err(|err| self.malformed(&url, &reply, err))
    }

    /// One generation request, parsed (secrets not yet scrubbed).
    async fn generate(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError> {
        let access = self.config.access;
        if request.prompt.is_raw() && !access.allows_raw() {
            return Err(EndpointError::Unsupported(format!(
                "raw completions are not used in access mode {access}"
            )));
        }
        let mut request = request.clone();
        if !access.allows_logprobs() {
            request.top_logprobs = 0;
        }
        let (url, reply, chat) = self
            .send_generation(self.api_routes().await, &request)
            .await?;
        let parsed = if reply.content_type.contains("text/event-stream") {
            parse::parse_stream(&reply.body)
        } else if chat {
            parse::parse_chat_completion(&reply.body)
        } else {
            parse::parse_completion(&reply.body)
        };
        let mut response = parsed.map_err(|err| self.malformed(&url, &reply, err))?;
        response.latency_ms = u64::try_from(reply.latency.as_millis()).unwrap_or(u64::MAX);
        Ok(response)
    }
}

#[async_trait]
impl ModelEndpoint for HttpModel {
    fn describe(&self) -> String {
        format!("{} (model {})", self.routes.base, self.config.model)
    }

    async fn capabilities(&self) -> Result<Capabilities, EndpointError> {
        self.capabilities
            .get_or_try_init(|| self.detect_capabilities())
            .await
            .cloned()
            .map_err(|e| self.scrub_error(e))
    }

    async fn run(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError> {
        self.generate(request)
            .await
            .map(|r| self.scrub_response(r))
            .map_err(|e| self.scrub_error(e))
    }

    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EndpointError> {
        if !self.config.access.allows_raw() {
            return Err(EndpointError::Unsupported(format!(
                "/tokenize is not used in access mode {}",
                self.config.access
            )));
        }
        if let Some(caps) = self.capabilities.get() {
            if !caps.tokenize {
                return Err(EndpointError::Unsupported(format!(
                    "{} has no /tokenize endpoint",
                    self.describe()
                )));
            }
        }
        self.tokenize_once(text)
            .await
            .map_err(|e| self.scrub_error(e))
    }
}

/// The body of `/chat/completions` and `/completions` requests.
#[derive(Serialize)]
struct GenerationBody<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<&'a [ChatMessage]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<&'a [String]>,
    /// `true` for chat, the number of alternatives for legacy completions.
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<LogprobsField>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<usize>,
    stream: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum LogprobsField {
    Flag(bool),
    Count(usize),
}

/// Whether every position of `response` lists alternatives and chose the most likely of
/// them (ties within a float's decimal round trip count): a greedy answer.
fn took_its_first_choice(response: &ProbeResponse) -> bool {
    !response.tokens.is_empty()
        && response.tokens.iter().all(|t| {
            let best = t
                .top
                .iter()
                .map(|a| a.logprob)
                .filter(|l| l.is_finite())
                .fold(f32::NEG_INFINITY, f32::max);
            best.is_finite() && t.logprob >= best - 1e-4
        })
}

/// JSON bytes of a request body. Plain structs of strings and numbers always serialise;
/// the fallback only keeps this free of panics.
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// A one-token greedy request used to detect what the endpoint supports.
fn ping(prompt: PromptForm) -> ProbeRequest {
    ProbeRequest {
        prompt,
        max_tokens: 1,
        temperature: 0.0,
        top_p: 1.0,
        seed: Some(0),
        top_logprobs: 0,
        stop: Vec::new(),
    }
}

/// Errors that mean "this endpoint does not do that", as opposed to "something is broken".
fn means_unsupported(err: &EndpointError) -> bool {
    matches!(
        err,
        EndpointError::BadRequest(_) | EndpointError::Unsupported(_) | EndpointError::Malformed(_)
    )
}

fn validate(config: &HttpModelConfig) -> Result<(), SuspectError> {
    let problem = if config.model.trim().is_empty() {
        Some("model must not be empty")
    } else if config.max_concurrency == 0 {
        Some("max_concurrency must be at least 1")
    } else if config.max_response_bytes == 0 {
        Some("max_response_bytes must be positive")
    } else if config.connect_timeout.is_zero()
        || config.read_timeout.is_zero()
        || config.total_timeout.is_zero()
    {
        Some("timeouts must be positive")
    } else if !config.requests_per_second.is_finite() || config.requests_per_second < 0.0 {
        Some("requests_per_second must be a finite number >= 0 (0 = unlimited)")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(SuspectError::Config(problem.to_string())),
        None => Ok(()),
    }
}

fn read_api_key(var: &str) -> Result<ApiKey, SuspectError> {
    let key = std::env::var(var)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| SuspectError::MissingApiKey(var.to_string()))?;
    let mut header = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
        .map_err(|_| SuspectError::InvalidApiKey(var.to_string()))?;
    // Keeps the value out of reqwest/hyper debug output.
    header.set_sensitive(true);
    Ok(ApiKey {
        header,
        value: key.trim().to_string(),
    })
}

fn rate_limiter(requests_per_second: f64) -> Option<DefaultDirectRateLimiter> {
    if requests_per_second <= 0.0 {
        return None;
    }
    // A burst of one: requests are paced evenly rather than sent in clumps.
    let period = Duration::from_secs_f64(1.0 / requests_per_second);
    Quota::with_period(period).map(RateLimiter::direct)
}

/// Reads the body up to `limit` bytes, stopping as soon as it is exceeded so a huge or
/// endless body costs no more than the cap. With `truncate`, the excess is dropped
/// instead of failing (for error bodies, read only for their message).
async fn read_capped(
    url: &Url,
    mut response: reqwest::Response,
    limit: usize,
    truncate: bool,
) -> Result<Vec<u8>, EndpointError> {
    let too_big = |what: String| {
        EndpointError::Malformed(format!(
            "{what} from {url} exceeds max_response_bytes ({limit} bytes); aborted"
        ))
    };
    if let Some(announced) = response.content_length() {
        if announced > limit as u64 && !truncate {
            return Err(too_big(format!("the announced {announced}-byte body")));
        }
    }
    let mut body = Vec::new();
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(body),
            Err(err) if err.is_timeout() => {
                return Err(EndpointError::Timeout(format!(
                    "{url} stopped sending the body: {}",
                    error_chain(&err)
                )))
            }
            Err(err) => {
                return Err(EndpointError::Connection(format!(
                    "the body from {url} broke off: {}",
                    error_chain(&err)
                )))
            }
        };
        if body.len() + chunk.len() > limit {
            if truncate {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..room]);
                return Ok(body);
            }
            return Err(too_big("the response body".to_string()));
        }
        body.extend_from_slice(&chunk);
    }
}

/// An error and its causes on one line (reqwest's own message is terse).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The same error with more said.
fn append(err: EndpointError, extra: &str) -> EndpointError {
    use EndpointError as E;
    let with = |msg: String| format!("{msg}{extra}");
    match err {
        E::Auth(m) => E::Auth(with(m)),
        E::RateLimited(m) => E::RateLimited(with(m)),
        E::BadRequest(m) => E::BadRequest(with(m)),
        E::ContextOverflow(m) => E::ContextOverflow(with(m)),
        E::Server(m) => E::Server(with(m)),
        E::Malformed(m) => E::Malformed(with(m)),
        E::Timeout(m) => E::Timeout(with(m)),
        E::Connection(m) => E::Connection(with(m)),
        E::Forbidden(m) => E::Forbidden(with(m)),
        E::Unsupported(m) => E::Unsupported(with(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas of one model (llama-quantize Q8_0 and Q4_K_M behind a load balancer)
    /// answer the same greedy request differently, each on its own list's first token; a
    /// sampler's answers differ because it took another somewhere.
    #[test]
    fn greedy_answers_take_their_own_first_choice() {
        let token = |chosen: f32, listed: &[f32]| crate::endpoint::TokenLogprobs {
            id: None,
            token: "a".into(),
            bytes: b"a".to_vec(),
            logprob: chosen,
            top: listed
                .iter()
                .copied()
                .map(|logprob| crate::endpoint::TopLogprob {
                    id: None,
                    token: "b".into(),
                    bytes: b"b".to_vec(),
                    logprob,
                })
                .collect(),
        };
        let response = |tokens| ProbeResponse {
            text: "x".into(),
            tokens,
            usage: None,
            finish_reason: None,
            latency_ms: 0,
        };
        let greedy = response(vec![
            token(-0.1, &[-0.1, -2.5]),
            token(-0.7, &[-0.7, -0.7, -3.0]),
        ]);
        assert!(took_its_first_choice(&greedy));
        let sampled = response(vec![
            token(-0.1, &[-0.1, -2.5]),
            token(-1.2, &[-0.4, -1.2, -3.0]),
        ]);
        assert!(!took_its_first_choice(&sampled));
        // Without lists nothing shows the choice.
        let bare = response(vec![token(-0.1, &[])]);
        assert!(!took_its_first_choice(&bare));
        assert!(!took_its_first_choice(&response(Vec::new())));
    }

    #[test]
    fn routes_keep_tokenize_at_the_root() {
        let routes = Routes::new(Url::parse("http://127.0.0.1:8080/v1").unwrap()).unwrap();
        assert_eq!(
            routes.chat.as_str(),
            "http://127.0.0.1:8080/v1/chat/completions"
        );
        assert_eq!(
            routes.completions.as_str(),
            "http://127.0.0.1:8080/v1/completions"
        );
        assert_eq!(routes.models.as_str(), "http://127.0.0.1:8080/v1/models");
        assert_eq!(routes.tokenize.as_str(), "http://127.0.0.1:8080/tokenize");

        let routes =
            Routes::new(Url::parse("https://api.example.com/openai/v1/").unwrap()).unwrap();
        assert_eq!(
            routes.chat.as_str(),
            "https://api.example.com/openai/v1/chat/completions"
        );
        assert_eq!(
            routes.tokenize.as_str(),
            "https://api.example.com/openai/tokenize"
        );

        let routes = Routes::new(Url::parse("https://example.com/llm").unwrap()).unwrap();
        assert_eq!(
            routes.chat.as_str(),
            "https://example.com/llm/chat/completions"
        );
        assert_eq!(routes.tokenize.as_str(), "https://example.com/llm/tokenize");

        assert!(Routes::new(Url::parse("https://example.com/v1?key=x").unwrap()).is_err());
    }

    #[test]
    fn request_bodies() {
        let model = HttpModel::new(HttpModelConfig {
            allow_private_targets: true,
            ..HttpModelConfig::new("http://127.0.0.1:9/v1", "m")
        })
        .unwrap();
        let chat = ProbeRequest {
            prompt: PromptForm::Chat {
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "hi".into(),
                }],
            },
            max_tokens: 4,
            temperature: 0.7,
            top_p: 0.9,
            seed: Some(42),
            top_logprobs: 5,
            stop: vec!["\n".into()],
        };
        let (url, bytes, is_chat) = model.generation_body(&model.routes, &chat);
        assert!(is_chat);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(r#""temperature":0.7,"#), "{text}");
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(url.path(), "/v1/chat/completions");
        assert_eq!(
            body,
            serde_json::json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 4,
                "temperature": 0.7,
                "top_p": 0.9,
                "seed": 42,
                "stop": ["\n"],
                "logprobs": true,
                "top_logprobs": 5,
                "stream": false
            })
        );
        let raw = ProbeRequest {
            prompt: PromptForm::Raw {
                prompt: "Once".into(),
            },
            top_logprobs: 0,
            seed: None,
            stop: vec![],
            ..chat
        };
        let (url, bytes, is_chat) = model.generation_body(&model.routes, &raw);
        assert!(!is_chat);
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(url.path(), "/v1/completions");
        assert_eq!(body["prompt"], "Once");
        for absent in ["logprobs", "top_logprobs", "seed", "stop", "messages"] {
            assert!(body.get(absent).is_none(), "{absent} should be omitted");
        }
        let raw_top = ProbeRequest {
            top_logprobs: 3,
            ..raw
        };
        let (_, bytes, _) = model.generation_body(&model.routes, &raw_top);
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["logprobs"], 3);
        assert!(body.get("top_logprobs").is_none());
    }

    #[test]
    fn config_is_validated() {
        let base = HttpModelConfig::new("https://api.example.com/v1", "m");
        for bad in [
            HttpModelConfig {
                max_concurrency: 0,
                ..base.clone()
            },
            HttpModelConfig {
                requests_per_second: f64::NAN,
                ..base.clone()
            },
            HttpModelConfig {
                total_timeout: Duration::ZERO,
                ..base.clone()
            },
            HttpModelConfig {
                model: " ".into(),
                ..base.clone()
            },
        ] {
            assert!(matches!(HttpModel::new(bad), Err(SuspectError::Config(_))));
        }
        assert!(HttpModel::new(base).is_ok());
    }

    #[test]
    fn errors_convert_for_callers() {
        let err: EndpointError = SuspectError::MissingApiKey("X".into()).into();
        assert!(matches!(err, EndpointError::Auth(m) if m.contains("X")));
        let err: EndpointError = SuspectError::from(GuardError::Credentials).into();
        assert!(matches!(err, EndpointError::Forbidden(_)));
        let err = append(EndpointError::Server("boom".into()), " (after 3)");
        assert_eq!(err, EndpointError::Server("boom (after 3)".into()));
    }
}
