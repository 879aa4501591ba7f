//! Distilled students: a small llama-architecture model trained from scratch (candle
//! autograd, CPU) on text a teacher wrote, written out as a GGUF file that `serve-model`
//! loads like any other. Every student follows the same recipe (`Recipe::STUDENT`); only
//! the teacher's text and the tokenizer differ, so a student of the reference and a
//! student of the other model are told apart by what they learned, not how.
//!
//! The tokenizer (and chat template) comes from a real model's GGUF: the teacher's own, or
//! the other model's for distillation across tokenizers, where the teacher's answers are
//! re-tokenized. The training stream is `template(prompt) + answer + end-of-turn`, so the
//! student learns to answer in the chat format it is served with.

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::corpus::TokenAnswer;
use super::train;
use crate::model::gguf::GgufFile;
use crate::model::requantize::{quantize_q8, write_gguf};
use crate::model::tokenizer::Tokenizer;
use crate::model::ModelError;

/// The student recipe: sizes and training schedule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StudentShape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub ffn: usize,
    /// Tokens per training window.
    pub window: usize,
    pub batch: usize,
    pub steps: usize,
    pub learning_rate: f64,
}

/// 1.3 million parameters besides the embedding table (tied with the output), trained
/// for about two CPU minutes. Row lengths are multiples of 32, so matrices are stored as
/// Q8_0, which is what the runner computes with anyway.
pub const STUDENT: StudentShape = StudentShape {
    hidden: 192,
    layers: 3,
    heads: 6,
    ffn: 512,
    window: 96,
    batch: 8,
    steps: 400,
    learning_rate: 3e-3,
};

const ROPE_BASE: f32 = 10_000.0;
const RMS_EPS: f64 = 1e-5;
/// Context written into the GGUF: room for a probe and its answer.
const SERVED_CONTEXT: u32 = 2048;

/// Gemma's turn format as a chat template, for students that use Gemma's tokenizer (the
/// Gemma base GGUF carries none, and a llama-architecture file would otherwise get ChatML).
/// Renders exactly what `chat::render_gemma` does; BOS comes from the tokenizer.
pub const GEMMA_TEMPLATE: &str = r#"{%- set ns = namespace(system='') -%}
{%- for m in messages -%}
{%- if m['role'] == 'system' -%}
{%- set ns.system = ns.system ~ m['content'] ~ '\n\n' -%}
{%- else -%}
{{- '<start_of_turn>' ~ ('model' if m['role'] == 'assistant' else 'user') ~ '\n' -}}
{%- if m['role'] != 'assistant' and ns.system -%}
{{- ns.system -}}
{%- set ns.system = '' -%}
{%- endif -%}
{{- m['content'] | trim -}}
{{- '<end_of_turn>\n' -}}
{%- endif -%}
{%- endfor -%}
{{- '<start_of_turn>model\n' -}}"#;

struct Params {
    embed: Var,
    /// Each block's weights in [`train::PARTS`] order.
    layers: Vec<[Var; 9]>,
    final_norm: Var,
}

fn block(layer: &[Var; 9]) -> train::Block {
    train::Block::from_parts(layer.each_ref().map(|v| v.as_tensor().clone()))
}

