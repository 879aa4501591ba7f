//! The local reference model: loading (GGUF, safetensors, hf-hub), tokenizer, chat
//! template, and next-token log-probabilities at every generated position.

pub mod allowed;
pub mod chat;
mod decode;
mod ggml_quants;
pub mod gguf;
mod gguf_alignment;
pub mod kv_cache_type;
pub mod llama_quant;
pub mod local_endpoint;
mod parallel;
pub mod qlinear;
pub mod requantize;
pub mod rope;
pub mod runner;
pub mod safetensors;
pub mod serving_penalty;
pub mod source;
pub mod spm;
pub mod spread;
pub mod synthetic;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Changes whenever the runner computes other numbers from the same weights; caches of
/// fingerprints the runner made (quantized forms, the zoo's) are keyed on it so that none
/// outlives the arithmetic that made it. 2: Q6_K held exactly (was re-rounded to Q8_0).
pub const ARITHMETIC_REVISION: u32 = 2;

pub use gguf::Requantize;
pub use runner::{ModelHandle, QueueError};

use crate::endpoint::ChatMessage;
use chat::ChatTemplate;
use tokenizer::Tokenizer;
use transformer::{KvCache, Transformer};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("missing tensor {name}: {message}")]
    MissingTensor { name: String, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("hub: {0}")]
    Hub(String),
    #[error("{0}")]
    BadInput(String),
    #[error("prompt of {prompt} tokens plus {max_tokens} to generate exceeds the context window of {context} tokens")]
    ContextOverflow {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub requantize: Requantize,
    /// Positions served (RoPE tables and the KV cache are sized to this, not to the
    /// model's trained maximum).
    pub max_context: usize,
    /// How the KV cache is stored: f32 (ours), or rounded as a server's quantized cache is.
    pub kv_cache: kv_cache_type::KvCacheType,
    /// Whether a prompt starts with the BOS token: `None` as the GGUF file says; `Some(false)`
    /// asks the model as a stack that adds none does (`crate::quantized_forms`).
    pub add_bos: Option<bool>,
    /// How positions are stretched, as a server may be told to (`None`: as the file says).
    pub rope_scaling: Option<rope::RopeScaling>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            requantize: Requantize::Auto,
            max_context: 4096,
            kv_cache: kv_cache_type::KvCacheType::F32,
            add_bos: None,
            rope_scaling: None,
        }
    }
}

/// What was loaded, reported by the server and stored in fingerprints.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub source: String,
    pub format: String,
    pub architecture: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub tokenizer: String,
    pub chat_template: String,
    pub requantize: Requantize,
    pub sha256: Option<String>,
}

impl ModelInfo {
    /// The source without its directories (a file or directory name, or a hub id): what
    /// may be shown to users, who must not learn the server's paths.
    pub fn source_name(&self) -> String {
        public_source(&self.source)
    }
}

/// `source` without its directories, for display (see [`ModelInfo::source_name`]).
pub fn public_source(source: &str) -> String {
    let path = std::path::Path::new(source);
    if path.is_absolute() || source.starts_with('.') {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        source.to_string()
    }
}

/// Generation settings for one request.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    /// Alternatives kept per position.
    pub top_logprobs: usize,
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            seed: None,
            top_logprobs: 0,
            stop: Vec::new(),
        }
    }
}

/// One generated position.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub token: u32,
    pub logprob: f32,
    /// Best alternatives, highest first (token id, log-probability).
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    /// Tokens whose prefix was reused from the cache (not recomputed).
    pub reused_tokens: usize,
    pub steps: Vec<Step>,
    pub text: String,
    pub finish_reason: FinishReason,
}

pub struct LocalModel {
    pub info: ModelInfo,
    pub tokenizer: std::sync::Arc<Tokenizer>,
    template: ChatTemplate,
    transformer: Transformer,
    cache: KvCache,
    /// Logits after the last forward pass, consumed by the next step.
    last_logits: Option<Vec<f32>>,
}

impl LocalModel {
    /// Loads from a local path (GGUF file or safetensors directory) or a hub repo id
    /// (`owner/name` or `owner/name:file.gguf`).
    pub fn load(spec: &str, opts: &LoadOptions) -> Result<Self, ModelError> {
        let resolved = source::resolve(spec)?;
        let mut model = match &resolved {
            source::Resolved::Gguf(path) => Self::load_gguf(path, opts)?,
            source::Resolved::Safetensors(dir) => safetensors::load(dir, opts)?,
        };
        model.info.source = spec.to_string();
        Ok(model)
    }

