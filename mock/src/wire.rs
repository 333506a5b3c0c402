//! The two wire formats, as a server speaks them: parsing a request, the error and
//! answer bodies, and the server-sent events of a streamed answer.

use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::InFlight;

/// Roughly four tokens for every three words: the mock's own token count.
pub(crate) fn estimate_tokens(text: &str) -> u64 {
    (text.split_whitespace().count() as u64 * 4).div_ceil(3)
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Wire {
    Anthropic,
    OpenAi,
}

pub(crate) fn error_body(wire: Wire, kind: &str, message: &str) -> Value {
    match wire {
        Wire::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Wire::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
    }
}

/// The 400 a real server gives for a prompt longer than its context window.
pub(crate) fn overflow_body(wire: Wire, prompt_tokens: u64, window: u64) -> Value {
    match wire {
        Wire::Anthropic => error_body(
            wire,
            "invalid_request_error",
            &format!("prompt is too long: {prompt_tokens} tokens > {window} maximum"),
        ),
        Wire::OpenAi => json!({"error": {
            "code": 400,
            "message": format!("request ({prompt_tokens} tokens) exceeds the available context size ({window} tokens), try increasing it"),
            "type": "exceed_context_size_error",
            "n_prompt_tokens": prompt_tokens,
            "n_ctx": window,
        }}),
    }
}

/// splitmix64 finaliser over two inputs: the mock's only source of randomness.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Text of a message's `content`: a string, or an array of `{type: text, text}` blocks.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

const WORDS: &[&str] = &[
    "the",
    "risk",
    "is",
    "that",
    "volume",
    "grows",
    "faster",
    "than",
    "controls",
    "so",
    "measure",
    "first",
    "then",
    "decide",
    "logs",
    "should",
    "hold",
    "less",
    "data",
    "and",
    "expire",
    "sooner",
    "costs",
    "scale",
    "with",
    "retention",
    "while",
    "value",
    "does",
    "not",
];

/// A deterministic reply: `n` words chosen by hashing the prompt.
pub(crate) fn reply_text(prompt: &str, max_tokens: u64) -> String {
    let h = prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let n = (24 + h % 16).min(max_tokens.saturating_mul(3) / 4).max(1);
    let mut words: Vec<&str> = (0..n)
        .map(|i| WORDS[(mix(h, i) % WORDS.len() as u64) as usize])
        .collect();
    if let Some(first) = words.first_mut() {
        *first = "Mock";
    }
    format!("{}.", words.join(" "))
}

pub(crate) struct Parsed {
    /// A structured request's schema, with its name: OpenAI's
    /// `response_format.json_schema`, or Anthropic's forced tool.
    pub(crate) schema: Option<(String, Value)>,
    /// The tool to call, with its input schema: tools are offered (not to shape the
    /// answer) and none has answered yet. The first offered, or the one
    /// `tool_choice` names.
    pub(crate) call: Option<(String, Value)>,
    /// What the last tool answered, when the request carries tool results: the
    /// answer quotes it.
    pub(crate) tool_said: Option<String>,
    pub(crate) model: String,
    pub(crate) max_tokens: u64,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) prompt: String,
    pub(crate) input_tokens: u64,
}