impl Params {
    fn init(shape: &StudentShape, vocab: usize, seed: u64) -> Result<Params, ModelError> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut normal = |rows: usize, cols: usize, sd: f32| -> Result<Var, ModelError> {
            let v: Vec<f32> = (0..rows * cols)
                .map(|_| sd * train::gaussian(&mut rng))
                .collect();
            Ok(Var::from_tensor(&Tensor::from_vec(
                v,
                (rows, cols),
                &Device::Cpu,
            )?)?)
        };
        let ones = |n: usize| -> Result<Var, ModelError> {
            Ok(Var::from_tensor(&Tensor::ones(
                n,
                DType::F32,
                &Device::Cpu,
            )?)?)
        };
        let h = shape.hidden;
        // GPT-2 style: 0.02, with residual outputs scaled down by depth.
        let out_sd = 0.02 / (2.0 * shape.layers as f32).sqrt();
        let embed = normal(vocab, h, 0.02)?;
        let mut layers = Vec::with_capacity(shape.layers);
        for _ in 0..shape.layers {
            layers.push([
                ones(h)?,
                normal(h, h, 0.02)?,
                normal(h, h, 0.02)?,
                normal(h, h, 0.02)?,
                normal(h, h, out_sd)?,
                ones(h)?,
                normal(shape.ffn, h, 0.02)?,
                normal(shape.ffn, h, 0.02)?,
                normal(h, shape.ffn, out_sd)?,
            ]);
        }
        Ok(Params {
            embed,
            layers,
            final_norm: ones(h)?,
        })
    }

    fn all(&self) -> Vec<Var> {
        // (The order only matters to the optimizer's bookkeeping.)
        let mut out = vec![self.embed.clone(), self.final_norm.clone()];
        for l in &self.layers {
            out.extend(l.iter().cloned());
        }
        out
    }

    /// Named tensors as the GGUF llama layout has them (rows = outputs).
    fn named(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "token_embd.weight".to_string(),
                self.embed.as_tensor().clone(),
            ),
            (
                "output_norm.weight".to_string(),
                self.final_norm.as_tensor().clone(),
            ),
        ];
        for (i, l) in self.layers.iter().enumerate() {
            for (part, v) in train::PARTS.iter().zip(l) {
                out.push((format!("blk.{i}.{part}.weight"), v.as_tensor().clone()));
            }
        }
        out
    }
}

/// Mean next-token cross-entropy of a (B, T+1) batch of windows against target
/// distributions: for each of the B*T predicted positions, K (token, weight) pairs, the
/// weights a distribution over the tokens (zero for positions not trained), `count` the
/// number of trained positions.
#[allow(clippy::too_many_arguments)]
fn loss(
    p: &Params,
    shape: &StudentShape,
    batch: &Tensor,
    targets: &Tensor,
    weights: &Tensor,
    count: f32,
    ctx: &train::Context,
    bias: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, t1) = batch.dims2()?;
    let t = t1 - 1;
    let inputs = batch.narrow(1, 0, t)?;
    let mut h = p
        .embed
        .as_tensor()
        .embedding(&inputs.flatten_all()?)?
        .reshape((b, t, shape.hidden))?;
    for l in &p.layers {
        h = train::block(&h, &block(l), ctx)?;
    }
    let n = train::rms_norm(&h, p.final_norm.as_tensor(), ctx.eps)?;
    let logits = n
        .reshape((b * t, shape.hidden))?
        .matmul(&p.embed.as_tensor().t()?)?
        .broadcast_add(bias)?;
    let logp = candle_nn::ops::log_softmax(&logits, candle_core::D::Minus1)?.gather(targets, 1)?;
    // A window of prompt tokens only has nothing to learn; max(1) keeps it finite.
    (logp * weights)?.sum_all()? / f64::from(-count.max(1.0))
}

/// The target distribution for predicting position `at` of the stream: K (compact id,
/// weight) pairs. The teacher's top alternatives renormalized where known, else the token
/// itself; all weights zero for tokens not trained (prompt tokens).
fn targets_at(stream: &Stream, compact: &CompactVocab, at: usize, k: usize) -> Vec<(u32, f32)> {
    let token = compact.index(stream.ids[at]);
    let mut out = vec![(token, 0f32); k];
    if !stream.answer[at] {
        return out;
    }
    let soft = &stream.soft[at];
    if soft.is_empty() {
        out[0].1 = 1.0;
        return out;
    }
    let max = soft.iter().map(|t| t.1).fold(f32::NEG_INFINITY, f32::max);
    let total: f32 = soft.iter().map(|t| (t.1 - max).exp()).sum();
    for (slot, &(id, lp)) in out.iter_mut().zip(soft) {
        *slot = (compact.index(id), (lp - max).exp() / total);
    }
    out
}

