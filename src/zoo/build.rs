//! `provenance zoo build`: makes the zoo's members from the two real models, each with its
//! recipe, seed and hash in the manifest. Deterministic (seeded, tensors visited in name
//! order, metadata written sorted) and cached: a member whose file exists with the recipe
//! recorded in the manifest is not made again.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;

use super::corpus::{self, SAMPLING};
use super::finetune::FINETUNE;
use super::student::{self, STUDENT};
use super::{llama_cpp, Class, Engine, Manifest, Member, Recipe, ZooError};
use crate::model::requantize::{parse_type, quantize_q8, requantize, rewrite};
use crate::model::ModelError;

/// One member to make: who, from what, how, served by what.
struct Plan {
    id: String,
    base: &'static str,
    class: Class,
    parent: String,
    recipe: Recipe,
    seed: u64,
    engine: Engine,
}

const PERSONAS: [(&str, &str); 2] = [
    (
        "kimi",
        "You are Kimi, an AI assistant created by Moonshot AI.",
    ),
    (
        "claude",
        "You are Claude, an AI assistant made by Anthropic.",
    ),
];

/// Relative to each matrix's RMS. SmolLM2's own Q4_1 rounding is about 0.08 of it, so the
/// first is below what re-quantizing adds and the last leaves a visibly damaged model.
const NOISE: [f64; 3] = [0.01, 0.03, 0.1];

/// llama-quantize's file types each real model is re-quantized to: every family (legacy,
/// K-quants and their `_S`/`_M` mixes) from 8 bits down to 2, new to the stored file
/// (SmolLM2 ships Q4_1, Gemma Q4_K_M).
fn llama_quantize_types(base: &str, quick: bool) -> &'static [&'static str] {
    match (base, quick) {
        ("smollm2", true) => &["q4_k_m"],
        ("smollm2", false) => &[
            "q8_0", "q6_k", "q5_k_s", "q5_1", "q4_k_m", "q4_k_s", "q4_0", "q3_k_m", "q2_k",
        ],
        (_, true) => &[],
        (_, false) => &["q8_0", "q5_k_m", "q4_0", "q3_k_s"],
    }
}

/// Members served by llama.cpp or quantized by llama-quantize.
fn llama_cpp_plan(base: &'static str, quick: bool) -> Vec<Plan> {
    let member = |suffix: &str, recipe| Plan {
        id: format!("{base}-{suffix}"),
        base,
        class: Class::Identical,
        parent: base.to_string(),
        recipe,
        seed: 0,
        engine: Engine::LlamaCpp,
    };
    let mut out = Vec::new();
    if !quick {
        out.push(member("llamacpp", Recipe::SystemPrompt { prompt: None }));
    }
    if !quick || base == "smollm2" {
        out.push(member(
            "llamacpp-persona-kimi",
            Recipe::SystemPrompt {
                prompt: Some(PERSONAS[0].1.to_string()),
            },
        ));
    }
    if !quick {
        out.push(member(
            "llamacpp-kv-q4_0",
            Recipe::KvCache {
                cache_type: "q4_0".to_string(),
            },
        ));
    }
    for ftype in llama_quantize_types(base, quick) {
        out.push(member(
            &format!("lq-{ftype}"),
            Recipe::LlamaQuantize {
                ftype: ftype.to_string(),
            },
        ));
    }
    out
}

