//! The neutral request and answer types every provider converts its wire format to.

use serde::{Deserialize, Serialize};

use super::estimate::{shared_thirds, thirds};
use super::tools::{ToolCall, ToolChoice, ToolResult, ToolSpec};

/// One message of a conversation sent to a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
    /// The tools the model called in this message (an assistant's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// What those tools answered (a user-side message, after the one that called).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_results: Vec<ToolResult>,
}

/// The speaker of a [`Message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The caller.
    User,
    /// The model.
    Assistant,
}

impl Message {
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_results: Vec::new(),
        }
    }

    /// A message from the model (an earlier answer, in a multi-turn request).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_results: Vec::new(),
        }
    }

    /// The model's turn that called tools: its text (if any) and its calls.
    pub fn calling(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::assistant(content)
        }
    }

    /// The tools' answers to the calls of the turn before.
    pub fn results(results: Vec<ToolResult>) -> Self {
        Self {
            tool_results: results,
            ..Self::user("")
        }
    }
}

/// A provider-neutral completion request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// The model to ask; `None` lets the provider use its default.
    pub model: Option<String>,
    /// The system prompt.
    pub system: String,
    /// The conversation, oldest first.
    pub messages: Vec<Message>,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature, if the caller cares.
    pub temperature: Option<f32>,
    /// Sequences that end generation.
    pub stop: Vec<String>,
    /// Which agent (or `synthesiser`) asks: used for attribution in errors and logs,
    /// and by the simulated provider for per-agent latency profiles.
    pub agent: String,
    /// Ask for a streamed answer (SSE) where the provider supports it; the
    /// completion is the same, assembled from the stream.
    #[serde(default)]
    pub stream: bool,
    /// When the caller stops waiting (its branch deadline), if it has one: the stack
    /// fails a call at once rather than wait past it (`Retry`), and cuts an attempt
    /// at it (`Timeout`). Local to this process; not serialised.
    #[serde(skip)]
    pub deadline: Option<tokio::time::Instant>,
    /// The group of calls this one belongs to (the runtime uses the run's id), if
    /// any: wrappers keep per-group limits, such as the hedge allowance, by it.
    #[serde(default)]
    pub group: Option<u64>,
    /// The shape the answer must have, when the caller needs structured output: the
    /// OpenAI wire asks for it as a JSON-schema `response_format`, the Anthropic wire
    /// as a forced tool call whose input is the answer. Either way the answer's text
    /// is the JSON; the caller still validates it (not every server enforces it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<std::sync::Arc<OutputSchema>>,
    /// Text every call of a group shares (the task all of a fan-out's specialists
    /// read), sent *before* the system prompt so that every such prompt starts with
    /// the same bytes — the prefix servers cache (llama.cpp's prompt cache, OpenAI's
    /// automatic prefix caching) — and marked for caching on Anthropic
    /// (`cache_control`). The wires put it first in the system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_prefix: Option<std::sync::Arc<str>>,
    /// Where a streamed answer's text goes as it arrives (with `stream`), for a
    /// caller that shows it live. Local to this process; not serialised.
    #[serde(skip)]
    pub deltas: Option<DeltaSink>,
    /// Tools the model may call (shared by every turn of a conversation).
    #[serde(default, skip_serializing_if = "<[ToolSpec]>::is_empty")]
    pub tools: std::sync::Arc<[ToolSpec]>,
    /// Whether it must call one (with `tools`).
    #[serde(default)]
    pub tool_choice: ToolChoice,
}

