//! Chat templates: the model's own Jinja template (GGUF `tokenizer.chat_template` or
//! `tokenizer_config.json`) rendered with minijinja, or the architecture's known turn
//! format when the model ships none (the Gemma base model).

use minijinja::{context, Environment};
use serde::Serialize;

use crate::endpoint::ChatMessage;

use super::ModelError;

#[derive(Debug, Clone, Serialize)]
pub enum TemplateSource {
    /// The model's own Jinja template.
    Embedded,
    /// A built-in turn format for an architecture (named).
    Builtin(&'static str),
}

pub struct ChatTemplate {
    source: TemplateSource,
    jinja: Option<String>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(
        jinja: Option<String>,
        architecture: &str,
        bos_token: String,
        eos_token: String,
    ) -> Result<Self, ModelError> {
        let source = match (&jinja, architecture) {
            (Some(_), _) => TemplateSource::Embedded,
            (None, "gemma3" | "gemma2" | "gemma") => TemplateSource::Builtin("gemma"),
            (None, _) => TemplateSource::Builtin("chatml"),
        };
        let t = Self {
            source,
            jinja,
            bos_token,
            eos_token,
        };
        // Fail at load, not at the first request, when the template does not compile.
        if let Some(src) = &t.jinja {
            let mut env = environment();
            env.add_template("chat", src)
                .map_err(|e| ModelError::Template(e.to_string()))?;
        }
        Ok(t)
    }

    /// What the server reports: "embedded" or "builtin:gemma".
    pub fn describe(&self) -> String {
        match &self.source {
            TemplateSource::Embedded => "embedded".into(),
            TemplateSource::Builtin(name) => format!("builtin:{name}"),
        }
    }

    /// Renders the conversation with the assistant's turn opened.
    pub fn render(&self, messages: &[ChatMessage]) -> Result<String, ModelError> {
        for m in messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ModelError::BadInput(format!(
                    "unknown message role `{}` (system, user, assistant, tool)",
                    m.role
                )));
            }
        }
        match (&self.source, &self.jinja) {
            (TemplateSource::Embedded, Some(src)) => {
                let mut env = environment();
                env.add_template("chat", src)
                    .map_err(|e| ModelError::Template(e.to_string()))?;
                let tmpl = env
                    .get_template("chat")
                    .map_err(|e| ModelError::Template(e.to_string()))?;
                tmpl.render(context! {
                    messages => messages,
                    add_generation_prompt => true,
                    bos_token => self.bos_token,
                    eos_token => self.eos_token,
                })
                .map_err(|e| ModelError::Template(e.to_string()))
            }
            (TemplateSource::Builtin("gemma"), _) => Ok(render_gemma(messages)),
            _ => Ok(render_chatml(messages)),
        }
    }
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Hugging Face templates call Python string methods (.strip(), .startswith(), ...).
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                msg,
            ))
        },
    );
    env
}

/// Gemma's turn format, as llama.cpp applies it: a system message is folded into the first
/// user turn, the assistant's role is called `model`. BOS is added by the tokenizer.
fn render_gemma(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    let mut system = String::new();
    for m in messages {
        if m.role == "system" {
            system.push_str(m.content.trim());
            system.push_str("\n\n");
            continue;
        }
        let role = if m.role == "assistant" {
            "model"
        } else {
            "user"
        };
        out.push_str("<start_of_turn>");
        out.push_str(role);
        out.push('\n');
        if !system.is_empty() && role == "user" {
            out.push_str(&system);
            system.clear();
        }
        out.push_str(m.content.trim());
        out.push_str("<end_of_turn>\n");
    }
    out.push_str("<start_of_turn>model\n");
    out
}

fn render_chatml(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        out.push_str(&format!(
            "<|im_start|>{}\n{}<|im_end|>\n",
            m.role, m.content
        ));
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

/// Turn formats a serving stack may wrap a conversation in instead of the model's own
/// template: llama.cpp falls back to ChatML for a file that ships no template (the Gemma 3
/// file `models fetch` gives is one), an operator may pick any of llama.cpp's built-in
/// formats, and Ollama without a template sends the last user message as it is. Rendered
/// as llama.cpp renders them (`src/llama-chat.cpp`), assistant turn opened; BOS is the
/// tokenizer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TurnFormat {
    ChatMl,
    Gemma,
    Llama3,
    MistralV7,
    Phi3,
    Zephyr,
    Vicuna,
    /// The last user message alone (Ollama's `{{ .Prompt }}`).
    Raw,
}