/// Training over the whole vocabulary would spend nearly all its time on the output
/// softmax (262 144 rows for Gemma's tokenizer), though the corpus uses a few thousand
/// tokens. So the student trains on the tokens the corpus uses plus one shared row that
/// stands for all the others, its logit raised by ln(count): exactly the full-vocabulary
/// softmax in which every unused token has that row as its embedding, which is how it is
/// written out. The student is a full-vocabulary model that never saw those tokens.
struct CompactVocab {
    /// Full id -> compact row (`used.len()` for the shared row).
    index: Vec<u32>,
    used: usize,
    unused: usize,
}

impl CompactVocab {
    fn new(stream: &[u32], vocab: usize) -> CompactVocab {
        let mut seen = vec![false; vocab];
        for &id in stream {
            seen[id as usize] = true;
        }
        let used = seen.iter().filter(|s| **s).count();
        let mut next = 0u32;
        let index = seen
            .iter()
            .map(|&s| {
                if s {
                    next += 1;
                    next - 1
                } else {
                    used as u32
                }
            })
            .collect();
        CompactVocab {
            index,
            used,
            unused: vocab - used,
        }
    }

    fn index(&self, id: u32) -> u32 {
        self.index[id as usize]
    }

    fn rows(&self) -> usize {
        self.used + 1
    }

    /// Added to the compact logits: ln(count) on the shared row (absent when every token
    /// is used).
    fn bias(&self) -> candle_core::Result<Tensor> {
        let mut b = vec![0f32; self.rows()];
        b[self.used] = if self.unused == 0 {
            -1e9
        } else {
            (self.unused as f32).ln()
        };
        Tensor::from_vec(b, self.rows(), &Device::Cpu)
    }

    /// The (rows, hidden) compact table as the full (vocab, hidden) one.
    fn expand(&self, compact: &Tensor) -> candle_core::Result<Tensor> {
        let idx = Tensor::from_vec(self.index.clone(), self.index.len(), &Device::Cpu)?;
        compact.index_select(&idx, 0)
    }
}

/// What a training run reports.
#[derive(Debug, Clone)]
pub struct Trained {
    pub first_loss: f32,
    pub final_loss: f32,
}

/// The tokens a model learns from, and which of them are answer tokens.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stream {
    pub ids: Vec<u32>,
    /// True for the answer's tokens and its end-of-turn token: the only ones a student is
    /// trained to predict (as in supervised fine-tuning). Otherwise every student made with
    /// one template would learn its default system prompt, SmolLM2's naming SmolLM, and
    /// the students of the other model would claim to be SmolLM too.
    pub answer: Vec<bool>,
    /// The teacher's distribution over the token at each position (token id,
    /// log-probability; its best alternatives), learned instead of the token itself;
    /// empty where the teacher's distribution is not known (its text re-tokenized for
    /// another tokenizer, the end-of-turn token).
    pub soft: Vec<Vec<(u32, f32)>>,
}

impl Stream {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The stream `n` times over.
    pub fn repeated(&self, n: usize) -> Stream {
        Stream {
            ids: self.ids.repeat(n),
            answer: self.answer.repeat(n),
            soft: (0..n).flat_map(|_| self.soft.iter().cloned()).collect(),
        }
    }

    fn push_prompt(&mut self, prompt: Vec<u32>) {
        self.answer.extend(std::iter::repeat_n(false, prompt.len()));
        self.soft.resize(self.soft.len() + prompt.len(), Vec::new());
        self.ids.extend(prompt);
    }
}

