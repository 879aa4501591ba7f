//! The ground-truth zoo: variants of the two real models whose relation to each reference
//! is known by construction (`build`), and the accuracy of our verdicts on every
//! (reference, member) pair (`eval`, with the pure tallies in `score`).

pub mod build;
pub mod corpus;
pub mod eval;
pub mod finetune;
pub mod identify_eval;
pub mod llama_cpp;
pub mod score;
pub mod student;
pub mod train;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::Verdict;

pub const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a zoo manifest: {source}")]
    Manifest {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("building {member}: {source}")]
    Build {
        member: String,
        source: crate::model::ModelError,
    },
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    #[error("{0}")]
    Fetch(#[from] crate::fetch::FetchError),
    #[error("fingerprinting {member}: {source}")]
    Fingerprint {
        member: String,
        source: crate::fingerprint::FingerprintError,
    },
    #[error("building {member}: it needs the fetched model `{base}`, which was not given")]
    MissingBase { member: String, base: String },
    #[error("serving {member}: {message}")]
    Serve { member: String, message: String },
    #[error(transparent)]
    Forms(#[from] crate::quantized_forms::FormsError),
    #[error("reading {member}'s answers back through {reference}: {message}")]
    ReadBack {
        reference: String,
        member: String,
        message: String,
    },
}

/// How a member relates to the real model it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Identical,
    Derived,
    Distilled,
    Unrelated,
}

impl Class {
    pub const ALL: [Class; 4] = [
        Class::Identical,
        Class::Derived,
        Class::Distilled,
        Class::Unrelated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Identical => "identical",
            Class::Derived => "derived",
            Class::Distilled => "distilled",
            Class::Unrelated => "unrelated",
        }
    }

    /// The verdict a correct scan gives.
    pub fn verdict(self) -> Verdict {
        match self {
            Class::Identical => Verdict::Identical,
            Class::Derived => Verdict::Derived,
            Class::Distilled => Verdict::Distilled,
            Class::Unrelated => Verdict::Unrelated,
        }
    }
}

/// How a member was made, recorded so anyone can make it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recipe {
    /// The real model as fetched.
    Base,
    /// The parent served with a system prompt (a persona spoofing another maker, or none).
    SystemPrompt { prompt: Option<String> },
    /// The parent served by llama-server with its attention keys and values cached in
    /// `cache_type` (`-ctk`/`-ctv`, as Ollama's `OLLAMA_KV_CACHE_TYPE` does): the same
    /// weights through coarser arithmetic than engine noise.
    KvCache { cache_type: String },
    /// Every matrix re-quantized to another GGUF type.
    Requantize { dtype: String },
    /// Re-quantized by llama.cpp's `llama-quantize` to one of its file types (`q4_k_m`,
    /// ...), with its own choice of type per tensor.
    LlamaQuantize { ftype: String },
    /// Exported as a Hugging Face safetensors checkpoint.
    Safetensors { dtype: String },
    /// Gaussian noise added to every weight matrix, with standard deviation
    /// `relative_sd` times the matrix's root mean square, then stored as Q8_0.
    Noise { relative_sd: f64 },
    /// One transformer block removed (pruning); later blocks move up one.
    DropLayer { layer: usize },
    /// The parent's last blocks fine-tuned on `data`'s answers to the distillation corpus,
    /// the rest kept as stored.
    FineTune {
        data: String,
        shape: finetune::FinetuneShape,
        sampling: corpus::Sampling,
    },
    /// A small model trained from scratch on the teacher's answers to the distillation
    /// corpus (`corpus`), with the tokenizer and chat template of `tokenizer`'s model.
    Student {
        teacher: String,
        tokenizer: String,
        shape: student::StudentShape,
        sampling: corpus::Sampling,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// Unique, usable as a file name.
    pub id: String,
    /// The real model it descends from (`smollm2` or `gemma3`).
    pub base: String,
    /// Its relation to `base`; to the other real model it is unrelated.
    pub class: Class,
    pub parent: String,
    pub recipe: Recipe,
    pub seed: u64,
    /// Model file or directory, relative to the zoo directory.
    pub path: String,
    /// Sent as the system prompt when it is served.
    pub system_prompt: Option<String>,
    /// SHA-256 of the model file (of `config.json` + weights for a directory).
    pub sha256: String,
    /// What serves it to the evaluation.
    #[serde(default)]
    pub engine: Engine,
    /// What made its file: `provenance` (our requantizer, trainer, ...), `llama-quantize
    /// (<version>)`, or `fetched` for the real models as published.
    #[serde(default = "provenance_tool")]
    pub tool: String,
}

fn provenance_tool() -> String {
    "provenance".to_string()
}

/// The server a member is asked through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Our runner behind `serve-model`'s router.
    #[default]
    Provenance,
    /// llama.cpp's `llama-server` (`llama_cpp`).
    LlamaCpp,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Provenance => "provenance",
            Engine::LlamaCpp => "llama.cpp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub quick: bool,
    pub members: Vec<Member>,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Manifest, ZooError> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|source| ZooError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ZooError::Manifest { path, source })
    }

    pub fn save(&self, dir: &Path) -> Result<(), ZooError> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).map_err(|source| ZooError::Manifest {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| ZooError::Io { path, source })
    }

    /// The base members: the real models, which serve as the references.
    pub fn references(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| m.recipe == Recipe::Base && m.engine == Engine::Provenance)
    }
}

/// The true relation of `member` to the reference `base`. A member trained on the other
/// real model's answers learned from that model as well: the fine-tune of SmolLM2 on
/// Gemma's answers is derived from SmolLM2 and, by the zoo's own definition of a student
/// (trained on text sampled from the reference), distilled from Gemma. Calling it
/// unrelated to Gemma would count a true detection as a false accusation and make it a
/// control that is not one.
pub fn truth(reference_base: &str, member: &Member) -> Class {
    if member.base == reference_base {
        return member.class;
    }
    match &member.recipe {
        Recipe::FineTune { data, .. } if data == reference_base => Class::Distilled,
        _ => Class::Unrelated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(base: &str, class: Class, recipe: Recipe) -> Member {
        Member {
            id: "m".into(),
            base: base.into(),
            class,
            parent: base.into(),
            recipe,
            seed: 0,
            path: "m.gguf".into(),
            system_prompt: None,
            sha256: String::new(),
            engine: Engine::Provenance,
            tool: provenance_tool(),
        }
    }

    #[test]
    fn a_fine_tune_on_the_other_models_answers_is_distilled_from_it() {
        let finetune = member(
            "smollm2",
            Class::Derived,
            Recipe::FineTune {
                data: "gemma3".into(),
                shape: finetune::FINETUNE,
                sampling: corpus::SAMPLING,
            },
        );
        assert_eq!(truth("smollm2", &finetune), Class::Derived);
        assert_eq!(truth("gemma3", &finetune), Class::Distilled);
        let noise = member(
            "smollm2",
            Class::Derived,
            Recipe::Noise { relative_sd: 0.1 },
        );
        assert_eq!(truth("gemma3", &noise), Class::Unrelated);
    }
}