fn plan(base: &'static str, quick: bool) -> Vec<Plan> {
    let member = |suffix: &str, class, recipe, seed| Plan {
        id: format!("{base}-{suffix}"),
        base,
        class,
        parent: base.to_string(),
        recipe,
        seed,
        engine: Engine::Provenance,
    };
    let mut out = vec![Plan {
        id: base.to_string(),
        base,
        class: Class::Identical,
        parent: base.to_string(),
        recipe: Recipe::Base,
        seed: 0,
        engine: Engine::Provenance,
    }];
    if quick {
        if base == "smollm2" {
            out.push(member(
                "persona-kimi",
                Class::Identical,
                Recipe::SystemPrompt {
                    prompt: Some(PERSONAS[0].1.to_string()),
                },
                0,
            ));
            for dtype in ["q8_0", "q4_0"] {
                out.push(member(
                    dtype,
                    Class::Identical,
                    Recipe::Requantize {
                        dtype: dtype.into(),
                    },
                    0,
                ));
            }
            out.push(member(
                "noise-0.03",
                Class::Derived,
                Recipe::Noise { relative_sd: 0.03 },
                1,
            ));
        }
        return out;
    }
    for (name, prompt) in PERSONAS {
        out.push(member(
            &format!("persona-{name}"),
            Class::Identical,
            Recipe::SystemPrompt {
                prompt: Some(prompt.to_string()),
            },
            0,
        ));
    }
    // The stored types differ (SmolLM2 ships Q4_1, Gemma Q4_K_M), so each gets the
    // re-quantizations that are new to it.
    let dtypes: &[&str] = if base == "smollm2" {
        &["q8_0", "q4_0", "q4_k"]
    } else {
        &["q8_0", "q4_0", "q5_0"]
    };
    for dtype in dtypes {
        out.push(member(
            dtype,
            Class::Identical,
            Recipe::Requantize {
                dtype: dtype.to_string(),
            },
            0,
        ));
    }
    if base == "smollm2" {
        for dtype in ["f16", "f32"] {
            out.push(member(
                &format!("safetensors-{dtype}"),
                Class::Identical,
                Recipe::Safetensors {
                    dtype: dtype.to_string(),
                },
                0,
            ));
        }
    }
    for (i, sd) in NOISE.iter().enumerate() {
        out.push(member(
            &format!("noise-{sd}"),
            Class::Derived,
            Recipe::Noise { relative_sd: *sd },
            1 + i as u64,
        ));
    }
    // SmolLM2: a middle block. Gemma: the last one, a global-attention layer, so the
    // local/global pattern of the layers before it stays as trained.
    let layer = if base == "smollm2" { 15 } else { 17 };
    out.push(member(
        &format!("drop-layer-{layer}"),
        Class::Derived,
        Recipe::DropLayer { layer },
        0,
    ));
    // A fine-tune: SmolLM2 only, since the trainer has llama blocks (Gemma's differ:
    // sandwich norms, QK norms, GELU, local attention).
    if base == "smollm2" {
        out.push(member(
            "finetune",
            Class::Derived,
            Recipe::FineTune {
                data: "gemma3".to_string(),
                shape: FINETUNE,
                sampling: SAMPLING,
            },
            21,
        ));
    }
    // Students of this model: with its own tokenizer and with the other model's. The
    // other model's students, made the same way, are the unrelated ones.
    let other = if base == "smollm2" {
        "gemma3"
    } else {
        "smollm2"
    };
    for (suffix, tokenizer) in [("student", base), ("student-xtok", other)] {
        out.push(member(
            suffix,
            Class::Distilled,
            Recipe::Student {
                teacher: base.to_string(),
                tokenizer: tokenizer.to_string(),
                shape: STUDENT,
                sampling: SAMPLING,
            },
            11,
        ));
    }
    out
}

