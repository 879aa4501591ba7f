//! llama-quantize's choice of weight type for each tensor of a file type (`q4_k_m`, `q4_0`,
//! ...), so the reference's quantized forms are the files a copier running llama.cpp's
//! `llama-quantize` would publish. Follows `llama_tensor_get_type_impl` and
//! `tensor_type_fallback` in llama.cpp's `src/llama-quant.cpp` (the sdist
//! `scripts/build-llama-cpp.sh` builds) for dense models without an importance matrix;
//! mixture-of-experts, Falcon and the IQ types are not covered.
//!
//! What matters most for small models: a tied token embedding (it doubles as the output
//! layer) is stored as Q6_K, or Q8_0 where its rows do not divide into 256-blocks, never
//! in the file type's own 4 bits; and K-quant matrices whose rows do not divide into
//! 256-blocks (SmolLM2's 576, Gemma 3 270M's 640) fall back to legacy types.

use candle_core::quantized::GgmlDType;

/// A `llama-quantize` file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ftype {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3KS,
    Q3KM,
    Q3KL,
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
    Q6K,
}

impl Ftype {
    pub const NAMES: [&'static str; 14] = [
        "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s",
        "q4_k_m", "q5_k_s", "q5_k_m", "q6_k",
    ];

    pub fn parse(s: &str) -> Option<Ftype> {
        Some(match s.to_ascii_lowercase().as_str() {
            "q4_0" => Ftype::Q4_0,
            "q4_1" => Ftype::Q4_1,
            "q5_0" => Ftype::Q5_0,
            "q5_1" => Ftype::Q5_1,
            "q8_0" => Ftype::Q8_0,
            "q2_k" => Ftype::Q2K,
            "q3_k_s" => Ftype::Q3KS,
            "q3_k_m" => Ftype::Q3KM,
            "q3_k_l" => Ftype::Q3KL,
            "q4_k_s" => Ftype::Q4KS,
            "q4_k_m" => Ftype::Q4KM,
            "q5_k_s" => Ftype::Q5KS,
            "q5_k_m" => Ftype::Q5KM,
            "q6_k" => Ftype::Q6K,
            _ => return None,
        })
    }

    /// `llama_ftype_get_default_type`.
    pub fn default_type(self) -> GgmlDType {
        match self {
            Ftype::Q4_0 => GgmlDType::Q4_0,
            Ftype::Q4_1 => GgmlDType::Q4_1,
            Ftype::Q5_0 => GgmlDType::Q5_0,
            Ftype::Q5_1 => GgmlDType::Q5_1,
            Ftype::Q8_0 => GgmlDType::Q8_0,
            Ftype::Q2K => GgmlDType::Q2K,
            Ftype::Q3KS | Ftype::Q3KM | Ftype::Q3KL => GgmlDType::Q3K,
            Ftype::Q4KS | Ftype::Q4KM => GgmlDType::Q4K,
            Ftype::Q5KS | Ftype::Q5KM => GgmlDType::Q5K,
            Ftype::Q6K => GgmlDType::Q6K,
        }
    }
}

/// What of the model the choice depends on.
#[derive(Debug, Clone, Copy)]
pub struct ModelShape {
    pub n_layers: usize,
    /// Query heads per key-value head.
    pub n_gqa: usize,
    /// No `output.weight`: the token embedding is the output layer too.
    pub tied_embeddings: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Category {
    Output,
    TokenEmbd,
    AttnV,
    AttnOutput,
    FfnDown,
    Other,
}

fn category(name: &str) -> Category {
    if name == "output.weight" {
        Category::Output
    } else if name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Category::TokenEmbd
    } else if name.contains("attn_qkv.weight")
        || name.contains("attn_kv_b.weight")
        || name.contains("attn_v.weight")
    {
        Category::AttnV
    } else if name.contains("attn_output.weight") {
        Category::AttnOutput
    } else if name.contains("ffn_down") {
        Category::FfnDown
    } else {
        Category::Other
    }
}

