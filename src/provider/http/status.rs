//! What a provider's answer says besides its body: how long it asks us to wait, what
//! its rate-limit headers say is left, and which error kind a non-success status is.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

use super::excerpt;
use crate::provider::{context, ProviderErrorKind, RateLimitInfo};

/// How long the server asks us to wait: `retry-after-ms`, then `retry-after`
/// (seconds or an HTTP date), then the providers' reset headers
/// (`anthropic-ratelimit-*-reset` as RFC 3339 times, `x-ratelimit-reset-*` as
/// durations like `1s` or `6m0s`).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Duration::try_from_secs_f64(secs).ok();
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    let anthropic = [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
    ]
    .iter()
    .filter_map(|h| get(h))
    .filter_map(|v| humantime::parse_rfc3339_weak(v).ok())
    .map(|at| at.duration_since(now).unwrap_or_default())
    .max();
    if anthropic.is_some() {
        return anthropic;
    }
    ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
        .iter()
        .filter_map(|h| get(h))
        .filter_map(|v| humantime::parse_duration(v).ok())
        .max()
}

/// What the rate-limit headers say is left (`anthropic-ratelimit-*-remaining`,
/// `x-ratelimit-remaining-*`), the request limit (`anthropic-ratelimit-requests-limit`,
/// `x-ratelimit-limit-requests`), and when the window resets; `None` without such
/// headers.
pub(crate) fn rate_limits(headers: &HeaderMap) -> Option<RateLimitInfo> {
    let number = |names: &[&str]| {
        names
            .iter()
            .filter_map(|n| headers.get(*n).and_then(|v| v.to_str().ok()))
            .find_map(|v| v.trim().parse::<u64>().ok())
    };
    let requests_remaining = number(&[
        "anthropic-ratelimit-requests-remaining",
        "x-ratelimit-remaining-requests",
    ]);
    let tokens_remaining = number(&[
        "anthropic-ratelimit-tokens-remaining",
        "x-ratelimit-remaining-tokens",
    ]);
    if requests_remaining.is_none() && tokens_remaining.is_none() {
        return None;
    }
    Some(RateLimitInfo {
        requests_limit: number(&[
            "anthropic-ratelimit-requests-limit",
            "x-ratelimit-limit-requests",
        ]),
        requests_remaining,
        tokens_remaining,
        reset_ms: retry_after(headers, SystemTime::now()).map(|d| d.as_millis() as u64),
    })
}

/// Maps a non-success response to a typed error.
pub(crate) fn status_error(status: u16, headers: &HeaderMap, body: &str) -> ProviderErrorKind {
    let retry_after_ms = retry_after(headers, SystemTime::now()).map(|d| d.as_millis() as u64);
    let excerpt = excerpt(body, 300);
    if matches!(status, 400 | 413 | 422) {
        if let Some(overflow) = context::overflow(body) {
            return ProviderErrorKind::ContextOverflow { overflow, excerpt };
        }
    }
    match status {
        429 => ProviderErrorKind::RateLimited {
            retry_after_ms,
            excerpt,
        },
        529 => ProviderErrorKind::Overloaded {
            status,
            retry_after_ms,
            excerpt,
        },
        _ => ProviderErrorKind::Status {
            status,
            retry_after_ms,
            excerpt,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "3")]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "3")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(7))
        );
        let reset = humantime::format_rfc3339(now + Duration::from_secs(12)).to_string();
        assert_eq!(
            retry_after(
                &headers(&[("anthropic-ratelimit-requests-reset", &reset)]),
                now
            ),
            Some(Duration::from_secs(12))
        );
        let reset =
            humantime::format_rfc3339_millis(now + Duration::from_millis(1_250)).to_string();
        assert_eq!(
            retry_after(
                &headers(&[("anthropic-ratelimit-requests-reset", &reset)]),
                now
            ),
            Some(Duration::from_millis(1_250))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset-requests", "6m0s")]), now),
            Some(Duration::from_secs(360))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
    }

    #[test]
    fn rate_limit_headers_are_read() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("retry-after", "2"),
        ]);
        let info = rate_limits(&h).unwrap();
        assert_eq!(
            (info.requests_limit, info.requests_remaining, info.reset_ms),
            (Some(50), Some(0), Some(2000))
        );
        let h = headers(&[
            ("x-ratelimit-limit-requests", "500"),
            ("x-ratelimit-remaining-requests", "499"),
            ("x-ratelimit-reset-requests", "120ms"),
        ]);
        let info = rate_limits(&h).unwrap();
        assert_eq!(
            (info.requests_limit, info.requests_remaining, info.reset_ms),
            (Some(500), Some(499), Some(120))
        );
        assert_eq!(
            rate_limits(&headers(&[("x-ratelimit-remaining-tokens", "900")]))
                .unwrap()
                .tokens_remaining,
            Some(900)
        );
        assert!(rate_limits(&HeaderMap::new()).is_none());
    }

    #[test]
    fn statuses_map_to_kinds() {
        let h = HeaderMap::new();
        assert!(matches!(
            status_error(429, &h, "x"),
            ProviderErrorKind::RateLimited { .. }
        ));
        assert!(matches!(
            status_error(529, &h, "x"),
            ProviderErrorKind::Overloaded { .. }
        ));
        for (code, retryable) in [
            (500, true),
            (503, true),
            (504, true),
            (400, false),
            (401, false),
            (404, false),
            (422, false),
        ] {
            assert_eq!(
                status_error(code, &h, "x").is_retryable(),
                retryable,
                "{code}"
            );
        }
    }

    #[test]
    fn a_context_overflow_400_is_its_own_kind_and_not_retried() {
        let h = HeaderMap::new();
        let llama = r#"{"error":{"code":400,"message":"request (1344 tokens) exceeds the available context size (1024 tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":1344,"n_ctx":1024}}"#;
        let kind = status_error(400, &h, llama);
        let ProviderErrorKind::ContextOverflow { overflow, .. } = &kind else {
            panic!("{kind:?}")
        };
        assert_eq!(overflow.window, Some(1024));
        assert_eq!(overflow.prompt_tokens, Some(1344));
        assert!(!kind.is_retryable());
        assert!(
            kind.to_string().starts_with(
                "the prompt does not fit the model's context window (1344 tokens asked, 1024 fit)"
            ),
            "{kind}"
        );
        // The same words under a status that is not a client error are not read.
        assert!(matches!(
            status_error(500, &h, llama),
            ProviderErrorKind::Status { status: 500, .. }
        ));
    }
}
