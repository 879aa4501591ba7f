//! GGUF files with seeded random weights in a family's exact tensor layout and metadata.
//!
//! No machine here can fetch Qwen, Phi-3, Gemma 2 or Mistral weights, so the tests run these files
//! through our runner and through candle-transformers' own implementation of each family,
//! and `provenance bench --synthetic` times the runner at real models' dimensions.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};

use super::requantize::write_gguf;
use super::weights::Family;
use super::ModelError;

/// The dimensions of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub vocab: usize,
    pub context: usize,
}

/// Which quantization types the matrices get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Every type the families' common quantizations use (Q4_K, Q5_K, Q6_K, Q8_0, F16), in
    /// turn over the matrices, so one small file exercises all of them.
    Every,
    /// Like llama.cpp's Q4_K_M: Q4_K, with Q6_K for half of the `attn_v` and `ffn_down`
    /// matrices and for the output layer; matrices whose rows do not fill 256-blocks fall
    /// back to Q8_0 as llama-quantize does for legacy-only shapes.
    Q4KM,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub family: Family,
    pub dims: Dims,
    pub seed: u64,
    pub mix: Mix,
    /// The output layer shares the token embedding (no `output.weight`).
    pub tied: bool,
    /// Mistral-style window written as `<arch>.attention.sliding_window`.
    pub sliding_window: Option<usize>,
}

/// A named size with the dimensions, tying and window of a real checkpoint (random
/// weights, the Q4_K_M-like mix).
pub fn named(name: &str, seed: u64) -> Option<Spec> {
    let d = |hidden, layers, heads, kv_heads, head_dim, ff, vocab| Dims {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        ff,
        vocab,
        context: 4096,
    };
    let (family, dims, tied, sliding_window) = match name {
        "qwen2.5-0.5b" => (
            Family::Qwen2,
            d(896, 24, 14, 2, 64, 4864, 151_936),
            true,
            None,
        ),
        "qwen2.5-1.5b" => (
            Family::Qwen2,
            d(1536, 28, 12, 2, 128, 8960, 151_936),
            true,
            None,
        ),
        "qwen3-0.6b" => (
            Family::Qwen3,
            d(1024, 28, 16, 8, 128, 3072, 151_936),
            true,
            None,
        ),
        "phi3-mini" => (
            Family::Phi3,
            d(3072, 32, 32, 32, 96, 8192, 32_064),
            false,
            None,
        ),
        "gemma2-2b" => (
            Family::Gemma2,
            d(2304, 26, 8, 4, 256, 9216, 256_000),
            true,
            Some(4096),
        ),
        _ => return None,
    };
    Some(Spec {
        family,
        dims,
        seed,
        mix: Mix::Q4KM,
        tied,
        sliding_window,
    })
}

pub const NAMED: &str = "qwen2.5-0.5b, qwen2.5-1.5b, qwen3-0.6b, phi3-mini, gemma2-2b";

struct Gen {
    rng: rand::rngs::StdRng,
}

impl Gen {
    /// Uniform values with standard deviation `sd`.
    fn tensor(&mut self, rows: usize, cols: usize, sd: f32) -> Result<Tensor, ModelError> {
        let a = sd * 3f32.sqrt();
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| self.rng.random_range(-a..a))
            .collect();
        let shape: Vec<usize> = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    /// A norm's gain: one, give or take a little.
    fn gain(&mut self, n: usize) -> Result<QTensor, ModelError> {
        let t = (self.tensor(1, n, 0.1)? + 1.0)?;
        Ok(QTensor::quantize(&t, GgmlDType::F32)?)
    }
}

fn quantize(t: &Tensor, wanted: GgmlDType) -> Result<QTensor, ModelError> {
    let cols = t.dims().last().copied().unwrap_or(0);
    let dtype = if cols.is_multiple_of(wanted.block_size()) {
        wanted
    } else if cols.is_multiple_of(32) {
        GgmlDType::Q8_0
    } else {
        GgmlDType::F16
    };
    Ok(QTensor::quantize(t, dtype)?)
}

