//! What the HTTP providers share: the redacted API key, the client, one call bounded
//! by one deadline, turning a non-success response into a typed error with the
//! server's retry hints (`status`), and a minimal server-sent-events reader (`sse`).

use std::future::Future;
use std::time::Duration;

use futures::FutureExt;

use super::{Completion, ProviderError, ProviderErrorKind, RateLimitInfo};

mod key;
mod sse;
mod status;
pub(crate) mod wire;

pub use key::Redactor;
pub use key::{endpoint_id, ApiKey};
#[cfg(feature = "fuzzing")]
pub(crate) use sse::SseParser;
pub(crate) use sse::{next_event, sse_events};
#[cfg(feature = "fuzzing")]
pub(crate) use status::retry_after;
pub(crate) use status::{rate_limits, status_error};

/// Why a provider could not be configured. Found when the provider is built, before
/// any request; the messages never show a key, and show a URL without its credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The base URL does not parse.
    #[error("base URL `{url}` is not a URL: {reason}")]
    BadUrl {
        /// The URL as given (credentials removed).
        url: String,
        /// The parser's reason.
        reason: String,
    },
    /// The base URL is not http or https.
    #[error("base URL `{url}` must start with http:// or https://, not `{scheme}:`")]
    BadScheme {
        /// The URL (credentials removed).
        url: String,
        /// Its scheme.
        scheme: String,
    },
    /// The key has bytes an HTTP header cannot carry.
    #[error("the API key contains characters an HTTP header cannot carry (a stray newline, space or non-ASCII character?)")]
    BadKey,
    /// The HTTP client could not be built.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
}

/// A client with sane connection defaults that **never follows redirects**: a
/// redirect would carry the key (and the prompt) to whatever host the server names.
/// Installs the ring TLS provider once.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, ConfigError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError::Client(e.to_string()))
}

/// `url` without the `user:password@` part, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        // Unparseable: drop anything up to an `@` that could be credentials.
        Err(_) => match url.rsplit_once('@') {
            Some((_, host)) => format!("…@{host}"),
            None => url.to_owned(),
        },
    }
}

/// Checks a base URL and joins `path` to it.
pub(crate) fn endpoint(base: &str, path: &str) -> Result<reqwest::Url, ConfigError> {
    let shown = redact_url(base);
    let url = reqwest::Url::parse(base.trim()).map_err(|e| ConfigError::BadUrl {
        url: shown.clone(),
        reason: e.to_string(),
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::BadScheme {
            url: shown,
            scheme: url.scheme().to_owned(),
        });
    }
    let joined = format!("{}{path}", url.as_str().trim_end_matches('/'));
    reqwest::Url::parse(&joined).map_err(|e| ConfigError::BadUrl {
        url: shown,
        reason: e.to_string(),
    })
}

/// A header value holding a secret: checked, and marked sensitive so the HTTP stack
/// never logs it.
pub(crate) fn secret_header(value: &str) -> Result<reqwest::header::HeaderValue, ConfigError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| ConfigError::BadKey)?;
    v.set_sensitive(true);
    Ok(v)
}

/// The first `max` characters of `body`, on one line.
pub(crate) fn excerpt(body: &str, max: usize) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let trimmed = one_line.trim();
    match trimmed.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &trimmed[..at]),
        None => trimmed.to_owned(),
    }
}

/// The `host:port` of a loopback address that refused `e`'s connection.
fn refused_on_this_machine(e: &reqwest::Error) -> Option<String> {
    if !e.is_connect() {
        return None;
    }
    let url = e.url()?;
    let host = url.host_str()?;
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mut source = std::error::Error::source(e);
    let mut refused = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            refused |= io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = s.source();
    }
    (loopback && refused).then(|| {
        format!(
            "{}:{}",
            url.host_str().unwrap_or("?"),
            url.port_or_known_default().unwrap_or(0)
        )
    })
}

/// Maps a reqwest error to a typed error kind.
pub(crate) fn transport_error(e: &reqwest::Error) -> ProviderErrorKind {
    // The URL is ours (no secrets in it); the chain says what failed.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if e.is_decode() {
        return ProviderErrorKind::Decode { message };
    }
    if let Some(address) = refused_on_this_machine(e) {
        return ProviderErrorKind::NotListening { address };
    }
    ProviderErrorKind::Transport {
        message,
        connect: e.is_connect(),
    }
}

/// One plain call: sends `builder` and reads the answer's body (at most `limit`
/// bytes), the whole within `timeout` (error bodies included). Returns the answer's
/// rate-limit headers and its body.
///
/// The request goes out when the future is first polled. The future is a plain
/// function's, not an `async fn`'s, and holds each stage once: an `async fn` keeps
/// its arguments beside what it awaits, so nested ones held the request builder
/// three times and the timeout's wrapper the call twice (3,368 bytes per call, the
/// largest thing a fan-out's branch allocated; 832 now).
pub(crate) fn call(
    builder: reqwest::RequestBuilder,
    hint_404: &str,
    timeout: Duration,
    limit: u64,
) -> impl Future<Output = Result<(Option<RateLimitInfo>, String), ProviderErrorKind>> + '_ {
    let deadline = tokio::time::Instant::now() + timeout;
    let pending = builder.send();
    within(deadline, timeout, async move {
        let (rate_limit, reading) = {
            let response = send(pending, hint_404).await?;
            (rate_limits(response.headers()), read_body(response, limit))
        };
        Ok((rate_limit, reading.await?))
    })
}

