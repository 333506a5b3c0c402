//! Entry points for the fuzz targets in `fuzz/` (built with the `fuzzing` feature;
//! not an API). Each takes arbitrary bytes and must neither panic nor allocate
//! without bound; the targets only call them.

use std::path::Path;

use crate::agent::faults;
use crate::agent::spec::AgentSpec;
use crate::agent::structured;
use crate::provider::http::SseParser;
use crate::provider::{anthropic, http, openai, OutputSchema};
use crate::run::workflow::Workflow;
use crate::run::{parse_duration, Policy, Template};

/// The SSE reader, fed `data` in chunks whose sizes come from the data itself.
pub fn sse(data: &[u8]) {
    let mut parser = SseParser::default();
    let mut rest = data;
    let mut step = 1usize;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        parser.push(&rest[..take]);
        rest = &rest[take..];
        while parser.next_event(false).is_some() {}
        step = (step * 7 + usize::from(rest.first().copied().unwrap_or(1))) % 97 + 1;
    }
    while parser.next_event(true).is_some() {}
    assert!(parser.buffered() <= data.len());
}

/// Both wire formats' answer decoders and stream-event decoders on `data`, whole and
/// line by line (as stream events).
pub fn wire(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = anthropic::decode_answer(&text, "m");
    let _ = openai::decode_answer(&text, "m");
    let mut state = anthropic::StreamState::new("m");
    let mut chunks = openai::StreamState::new("m");
    for line in text.lines() {
        let _ = anthropic::on_event(&mut state, line);
        let _ = openai::on_chunk(&mut chunks, line);
    }
    let _ = chunks.finish();
}

/// `retry-after`, the rate-limit headers and the status mapping, on headers built
/// from `name: value` lines of `data` (the first line is the status code).
pub fn headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.trim().parse::<u16>().ok())
        .unwrap_or(429);
    let mut headers = reqwest::header::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
            reqwest::header::HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    let _ = http::retry_after(&headers, std::time::SystemTime::now());
    let _ = http::rate_limits(&headers);
    let _ = http::status_error(status, &headers, &text);
}

/// The spec loader on `data` as a spec file (its prompt file always reads "p").
pub fn spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = AgentSpec::parse(Path::new("fuzz.toml"), &text, |_| Ok("p".to_owned()));
}

/// The workflow loader on `data` as a workflow file; a workflow it accepts is also
/// compiled into a request (with and without items) and drawn (levels, critical path).
/// And the structured-answer check on `data` as a model's answer.
pub fn workflow(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(w) = Workflow::parse(Path::new("fuzz.toml"), &text) {
        let _ = w.request("t", None);
        let _ = w.request("t", Some(vec!["a".to_owned(), "b".to_owned()]));
        let _ = w.levels();
        let _ = w.critical_path(|_| 1.0);
    }
    let _ = Template::parse(&text);
    let schema = OutputSchema {
        name: "fuzz".to_owned(),
        schema: serde_json::json!({
            "type": "object",
            "properties": {"risk": {"type": "string", "enum": ["low", "high"]}},
            "required": ["risk"]
        }),
    };
    let _ = structured::check(&schema, &text);
}

/// Policy, duration and fault-flag parsing on `data`.
pub fn parse(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<Policy>();
    let _ = parse_duration(&text);
    let _ = faults::parse_flag(&text);
    let _ = http::redact_url(&text);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry points survive a few nasty inputs (the fuzzers do the rest).
    #[test]
    fn the_entry_points_take_anything() {
        let inputs: [&[u8]; 6] = [
            b"",
            b"\xff\xfe\x00",
            b"data: {\"type\":\"message_start\",\"message\":{}}\n\ndata: [DONE]\r\n\r\n",
            b"429\nretry-after: 99999999999999999999\nretry-after-ms: -1\nx-ratelimit-reset-requests: 1e400s",
            b"name = \"x\"\nprompt = \"p\"\nmax_tokens = 99999999999999999999\n",
            b"partial:18446744073709551616",
        ];
        for input in inputs {
            sse(input);
            wire(input);
            headers(input);
            spec(input);
            parse(input);
        }
    }
}
