//! Tool use in the neutral types: the tools a request offers ([`ToolSpec`]), whether
//! the model must call one ([`ToolChoice`]), the calls an answer makes ([`ToolCall`])
//! and what goes back to the model ([`ToolResult`]). Each wire writes and reads them
//! in its own format: Anthropic's `tool_use` / `tool_result` blocks, OpenAI's
//! `tool_calls` and `tool` messages.

use serde::{Deserialize, Serialize};

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Its name (letters, digits, `_` and `-`, as both wires require).
    pub name: String,
    /// What it does and when to call it, for the model.
    pub description: String,
    /// The JSON schema of its input (an object).
    pub input_schema: serde_json::Value,
}

/// Whether, and which, tools the model must call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default).
    #[default]
    Auto,
    /// It must call one of the tools.
    Required,
    /// It may not call any (it must answer).
    Never,
    /// It must call this one.
    Tool(String),
}

/// Where a tool call's approval stands, as deltas and events tell it (see
/// `agent::tools::approval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    /// Waiting for a decision.
    Pending,
    /// Approved as asked.
    Approved,
    /// Approved with other arguments.
    Edited,
    /// Rejected (by a person, or for want of one).
    Rejected,
}

/// A call the model made to a tool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The wire's id for it, which its result names.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its input, as the model wrote it: a JSON value, or (when the model wrote
    /// arguments that are not JSON) the text it wrote, as a string.
    pub input: serde_json::Value,
    /// The model's arguments did not parse as JSON; `input` is their text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub malformed: bool,
}

impl ToolCall {
    /// A call of `name` with arguments `raw` as a wire carries them (JSON text): a
    /// value when they parse (empty means `{}`), else the text, marked malformed.
    pub fn from_raw(id: impl Into<String>, name: impl Into<String>, raw: &str) -> Self {
        let (input, malformed) = if raw.trim().is_empty() {
            (serde_json::Value::Object(Default::default()), false)
        } else {
            match serde_json::from_str(raw) {
                Ok(v) => (v, false),
                Err(_) => (serde_json::Value::String(raw.to_owned()), true),
            }
        };
        Self {
            id: id.into(),
            name: name.into(),
            input,
            malformed,
        }
    }
}

/// What a tool answered to one call, as it goes back to the model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolResult {
    /// The call it answers ([`ToolCall::id`]).
    pub call_id: String,
    /// The answer (or the error) as text.
    pub content: String,
    /// The call failed: `content` says why (a bad argument, the tool's error, a
    /// panic, a timeout), for the model to correct or work around.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_error: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_json_empty_ones_an_empty_object_and_others_kept_as_text() {
        let ok = ToolCall::from_raw("1", "add", r#"{"a": 1}"#);
        assert_eq!(
            (ok.input, ok.malformed),
            (serde_json::json!({"a": 1}), false)
        );
        let empty = ToolCall::from_raw("2", "now", " ");
        assert_eq!(empty.input, serde_json::json!({}));
        let bad = ToolCall::from_raw("3", "add", "{a: 1");
        assert_eq!(
            (bad.input, bad.malformed),
            (serde_json::json!("{a: 1"), true)
        );
    }
}