pub(crate) fn parse(wire: Wire, body: &str) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or("missing field `model`")?
        .to_owned();
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("missing field `messages`")?;
    if messages.is_empty() {
        return Err("`messages` must not be empty".to_owned());
    }
    let max_tokens = match wire {
        Wire::Anthropic => v
            .get("max_tokens")
            .and_then(Value::as_u64)
            .ok_or("missing field `max_tokens`")?,
        Wire::OpenAi => v
            .get("max_completion_tokens")
            .or_else(|| v.get("max_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(256),
    };
    let system = match v.get("system") {
        Some(s) => content_text(s),
        None => String::new(),
    };
    let all: Vec<String> = messages
        .iter()
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .collect();
    let prompt = all.last().cloned().unwrap_or_default();
    let schema = match wire {
        Wire::OpenAi => v
            .pointer("/response_format/json_schema")
            .filter(|_| {
                v.pointer("/response_format/type").and_then(Value::as_str) == Some("json_schema")
            })
            .and_then(|j| {
                let name = j.get("name").and_then(Value::as_str)?;
                Some((name.to_owned(), j.get("schema")?.clone()))
            }),
        Wire::Anthropic => v
            .pointer("/tool_choice/name")
            .and_then(Value::as_str)
            .and_then(|name| {
                let tools = v.get("tools").and_then(Value::as_array)?;
                let tool = tools
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?;
                Some((name.to_owned(), tool.get("input_schema")?.clone()))
            }),
    };
    let tool_said = last_tool_result(wire, messages);
    let call = match (&schema, &tool_said) {
        (None, None) => tool_to_call(wire, &v),
        _ => None,
    };
    let input_tokens =
        estimate_tokens(&system) + all.iter().map(|t| estimate_tokens(t)).sum::<u64>() + 3;
    Ok(Parsed {
        schema,
        call,
        tool_said,
        model,
        max_tokens,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        prompt,
        input_tokens,
    })
}

/// The tool a request offering tools gets called: the one `tool_choice` names, else
/// the first offered; none when `tool_choice` is `none` (or Anthropic's forced
/// tool, which shapes an answer instead).
fn tool_to_call(wire: Wire, v: &Value) -> Option<(String, Value)> {
    let tools = v.get("tools").and_then(Value::as_array)?;
    let (named, schema_at) = match wire {
        Wire::Anthropic => (v.pointer("/tool_choice/name"), "/input_schema"),
        Wire::OpenAi => (
            v.pointer("/tool_choice/function/name"),
            "/function/parameters",
        ),
    };
    let choice = v
        .pointer("/tool_choice/type")
        .or_else(|| v.get("tool_choice"))
        .and_then(Value::as_str);
    if choice == Some("none") {
        return None;
    }
    let name_at = match wire {
        Wire::Anthropic => "/name",
        Wire::OpenAi => "/function/name",
    };
    let tool = match named.and_then(Value::as_str) {
        Some(name) => tools
            .iter()
            .find(|t| t.pointer(name_at).and_then(Value::as_str) == Some(name))?,
        None => tools.first()?,
    };
    let name = tool.pointer(name_at).and_then(Value::as_str)?.to_owned();
    let schema = tool
        .pointer(schema_at)
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    Some((name, schema))
}

/// The text of the last tool result among `messages`, if any.
fn last_tool_result(wire: Wire, messages: &[Value]) -> Option<String> {
    messages.iter().rev().find_map(|m| match wire {
        Wire::Anthropic => m
            .get("content")
            .and_then(Value::as_array)?
            .iter()
            .rev()
            .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            .map(|b| content_text(b.get("content").unwrap_or(&Value::Null))),
        Wire::OpenAi => (m.get("role").and_then(Value::as_str) == Some("tool"))
            .then(|| content_text(m.get("content").unwrap_or(&Value::Null))),
    })
}

/// A tool call's arguments: a value of its input schema's shape, with only the
/// properties it requires.
pub(crate) fn arguments(schema: &Value, seed: &str) -> Value {
    let mut schema = schema.clone();
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.retain(|name, _| required.contains(name));
    }
    example(&schema, seed)
}

/// A value of the shape `schema` describes (its `default` or first example where it
/// gives one, its `enum`'s first value, every property of an object, one item of an
/// array), with strings drawn from `seed`'s words.
pub(crate) fn example(schema: &Value, seed: &str) -> Value {
    fn go(schema: &Value, h: u64, depth: u32) -> Value {
        if let Some(first) = schema
            .get("default")
            .or_else(|| schema.pointer("/examples/0"))
            .or_else(|| schema.pointer("/enum/0"))
        {
            return first.clone();
        }
        if depth > 8 {
            return Value::Null;
        }
        let word = || Value::from(WORDS[(h % WORDS.len() as u64) as usize]);
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let mut out = serde_json::Map::new();
                if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                    for (i, (k, s)) in props.iter().enumerate() {
                        out.insert(k.clone(), go(s, mix(h, i as u64), depth + 1));
                    }
                }
                Value::Object(out)
            }
            Some("array") => Value::Array(vec![go(
                schema.get("items").unwrap_or(&Value::Null),
                mix(h, 99),
                depth + 1,
            )]),
            Some("integer") => Value::from(h % 10),
            Some("number") => Value::from((h % 100) as f64 / 10.0),
            Some("boolean") => Value::from(h.is_multiple_of(2)),
            Some("null") => Value::Null,
            _ => word(),
        }
    }
    let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    go(schema, h, 0)
}