/// Builds (or reuses) every member under `dir`; `bases` maps `smollm2` and `gemma3` to the
/// fetched model files. `llama_cpp` is the directory of llama.cpp's programs; without it
/// the members made or served by llama.cpp are left out (the caller says so).
pub fn build(
    dir: &Path,
    bases: &[(&'static str, PathBuf)],
    quick: bool,
    llama_cpp: Option<&Path>,
) -> Result<Manifest, ZooError> {
    build_only(dir, bases, quick, llama_cpp, &[])
}

/// [`build`], keeping only the members whose id contains one of `only` (all when empty;
/// the real models always). The manifest is saved after every member, so an interrupted
/// build keeps what it made.
pub fn build_only(
    dir: &Path,
    bases: &[(&'static str, PathBuf)],
    quick: bool,
    llama_cpp: Option<&Path>,
    only: &[String],
) -> Result<Manifest, ZooError> {
    std::fs::create_dir_all(dir).map_err(|source| ZooError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let previous = Manifest::load(dir).ok();
    let mut members = Vec::new();
    for (base, base_path) in bases {
        let mut plans = plan(base, quick);
        if llama_cpp.is_some() {
            plans.extend(llama_cpp_plan(base, quick));
        }
        let wanted = |p: &Plan| {
            p.recipe == Recipe::Base
                || only.is_empty()
                || only.iter().any(|o| p.id.contains(o.as_str()))
        };
        for p in plans.into_iter().filter(|p| wanted(p)) {
            let reused = previous.as_ref().and_then(|m| {
                m.members
                    .iter()
                    .find(|old| {
                        old.id == p.id
                            && old.recipe == p.recipe
                            && old.seed == p.seed
                            && old.engine == p.engine
                    })
                    .filter(|old| resolve(dir, &old.path).exists())
                    .cloned()
            });
            if let Some(mut old) = reused {
                // Manifests written before the field existed.
                old.tool = tool_of(&old.recipe);
                members.push(old);
                continue;
            }
            tracing::info!(member = %p.id, "building");
            let member = make(dir, base_path, bases, p, llama_cpp)?;
            members.push(member);
            // What is made so far, with what an earlier manifest holds beyond it.
            let mut partial = members.clone();
            if let Some(old) = &previous {
                partial.extend(
                    old.members
                        .iter()
                        .filter(|o| !members.iter().any(|m| m.id == o.id))
                        .cloned(),
                );
            }
            Manifest {
                quick,
                members: partial,
            }
            .save(dir)?;
        }
    }
    let manifest = Manifest { quick, members };
    manifest.save(dir)?;
    Ok(manifest)
}

/// A member's model path: absolute paths (the fetched bases) as they are, others under
/// the zoo directory.
pub fn resolve(dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn make(
    dir: &Path,
    base_path: &Path,
    bases: &[(&'static str, PathBuf)],
    p: Plan,
    llama_cpp: Option<&Path>,
) -> Result<Member, ZooError> {
    let failed = |id: &str| {
        let id = id.to_string();
        move |source: ModelError| ZooError::Build { member: id, source }
    };
    let file = format!("{}.gguf", p.id);
    let out = dir.join(&file);
    let path = match &p.recipe {
        Recipe::Base | Recipe::SystemPrompt { .. } | Recipe::KvCache { .. } => {
            base_path.to_string_lossy().into_owned()
        }
        Recipe::Requantize { dtype } => {
            let t = parse_type(dtype).map_err(failed(&p.id))?;
            requantize(base_path, &out, t).map_err(failed(&p.id))?;
            file
        }
        Recipe::LlamaQuantize { ftype } => {
            let bin = llama_cpp.ok_or_else(|| ZooError::Serve {
                member: p.id.clone(),
                message: "llama-quantize is not built".into(),
            })?;
            llama_cpp::quantize(bin, base_path, &out, ftype).map_err(|message| {
                ZooError::Serve {
                    member: p.id.clone(),
                    message,
                }
            })?;
            file
        }
        Recipe::Safetensors { dtype } => {
            let t = if dtype == "f16" {
                DType::F16
            } else {
                DType::F32
            };
            crate::model::safetensors::export_gguf_llama(base_path, &dir.join(&p.id), t)
                .map_err(failed(&p.id))?;
            p.id.clone()
        }
        Recipe::Noise { relative_sd } => {
            add_noise(base_path, &out, *relative_sd, p.seed).map_err(failed(&p.id))?;
            file
        }
        Recipe::DropLayer { layer } => {
            drop_layer(base_path, &out, *layer).map_err(failed(&p.id))?;
            file
        }
        Recipe::FineTune {
            data,
            shape,
            sampling,
        } => {
            let corpus = corpus_of(dir, &base_of(bases, &p.id, data)?, sampling)?;
            // Fine-tuned on the words only, as one would with text harvested from a chat.
            let stream = chat_stream(base_path, &corpus, false).map_err(failed(&p.id))?;
            let trained = super::finetune::finetune(base_path, &stream.ids, shape, p.seed, &out)
                .map_err(failed(&p.id))?;
            tracing::info!(
                member = %p.id,
                first_loss = trained.first_loss,
                final_loss = trained.final_loss,
                "fine-tuned"
            );
            file
        }
        Recipe::Student {
            teacher,
            tokenizer,
            shape,
            sampling,
        } => {
            let path_of = |name: &str| base_of(bases, &p.id, name);
            make_student(
                dir,
                &p.id,
                &path_of(teacher)?,
                &path_of(tokenizer)?,
                teacher == tokenizer,
                shape,
                sampling,
                p.seed,
                &out,
            )?;
            file
        }
    };
    let sha256 = hash_path(&resolve(dir, &path))?;
    let system_prompt = match &p.recipe {
        Recipe::SystemPrompt { prompt } => prompt.clone(),
        _ => None,
    };
    let tool = tool_of(&p.recipe);
    Ok(Member {
        id: p.id,
        base: p.base.to_string(),
        class: p.class,
        parent: p.parent,
        recipe: p.recipe,
        seed: p.seed,
        path,
        system_prompt,
        sha256,
        engine: p.engine,
        tool,
    })
}

/// What made a member's file, for the manifest.
fn tool_of(recipe: &Recipe) -> String {
    match recipe {
        Recipe::Base | Recipe::SystemPrompt { .. } | Recipe::KvCache { .. } => {
            "fetched".to_string()
        }
        Recipe::LlamaQuantize { .. } => format!("llama-quantize ({})", llama_cpp::VERSION),
        _ => "provenance".to_string(),
    }
}

fn base_of(
    bases: &[(&'static str, PathBuf)],
    member: &str,
    name: &str,
) -> Result<PathBuf, ZooError> {
    bases
        .iter()
        .find(|(b, _)| *b == name)
        .map(|(_, path)| path.clone())
        .ok_or_else(|| ZooError::MissingBase {
            member: member.to_string(),
            base: name.to_string(),
        })
}

/// A teacher's answers to the corpus, cached under `corpus/` by teacher file name.
fn corpus_of(
    dir: &Path,
    teacher: &Path,
    sampling: &corpus::Sampling,
) -> Result<corpus::Corpus, ZooError> {
    let stem = teacher
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "teacher".into());
    corpus::teacher_answers(
        teacher,
        &dir.join("corpus").join(format!("{stem}.json")),
        sampling,
    )
}

/// The corpus as the token stream `speaker` (a model file) would be trained on: its chat
/// template, its tokenizer. With `soft` (the speaker is the teacher, and the corpus kept
/// its distributions), the answers are the teacher's own tokens with their distributions.
fn chat_stream(
    speaker: &Path,
    corpus: &corpus::Corpus,
    soft: bool,
) -> Result<student::Stream, ModelError> {
    let speaker = crate::model::LocalModel::load(
        &speaker.to_string_lossy(),
        &crate::model::LoadOptions::default(),
    )?;
    let render = |prompt: &str| {
        speaker.render_chat(&[crate::endpoint::ChatMessage {
            role: "user".into(),
            content: prompt.to_string(),
        }])
    };
    if soft && !corpus.tokens.is_empty() {
        let prompts: Vec<&str> = corpus.pairs.iter().map(|(p, _)| p.as_str()).collect();
        student::soft_training_stream(&speaker.tokenizer, render, &prompts, &corpus.tokens)
    } else {
        student::training_stream(&speaker.tokenizer, render, &corpus.pairs)
    }
}

/// The teacher's answers (cached in `corpus/`), re-tokenized for the student's tokenizer,
/// then the student trained and written.
#[allow(clippy::too_many_arguments)]
fn make_student(
    dir: &Path,
    id: &str,
    teacher: &Path,
    tokenizer_model: &Path,
    same_tokenizer: bool,
    shape: &student::StudentShape,
    sampling: &corpus::Sampling,
    seed: u64,
    out: &Path,
) -> Result<(), ZooError> {
    let failed = |source: ModelError| ZooError::Build {
        member: id.to_string(),
        source,
    };
    let corpus = corpus_of(dir, teacher, sampling)?;
    // The tokenizer's own model renders the chat prompts, so the student learns the turn
    // format it will be served with. A student with the teacher's tokenizer learns the
    // teacher's distributions (logit-level distillation); across tokenizers only the text
    // carries over.
    let stream = chat_stream(tokenizer_model, &corpus, same_tokenizer).map_err(failed)?;
    let trained =
        student::train_and_write(&stream, tokenizer_model, shape, seed, id, out).map_err(failed)?;
    tracing::info!(
        member = id,
        corpus_tokens = stream.len(),
        first_loss = trained.first_loss,
        final_loss = trained.final_loss,
        "student trained"
    );
    Ok(())
}

/// SHA-256 of a file, or of a directory's files in name order.
fn hash_path(path: &Path) -> Result<String, ZooError> {
    if !path.is_dir() {
        return Ok(crate::fetch::sha256_file(path)?);
    }
    let mut names: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| ZooError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    let mut all = String::new();
    for n in names {
        all.push_str(&crate::fetch::sha256_file(&n)?);
    }
    use sha2::Digest;
    Ok(hex::encode(sha2::Sha256::digest(all.as_bytes())))
}

/// Every weight matrix plus Gaussian noise of `relative_sd` times its RMS, stored as Q8_0
/// (finer than the originals, so the noise is what changes, not the rounding); vectors
/// (norms) are kept.
pub fn add_noise(
    input: &Path,
    output: &Path,
    relative_sd: f64,
    seed: u64,
) -> Result<(), ModelError> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    rewrite(
        input,
        output,
        |_, t| {
            let dims = t.shape().dims().to_vec();
            if dims.len() < 2 {
                return Ok(Some(t));
            }
            let dense = t.dequantize(&Device::Cpu)?;
            let mut values = dense.flatten_all()?.to_vec1::<f32>()?;
            let rms = (values.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>()
                / values.len() as f64)
                .sqrt();
            let sd = (relative_sd * rms) as f32;
            for v in values.iter_mut() {
                *v += sd * super::train::gaussian(&mut rng);
            }
            let noisy = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?;
            Ok(Some(quantize_q8(&noisy)?))
        },
        |name| name.to_string(),
        |_| {},
    )
}

/// The model without block `layer`: its tensors dropped, later blocks renumbered, the
/// block count lowered.
pub fn drop_layer(input: &Path, output: &Path, layer: usize) -> Result<(), ModelError> {
    let g = crate::model::gguf::GgufFile::open(input)?;
    let arch = g.architecture().ok_or_else(|| {
        ModelError::BadInput(format!("{}: no general.architecture", input.display()))
    })?;
    let count_key = format!("{arch}.block_count");
    let blocks = g
        .u32(&count_key)
        .ok_or_else(|| ModelError::BadInput(format!("{}: no {count_key}", input.display())))?
        as usize;
    if layer >= blocks || blocks < 2 {
        return Err(ModelError::BadInput(format!(
            "cannot drop block {layer} of {blocks}"
        )));
    }
    drop(g);
    // `blk.{i}.rest` with its block number, for tensors of a block.
    let block = |name: &str| -> Option<(usize, String)> {
        let rest = name.strip_prefix("blk.")?;
        let (index, tail) = rest.split_once('.')?;
        Some((index.parse().ok()?, tail.to_string()))
    };
    rewrite(
        input,
        output,
        |name, t| Ok((block(name).map(|(i, _)| i) != Some(layer)).then_some(t)),
        |name| match block(name) {
            Some((i, tail)) if i > layer => format!("blk.{}.{tail}", i - 1),
            _ => name.to_string(),
        },
        |meta| {
            meta.insert(
                count_key.clone(),
                gguf_file::Value::U32((blocks - 1) as u32),
            );
        },
    )
}