/// A plain call's answer: `call`'s body decoded by `decode`, its errors attributed to
/// `provider`, `model` and `agent` (the request's agent: of the request, only its
/// name is kept while the call runs), and the key taken out of them by `redactor`.
pub(crate) fn answer(
    provider: &'static str,
    model: String,
    agent: String,
    call: impl Future<Output = Result<(Option<RateLimitInfo>, String), ProviderErrorKind>>,
    decode: fn(&str, &str) -> Result<Completion, ProviderErrorKind>,
    redactor: Redactor,
) -> impl Future<Output = Result<Completion, ProviderError>> {
    #[expect(
        clippy::result_large_err,
        reason = "the Provider trait's own error, handed on as it is"
    )]
    call.map(move |called| {
        let err = |kind| {
            redactor.error(ProviderError::for_agent(
                provider,
                &model,
                agent.clone(),
                kind,
            ))
        };
        let (rate_limit, body) = called.map_err(err)?;
        let completion = decode(&body, &model).map_err(err)?;
        Ok(Completion {
            rate_limit,
            ..completion
        })
    })
}

/// Opens a streamed call: sends `builder` and checks that the answer is an event
/// stream, before `deadline` (the end of the call's `timeout`, which its events share).
/// Returns the answer's rate-limit headers and the response to read events from.
pub(crate) fn open_stream(
    builder: reqwest::RequestBuilder,
    hint_404: &str,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> impl Future<Output = Result<(Option<RateLimitInfo>, reqwest::Response), ProviderErrorKind>> + '_
{
    let pending = builder.send();
    within(deadline, timeout, async move {
        let response = send(pending, hint_404).await?;
        Ok((rate_limits(response.headers()), expect_sse(response).await?))
    })
}

/// `call`, cut at `deadline` with a timeout error that names `timeout` (the call's
/// limit, which `deadline` ends): one limit on the whole HTTP call, and one timer.
fn within<T>(
    deadline: tokio::time::Instant,
    timeout: Duration,
    call: impl Future<Output = Result<T, ProviderErrorKind>>,
) -> impl Future<Output = Result<T, ProviderErrorKind>> {
    tokio::time::timeout_at(deadline, call).map(move |ended| {
        ended.unwrap_or_else(|_elapsed| {
            Err(ProviderErrorKind::Timeout {
                after_ms: timeout.as_millis() as u64,
            })
        })
    })
}

/// Waits for a sent request's answer and returns it if it succeeded, or the typed
/// error. A redirect is an error (it is never followed); a 404 carries `hint_404`
/// (where the base URL should point). The caller bounds it in time ([`within`]),
/// error body included.
async fn send(
    pending: impl Future<Output = reqwest::Result<reqwest::Response>>,
    hint_404: &str,
) -> Result<reqwest::Response, ProviderErrorKind> {
    let response = pending.await.map_err(|e| transport_error(&e))?;
    if response.status().is_success() {
        return Ok(response);
    }
    // Boxed: only a refusal needs the room to read an error body.
    Err(Box::pin(refusal(response, hint_404)).await)
}

/// The typed error for a response that did not succeed.
async fn refusal(response: reqwest::Response, hint_404: &str) -> ProviderErrorKind {
    let status = response.status();
    let headers = response.headers().clone();
    if status.is_redirection() {
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| excerpt(&redact_url(l), 200));
        return ProviderErrorKind::Redirected {
            status: status.as_u16(),
            location,
        };
    }
    // Only an excerpt of an error body is kept; read no more than that needs.
    let body = match read_capped(response, ERROR_BODY_BYTES).await {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Ok(None) => "(an error body too large to show)".to_owned(),
        Err(_) => String::new(),
    };
    let mut kind = status_error(status.as_u16(), &headers, &body);
    if let ProviderErrorKind::Status {
        status: 404,
        excerpt,
        ..
    } = &mut kind
    {
        excerpt.push_str(&format!(" (hint: {hint_404})"));
    }
    kind
}

/// Checks that a streamed answer really is an event stream; if not, reads the body
/// into a decode error that shows what came instead.
async fn expect_sse(response: reqwest::Response) -> Result<reqwest::Response, ProviderErrorKind> {
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("text/event-stream") {
        return Ok(response);
    }
    let body = match read_capped(response, ERROR_BODY_BYTES).await {
        Ok(Some(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => String::new(),
    };
    Err(ProviderErrorKind::Decode {
        message: format!(
            "expected an event stream, got content-type `{content_type}`; body starts: {}",
            excerpt(&body, 200)
        ),
    })
}

/// The default cap on an answer's body, streamed or not: far above any real answer
/// (a 64k-token answer is well under 1 MiB of JSON), far below what hurts.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// How much of an error body is read: only an excerpt is kept.
const ERROR_BODY_BYTES: u64 = 64 * 1024;

/// Reads at most `limit` bytes of the body. `Ok(None)`: it is longer.
async fn read_capped(
    mut response: reqwest::Response,
    limit: u64,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Reads the whole body, refusing one over `limit` bytes (the caller bounds it in
/// time).
fn read_body(
    response: reqwest::Response,
    limit: u64,
) -> impl Future<Output = Result<String, ProviderErrorKind>> {
    read_capped(response, limit).map(move |read| match read {
        Err(e) => Err(transport_error(&e)),
        Ok(None) => Err(ProviderErrorKind::TooLarge { limit_bytes: limit }),
        // Valid UTF-8 (every real answer) is taken as it is, not copied.
        Ok(Some(body)) => Ok(String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())),
    })
}
