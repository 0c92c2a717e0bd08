//! Conversations as prompts: a model's chat template (the Jinja `chat_template` of its
//! `tokenizer_config.json`, as Hugging Face models ship it) rendered over the messages,
//! or, for a model without one, the messages' contents one per line.

use std::path::Path;

use crate::TextError;

/// The file a chat template comes in, beside `tokenizer.json`.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// A conversation as the prompt of a model without a chat template: each message's
/// content on its own line, ending in a line break, as a base model continues text.
pub fn plain(messages: &[Message]) -> String {
    let mut prompt = messages
        .iter()
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    prompt.push('\n');
    prompt
}

/// A checked chat template with the special tokens it may name.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

/// A special token as `tokenizer_config.json` writes it: a string, or `{"content": …}`.
fn token(config: &serde_json::Value, key: &str) -> String {
    let v = &config[key];
    v.as_str()
        .or_else(|| v["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

impl ChatTemplate {
    /// The chat template of a `tokenizer_config.json`, if the file exists and names one
    /// (a string, or the `default` of a list of named templates); it is compiled here, so
    /// a broken template is refused when the model loads.
    pub fn from_config(path: &Path) -> Result<Option<ChatTemplate>, TextError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TextError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| TextError::Chat {
                path: path.to_path_buf(),
                reason: format!("not JSON: {e}"),
            })?;
        ChatTemplate::from_config_value(&config, path)
    }

    /// The chat template of a parsed `tokenizer_config.json` (`path` names it in errors),
    /// checked as [`ChatTemplate::from_config`] checks it.
    pub fn from_config_value(
        config: &serde_json::Value,
        path: &Path,
    ) -> Result<Option<ChatTemplate>, TextError> {
        let bad = |reason: String| TextError::Chat {
            path: path.to_path_buf(),
            reason,
        };
        let source = match &config["chat_template"] {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(named) => named
                .iter()
                .find(|t| t["name"] == "default")
                .and_then(|t| t["template"].as_str())
                .ok_or_else(|| bad("chat_template lists no template named \"default\"".into()))?
                .to_string(),
            other => return Err(bad(format!("chat_template is {other}, not a string"))),
        };
        let template = ChatTemplate {
            source,
            bos_token: token(config, "bos_token"),
            eos_token: token(config, "eos_token"),
        };
        template
            .environment()
            .template_from_str(&template.source)
            .map_err(|e| bad(format!("chat_template does not compile: {e}")))?;
        Ok(Some(template))
    }

    /// The template's Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A template given as text (with no special tokens), checked.
    pub fn new(source: &str) -> Result<ChatTemplate, TextError> {
        let template = ChatTemplate {
            source: source.to_string(),
            bos_token: String::new(),
            eos_token: String::new(),
        };
        template
            .environment()
            .template_from_str(source)
            .map_err(|e| TextError::Chat {
                path: "chat_template".into(),
                reason: e.to_string(),
            })?;
        Ok(template)
    }

    fn environment(&self) -> minijinja::Environment<'static> {
        let mut env = minijinja::Environment::new();
        // Templates refuse conversations they cannot format with raise_exception(message).
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env
    }

    /// The prompt of a conversation, ready for the assistant's turn.
    pub fn render(&self, messages: &[Message]) -> Result<String, TextError> {
        let env = self.environment();
        let template = env
            .template_from_str(&self.source)
            .map_err(|e| TextError::Settings(format!("the chat template: {e}")))?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token,
                eos_token => self.eos_token,
            })
            .map_err(|e| {
                TextError::Settings(format!(
                    "the model's chat template refused the messages: {e}"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat() -> Vec<Message> {
        vec![
            Message {
                role: "system".into(),
                content: "A play.".into(),
            },
            Message {
                role: "user".into(),
                content: "ROMEO:".into(),
            },
        ]
    }

    #[test]
    fn without_a_template_each_message_is_a_line() {
        assert_eq!(plain(&chat()), "A play.\nROMEO:\n");
    }

    /// A ChatML template as Qwen2 and SmolLM2 ship it, with its special tokens as objects.
    #[test]
    fn a_tokenizer_configs_template_renders_the_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENIZER_CONFIG);
        let template = "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let config = serde_json::json!({
            "chat_template": template,
            "bos_token": {"content": "<s>", "lstrip": false},
            "eos_token": "<|im_end|>",
        });
        std::fs::write(&path, config.to_string()).unwrap();
        let t = ChatTemplate::from_config(&path).unwrap().unwrap();
        assert_eq!(
            t.render(&chat()).unwrap(),
            "<s><|im_start|>system\nA play.<|im_end|>\n<|im_start|>user\nROMEO:<|im_end|>\n<|im_start|>assistant\n"
        );
        // No file, or no template in it: none.
        assert!(
            ChatTemplate::from_config(&dir.path().join("absent.json"))
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, "{}").unwrap();
        assert!(ChatTemplate::from_config(&path).unwrap().is_none());
    }

    #[test]
    fn a_broken_template_is_refused_at_load_and_raise_exception_at_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKENIZER_CONFIG);
        std::fs::write(&path, r#"{"chat_template": "{% for m in messages %}"}"#).unwrap();
        let e = ChatTemplate::from_config(&path).unwrap_err().to_string();
        assert!(e.contains("does not compile"), "{e}");
        let strict = ChatTemplate::new(
            "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok",
        )
        .unwrap();
        let e = strict.render(&chat()).unwrap_err().to_string();
        assert!(e.contains("System role not supported"), "{e}");
        assert_eq!(strict.render(&chat()[1..]).unwrap(), "ok");
    }
}