    fn load_gguf(path: &std::path::Path, opts: &LoadOptions) -> Result<Self, ModelError> {
        let mut g = gguf::GgufFile::open(path)?;
        let mut config = g.config(opts.max_context)?;
        config.kv_cache = opts.kv_cache;
        if let Some(scaling) = opts.rope_scaling {
            config.rope_scaling = scaling.with_trained_context(config.trained_context);
        }
        if !opts.kv_cache.fits(config.head_dim) {
            return Err(ModelError::Unsupported(format!(
                "a {} KV cache needs heads of whole 32-value blocks; this model's have {} values",
                opts.kv_cache.name(),
                config.head_dim
            )));
        }
        let mut tokenizer = Tokenizer::from_gguf(&g)?;
        if let Some(add_bos) = opts.add_bos {
            tokenizer.add_bos = add_bos;
        }
        let arch = g.architecture().unwrap_or_default();
        let piece = |id: Option<u32>| {
            id.and_then(|i| tokenizer.piece(i))
                .unwrap_or_default()
                .to_string()
        };
        let template = ChatTemplate::new(
            g.string("tokenizer.chat_template"),
            &arch,
            piece(tokenizer.bos),
            piece(tokenizer.eos),
        )?;
        let weights = g.weights(&config, opts.requantize)?;
        let name = g
            .string("general.name")
            .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "model".into());
        let info = ModelInfo {
            name,
            source: path.display().to_string(),
            format: "gguf".into(),
            architecture: arch,
            context_length: config.context_length,
            vocab_size: config.vocab_size.max(tokenizer.vocab_size()),
            tokenizer: tokenizer.kind.clone(),
            chat_template: template.describe(),
            requantize: opts.requantize,
            sha256: None,
        };
        Ok(Self::assemble(info, tokenizer, template, config, weights)?)
    }

    pub(crate) fn assemble(
        info: ModelInfo,
        tokenizer: Tokenizer,
        template: ChatTemplate,
        config: weights::Config,
        weights: weights::Weights,
    ) -> Result<Self, candle_core::Error> {
        let transformer = Transformer::new(config, weights, &candle_core::Device::Cpu)?;
        Ok(Self {
            info,
            tokenizer: std::sync::Arc::new(tokenizer),
            template,
            transformer,
            cache: KvCache::default(),
            last_logits: None,
        })
    }

    pub fn context_length(&self) -> usize {
        self.transformer.config.context_length
    }

    /// Runs the model from now on with its context stretched as a server may be told to
    /// (`None`: as loaded); the KV cache, made under the old tables, is dropped.
    pub fn set_rope_scaling(
        &mut self,
        scaling: Option<rope::RopeScaling>,
    ) -> Result<(), ModelError> {
        let before = self.transformer.config.rope_scaling;
        self.transformer.set_rope_scaling(scaling)?;
        if self.transformer.config.rope_scaling != before {
            self.cache.clear();
            self.last_logits = None;
        }
        Ok(())
    }

    /// The chat prompt text for `messages` (the assistant turn opened).
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        if messages.is_empty() {
            return Err(ModelError::BadInput("messages must not be empty".into()));
        }
        self.template.render(messages)
    }

    /// Token ids of a full prompt (BOS when the model wants one).
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer.encode_prompt(text)
    }

    /// Log-softmax over the whole vocabulary for the position after `ids`, reusing the
    /// cached prefix that `ids` shares with the previous call.
    pub fn next_logprobs(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.is_empty() {
            return Err(ModelError::BadInput("prompt has no tokens".into()));
        }
        self.prefill(ids)?;
        let logits = self
            .last_logits
            .take()
            .ok_or_else(|| ModelError::BadInput("no logits after prefill".into()))?;
        Ok(transformer::log_softmax_slice(&logits))
    }

    fn prefill(&mut self, ids: &[u32]) -> Result<usize, ModelError> {
        let shared = self
            .cache
            .tokens()
            .iter()
            .zip(ids)
            .take_while(|(a, b)| a == b)
            .count();
        // At least one token must run to produce logits.
        let keep = shared.min(ids.len() - 1);
        self.cache.truncate(keep)?;
        let logits = match self.transformer.forward(&ids[keep..], &mut self.cache) {
            Ok(l) => l,
            Err(e) => {
                self.cache.clear();
                return Err(e.into());
            }
        };
        self.last_logits = Some(logits.to_vec1::<f32>()?);
        Ok(keep)
    }

    /// The model's view of `continuation` written after `prompt` (teacher forcing): at
    /// each of its tokens, the token's log-probability and the moments of the model's own
    /// log-probability at that position. Every position is computed exactly as in
    /// generation (the fast forward pass is batch-invariant).
    pub fn score_continuation(
        &mut self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<TokenScore>, ModelError> {
        Ok(self.score_positions(prompt, continuation, None, false)?.0)
    }

    /// [`Self::score_continuation`] with each position's whole distribution summed up
    /// ([`TokenScore::spread`]), for text another model sampled.
    /// `temperatures` are those the tail is summed at.
    pub fn score_continuation_spread(
        &mut self,
        prompt: &[u32],
        continuation: &[u32],
        temperatures: &[f32],
    ) -> Result<Vec<TokenScore>, ModelError> {
        Ok(self
            .score_positions(prompt, continuation, Some(temperatures), false)?
            .0)
    }

    /// [`Self::score_continuation_spread`] for an answer that stopped on its own, and its
    /// end: the stop token the model finds most likely after the last token, scored at
    /// that position. Stopping there was a draw of the writer's too, and a sample that
    /// ends must count as one (`compare::sampled::collisions`).
    pub fn score_continuation_spread_to_end(
        &mut self,
        prompt: &[u32],
        continuation: &[u32],
        temperatures: &[f32],
    ) -> Result<(Vec<TokenScore>, Option<TokenScore>), ModelError> {
        self.score_positions(prompt, continuation, Some(temperatures), true)
    }

    /// The stop token with the highest logit; `None` for a tokenizer without stop tokens.
    fn likeliest_stop(&self, logits: &[f32]) -> Option<u32> {
        self.tokenizer
            .stop_tokens
            .iter()
            .copied()
            .filter(|&t| (t as usize) < logits.len())
            .max_by(|a, b| logits[*a as usize].total_cmp(&logits[*b as usize]))
    }

    fn score_positions(
        &mut self,
        prompt: &[u32],
        continuation: &[u32],
        spread: Option<&[f32]>,
        to_end: bool,
    ) -> Result<(Vec<TokenScore>, Option<TokenScore>), ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::BadInput("prompt has no tokens".into()));
        }
        let context = self.context_length();
        if prompt.len() + continuation.len() > context {
            return Err(ModelError::ContextOverflow {
                prompt: prompt.len(),
                max_tokens: continuation.len(),
                context,
            });
        }
        let Some((_, but_last)) = continuation.split_last() else {
            return Ok((Vec::new(), None));
        };
        // The logits after each continuation token but the last score the next one; to
        // the end, the last one runs too and its logits score the stop.
        let fed = if to_end { continuation } else { but_last };
        self.prefill(prompt)?;
        let first = self
            .last_logits
            .take()
            .ok_or_else(|| ModelError::BadInput("no logits after prefill".into()))?;
        let mut out = vec![TokenScore::of(
            &first,
            continuation[0],
            spread,
            prompt,
            &[],
        )?];
        // In chunks: a full-vocabulary row is 1 MiB for Gemma.
        const CHUNK: usize = 16;
        let mut end = None;
        for (i, chunk) in fed.chunks(CHUNK).enumerate() {
            let rows = match self.transformer.forward_each(chunk, &mut self.cache) {
                Ok(rows) => rows,
                Err(e) => {
                    self.cache.clear();
                    return Err(e.into());
                }
            };
            for (k, logits) in rows.iter().enumerate() {
                let at = out.len();
                match continuation.get(i * CHUNK + k + 1) {
                    Some(&token) => out.push(TokenScore::of(
                        logits,
                        token,
                        spread,
                        prompt,
                        &continuation[..at],
                    )?),
                    None => {
                        end = self
                            .likeliest_stop(logits)
                            .map(|stop| TokenScore::of(logits, stop, spread, prompt, continuation))
                            .transpose()?;
                    }
                }
            }
        }
        Ok((out, end))
    }

    /// Generates from prompt ids; `on_step` sees each step as it is made and may stop the
    /// generation by returning false.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        mut on_step: impl FnMut(&Step, &str) -> bool,
    ) -> Result<Generation, ModelError> {
        if prompt.is_empty() {
            return Err(ModelError::BadInput("prompt has no tokens".into()));
        }
        let context = self.context_length();
        if prompt.len() + params.max_tokens > context {
            return Err(ModelError::ContextOverflow {
                prompt: prompt.len(),
                max_tokens: params.max_tokens,
                context,
            });
        }
        let reused = self.prefill(prompt)?;
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(params.seed.unwrap_or_else(|| rand::rng().random()));
        let mut steps = Vec::new();
        let mut generated: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut finish = FinishReason::Length;
        for _ in 0..params.max_tokens {
            let logits = self
                .last_logits
                .take()
                .ok_or_else(|| ModelError::BadInput("no logits".into()))?;
            // Log-probabilities are logits minus one log-sum-exp: no full-vocabulary
            // vector is built per step (Gemma's vocabulary has 262144 entries).
            let lse = log_sum_exp(&logits);
            let token = if params.temperature <= 0.0 {
                argmax(&logits)
            } else {
                sample(&logits, params.temperature, params.top_p, &mut rng)
            };
            let step = Step {
                token,
                logprob: logits[token as usize] - lse,
                top: top_k(&logits, params.top_logprobs)
                    .into_iter()
                    .map(|(id, l)| (id, l - lse))
                    .collect(),
            };
            if self.tokenizer.stop_tokens.contains(&token) {
                finish = FinishReason::Stop;
                break;
            }
            generated.push(token);
            let piece = self.tokenizer.decode(&[token]);
            let full = self.tokenizer.decode(&generated);
            let hit = params
                .stop
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| full.find(s.as_str()))
                .min();
            steps.push(step);
            let keep_going = on_step(steps.last().expect("just pushed"), &piece);
            if let Some(pos) = hit {
                text = full[..pos].to_string();
                finish = FinishReason::Stop;
                break;
            }
            text = full;
            if !keep_going {
                finish = FinishReason::Stop;
                break;
            }
            if steps.len() == params.max_tokens {
                break;
            }
            let logits = self.transformer.forward(&[token], &mut self.cache)?;
            self.last_logits = Some(logits.to_vec1::<f32>()?);
        }
        Ok(Generation {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            steps,
            text,
            finish_reason: finish,
        })
    }
}