impl TurnFormat {
    pub const ALL: [TurnFormat; 8] = [
        TurnFormat::ChatMl,
        TurnFormat::Gemma,
        TurnFormat::Llama3,
        TurnFormat::MistralV7,
        TurnFormat::Phi3,
        TurnFormat::Zephyr,
        TurnFormat::Vicuna,
        TurnFormat::Raw,
    ];

    /// llama.cpp's name for the format (`--chat-template NAME`).
    pub fn name(self) -> &'static str {
        match self {
            TurnFormat::ChatMl => "chatml",
            TurnFormat::Gemma => "gemma",
            TurnFormat::Llama3 => "llama3",
            TurnFormat::MistralV7 => "mistral-v7",
            TurnFormat::Phi3 => "phi3",
            TurnFormat::Zephyr => "zephyr",
            TurnFormat::Vicuna => "vicuna",
            TurnFormat::Raw => "raw",
        }
    }

    pub fn render(self, messages: &[ChatMessage]) -> String {
        let each =
            |f: &dyn Fn(&ChatMessage) -> String| -> String { messages.iter().map(f).collect() };
        match self {
            TurnFormat::ChatMl => render_chatml(messages),
            TurnFormat::Gemma => render_gemma(messages),
            TurnFormat::Llama3 => {
                each(&|m| {
                    format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    )
                }) + "<|start_header_id|>assistant<|end_header_id|>\n\n"
            }
            TurnFormat::MistralV7 => each(&|m| match m.role.as_str() {
                "system" => format!("[SYSTEM_PROMPT] {}[/SYSTEM_PROMPT]", m.content),
                "user" => format!("[INST] {}[/INST]", m.content),
                _ => format!(" {}</s>", m.content),
            }),
            TurnFormat::Phi3 => {
                each(&|m| format!("<|{}|>\n{}<|end|>\n", m.role, m.content)) + "<|assistant|>\n"
            }
            TurnFormat::Zephyr => {
                each(&|m| format!("<|{}|>\n{}<|endoftext|>\n", m.role, m.content))
                    + "<|assistant|>\n"
            }
            TurnFormat::Vicuna => {
                each(&|m| match m.role.as_str() {
                    "system" => format!("{}\n\n", m.content),
                    "user" => format!("USER: {}\n", m.content),
                    _ => format!("ASSISTANT: {}</s>\n", m.content),
                }) + "ASSISTANT:"
            }
            TurnFormat::Raw => messages
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.clone())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn() {
        let t = ChatTemplate::new(None, "gemma3", "<bos>".into(), "<eos>".into()).unwrap();
        assert_eq!(t.describe(), "builtin:gemma");
        let s = t
            .render(&[msg("system", "Be brief."), msg("user", "Hi")])
            .unwrap();
        assert_eq!(
            s,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn foreign_formats_render_as_llama_cpp_does() {
        let talk = [msg("system", "Be brief."), msg("user", "Hi")];
        let cases = [
            (
                TurnFormat::ChatMl,
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            ),
            (
                TurnFormat::Llama3,
                "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            (
                TurnFormat::MistralV7,
                "[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] Hi[/INST]",
            ),
            (
                TurnFormat::Phi3,
                "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n",
            ),
            (
                TurnFormat::Zephyr,
                "<|system|>\nBe brief.<|endoftext|>\n<|user|>\nHi<|endoftext|>\n<|assistant|>\n",
            ),
            (TurnFormat::Vicuna, "Be brief.\n\nUSER: Hi\nASSISTANT:"),
            (TurnFormat::Raw, "Hi"),
        ];
        for (format, expected) in cases {
            assert_eq!(format.render(&talk), expected, "{}", format.name());
        }
    }

    #[test]
    fn unknown_role_is_rejected() {
        let t = ChatTemplate::new(None, "llama", "".into(), "".into()).unwrap();
        let e = t.render(&[msg("wizard", "Hi")]).unwrap_err();
        assert!(e.to_string().contains("wizard"));
    }

    #[test]
    fn broken_template_fails_at_load() {
        assert!(
            ChatTemplate::new(Some("{% for %}".into()), "llama", "".into(), "".into()).is_err()
        );
    }
}
