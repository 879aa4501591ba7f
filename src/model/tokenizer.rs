//! Tokenizers: from `tokenizer.json` when there is one, otherwise built from GGUF metadata
//! (byte-level BPE with merges for `gpt2`-type vocabularies such as SmolLM2; SentencePiece
//! scores with byte fallback for `llama`-type vocabularies such as Gemma).
//!
//! Special tokens (control and user-defined) are split out of the text first, longest
//! first, the way llama.cpp does with `parse_special`, so chat-template markers become
//! single tokens.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, PreTokenizerWrapper};

use super::gguf::GgufFile;
use super::spm::{parse_byte_token, Spm};
use super::ModelError;

enum Backend {
    Hf(Box<tokenizers::Tokenizer>),
    Spm(Box<Spm>),
}

/// How token strings map to raw bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PieceStyle {
    /// GPT-2 byte-to-unicode table (`Ġ` is a space).
    ByteLevel,
    /// SentencePiece: `▁` is a space, `<0xNN>` is a raw byte.
    SentencePiece,
}

pub struct Tokenizer {
    backend: Backend,
    /// Token id -> raw bytes it stands for.
    bytes: Vec<Vec<u8>>,
    /// Token id -> its string in the vocabulary.
    pieces: Vec<String>,
    /// Control / user-defined tokens split out before the model tokenizer runs,
    /// longest text first.
    specials: Vec<(String, u32)>,
    control: HashSet<u32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// Tokens that end generation (eos, `<|im_end|>`, `<end_of_turn>`, ...).
    pub stop_tokens: Vec<u32>,
    /// Human-readable origin, e.g. "gguf:gpt2/smollm".
    pub kind: String,
}