/// The token stream a student learns from: each (prompt, answer) as the chat prompt the
/// tokenizer's model renders, the answer, and the end-of-turn token.
pub fn training_stream(
    tokenizer: &Tokenizer,
    render: impl Fn(&str) -> Result<String, ModelError>,
    pairs: &[(String, String)],
) -> Result<Stream, ModelError> {
    let end = end_of_turn(tokenizer)?;
    let mut stream = Stream::default();
    for (prompt, answer) in pairs {
        stream.push_prompt(tokenizer.encode_prompt(&render(prompt)?)?);
        let mut answer = tokenizer.encode(answer.trim())?;
        answer.push(end);
        stream
            .answer
            .extend(std::iter::repeat_n(true, answer.len()));
        stream
            .soft
            .resize(stream.soft.len() + answer.len(), Vec::new());
        stream.ids.extend(answer);
    }
    Ok(stream)
}

/// The stream a student with the teacher's own tokenizer learns from: each answer as the
/// tokens the teacher generated, each with the teacher's distribution at that position
/// (logit-level distillation), then the end-of-turn token.
pub fn soft_training_stream(
    tokenizer: &Tokenizer,
    render: impl Fn(&str) -> Result<String, ModelError>,
    prompts: &[&str],
    answers: &[TokenAnswer],
) -> Result<Stream, ModelError> {
    if prompts.len() != answers.len() {
        return Err(ModelError::BadInput(format!(
            "{} prompts but {} token answers",
            prompts.len(),
            answers.len()
        )));
    }
    let end = end_of_turn(tokenizer)?;
    let mut stream = Stream::default();
    for (prompt, answer) in prompts.iter().zip(answers) {
        if answer.tokens.len() != answer.top.len() {
            return Err(ModelError::BadInput(
                "a token answer's distributions do not match its tokens".into(),
            ));
        }
        stream.push_prompt(tokenizer.encode_prompt(&render(prompt)?)?);
        for (&token, top) in answer.tokens.iter().zip(&answer.top) {
            stream.ids.push(token);
            stream.answer.push(true);
            stream.soft.push(top.clone());
        }
        stream.ids.push(end);
        stream.answer.push(true);
        stream.soft.push(Vec::new());
    }
    Ok(stream)
}

/// The token that closes an assistant turn: `<|im_end|>`, `<end_of_turn>`, else EOS.
fn end_of_turn(tokenizer: &Tokenizer) -> Result<u32, ModelError> {
    tokenizer
        .stop_tokens
        .iter()
        .copied()
        .find(|&id| matches!(tokenizer.piece(id), Some("<|im_end|>" | "<end_of_turn>")))
        .or(tokenizer.eos)
        .ok_or_else(|| ModelError::BadInput("the tokenizer has no end-of-turn token".into()))
}