/// `tensor_allows_quantization`, for the tensors dense llama-family files hold.
fn quantizable(name: &str, rank: usize) -> bool {
    rank >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && !name.contains("position_embd")
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type llama-quantize gives tensor `name` (row length `row_len`, `rank` dimensions) in
/// a file of type `ftype`; `None` for a tensor it copies unchanged.
pub fn tensor_type(
    ftype: Ftype,
    shape: &ModelShape,
    name: &str,
    rank: usize,
    row_len: usize,
) -> Option<GgmlDType> {
    use Ftype::*;
    use GgmlDType as T;
    if !quantizable(name, rank) {
        return None;
    }
    let n = shape.n_layers.max(1);
    // llama-quantize counts attn_v and ffn_down tensors in file order, which in the files
    // llama.cpp's converter writes is block order: the block number is the count.
    let i = layer_of(name).unwrap_or(0);
    let mut t = ftype.default_type();
    match category(name) {
        Category::Output | Category::TokenEmbd
            if category(name) == Category::Output || shape.tied_embeddings =>
        {
            if !row_len.is_multiple_of(t.block_size()) {
                t = T::Q8_0;
            } else if t != T::Q8_0 {
                t = T::Q6K;
            }
        }
        Category::TokenEmbd | Category::Output => {}
        Category::AttnV => match ftype {
            Q2K => t = if shape.n_gqa >= 4 { T::Q4K } else { T::Q3K },
            Q3KM => t = if i < 2 { T::Q5K } else { T::Q4K },
            Q3KL => t = T::Q5K,
            Q4KM | Q5KM if use_more_bits(i, n) => t = T::Q6K,
            Q4KS if i < 4 => t = T::Q5K,
            _ => {}
        },
        Category::FfnDown => match ftype {
            Q2K => t = T::Q3K,
            Q3KM => t = if i < n / 16 { T::Q5K } else { T::Q4K },
            Q3KL => t = T::Q5K,
            Q4KM if use_more_bits(i, n) => t = T::Q6K,
            Q5KM if use_more_bits(i, n) => t = T::Q6K,
            Q4KS if i < n / 8 => t = T::Q5K,
            _ => {}
        },
        Category::AttnOutput => match ftype {
            Q2K => t = T::Q3K,
            Q3KM => t = T::Q4K,
            Q3KL => t = T::Q5K,
            _ => {}
        },
        Category::Other => {}
    }
    Some(fallback(t, row_len))
}

/// `tensor_type_fallback`: a type whose blocks do not divide the rows gives way to a legacy
/// type of about the same width, or F16.
fn fallback(t: GgmlDType, row_len: usize) -> GgmlDType {
    use GgmlDType as T;
    if row_len.is_multiple_of(t.block_size()) {
        return t;
    }
    let t = match t {
        T::Q2K | T::Q3K => T::Q4_0,
        T::Q4K => T::Q5_0,
        T::Q5K => T::Q5_1,
        T::Q6K => T::Q8_0,
        other => other,
    };
    if row_len.is_multiple_of(t.block_size()) {
        t
    } else {
        T::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: ModelShape = ModelShape {
        n_layers: 30,
        n_gqa: 3,
        tied_embeddings: true,
    };

    #[test]
    fn a_tied_embedding_keeps_8_bits_where_256_blocks_do_not_fit() {
        // SmolLM2's rows are 576 long: Q6_K would need 256-blocks, so Q8_0.
        for ftype in [Ftype::Q4_0, Ftype::Q4KM, Ftype::Q2K, Ftype::Q8_0] {
            assert_eq!(
                tensor_type(ftype, &SMOLLM2, "token_embd.weight", 2, 576),
                Some(GgmlDType::Q8_0),
                "{ftype:?}"
            );
        }
        // With rows of 2048 it is Q6_K, except in a Q8_0 file.
        assert_eq!(
            tensor_type(Ftype::Q4_0, &SMOLLM2, "token_embd.weight", 2, 2048),
            Some(GgmlDType::Q6K)
        );
        assert_eq!(
            tensor_type(Ftype::Q8_0, &SMOLLM2, "token_embd.weight", 2, 2048),
            Some(GgmlDType::Q8_0)
        );
        // Untied, the embedding is an ordinary matrix.
        let untied = ModelShape {
            tied_embeddings: false,
            ..SMOLLM2
        };
        assert_eq!(
            tensor_type(Ftype::Q4_0, &untied, "token_embd.weight", 2, 2048),
            Some(GgmlDType::Q4_0)
        );
    }

    #[test]
    fn k_quant_mixes_widen_some_matrices_and_fall_back_on_odd_rows() {
        // Q4_K_M: attn_v and ffn_down of the first, last and every third block get Q6_K.
        assert_eq!(
            tensor_type(Ftype::Q4KM, &SMOLLM2, "blk.0.ffn_down.weight", 2, 1536),
            Some(GgmlDType::Q6K)
        );
        assert_eq!(
            tensor_type(Ftype::Q4KM, &SMOLLM2, "blk.4.ffn_down.weight", 2, 1536),
            Some(GgmlDType::Q4K)
        );
        // ... but 576-long rows cannot hold 256-blocks: Q6_K -> Q8_0, Q4_K -> Q5_0.
        assert_eq!(
            tensor_type(Ftype::Q4KM, &SMOLLM2, "blk.0.attn_v.weight", 2, 576),
            Some(GgmlDType::Q8_0)
        );
        assert_eq!(
            tensor_type(Ftype::Q4KM, &SMOLLM2, "blk.4.attn_q.weight", 2, 576),
            Some(GgmlDType::Q5_0)
        );
        assert_eq!(
            tensor_type(Ftype::Q2K, &SMOLLM2, "blk.4.attn_q.weight", 2, 576),
            Some(GgmlDType::Q4_0)
        );
        assert_eq!(
            tensor_type(Ftype::Q2K, &SMOLLM2, "blk.4.ffn_down.weight", 2, 1536),
            Some(GgmlDType::Q3K)
        );
        // Norms and vectors are copied.
        assert_eq!(
            tensor_type(Ftype::Q4KM, &SMOLLM2, "blk.4.attn_norm.weight", 1, 576),
            None
        );
    }

    #[test]
    fn more_bits_pattern_matches_llama_cpp() {
        // n = 30: blocks 0..3 and 26..29, and every third from 5.
        let wide: Vec<usize> = (0..30).filter(|&i| use_more_bits(i, 30)).collect();
        assert_eq!(wide, [0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29]);
    }

    #[test]
    fn every_name_parses() {
        for n in Ftype::NAMES {
            assert!(Ftype::parse(n).is_some(), "{n}");
        }
        assert!(Ftype::parse("iq2_xs").is_none());
    }
}
