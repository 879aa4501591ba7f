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
            system.push_str(&m.content);
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