/// Writes the model described by `spec` to `path`.
pub fn write(path: &Path, spec: &Spec) -> Result<(), ModelError> {
    if spec.family == Family::Gemma3 {
        return Err(ModelError::Unsupported(
            "synthetic files of Gemma 3's layout (use the fetched Gemma 3)".into(),
        ));
    }
    let arch = spec.family.architecture();
    let d = spec.dims;
    let mut gen = Gen {
        rng: rand::rngs::StdRng::seed_from_u64(spec.seed),
    };
    let every = [
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::Q8_0,
        GgmlDType::F16,
    ];
    let mut turn = 0usize;
    let mut pick = |role: &str, layer: usize| -> GgmlDType {
        match spec.mix {
            Mix::Every => {
                turn += 1;
                every[(turn - 1) % every.len()]
            }
            Mix::Q4KM => {
                let wide = layer < d.layers / 8 || layer >= 7 * d.layers / 8 || layer % 3 == 2;
                match role {
                    "output" => GgmlDType::Q6K,
                    "attn_v" | "ffn_down" if wide => GgmlDType::Q6K,
                    _ => GgmlDType::Q4K,
                }
            }
        }
    };
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    // Scales that keep activations near unit size through the stack and give the output
    // a spread of a few nats, so that greedy choices have margins worth comparing.
    let inv = |n: usize| 1.0 / (n as f32).sqrt();
    // A tied table is also the output layer: sized for the output's spread, as trained
    // tied embeddings are (small entries; the first norm rescales them on the way in).
    let embd_sd = if spec.tied { 3.0 * inv(d.hidden) } else { 1.0 };
    let embd = gen.tensor(d.vocab, d.hidden, embd_sd)?;
    tensors.push((
        "token_embd.weight".into(),
        quantize(&embd, pick("embd", 0))?,
    ));
    if !spec.tied {
        let out = gen.tensor(d.vocab, d.hidden, 3.0 * inv(d.hidden))?;
        tensors.push(("output.weight".into(), quantize(&out, pick("output", 0))?));
    }
    tensors.push(("output_norm.weight".into(), gen.gain(d.hidden)?));
    let (q_rows, kv_rows) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    for l in 0..d.layers {
        let p = format!("blk.{l}");
        let mut push = |name: &str, t: QTensor| tensors.push((format!("{p}.{name}"), t));
        push("attn_norm.weight", gen.gain(d.hidden)?);
        push("ffn_norm.weight", gen.gain(d.hidden)?);
        let sd_in = inv(d.hidden);
        if spec.family == Family::Phi3 {
            let qkv = gen.tensor(q_rows + 2 * kv_rows, d.hidden, sd_in)?;
            push("attn_qkv.weight", quantize(&qkv, pick("attn_qkv", l))?);
            let gate_up = gen.tensor(2 * d.ff, d.hidden, sd_in)?;
            push("ffn_up.weight", quantize(&gate_up, pick("ffn_up", l))?);
        } else {
            for (name, rows) in [("attn_q", q_rows), ("attn_k", kv_rows), ("attn_v", kv_rows)] {
                let w = gen.tensor(rows, d.hidden, sd_in)?;
                push(&format!("{name}.weight"), quantize(&w, pick(name, l))?);
            }
            for name in ["ffn_gate", "ffn_up"] {
                let w = gen.tensor(d.ff, d.hidden, sd_in)?;
                push(&format!("{name}.weight"), quantize(&w, pick(name, l))?);
            }
        }
        if spec.family == Family::Qwen2 {
            for (name, rows) in [("attn_q", q_rows), ("attn_k", kv_rows), ("attn_v", kv_rows)] {
                let b = gen.tensor(1, rows, 0.5)?;
                push(
                    &format!("{name}.bias"),
                    QTensor::quantize(&b, GgmlDType::F32)?,
                );
            }
        }
        if spec.family == Family::Qwen3 {
            push("attn_q_norm.weight", gen.gain(d.head_dim)?);
            push("attn_k_norm.weight", gen.gain(d.head_dim)?);
        }
        if spec.family == Family::Gemma2 {
            push("post_attention_norm.weight", gen.gain(d.hidden)?);
            push("post_ffw_norm.weight", gen.gain(d.hidden)?);
        }
        let wo = gen.tensor(d.hidden, q_rows, inv(q_rows))?;
        push("attn_output.weight", quantize(&wo, pick("attn_output", l))?);
        let down = gen.tensor(d.hidden, d.ff, inv(d.ff))?;
        push("ffn_down.weight", quantize(&down, pick("ffn_down", l))?);
    }
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (
            "general.name".into(),
            Value::String(format!("synthetic {arch} (seed {})", spec.seed)),
        ),
        ("general.file_type".into(), Value::U32(15)),
    ];
    let u = |v: usize| Value::U32(v as u32);
    for (k, v) in [
        ("context_length", u(d.context)),
        ("embedding_length", u(d.hidden)),
        ("block_count", u(d.layers)),
        ("feed_forward_length", u(d.ff)),
        ("attention.head_count", u(d.heads)),
        ("attention.head_count_kv", u(d.kv_heads)),
        ("attention.key_length", u(d.head_dim)),
        ("attention.value_length", u(d.head_dim)),
        ("rope.dimension_count", u(d.head_dim)),
        ("attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        // candle's Phi-3 fixes the base at 10000; Qwen ships 1e6.
        (
            "rope.freq_base",
            Value::F32(if spec.family == Family::Phi3 {
                10_000.0
            } else {
                1_000_000.0
            }),
        ),
    ] {
        meta.push((format!("{arch}.{k}"), v));
    }
    if let Some(w) = spec.sliding_window {
        meta.push((format!("{arch}.attention.sliding_window"), u(w)));
    }
    if spec.family == Family::Gemma2 {
        // Caps far below Gemma 2's own (50 and 30), so that they bend the scores and
        // logits these small random weights produce and a test can see whether they apply.
        meta.push((format!("{arch}.attn_logit_softcapping"), Value::F32(4.0)));
        meta.push((format!("{arch}.final_logit_softcapping"), Value::F32(5.0)));
    }
    let vocab = match spec.family {
        Family::Phi3 | Family::Gemma2 | Family::Gemma3 => spm_vocab(d.vocab, spec.family),
        _ => bpe_vocab(d.vocab, spec.family),
    };
    meta.extend(vocab);
    write_gguf(path, meta, tensors)
}

