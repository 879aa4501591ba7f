//! Identity claims: the maker and model family an answer names ("I'm Claude, made by
//! Anthropic"), recorded per identity probe in a fingerprint (`compare::identity` compares
//! their distributions).

/// A maker and its model family, with the names that point to them.
pub struct Family {
    /// Stable id used in features and reports, e.g. `anthropic/claude`.
    pub id: &'static str,
    pub patterns: &'static [&'static str],
}

/// Label for answers that name no known family.
pub const NONE: &str = "none";

/// Known families. ASCII patterns match whole words (case-insensitive); others (Chinese
/// names) match anywhere. Bare words that are too common ("phi", "yi") are left out.
pub const FAMILIES: &[Family] = &[
    Family {
        id: "openai/gpt",
        patterns: &[
            "openai", "open ai", "chatgpt", "gpt", "gpt-3", "gpt-3.5", "gpt-4", "gpt-4o", "gpt4",
        ],
    },
    Family {
        id: "anthropic/claude",
        patterns: &["anthropic", "claude"],
    },
    Family {
        id: "google/gemini",
        patterns: &["google", "gemini", "gemma", "deepmind", "bard", "谷歌"],
    },
    Family {
        id: "meta/llama",
        patterns: &["meta", "meta ai", "llama", "llama 2", "llama 3", "facebook"],
    },
    Family {
        id: "deepseek",
        patterns: &["deepseek", "deep seek", "深度求索"],
    },
    Family {
        id: "alibaba/qwen",
        patterns: &[
            "alibaba",
            "qwen",
            "tongyi",
            "通义千问",
            "通义",
            "阿里巴巴",
            "阿里云",
        ],
    },
    Family {
        id: "moonshot/kimi",
        patterns: &["moonshot", "moonshot ai", "kimi", "月之暗面"],
    },
    Family {
        id: "minimax",
        patterns: &["minimax", "abab"],
    },
    Family {
        id: "mistral",
        patterns: &["mistral", "mistral ai", "mixtral"],
    },
    Family {
        id: "huggingface/smollm",
        patterns: &["hugging face", "huggingface", "smollm", "smollm2"],
    },
    Family {
        id: "microsoft/phi",
        patterns: &[
            "microsoft",
            "phi-2",
            "phi-3",
            "phi-3.5",
            "phi-4",
            "phi3",
            "phi4",
        ],
    },
    Family {
        id: "xai/grok",
        patterns: &["xai", "x.ai", "grok"],
    },
    Family {
        id: "cohere/command",
        patterns: &["cohere", "command r", "command-r"],
    },
    Family {
        id: "zhipu/glm",
        patterns: &["zhipu", "chatglm", "glm-4", "智谱"],
    },
    Family {
        id: "01ai/yi",
        patterns: &["01.ai", "01-ai", "零一万物"],
    },
    Family {
        id: "baidu/ernie",
        patterns: &["baidu", "ernie", "文心一言", "百度"],
    },
    Family {
        id: "ibm/granite",
        patterns: &["ibm", "granite"],
    },
    Family {
        id: "tii/falcon",
        patterns: &["technology innovation institute", "falcon"],
    },
    Family {
        id: "ai2/olmo",
        patterns: &["allen institute", "allenai", "olmo", "tülu", "tulu"],
    },
];

/// Families named in `text`, in order of first mention.
pub fn claims(text: &str) -> Vec<&'static str> {
    let lower = text.to_lowercase();
    let mut found: Vec<(usize, &'static str)> = FAMILIES
        .iter()
        .filter_map(|family| {
            family
                .patterns
                .iter()
                .filter_map(|pattern| find_word(&lower, pattern))
                .min()
                .map(|at| (at, family.id))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, id)| id).collect()
}

/// Byte offset of the first match of `pattern`; ASCII patterns must stand as whole words.
fn find_word(haystack: &str, pattern: &str) -> Option<usize> {
    if !pattern.is_ascii() {
        return haystack.find(pattern);
    }
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    haystack
        .match_indices(pattern)
        .map(|(at, _)| at)
        .find(|&at| {
            let before = haystack[..at].chars().next_back();
            let after = haystack[at + pattern.len()..].chars().next();
            // "gpt-4" should also match inside "gpt-4-turbo"; a following hyphen or dot
            // continues a model name, so only letters and digits break the match.
            !is_word(before) && !is_word(after)
        })
}

/// The family an answer claims first, or [`NONE`].
pub fn primary_claim(text: &str) -> &'static str {
    claims(text).first().copied().unwrap_or(NONE)
}