/// One teacher-forced position: the log-probability of the token written there, and the
/// mean and second moment of log p under the model's own distribution at that position
/// (so the token's surprise can be judged against what the model expects of itself).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenScore {
    pub logprob: f64,
    /// E_p[log p] (minus the entropy).
    pub expected: f64,
    /// E_p[(log p)^2].
    pub second: f64,
    /// The token is the model's most likely one.
    pub top1: bool,
    /// How far (nats) the token's log-probability lies below the most likely token's.
    pub gap: f64,
    /// The whole distribution in brief, when asked for.
    pub spread: Option<spread::Spread>,
    /// [`Self::gap`] under each of [`serving_penalty::SERVING_PENALTIES`], after the
    /// tokens before this one.
    pub penalized_gaps: Vec<f64>,
}

impl TokenScore {
    fn of(
        logits: &[f32],
        token: u32,
        spread: Option<&[f32]>,
        prompt: &[u32],
        answer: &[u32],
    ) -> Result<TokenScore, ModelError> {
        let chosen = *logits.get(token as usize).ok_or_else(|| {
            ModelError::BadInput(format!(
                "token {token} is outside the vocabulary of {}",
                logits.len()
            ))
        })?;
        let lse = log_sum_exp(logits) as f64;
        let (mut expected, mut second) = (0.0f64, 0.0f64);
        for &l in logits {
            let lp = l as f64 - lse;
            let p = lp.exp();
            expected += p * lp;
            second += p * lp * lp;
        }
        Ok(TokenScore {
            logprob: chosen as f64 - lse,
            expected,
            second,
            top1: argmax(logits) == token,
            gap: logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64 - chosen as f64,
            spread: spread.map(|t| spread::Spread::of(logits, token, t)),
            penalized_gaps: serving_penalty::gaps(logits, token, prompt, answer),
        })
    }
}