/// ChatML, as Qwen's templates render a plain conversation.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Phi-3's template.
pub const PHI3_TEMPLATE: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}";

/// GPT-2's printable stand-ins for the 256 byte values (`bytes_to_unicode`).
pub fn byte_alphabet() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut extra = 0u32;
    (0u32..256)
        .map(|b| {
            let c = if printable.contains(&b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            char::from_u32(c).unwrap_or('?')
        })
        .collect()
}

/// Common English pairs and the space-led letters: enough merges that words become a
/// few tokens, as in a real vocabulary.
fn merges() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for c in 'a'..='z' {
        out.push(("Ġ".into(), c.to_string()));
    }
    for pair in [
        "th", "he", "in", "er", "an", "re", "on", "at", "en", "nd", "ti", "es", "or", "te", "of",
        "ed", "is", "it", "al", "ar", "st", "to", "nt", "ng", "se", "ha", "as", "ou", "io", "le",
    ] {
        let (a, b) = pair.split_at(1);
        out.push((a.into(), b.into()));
        out.push((format!("Ġ{a}"), b.into()));
    }
    // Digit merges, which only a pre-tokenizer that keeps digit runs together can reach.
    for (a, b) in [("1", "2"), ("12", "3"), ("4", "5"), ("9", "9")] {
        out.push((a.into(), b.into()));
    }
    out.push(("Ġth".into(), "e".into()));
    out.push(("Ġa".into(), "nd".into()));
    out.push(("Ġ".into(), "Ġ".into()));
    out
}