/// What a streamed call reports as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delta {
    /// More text of the answer.
    Text(String),
    /// A new attempt begins (the call is retried): the text sent so far will not be
    /// part of the answer.
    Restart {
        /// The attempt that begins (2 for the first retry).
        attempt: u32,
    },
    /// An attempt failed and another follows after `wait` (sent as the wait begins,
    /// so that a person watching knows why nothing happens).
    Retrying {
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// Attempts in all, when the retry policy has a fixed number.
        of: Option<u32>,
        /// Why it failed, in a few words (`HTTP 500`, `connection refused`).
        error: String,
        /// The wait before the next attempt.
        wait: std::time::Duration,
    },
    /// A tool call the model asked for began.
    ToolStarted {
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
    },
    /// A tool call waits for a person's approval, or was decided.
    Approval {
        /// The approval's id (unique in the run).
        id: String,
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
        /// Where it stands.
        state: super::ApprovalState,
    },
    /// A tool call ended, after `took`; `error` says why it failed, if it did.
    ToolFinished {
        /// The model's id for the call.
        call_id: String,
        /// The tool.
        tool: String,
        /// How long it ran.
        took: std::time::Duration,
        /// Why it failed, if it did.
        error: Option<String>,
    },
}

/// A receiver of [`Delta`]s; cheap to clone. A live preview only: the answer is the
/// completion the call returns (a hedged duplicate, for one, streams nowhere).
#[derive(Clone)]
pub struct DeltaSink(std::sync::Arc<dyn Fn(Delta) + Send + Sync>);

impl DeltaSink {
    /// A sink that hands each delta to `f` (which must not block).
    pub fn new(f: impl Fn(Delta) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// Sends one delta.
    pub fn send(&self, delta: Delta) {
        (self.0)(delta);
    }
}

impl std::fmt::Debug for DeltaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeltaSink")
    }
}

impl PartialEq for DeltaSink {
    /// The same sink.
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A JSON schema an answer must satisfy, under a name (the OpenAI `json_schema.name`,
/// the Anthropic tool name: letters, digits, `_` and `-`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputSchema {
    /// Its name.
    pub name: String,
    /// The JSON schema.
    pub schema: serde_json::Value,
}

impl CompletionRequest {
    /// A single-turn request: `system` prompt plus one user message.
    pub fn new(
        agent: impl Into<String>,
        system: impl Into<String>,
        user: impl Into<String>,
    ) -> Self {
        Self {
            model: None,
            system: system.into(),
            messages: vec![Message::user(user)],
            max_tokens: 512,
            temperature: None,
            stop: Vec::new(),
            agent: agent.into(),
            stream: false,
            group: None,
            deadline: None,
            schema: None,
            shared_prefix: None,
            deltas: None,
            tools: std::sync::Arc::from([]),
            tool_choice: ToolChoice::Auto,
        }
    }

    /// The system prompt as a wire without separate cache marks sends it: the shared
    /// prefix, if any, then the system prompt.
    pub fn system_with_prefix(&self) -> std::borrow::Cow<'_, str> {
        match &self.shared_prefix {
            Some(prefix) if self.system.is_empty() => std::borrow::Cow::Borrowed(prefix),
            Some(prefix) => std::borrow::Cow::Owned(format!("{prefix}\n\n{}", self.system)),
            None => std::borrow::Cow::Borrowed(&self.system),
        }
    }

    /// Estimated prompt tokens: the system prompt, every message, and the tools
    /// offered (their schemas are sent with every call).
    pub fn prompt_tokens(&self) -> u64 {
        let thirds = thirds(&self.system)
            + self.shared_prefix.as_ref().map_or(0, shared_thirds)
            + self
                .messages
                .iter()
                .map(|m| {
                    // A call's input and a result count as the text they are sent as.
                    thirds(&m.content)
                        + m.tool_calls
                            .iter()
                            .map(|c| thirds(&c.input.to_string()))
                            .sum::<u64>()
                        + m.tool_results
                            .iter()
                            .map(|r| thirds(&r.content))
                            .sum::<u64>()
                })
                .sum::<u64>()
            + self
                .tools
                .iter()
                .map(|t| thirds(&t.description) + thirds(&t.input_schema.to_string()))
                .sum::<u64>();
        thirds.div_ceil(3)
    }
}

/// Token counts reported by a provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (not counting cache reads/writes, as Anthropic reports them).
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// All tokens: input (cache included) plus output.
    /// Saturates rather than overflows: counts come from servers.
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_creation_input_tokens)
            .saturating_add(self.cache_read_input_tokens)
            .saturating_add(self.output_tokens)
    }
}

