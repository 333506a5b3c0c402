//! One request: authentication, parsing, then the injected faults (429, 500, hang,
//! garbage) rolled from the seed and the request counter, then the answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use crate::wire::{self, mix, Wire};
use crate::{InFlight, MockConfig, Quota, Shared};

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

fn authorised(config: &MockConfig, headers: &HeaderMap) -> bool {
    let Some(key) = &config.require_key else {
        return true;
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    header("x-api-key") == key
        || header("authorization").strip_prefix("Bearer ") == Some(key.as_str())
}

/// The largest request body accepted: Anthropic's documented limit for the Messages
/// API (32 MB), so the mock refuses nothing a real API would take.
pub(crate) const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

pub(crate) async fn anthropic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(shared, Wire::Anthropic, headers, body).await
}

pub(crate) async fn openai(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(shared, Wire::OpenAi, headers, body).await
}

async fn handle(shared: Arc<Shared>, wire: Wire, headers: HeaderMap, body: Body) -> Response {
    let (guard, in_flight) = InFlight::enter(&shared);
    // Read here rather than in an extractor, so a refusal is counted like any answer.
    let body = match axum::body::to_bytes(body, MAX_REQUEST_BYTES).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => {
            guard.finish(413);
            let message = format!("request body over {MAX_REQUEST_BYTES} bytes");
            let body = wire::error_body(wire, "request_too_large", &message);
            return (StatusCode::PAYLOAD_TOO_LARGE, Json(body)).into_response();
        }
    };
    let config = &shared.config;
    let n = shared.counter.fetch_add(1, Ordering::SeqCst);
    let key = mix(config.seed, n);
    let reply = |guard: InFlight, status: StatusCode, body: Value| {
        guard.finish(status.as_u16());
        (status, Json(body)).into_response()
    };
    if !authorised(config, &headers) {
        let body = wire::error_body(wire, "authentication_error", "invalid or missing API key");
        return reply(guard, StatusCode::UNAUTHORIZED, body);
    }
    let parsed = match wire::parse(wire, &body) {
        Ok(p) => p,
        Err(message) => {
            return reply(
                guard,
                StatusCode::BAD_REQUEST,
                wire::error_body(wire, "invalid_request_error", &message),
            );
        }
    };
    let mut parsed = parsed;
    if let Some(model) = &config.answer_model {
        parsed.model = model.clone();
    }
    if let Some(window) = config.context_window.filter(|&w| parsed.input_tokens > w) {
        let body = wire::overflow_body(wire, parsed.input_tokens, window);
        return reply(guard, StatusCode::BAD_REQUEST, body);
    }
    let over_limit = config
        .max_concurrency
        .is_some_and(|max| in_flight > max as u64);
    let quota = shared.take_quota();
    let over_rate = quota.is_some_and(|q| q.refused);
    if over_limit || over_rate || unit(mix(key, 1)) < config.rate_429 {
        let why = if over_limit {
            "too many requests in flight"
        } else if over_rate {
            "requests per window exceeded"
        } else {
            "rate limit (injected)"
        };
        let mut response = reply(
            guard,
            StatusCode::TOO_MANY_REQUESTS,
            wire::error_body(wire, "rate_limit_error", why),
        );
        let wait = match quota {
            Some(q) if over_rate => q.reset,
            _ => config.retry_after,
        };
        // Rounded up: a server never names a time before its window really ends.
        let ms = wait.as_micros().div_ceil(1000) as u64;
        let h = response.headers_mut();
        h.insert("retry-after-ms", HeaderValue::from(ms));
        h.insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
        rate_headers(wire, quota, h);
        return response;
    }
    if unit(mix(key, 2)) < config.error_rate {
        return reply(
            guard,
            StatusCode::INTERNAL_SERVER_ERROR,
            wire::error_body(wire, "api_error", "internal error (injected)"),
        );
    }
    if unit(mix(key, 3)) < config.hang_rate {
        // Never answer; the client's timeout or cancellation ends this (counted as aborted).
        std::future::pending::<()>().await;
    }
    let jitter_nanos = config.jitter.as_nanos() as u64;
    let jitter = if jitter_nanos == 0 {
        0
    } else {
        mix(key, 4) % (jitter_nanos + 1)
    };
    let latency = config.latency + Duration::from_nanos(jitter);
    if unit(mix(key, 5)) < config.garbage_rate {
        tokio::time::sleep(latency).await;
        guard.finish(200);
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            "<html>this is not json {",
        )
            .into_response();
    }
    if unit(mix(key, 6)) < config.reset_rate {
        tokio::time::sleep(latency).await;
        guard.cut(false);
        return wire::cut_off();
    }
    let text = match (&parsed.schema, &parsed.call, &parsed.tool_said) {
        // A structured request gets an answer of the asked shape.
        (Some((_, schema)), _, _) => wire::example(schema, &parsed.prompt).to_string(),
        // Tools offered and none called yet: a call of one, its arguments of its
        // input's shape.
        (None, Some((_, schema)), _) => wire::arguments(schema, &parsed.prompt).to_string(),
        // After a tool answered, the answer quotes it.
        (None, None, Some(said)) => {
            let quoted: String = said.chars().take(200).collect();
            format!(
                "{}\n\nThe tool said: {quoted}",
                wire::reply_text(&parsed.prompt, parsed.max_tokens)
            )
        }
        (None, None, None) => wire::reply_text(&parsed.prompt, parsed.max_tokens),
    };
    if parsed.stream {
        let cut = unit(mix(key, 7)) < config.midstream_close_rate;
        let mut response = wire::stream(guard, wire, parsed, text, latency, n, cut);
        rate_headers(wire, quota, response.headers_mut());
        return response;
    }
    tokio::time::sleep(latency).await;
    let body = wire::answer(wire, &parsed, &text, n);
    let mut response = reply(guard, StatusCode::OK, body);
    rate_headers(wire, quota, response.headers_mut());
    response
}

/// The provider's rate-limit headers for where a request stands in its window:
/// Anthropic's reset is an RFC 3339 time, OpenAI's a duration.
fn rate_headers(wire: Wire, quota: Option<Quota>, h: &mut HeaderMap) {
    let Some(q) = quota else { return };
    match wire {
        Wire::Anthropic => {
            let reset = humantime::format_rfc3339_millis(
                std::time::SystemTime::now() + q.reset + Duration::from_millis(1),
            );
            h.insert(
                "anthropic-ratelimit-requests-limit",
                HeaderValue::from(q.limit),
            );
            h.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from(q.remaining),
            );
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("anthropic-ratelimit-requests-reset", v);
            }
        }
        Wire::OpenAi => {
            h.insert("x-ratelimit-limit-requests", HeaderValue::from(q.limit));
            h.insert(
                "x-ratelimit-remaining-requests",
                HeaderValue::from(q.remaining),
            );
            let reset = format!("{}ms", q.reset.as_micros().div_ceil(1000));
            if let Ok(v) = HeaderValue::from_str(&reset) {
                h.insert("x-ratelimit-reset-requests", v);
            }
        }
    }
}
