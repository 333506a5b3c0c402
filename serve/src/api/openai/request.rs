//! What a chat completion request says: the parts fanfare reads, and what it
//! refuses to ignore.

use serde::Deserialize;
use serde_json::Value;

/// The parts of a chat request fanfare reads. `max_completion_tokens` (or
/// `max_tokens`) caps the answer, the workflow's LLM merge; other sampling settings
/// (`temperature`, …) must be well-formed but are not used: the workflow's agents
/// carry their own. What fanfare cannot do (`n` > 1, tools, a response format) is
/// refused rather than silently ignored.
#[derive(Deserialize)]
pub(super) struct ChatRequest {
    pub(super) model: String,
    pub(super) messages: Vec<ChatMessage>,
    #[serde(default)]
    pub(super) stream: bool,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    temperature: Option<f32>,
}

impl ChatRequest {
    /// The most tokens the answer may have, if the request says.
    pub(super) fn answer_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// Whether any message carries text (an image or a tool call alone is no task).
    pub(super) fn has_text(&self) -> bool {
        self.messages
            .iter()
            .any(|m| !m.content.text().trim().is_empty())
    }

    /// What it asks that fanfare cannot do: the parameter and why.
    pub(super) fn unsupported(&self) -> Option<(&'static str, &'static str)> {
        if self.n.is_some_and(|n| n != 1) {
            return Some((
                "n",
                "fanfare answers with one choice (the workflow's merge)",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Some(("tools", "a workflow served as a model takes no tools"));
        }
        if self
            .tool_choice
            .as_ref()
            .is_some_and(|c| c != &Value::from("none") && c != &Value::from("auto"))
        {
            return Some(("tool_choice", "a workflow served as a model takes no tools"));
        }
        if self
            .response_format
            .as_ref()
            .is_some_and(|f| f["type"] != "text")
        {
            return Some((
                "response_format",
                "a workflow's answer is its merge's text; shape a step with `schema` in the workflow instead",
            ));
        }
        None
    }
}

#[derive(Deserialize)]
pub(super) struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Content,
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    Null,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

/// The task text of a conversation: a lone user message as it is; otherwise each
/// message under its role, in order.
pub(super) fn task_of(messages: &[ChatMessage]) -> String {
    match messages {
        [only] if only.role == "user" => only.content.text(),
        _ => messages
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content.text()))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}