/// The body of a plain (not streamed) answer.
pub(crate) fn answer(wire: Wire, parsed: &Parsed, text: &str, n: u64) -> Value {
    let output_tokens = estimate_tokens(text);
    match wire {
        Wire::Anthropic if parsed.schema.is_some() || parsed.call.is_some() => {
            let name = parsed
                .schema
                .as_ref()
                .or(parsed.call.as_ref())
                .map(|(n, _)| n.as_str());
            let input: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            json!({
                "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": parsed.model,
                "content": [{"type": "tool_use", "id": format!("toolu_mock_{n}"), "name": name, "input": input}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": parsed.input_tokens, "output_tokens": output_tokens,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
            })
        }
        Wire::Anthropic => json!({
            "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": parsed.model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": parsed.input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        }),
        Wire::OpenAi if parsed.call.is_some() => {
            let name = parsed.call.as_ref().map(|(n, _)| n.as_str());
            json!({
                "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": unix_now(),
                "model": parsed.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [
                    {"id": format!("call_mock_{n}"), "type": "function", "function": {"name": name, "arguments": text}}
                ]}, "logprobs": null, "finish_reason": "tool_calls"}],
                "usage": {"prompt_tokens": parsed.input_tokens, "completion_tokens": output_tokens,
                          "total_tokens": parsed.input_tokens + output_tokens}
            })
        }
        Wire::OpenAi => json!({
            "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": unix_now(),
            "model": parsed.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": parsed.input_tokens, "completion_tokens": output_tokens,
                      "total_tokens": parsed.input_tokens + output_tokens}
        }),
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the SSE events of a streamed answer, the latency spread over the deltas.
pub(crate) fn stream(
    guard: InFlight,
    wire: Wire,
    p: Parsed,
    text: String,
    latency: Duration,
    n: u64,
    cut: bool,
) -> Response {
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let chunks: Vec<String> = words
        .chunks(words.len().div_ceil(4).max(1))
        .map(|c| c.concat())
        .collect();
    let pause = latency / (chunks.len() as u32 + 1);
    let output_tokens = estimate_tokens(&text);
    let mut events: Vec<Event> = Vec::new();
    let data = |name: Option<&str>, v: Value| {
        let e = Event::default().data(v.to_string());
        match name {
            Some(n) => e.event(n),
            None => e,
        }
    };
    let id = format!("mock-{n}");
    match wire {
        Wire::Anthropic => {
            events.push(data(Some("message_start"), json!({"type": "message_start", "message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": p.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": p.input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})));
            let tool = p
                .schema
                .as_ref()
                .or(p.call.as_ref())
                .map(|(name, _)| name.clone());
            let block = match &tool {
                Some(name) => {
                    json!({"type": "tool_use", "id": format!("toolu_{id}"), "name": name, "input": {}})
                }
                None => json!({"type": "text", "text": ""}),
            };
            events.push(data(
                Some("content_block_start"),
                json!({"type": "content_block_start", "index": 0, "content_block": block}),
            ));
            events.push(data(Some("ping"), json!({"type": "ping"})));
            for c in &chunks {
                let delta = match &tool {
                    Some(_) => json!({"type": "input_json_delta", "partial_json": c}),
                    None => json!({"type": "text_delta", "text": c}),
                };
                events.push(data(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": 0, "delta": delta}),
                ));
            }
            events.push(data(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ));
            let stop = if tool.is_some() {
                "tool_use"
            } else {
                "end_turn"
            };
            events.push(data(Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
            events.push(data(Some("message_stop"), json!({"type": "message_stop"})));
        }
        Wire::OpenAi => {
            let created = unix_now();
            let chunk = |delta: Value, finish: Value| {
                json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": p.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            match &p.call {
                // A tool call: its name first, then its arguments in pieces.
                Some((name, _)) => {
                    events.push(data(
                        None,
                        chunk(
                            json!({"role": "assistant", "content": null, "tool_calls": [
                                {"index": 0, "id": format!("call_{id}"), "type": "function",
                                 "function": {"name": name, "arguments": ""}}]}),
                            Value::Null,
                        ),
                    ));
                    for c in &chunks {
                        events.push(data(
                            None,
                            chunk(
                                json!({"tool_calls": [{"index": 0, "function": {"arguments": c}}]}),
                                Value::Null,
                            ),
                        ));
                    }
                    events.push(data(None, chunk(json!({}), json!("tool_calls"))));
                }
                None => {
                    events.push(data(
                        None,
                        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    ));
                    for c in &chunks {
                        events.push(data(None, chunk(json!({"content": c}), Value::Null)));
                    }
                    events.push(data(None, chunk(json!({}), json!("stop"))));
                }
            }
            if p.include_usage {
                events.push(data(None, json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": p.model, "choices": [],
                    "usage": {"prompt_tokens": p.input_tokens, "completion_tokens": output_tokens, "total_tokens": p.input_tokens + output_tokens}})));
            }
            events.push(Event::default().data("[DONE]"));
        }
    }
    // The guard rides along with the stream: a client that hangs up mid-stream drops
    // it unfinished, which counts as an abort.
    let total = events.len();
    let cut_at = cut.then_some(total / 2);
    let body = futures::stream::unfold(
        (events.into_iter().enumerate(), Some(guard)),
        move |(mut it, mut guard)| async move {
            let (i, event) = it.next()?;
            if i > 0 && i <= chunks_len(total) {
                tokio::time::sleep(pause).await;
            }
            if Some(i) == cut_at {
                // Cut the connection here: the client sees the stream end abruptly.
                if let Some(g) = guard.take() {
                    g.cut(true);
                }
                let error = std::io::Error::other("stream cut on purpose");
                return Some((Err(error), (it, guard)));
            }
            if i + 1 == total {
                if let Some(g) = guard.take() {
                    g.finish(200);
                }
            }
            Some((Ok(event), (it, guard)))
        },
    );
    Sse::new(body).into_response()
}

/// A 200 whose body breaks off at once: the connection is cut after the headers.
pub(crate) fn cut_off() -> Response {
    let body = futures::stream::iter([
        Ok(axum::body::Bytes::from_static(b"{\"id\": \"cut")),
        Err(std::io::Error::other("connection cut on purpose")),
    ]);
    (
        axum::http::StatusCode::OK,
        [("content-type", "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// The pause applies between the first and the last events (where the text is).
fn chunks_len(total: usize) -> usize {
    total.saturating_sub(1)
}