/// The specials a ChatML vocabulary ends with (end of text, then the turn markers).
pub const BPE_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

fn bpe_vocab(size: usize, family: Family) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = byte_alphabet().iter().map(|c| c.to_string()).collect();
    let merges = merges();
    for (a, b) in &merges {
        let t = format!("{a}{b}");
        if !tokens.contains(&t) {
            tokens.push(t);
        }
    }
    let fill = size.saturating_sub(tokens.len() + BPE_SPECIALS.len());
    tokens.extend((0..fill).map(|i| format!("<unused{i}>")));
    let mut types = vec![1i32; tokens.len()];
    for s in BPE_SPECIALS {
        tokens.push(s.into());
        types.push(3);
    }
    let id = |s: &str| tokens.iter().position(|t| t == s).unwrap_or(0) as u32;
    let eos = id("<|im_end|>");
    let pre = if family == Family::Llama {
        "llama-bpe"
    } else {
        "qwen2"
    };
    vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(
                merges
                    .iter()
                    .map(|(a, b)| Value::String(format!("{a} {b}")))
                    .collect(),
            ),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
        (
            "tokenizer.ggml.bos_token_id".into(),
            Value::U32(id("<|endoftext|>")),
        ),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        (
            "tokenizer.chat_template".into(),
            Value::String(CHATML_TEMPLATE.into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
    ]
}

/// A SentencePiece vocabulary as llama.cpp's `llama` tokenizer model reads it: unknown,
/// BOS, EOS, the 256 byte tokens, pieces with scores, the family's turn markers (Phi-3's
/// with its template; Gemma's with none, as the base models ship).
fn spm_vocab(size: usize, family: Family) -> Vec<(String, Value)> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2i32, 3, 3];
    let mut scores = vec![0f32; 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let mut pieces: Vec<String> = vec!["▁".into()];
    pieces.extend(('a'..='z').map(|c| c.to_string()));
    pieces.extend(('a'..='z').map(|c| format!("▁{c}")));
    for w in [
        "th", "he", "in", "er", "an", "▁the", "▁and", "▁of", "▁to", "ing", "ed", "on",
    ] {
        pieces.push(w.into());
    }
    for (i, p) in pieces.into_iter().enumerate() {
        tokens.push(p);
        types.push(1);
        scores.push(-(i as f32));
    }
    let specials: &[&str] = if family == Family::Phi3 {
        // llama.cpp's loader looks `<|endoftext|>` up in any vocabulary named Phi-3.
        &[
            "<|endoftext|>",
            "<|assistant|>",
            "<|user|>",
            "<|system|>",
            "<|end|>",
        ]
    } else {
        &["<start_of_turn>", "<end_of_turn>"]
    };
    let fill = size.saturating_sub(tokens.len() + specials.len());
    for i in 0..fill {
        tokens.push(format!("<unused{i}>"));
        types.push(5);
        scores.push(-1e6);
    }
    for s in specials {
        tokens.push((*s).into());
        types.push(3);
        scores.push(0.0);
    }
    let end_marker = if family == Family::Phi3 {
        "<|end|>"
    } else {
        "<end_of_turn>"
    };
    let end = tokens.iter().position(|t| t == end_marker).unwrap_or(2) as u32;
    let mut meta = vec![
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(scores.into_iter().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(end)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
    ];
    if family == Family::Phi3 {
        meta.push((
            "tokenizer.chat_template".into(),
            Value::String(PHI3_TEMPLATE.into()),
        ));
    }
    meta
}