const CONTROL: u32 = 3;
const USER_DEFINED: u32 = 4;
const UNKNOWN: u32 = 2;

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self, ModelError> {
        let model = g.string("tokenizer.ggml.model").unwrap_or_default();
        let tokens = g
            .strings("tokenizer.ggml.tokens")
            .ok_or_else(|| ModelError::Tokenizer("GGUF has no tokenizer.ggml.tokens".into()))?;
        let types = g
            .u32s("tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![1; tokens.len()]);
        let bos = g.u32("tokenizer.ggml.bos_token_id");
        let eos = g.u32("tokenizer.ggml.eos_token_id");
        let unk = g.u32("tokenizer.ggml.unknown_token_id");
        let specials_ids: Vec<u32> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| matches!(**t, CONTROL | USER_DEFINED | UNKNOWN))
            .map(|(i, _)| i as u32)
            .collect();
        let control: HashSet<u32> = types
            .iter()
            .enumerate()
            .filter(|(_, t)| **t == CONTROL)
            .map(|(i, _)| i as u32)
            .collect();
        let (backend, style, kind, default_add_bos) = match model.as_str() {
            "gpt2" => {
                let merges = g.strings("tokenizer.ggml.merges").ok_or_else(|| {
                    ModelError::Tokenizer("gpt2 tokenizer without tokenizer.ggml.merges".into())
                })?;
                let pre = g
                    .string("tokenizer.ggml.pre")
                    .unwrap_or_else(|| "gpt2".into());
                let hf = build_byte_level_bpe(&tokens, &merges, &pre, &specials_ids)?;
                (
                    Backend::Hf(Box::new(hf)),
                    PieceStyle::ByteLevel,
                    format!("gguf:gpt2/{pre}"),
                    false,
                )
            }
            "llama" => {
                let scores = g
                    .f32s("tokenizer.ggml.scores")
                    .unwrap_or_else(|| vec![0.0; tokens.len()]);
                (
                    Backend::Spm(Box::new(Spm::new(&tokens, &scores, unk))),
                    PieceStyle::SentencePiece,
                    "gguf:llama/spm".to_string(),
                    true,
                )
            }
            other => {
                return Err(ModelError::Unsupported(format!(
                    "GGUF tokenizer model `{other}` (supported: gpt2, llama)"
                )))
            }
        };
        let add_bos = g
            .bool("tokenizer.ggml.add_bos_token")
            .unwrap_or(default_add_bos);
        let bytes = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| piece_bytes(t, style, control.contains(&(i as u32))))
            .collect();
        let mut specials: Vec<(String, u32)> = specials_ids
            .iter()
            .filter_map(|&i| tokens.get(i as usize).map(|t| (t.clone(), i)))
            .filter(|(t, _)| !t.is_empty())
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let stop_tokens = stop_tokens(&tokens, eos);
        Ok(Self {
            backend,
            bytes,
            pieces: tokens,
            specials,
            control,
            bos,
            eos,
            add_bos,
            stop_tokens,
            kind,
        })
    }

    /// From a Hugging Face `tokenizer.json` (safetensors checkpoints).
    pub fn from_file(path: &Path, bos: Option<u32>, eos: Option<u32>) -> Result<Self, ModelError> {
        let hf = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        let raw = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let byte_level = raw.contains("\"ByteLevel\"");
        let style = if byte_level {
            PieceStyle::ByteLevel
        } else {
            PieceStyle::SentencePiece
        };
        let size = hf.get_vocab_size(true);
        let mut pieces = vec![String::new(); size];
        for (t, id) in hf.get_vocab(true) {
            if let Some(slot) = pieces.get_mut(id as usize) {
                *slot = t;
            }
        }
        let added = hf.get_added_tokens_decoder();
        let control: HashSet<u32> = added
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(id, _)| *id)
            .collect();
        let mut specials: Vec<(String, u32)> = added
            .iter()
            .map(|(id, t)| (t.content.clone(), *id))
            .collect();
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let bytes = pieces
            .iter()
            .enumerate()
            .map(|(i, t)| piece_bytes(t, style, control.contains(&(i as u32))))
            .collect();
        let stop_tokens = stop_tokens(&pieces, eos);
        Ok(Self {
            backend: Backend::Hf(Box::new(hf)),
            bytes,
            pieces,
            specials,
            control,
            bos,
            eos,
            add_bos: bos.is_some() && !byte_level,
            stop_tokens,
            kind: "tokenizer.json".into(),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    /// Token ids for `text`, special markers parsed, no BOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut out = Vec::new();
        for frag in self.partition(text) {
            match frag {
                Fragment::Special(id) => out.push(id),
                Fragment::Text(t) => out.extend(self.encode_plain(t)?),
            }
        }
        Ok(out)
    }

    /// Token ids for a full prompt: BOS when the model wants one, then the text.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let mut ids = Vec::new();
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend(self.encode(text)?);
        Ok(ids)
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        match &self.backend {
            Backend::Spm(spm) => Ok(spm.encode(text)),
            Backend::Hf(hf) => {
                let enc = hf
                    .encode_fast(text, false)
                    .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }

    fn partition<'a>(&self, text: &'a str) -> Vec<Fragment<'a>> {
        let mut frags = vec![Fragment::Text(text)];
        for (special, id) in &self.specials {
            if !text.contains(special.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(t) if t.contains(special.as_str()) => {
                        let mut rest = t;
                        while let Some(pos) = rest.find(special.as_str()) {
                            if pos > 0 {
                                next.push(Fragment::Text(&rest[..pos]));
                            }
                            next.push(Fragment::Special(*id));
                            rest = &rest[pos + special.len()..];
                        }
                        if !rest.is_empty() {
                            next.push(Fragment::Text(rest));
                        }
                    }
                    other => next.push(other),
                }
            }
            frags = next;
        }
        frags
    }

    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn token_string(&self, id: u32) -> String {
        String::from_utf8_lossy(self.token_bytes(id)).into_owned()
    }

    /// The token that stands for exactly these bytes, if any (e.g. a single byte).
    pub fn token_for_bytes(&self, bytes: &[u8]) -> Option<u32> {
        self.bytes
            .iter()
            .enumerate()
            .find(|(i, b)| b.as_slice() == bytes && !self.control.contains(&(*i as u32)))
            .map(|(i, _)| i as u32)
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.control.contains(&id)
    }

    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// Text of generated tokens; control tokens are left out, as servers do.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            if !self.is_control(id) {
                bytes.extend_from_slice(self.token_bytes(id));
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The Hugging Face tokenizer behind a `gpt2` vocabulary, to save as tokenizer.json.
    pub fn hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.backend {
            Backend::Hf(t) => Some(t),
            Backend::Spm(_) => None,
        }
    }
}

