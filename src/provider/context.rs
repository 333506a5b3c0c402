//! Context windows: how many tokens (prompt and answer together) a model can take,
//! from a built-in table of known models, and from the error a server gives when a
//! prompt is too long (llama.cpp, OpenAI and OpenAI-compatible servers, and Anthropic
//! name the limit in it).
//!
//! Pure functions; the synthesiser uses them to make its merge fit.

use serde::{Deserialize, Serialize};

/// What a context-overflow error said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    /// The model's (or the server slot's) context window, in tokens, if it said.
    pub window: Option<u32>,
    /// How many tokens the request came to, if it said.
    pub prompt_tokens: Option<u32>,
}

/// The context window of a model this table knows, by name (a dated or suffixed
/// name matches its family: `claude-3-5-haiku-20241022` is a `claude-` model).
/// `None`: unknown (a local model, say); the window is then learned from the
/// server's error the first time a prompt is too long.
pub fn known_window(model: &str) -> Option<u32> {
    // Most specific prefix first.
    const TABLE: &[(&str, u32)] = &[
        ("claude-", 200_000),
        ("gpt-4.1", 1_047_576),
        ("gpt-4o", 128_000),
        ("gpt-4-turbo", 128_000),
        ("gpt-4-32k", 32_768),
        ("gpt-4", 8_192),
        ("gpt-3.5-turbo", 16_385),
        ("gpt-5", 400_000),
        ("o1-mini", 128_000),
        ("o1", 200_000),
        ("o3", 200_000),
        ("o4-mini", 200_000),
    ];
    let model = model.trim().to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(prefix, _)| model.starts_with(prefix))
        .map(|&(_, window)| window)
}

/// Recognises a context-overflow error body (the whole body, not an excerpt) and
/// reads the numbers it gives. `None`: the body is about something else.
///
/// Known shapes: llama.cpp's `exceed_context_size_error` (JSON fields `n_ctx` and
/// `n_prompt_tokens`); OpenAI's and vLLM's `maximum context length is N tokens …
/// resulted in M tokens` (`context_length_exceeded`); Anthropic's `prompt is too
/// long: M tokens > N maximum`.
pub fn overflow(body: &str) -> Option<Overflow> {
    let lower = body.to_ascii_lowercase();
    if lower.contains("exceed_context_size_error")
        || lower.contains("exceeds the available context size")
    {
        let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let field = |name: &str| {
            json.as_ref()
                .and_then(|j| j.get("error").unwrap_or(j).get(name))
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        return Some(Overflow {
            window: field("n_ctx").or_else(|| number_before(&lower, "tokens)", 1)),
            prompt_tokens: field("n_prompt_tokens").or_else(|| number_after(&lower, "request (")),
        });
    }
    if lower.contains("context_length_exceeded") || lower.contains("maximum context length") {
        return Some(Overflow {
            window: number_after(&lower, "maximum context length is"),
            prompt_tokens: number_after(&lower, "resulted in")
                .or_else(|| number_after(&lower, "you requested")),
        });
    }
    if lower.contains("prompt is too long") {
        // "prompt is too long: 210000 tokens > 200000 maximum"
        return Some(Overflow {
            window: number_before(&lower, "maximum", 0),
            prompt_tokens: number_after(&lower, "prompt is too long:"),
        });
    }
    None
}

/// The first whole number after `marker` (skipping spaces).
fn number_after(text: &str, marker: &str) -> Option<u32> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// The number just before the `nth` (from 0) occurrence of `marker`, e.g. `1024`
/// in `… (1024 tokens)`.
fn number_before(text: &str, marker: &str, nth: usize) -> Option<u32> {
    let at = text.match_indices(marker).nth(nth)?.0;
    let before = text[..at].trim_end();
    // Where the digits start: after the last character that is not one (which may
    // be several bytes long).
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(0, |(i, c)| i + c.len_utf8());
    before[start..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_window_and_the_prompt_size_from_each_servers_error() {
        let cases: &[(&str, Option<Overflow>)] = &[
            (
                // llama.cpp (the body our llama.cpp server gives)
                r#"{"error":{"code":400,"message":"request (1344 tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":1344,"n_ctx":1024}}"#,
                Some(Overflow { window: Some(1024), prompt_tokens: Some(1344) }),
            ),
            (
                // llama.cpp, the message alone (a proxy that rewrapped it)
                "request (2000 tokens) exceeds the available context size (512 tokens), try increasing it",
                Some(Overflow { window: Some(512), prompt_tokens: Some(2000) }),
            ),
            (
                // OpenAI
                r#"{"error":{"message":"This model's maximum context length is 8192 tokens. However, your messages resulted in 9001 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                Some(Overflow { window: Some(8192), prompt_tokens: Some(9001) }),
            ),
            (
                // vLLM
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens (4000 in the messages, 1000 in the completion).","type":"BadRequestError","code":400}"#,
                Some(Overflow { window: Some(4096), prompt_tokens: Some(5000) }),
            ),
            (
                // Anthropic
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Some(Overflow { window: Some(200000), prompt_tokens: Some(210000) }),
            ),
            (
                // Overflow named without numbers
                r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#,
                Some(Overflow { window: None, prompt_tokens: None }),
            ),
            (
                // Regression (found by fuzzing): a multi-byte character just before
                // the number once split a character and panicked.
                "prompt is too long: \u{FFFD}maximum",
                Some(Overflow { window: None, prompt_tokens: None }),
            ),
            (
                "prompt is too long: 12 tokens > \u{e9}300 maximum",
                Some(Overflow { window: Some(300), prompt_tokens: Some(12) }),
            ),
            // Other client errors are not overflows.
            (r#"{"error":{"message":"model not found"}}"#, None),
            ("max_tokens: must be at most 4096", None),
            ("", None),
        ];
        for (body, want) in cases {
            assert_eq!(overflow(body), *want, "{body}");
        }
    }

    #[test]
    fn knows_the_families_and_not_local_models() {
        let cases = [
            ("claude-3-5-haiku-20241022", Some(200_000)),
            ("claude-sonnet-4-5", Some(200_000)),
            ("gpt-4o-mini", Some(128_000)),
            ("gpt-4.1-nano", Some(1_047_576)),
            ("gpt-4", Some(8_192)),
            ("GPT-3.5-turbo-0125", Some(16_385)),
            ("smollm2-135m", None),
            ("sim-1", None),
            ("", None),
        ];
        for (model, want) in cases {
            assert_eq!(known_window(model), want, "{model}");
        }
    }
}
