//! A fine-tune of a real model: its last blocks trained for a few hundred steps on a
//! small chat corpus (candle autograd on the dequantized weights), every other tensor kept
//! as stored. The blocks below are frozen, so their outputs for the training windows are
//! computed once and reused at every step; only the trained blocks and the (frozen)
//! output projection run per step, which keeps it CPU-sized.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::student::Trained;
use super::train::{self, Block, Context, PARTS};
use crate::model::gguf::GgufFile;
use crate::model::requantize::{quantize_q8, rewrite};
use crate::model::weights::Family;
use crate::model::ModelError;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinetuneShape {
    /// How many of the last blocks are trained.
    pub blocks: usize,
    pub window: usize,
    pub batch: usize,
    pub steps: usize,
    pub learning_rate: f64,
    /// Training windows taken from the corpus (evenly spaced).
    pub windows: usize,
}

pub const FINETUNE: FinetuneShape = FinetuneShape {
    blocks: 2,
    window: 64,
    batch: 4,
    steps: 150,
    learning_rate: 1e-4,
    windows: 96,
};

/// Block `i`'s weights, dequantized, in [`PARTS`] order.
fn load_block(g: &mut GgufFile, i: usize) -> Result<[Tensor; 9], ModelError> {
    let mut out = Vec::with_capacity(PARTS.len());
    for part in PARTS {
        out.push(g.raw_dequantized(&format!("blk.{i}.{part}.weight"))?);
    }
    out.try_into()
        .map_err(|_| ModelError::BadInput("a block has nine tensors".into()))
}

/// Fine-tunes the last blocks of the llama GGUF `input` on `stream` and writes `output`.
pub fn finetune(
    input: &Path,
    stream: &[u32],
    shape: &FinetuneShape,
    seed: u64,
    output: &Path,
) -> Result<Trained, ModelError> {
    let mut g = GgufFile::open(input)?;
    let cfg = g.config(usize::MAX)?;
    if cfg.family != Family::Llama {
        return Err(ModelError::Unsupported(
            "fine-tuning supports the llama architecture".into(),
        ));
    }
    if shape.blocks == 0 || shape.blocks > cfg.n_layers {
        return Err(ModelError::BadInput(format!(
            "cannot train {} of {} blocks",
            shape.blocks, cfg.n_layers
        )));
    }
    let span = stream.len().saturating_sub(shape.window + 1);
    if span == 0 || shape.windows == 0 {
        return Err(ModelError::BadInput(format!(
            "{} tokens cannot fill a window of {}",
            stream.len(),
            shape.window
        )));
    }
    if let Some(bad) = stream.iter().find(|&&id| id as usize >= cfg.vocab_size) {
        return Err(ModelError::BadInput(format!(
            "token {bad} outside the vocabulary of {}",
            cfg.vocab_size
        )));
    }
    let ctx = Context::new(
        shape.window,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.head_dim,
        cfg.rope_base,
        cfg.rms_eps,
    )?;

    // The training windows and what the frozen blocks make of them.
    let starts: Vec<usize> = (0..shape.windows)
        .map(|i| i * span / shape.windows)
        .collect();
    let mut inputs = Vec::with_capacity(starts.len() * shape.window);
    let mut targets = Vec::with_capacity(starts.len() * shape.window);
    for &s in &starts {
        inputs.extend_from_slice(&stream[s..s + shape.window]);
        targets.extend_from_slice(&stream[s + 1..s + shape.window + 1]);
    }
    let n = starts.len();
    let targets = Tensor::from_vec(targets, (n, shape.window), &Device::Cpu)?;
    let embed = g.raw_dequantized("token_embd.weight")?;
    let head = if g.content.tensor_infos.contains_key("output.weight") {
        g.raw_dequantized("output.weight")?
    } else {
        embed.clone()
    };
    let final_norm = g.raw_dequantized("output_norm.weight")?;
    let ids = Tensor::from_vec(inputs, n * shape.window, &Device::Cpu)?;
    let mut hidden = embed
        .embedding(&ids)?
        .reshape((n, shape.window, cfg.hidden))?;
    drop(embed);
    let first = cfg.n_layers - shape.blocks;
    for i in 0..first {
        let w = Block::from_parts(load_block(&mut g, i)?);
        // A few windows at a time bounds the attention scores' memory.
        let mut parts = Vec::new();
        for c in (0..n).step_by(8) {
            let chunk = hidden.narrow(0, c, 8.min(n - c))?;
            parts.push(train::block(&chunk, &w, &ctx)?);
        }
        hidden = Tensor::cat(&parts, 0)?;
    }

    let mut vars: Vec<[Var; 9]> = Vec::with_capacity(shape.blocks);
    for i in first..cfg.n_layers {
        let parts = load_block(&mut g, i)?.map(|t| Var::from_tensor(&t));
        let [a, b, c, d, e, f, gate, up, down] = parts;
        vars.push([a?, b?, c?, d?, e?, f?, gate?, up?, down?]);
    }
    let mut opt = AdamW::new(
        vars.iter().flatten().cloned().collect(),
        ParamsAdamW {
            lr: shape.learning_rate,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (mut first_loss, mut last_loss) = (f32::NAN, f32::NAN);
    for step in 0..shape.steps {
        let pick: Vec<u32> = (0..shape.batch)
            .map(|_| rng.random_range(0..n) as u32)
            .collect();
        let pick = Tensor::from_vec(pick, shape.batch, &Device::Cpu)?;
        let mut h = hidden.index_select(&pick, 0)?;
        for block in &vars {
            let w = Block::from_parts(block.each_ref().map(|v| v.as_tensor().clone()));
            h = train::block(&h, &w, &ctx)?;
        }
        let normed = train::rms_norm(&h, &final_norm, cfg.rms_eps)?;
        let logits = normed
            .reshape((shape.batch * shape.window, cfg.hidden))?
            .matmul(&head.t()?)?;
        let want = targets.index_select(&pick, 0)?.flatten_all()?;
        let loss = candle_nn::loss::cross_entropy(&logits, &want)?;
        let value = loss.to_scalar::<f32>()?;
        if step == 0 {
            first_loss = value;
        }
        last_loss = value;
        if step % 25 == 0 {
            tracing::info!(step, loss = value, "fine-tuning");
        }
        opt.backward_step(&loss)?;
    }

    let mut trained: HashMap<String, Tensor> = HashMap::new();
    for (k, block) in vars.iter().enumerate() {
        for (part, v) in PARTS.iter().zip(block) {
            trained.insert(
                format!("blk.{}.{part}.weight", first + k),
                v.as_tensor().clone(),
            );
        }
    }
    drop(g);
    rewrite(
        input,
        output,
        |name, t| match trained.get(name) {
            Some(new) => Ok(Some(quantize_q8(new)?)),
            None => Ok(Some(t)),
        },
        |name| name.to_string(),
        |_| {},
    )?;
    Ok(Trained {
        first_loss,
        final_loss: last_loss,
    })
}