enum Fragment<'a> {
    Text(&'a str),
    Special(u32),
}

fn stop_tokens(pieces: &[String], eos: Option<u32>) -> Vec<u32> {
    let mut stops: Vec<u32> = eos.into_iter().collect();
    for name in ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"] {
        if let Some(i) = pieces.iter().position(|p| p == name) {
            if !stops.contains(&(i as u32)) {
                stops.push(i as u32);
            }
        }
    }
    stops
}

/// Qwen 2 / 2.5 / 3's pre-tokenizer (`tokenizer.json`'s Split regex, llama.cpp's `qwen2`).
pub const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's pre-tokenizer (llama.cpp's `llama-bpe`).
pub const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn build_byte_level_bpe(
    tokens: &[String],
    merges: &[String],
    pre: &str,
    specials: &[u32],
) -> Result<tokenizers::Tokenizer, ModelError> {
    let vocab: tokenizers::models::bpe::Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .filter_map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut tk = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    // llama.cpp names each vocabulary's pre-tokenizer in `tokenizer.ggml.pre`; these are the
    // regular expressions its `llama-vocab.cpp` uses for them (Qwen: one digit per piece;
    // Llama 3: up to three), applied before the byte-level mapping.
    let split = |regex: &str| -> Result<PreTokenizerWrapper, ModelError> {
        let split = Split::new(
            SplitPattern::Regex(regex.into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    let pre_tok: PreTokenizerWrapper = match pre {
        // SmolLM (and StarCoder-style vocabularies) split every digit on its own first.
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "qwen2" | "deepseek-r1-qwen" => split(QWEN2_PATTERN)?,
        "llama3" | "llama-bpe" | "llama-v3" => split(LLAMA3_PATTERN)?,
        "default" | "gpt2" | "gpt-2" => byte_level.into(),
        other => {
            tracing::warn!(
                pre = other,
                "unknown GGUF pre-tokenizer; splitting text as GPT-2 does, token ids may differ from the model's own"
            );
            byte_level.into()
        }
    };
    tk.with_pre_tokenizer(Some(pre_tok));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    let added: Vec<AddedToken> = specials
        .iter()
        .filter_map(|&i| tokens.get(i as usize))
        .map(|t| AddedToken::from(t.clone(), true))
        .collect();
    tk.add_special_tokens(added)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(tk)
}

fn piece_bytes(piece: &str, style: PieceStyle, control: bool) -> Vec<u8> {
    if control {
        return piece.as_bytes().to_vec();
    }
    match style {
        PieceStyle::SentencePiece => match parse_byte_token(piece) {
            Some(b) => vec![b],
            None => piece.replace('\u{2581}', " ").into_bytes(),
        },
        PieceStyle::ByteLevel => {
            let table = unicode_to_byte();
            let mut out = Vec::with_capacity(piece.len());
            for ch in piece.chars() {
                match table.get(&ch) {
                    Some(b) => out.push(*b),
                    None => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            out
        }
    }
}

/// Inverse of GPT-2's `bytes_to_unicode`.
fn unicode_to_byte() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
        printable.extend(0xA1..=0xAC);
        printable.extend(0xAE..=0xFF);
        let mut map = HashMap::new();
        let mut extra = 0u32;
        for b in 0u32..256 {
            let ch = if printable.contains(&b) {
                b
            } else {
                extra += 1;
                255 + extra
            };
            if let Some(c) = char::from_u32(ch) {
                map.insert(c, b as u8);
            }
        }
        map
    })
}