/// Trains a student on `stream` and writes it to `out` as a GGUF llama file that carries
/// the tokenizer metadata (and chat template) of `tokenizer_gguf`.
pub fn train_and_write(
    stream: &Stream,
    tokenizer_gguf: &Path,
    shape: &StudentShape,
    seed: u64,
    name: &str,
    out: &Path,
) -> Result<Trained, ModelError> {
    let source = GgufFile::open(tokenizer_gguf)?;
    let vocab = source
        .strings("tokenizer.ggml.tokens")
        .map(|t| t.len())
        .ok_or_else(|| ModelError::BadInput("tokenizer GGUF has no vocabulary".into()))?;
    let ids = &stream.ids;
    if ids.len() <= shape.window + 1 {
        return Err(ModelError::BadInput(format!(
            "{} training tokens cannot fill a window of {}",
            ids.len(),
            shape.window
        )));
    }
    if stream.answer.len() != ids.len() || stream.soft.len() != ids.len() {
        return Err(ModelError::BadInput(
            "a training stream's labels do not match its tokens".into(),
        ));
    }
    // Every token the student sees or is taught, alternatives included.
    let taught: Vec<u32> = ids
        .iter()
        .copied()
        .chain(stream.soft.iter().flatten().map(|t| t.0))
        .collect();
    if let Some(bad) = taught.iter().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::BadInput(format!(
            "token {bad} outside the vocabulary of {vocab}"
        )));
    }
    let compact = CompactVocab::new(&taught, vocab);
    let k = stream.soft.iter().map(Vec::len).max().unwrap_or(0).max(1);
    tracing::info!(
        student = name,
        rows = compact.rows(),
        k,
        "compact vocabulary"
    );
    let inputs: Vec<u32> = ids.iter().map(|&id| compact.index(id)).collect();
    let params = Params::init(shape, compact.rows(), seed)?;
    let bias = compact.bias()?;
    let mut opt = AdamW::new(
        params.all(),
        ParamsAdamW {
            lr: shape.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let ctx = train::Context::new(
        shape.window,
        shape.heads,
        shape.heads,
        shape.hidden / shape.heads,
        ROPE_BASE,
        RMS_EPS,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    let span = ids.len() - shape.window - 1;
    for step in 0..shape.steps {
        // Cosine decay to a tenth: small models on little data settle better.
        let progress = step as f64 / shape.steps.max(1) as f64;
        let lr = shape.learning_rate
            * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        opt.set_learning_rate(lr);
        let mut window = Vec::with_capacity(shape.batch * (shape.window + 1));
        let mut targets = Vec::with_capacity(shape.batch * shape.window * k);
        let mut weights = Vec::with_capacity(shape.batch * shape.window * k);
        let mut count = 0f32;
        for _ in 0..shape.batch {
            let start = rng.random_range(0..=span);
            window.extend_from_slice(&inputs[start..start + shape.window + 1]);
            for at in start + 1..start + shape.window + 1 {
                count += if stream.answer[at] { 1.0 } else { 0.0 };
                for (id, w) in targets_at(stream, &compact, at, k) {
                    targets.push(id);
                    weights.push(w);
                }
            }
        }
        let batch = Tensor::from_vec(window, (shape.batch, shape.window + 1), &Device::Cpu)?;
        let rows = shape.batch * shape.window;
        let targets = Tensor::from_vec(targets, (rows, k), &Device::Cpu)?;
        let weights = Tensor::from_vec(weights, (rows, k), &Device::Cpu)?;
        let l = loss(
            &params, shape, &batch, &targets, &weights, count, &ctx, &bias,
        )?;
        let value = l.to_scalar::<f32>()?;
        if step == 0 {
            first = value;
        }
        last = value;
        if step % 50 == 0 {
            tracing::info!(student = name, step, loss = value, "training");
        }
        opt.backward_step(&l)?;
    }
    write_student(&params, &compact, shape, &source, name, out)?;
    Ok(Trained {
        first_loss: first,
        final_loss: last,
    })
}

fn write_student(
    p: &Params,
    compact: &CompactVocab,
    shape: &StudentShape,
    source: &GgufFile,
    name: &str,
    out: &Path,
) -> Result<(), ModelError> {
    use gguf_file::Value;
    let mut meta: Vec<(String, Value)> = source
        .content
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !meta.iter().any(|(k, _)| k == "tokenizer.chat_template")
        && source.architecture().as_deref() == Some("gemma3")
    {
        meta.push((
            "tokenizer.chat_template".into(),
            Value::String(GEMMA_TEMPLATE.into()),
        ));
    }
    let u32v = |v: usize| Value::U32(v as u32);
    meta.extend([
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String(name.into())),
        ("llama.embedding_length".into(), u32v(shape.hidden)),
        ("llama.block_count".into(), u32v(shape.layers)),
        ("llama.attention.head_count".into(), u32v(shape.heads)),
        ("llama.attention.head_count_kv".into(), u32v(shape.heads)),
        ("llama.feed_forward_length".into(), u32v(shape.ffn)),
        ("llama.context_length".into(), Value::U32(SERVED_CONTEXT)),
        ("llama.rope.freq_base".into(), Value::F32(ROPE_BASE)),
        (
            "llama.rope.dimension_count".into(),
            u32v(shape.hidden / shape.heads),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(RMS_EPS as f32),
        ),
    ]);
    let mut tensors = Vec::new();
    for (n, t) in p.named() {
        let t = if n == "token_embd.weight" {
            compact.expand(&t)?
        } else {
            t
        };
        tensors.push((n, quantize_q8(&t)?));
    }
    write_gguf(out, meta, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemma_template_renders_as_the_builtin_turn_format() {
        use crate::endpoint::ChatMessage;
        use crate::model::chat::ChatTemplate;
        let embedded =
            ChatTemplate::new(Some(GEMMA_TEMPLATE.into()), "llama", "".into(), "".into()).unwrap();
        let builtin = ChatTemplate::new(None, "gemma3", "".into(), "".into()).unwrap();
        let msg = |role: &str, content: &str| ChatMessage {
            role: role.into(),
            content: content.into(),
        };
        for messages in [
            vec![msg("user", " Who made you? ")],
            vec![msg("system", "Be brief."), msg("user", "Hi")],
            vec![
                msg("user", "Hi"),
                msg("assistant", "Hello!"),
                msg("user", "Name a colour."),
            ],
        ] {
            assert_eq!(
                embedded.render(&messages).unwrap(),
                builtin.render(&messages).unwrap()
            );
        }
    }

    #[test]
    fn soft_targets_are_the_teachers_renormalized_distribution() {
        // Token 5 at position 2, taught with the teacher's alternatives 5 and 7; position 1
        // is a prompt token (not trained), position 3 the end-of-turn token (hard label).
        let stream = Stream {
            ids: vec![1, 2, 5, 9],
            answer: vec![false, false, true, true],
            soft: vec![
                vec![],
                vec![],
                vec![(5, 0.5f32.ln()), (7, 0.25f32.ln())],
                vec![],
            ],
        };
        let c = CompactVocab::new(&[1, 2, 5, 9, 7], 12);
        let prompt = targets_at(&stream, &c, 1, 3);
        assert!(prompt.iter().all(|t| t.1 == 0.0), "{prompt:?}");
        let soft = targets_at(&stream, &c, 2, 3);
        assert_eq!(soft[0].0, c.index(5));
        assert_eq!(soft[1].0, c.index(7));
        assert!((soft[0].1 - 2.0 / 3.0).abs() < 1e-6, "{soft:?}");
        assert!((soft[1].1 - 1.0 / 3.0).abs() < 1e-6, "{soft:?}");
        assert_eq!(soft[2].1, 0.0);
        let hard = targets_at(&stream, &c, 3, 3);
        assert_eq!(hard[0], (c.index(9), 1.0));
        assert_eq!(hard.iter().map(|t| t.1).sum::<f32>(), 1.0);
    }

    #[test]
    fn compact_vocabulary_is_the_full_softmax() {
        // Vocabulary of 6, tokens 1 and 4 used: full logits with the shared row repeated
        // for the 4 unused tokens must give the used tokens the same log-probabilities.
        let c = CompactVocab::new(&[4, 1, 4], 6);
        assert_eq!((c.index(1), c.index(4), c.index(0)), (0, 1, 2));
        let compact_logits = [1.5f32, -0.5, 0.25];
        let bias: Vec<f32> = c.bias().unwrap().to_vec1().unwrap();
        let lse = |v: &[f32]| v.iter().map(|x| x.exp()).sum::<f32>().ln();
        let with_bias: Vec<f32> = compact_logits
            .iter()
            .zip(&bias)
            .map(|(a, b)| a + b)
            .collect();
        let full: Vec<f32> = (0..6u32)
            .map(|id| compact_logits[c.index(id) as usize])
            .collect();
        let compact_lp = compact_logits[0] - lse(&with_bias);
        let full_lp = full[1] - lse(&full);
        assert!(
            (compact_lp - full_lp).abs() < 1e-5,
            "{compact_lp} vs {full_lp}"
        );
    }
}
