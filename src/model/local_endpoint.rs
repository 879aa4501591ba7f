//! The local model as a `ModelEndpoint`: the same probe requests a suspect gets, answered
//! in-process through the model thread.

use std::time::Instant;

use crate::endpoint::{
    Capabilities, EndpointError, ModelEndpoint, ProbeRequest, ProbeResponse, PromptForm,
    TokenLogprobs, TopLogprob, Usage,
};

use super::{GenerateParams, LocalModel, ModelError, ModelHandle, QueueError};

/// Most alternatives a local model reports per position (the OpenAI limit).
pub const MAX_TOP_LOGPROBS: usize = 20;

pub struct LocalEndpoint {
    handle: ModelHandle,
}

impl LocalEndpoint {
    pub fn new(handle: ModelHandle) -> Self {
        Self { handle }
    }

    /// The model thread behind this endpoint (to read other models' answers back).
    pub fn handle(&self) -> &ModelHandle {
        &self.handle
    }
}

impl From<ModelError> for EndpointError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::ContextOverflow { .. } => Self::ContextOverflow(e.to_string()),
            ModelError::BadInput(_) | ModelError::Template(_) | ModelError::Tokenizer(_) => {
                Self::BadRequest(e.to_string())
            }
            other => Self::Server(other.to_string()),
        }
    }
}

impl From<QueueError> for EndpointError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Full(_) => Self::RateLimited(e.to_string()),
            QueueError::Stopped => Self::Server(e.to_string()),
        }
    }
}

/// Runs one probe request on the model (on the model thread).
pub fn run_request(
    model: &mut LocalModel,
    req: &ProbeRequest,
) -> Result<ProbeResponse, ModelError> {
    let start = Instant::now();
    let text = match &req.prompt {
        PromptForm::Chat { messages } => model.render_chat(messages)?,
        PromptForm::Raw { prompt } => prompt.clone(),
    };
    let ids = model.encode_prompt(&text)?;
    let params = GenerateParams {
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        top_logprobs: req.top_logprobs.min(MAX_TOP_LOGPROBS),
        stop: req.stop.clone(),
    };
    let gen = model.generate(&ids, &params, |_, _| true)?;
    let tok = &model.tokenizer;
    let tokens = if req.top_logprobs > 0 {
        gen.steps
            .iter()
            .map(|s| TokenLogprobs {
                id: Some(s.token),
                token: tok.token_string(s.token),
                bytes: tok.token_bytes(s.token).to_vec(),
                logprob: s.logprob,
                top: s
                    .top
                    .iter()
                    .map(|(id, lp)| TopLogprob {
                        id: Some(*id),
                        token: tok.token_string(*id),
                        bytes: tok.token_bytes(*id).to_vec(),
                        logprob: *lp,
                    })
                    .collect(),
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(ProbeResponse {
        text: gen.text,
        tokens,
        usage: Some(Usage {
            prompt_tokens: gen.prompt_tokens as u32,
            completion_tokens: gen.steps.len() as u32,
        }),
        finish_reason: Some(gen.finish_reason.as_str().to_string()),
        latency_ms: start.elapsed().as_millis() as u64,
    })
}

#[async_trait::async_trait]
impl ModelEndpoint for LocalEndpoint {
    fn describe(&self) -> String {
        format!(
            "local:{} ({})",
            self.handle.info.name,
            self.handle.info.source_name()
        )
    }

    fn asks_are_free(&self) -> bool {
        true
    }

    async fn capabilities(&self) -> Result<Capabilities, EndpointError> {
        Ok(Capabilities {
            chat: true,
            raw_completion: true,
            max_top_logprobs: MAX_TOP_LOGPROBS,
            usage: true,
            tokenize: true,
            ignores_temperature: false,
            refused_params: Vec::new(),
        })
    }

    async fn run(&self, request: &ProbeRequest) -> Result<ProbeResponse, EndpointError> {
        let req = request.clone();
        self.handle
            .call(move |m| run_request(m, &req))
            .await?
            .map_err(EndpointError::from)
    }

    async fn tokenize(&self, text: &str) -> Result<Vec<u32>, EndpointError> {
        let text = text.to_string();
        self.handle
            .call(move |m| m.tokenizer.encode(&text))
            .await?
            .map_err(EndpointError::from)
    }
}