impl std::ops::AddAssign for Usage {
    /// Saturates rather than overflows: counts come from servers.
    fn add_assign(&mut self, rhs: Self) {
        self.input_tokens = self.input_tokens.saturating_add(rhs.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(rhs.output_tokens);
        self.cache_creation_input_tokens = self
            .cache_creation_input_tokens
            .saturating_add(rhs.cache_creation_input_tokens);
        self.cache_read_input_tokens = self
            .cache_read_input_tokens
            .saturating_add(rhs.cache_read_input_tokens);
    }
}

/// What a provider's rate-limit headers said about the remaining budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// Requests allowed per window.
    #[serde(default)]
    pub requests_limit: Option<u64>,
    /// Requests left in the current window.
    pub requests_remaining: Option<u64>,
    /// Tokens left in the current window.
    pub tokens_remaining: Option<u64>,
    /// When the window resets, from now.
    pub reset_ms: Option<u64>,
}

/// A finished completion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// The generated text.
    pub text: String,
    /// The model that answered.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
    /// Why generation stopped (`end_turn`, `max_tokens`, …), as the provider said it.
    pub stop_reason: Option<String>,
    /// How many HTTP attempts this took (1 without retries).
    pub attempts: u32,
    /// Time spent waiting for admission (concurrency and rate limits), all attempts.
    #[serde(default)]
    pub permit_wait_ms: u64,
    /// The provider's rate-limit headers on the answer, if it sent any.
    #[serde(default)]
    pub rate_limit: Option<RateLimitInfo>,
    /// A hedge (a duplicate request) was sent for this call.
    #[serde(default)]
    pub hedged: bool,
    /// Attempts the provider refused as rate-limited or overloaded (429 / 529)
    /// before this answer.
    #[serde(default)]
    pub rate_limited: u32,
    /// The tools the answer calls, in its order (the model waits for their results).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

impl Completion {
    /// A structured answer given as a call of its answer tool (`name`, the
    /// request's schema: how the Anthropic wire asks for one) becomes the answer's
    /// text, and is no longer a call.
    pub(crate) fn answer_from_tool(&mut self, name: &str) {
        if let Some(i) = self.tool_calls.iter().position(|c| c.name == name) {
            let call = self.tool_calls.remove(i);
            self.text = match call.input {
                serde_json::Value::String(raw) if call.malformed => raw,
                input => input.to_string(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_prefix_count_follows_the_text_not_the_last_one_seen() {
        let long = |word: &str, n: usize| -> std::sync::Arc<str> { word.repeat(n).into() };
        let request = |prefix: &std::sync::Arc<str>| {
            let mut r = CompletionRequest::new("a", "", "");
            r.shared_prefix = Some(prefix.clone());
            r.prompt_tokens()
        };
        let a = long("one ", 600); // 600 words, 2,400 bytes
        assert_eq!(request(&a), 800);
        assert_eq!(request(&a.clone()), 800, "the same Arc: remembered");
        // Same length, other text: another allocation, counted afresh.
        let b = long("tw  ", 600);
        assert_eq!(request(&b), 800);
        let c = long("threeword ", 300);
        assert_eq!(request(&c), 400);
        drop((a, b));
        let d = long("x ", 2_000);
        assert_eq!(request(&d), 2_667);
        assert_eq!(request(&c), 400);
        // The remembered text dropped and another of its length allocated (the
        // allocator may hand out the same address): counted afresh, not taken for it.
        drop(c);
        let f = long("w ", 1_500); // 1,500 words, 3,000 bytes, as `c` was
        assert_eq!(request(&f), 2_000);
    }

    #[test]
    fn regression_token_counts_from_a_server_saturate_instead_of_overflowing() {
        let huge = Usage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cache_creation_input_tokens: 1,
            cache_read_input_tokens: 1,
        };
        assert_eq!(huge.total(), u64::MAX);
        let mut sum = huge;
        sum += huge;
        assert_eq!((sum.input_tokens, sum.output_tokens), (u64::MAX, u64::MAX));
    }
}