/// Highest log-probability; ties go to the lowest id, as llama.cpp's greedy sampler does.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` highest scores with their ids, highest first (ties: lower id first). One pass
/// with a small sorted buffer: k is at most 20 and the vocabulary up to 262144.
pub fn top_k(scores: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &v) in scores.iter().enumerate() {
        if best.len() == k && v <= best[k - 1].1 {
            continue;
        }
        let pos = best.partition_point(|&(_, b)| b >= v);
        best.insert(pos, (i as u32, v));
        best.truncate(k);
    }
    best
}

/// log(sum(exp(v))), computed stably.
pub fn log_sum_exp(v: &[f32]) -> f32 {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = v.iter().map(|&x| (x - max).exp()).sum();
    max + sum.ln()
}

/// Temperature and nucleus sampling with a seeded generator.
fn sample(logits: &[f32], temperature: f32, top_p: f32, rng: &mut impl Rng) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let logprobs = transformer::log_softmax_slice(&scaled);
    let mut order: Vec<u32> = (0..logprobs.len() as u32).collect();
    order.sort_by(|a, b| logprobs[*b as usize].total_cmp(&logprobs[*a as usize]));
    let mut kept = Vec::new();
    let mut mass = 0.0f64;
    for id in order {
        let p = (logprobs[id as usize] as f64).exp();
        kept.push((id, p));
        mass += p;
        if mass >= top_p as f64 {
            break;
        }
    }
    let mut r = rng.random::<f64>() * mass;
    for (id, p) in &kept {
        if r < *p {
            return *id;
        }
        r -= p;
    }
    kept.last().map(|(id, _)| *id).unwrap_or(0)
}
