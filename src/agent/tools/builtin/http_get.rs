//! `http_get`: fetches a URL from a host on an allow-list. Redirects are followed
//! only within the first URL's origin (scheme, host and port), at most 5; the body
//! is cut at a size cap and the whole call at a time cap; nothing of this process
//! (no API key, no cookie) is sent.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt as _;

use super::BuiltinError;
use crate::agent::tools::{Tool, ToolContext, ToolError};

/// The most redirects followed (within the origin).
const MAX_REDIRECTS: usize = 5;

/// An `http_get` tool that fetches only from `allow`: each entry a host
/// (`example.com`, on ports 80 and 443), a host and port (`127.0.0.1:8080`), or
/// every subdomain of a domain (`*.example.com`, ports 80 and 443; never an IP
/// address).
pub fn http_get(
    allow: impl IntoIterator<Item = impl Into<String>>,
) -> Result<HttpGet, BuiltinError> {
    let allow = allow
        .into_iter()
        .map(|entry| Allowed::parse(&entry.into()))
        .collect::<Result<Vec<_>, _>>()?;
    if allow.is_empty() {
        return Err(BuiltinError::NoHosts);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let first = attempt.previous().first().map(reqwest::Url::origin);
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.stop()
            } else if first.as_ref() == Some(&attempt.url().origin()) {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!(
            "fanfare/",
            env!("CARGO_PKG_VERSION"),
            " (http_get tool)"
        ))
        .build()
        .map_err(|e| BuiltinError::Client(e.to_string()))?;
    let schema = serde_json::to_value(schemars::schema_for!(GetInput)).unwrap_or_default();
    Ok(HttpGet {
        allow,
        client,
        max_bytes: 256 * 1024,
        timeout: Duration::from_secs(10),
        schema,
    })
}

/// See [`http_get`].
#[derive(Clone, Debug)]
pub struct HttpGet {
    allow: Vec<Allowed>,
    client: reqwest::Client,
    max_bytes: usize,
    timeout: Duration,
    schema: serde_json::Value,
}

impl HttpGet {
    /// Cuts a body at `bytes` (default 256 KiB; what the model is sent is cut at
    /// 64 KiB whatever this is).
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Bounds a whole fetch (default 10 s; the branch's deadline bounds it too).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether `url` is one it may fetch, or why not.
    fn check(&self, url: &str) -> Result<reqwest::Url, ToolError> {
        let parsed = reqwest::Url::parse(url.trim())
            .map_err(|e| ToolError::new(format!("`{url}` is not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ToolError::new(format!(
                "only http and https URLs are fetched, not `{}:`",
                parsed.scheme()
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ToolError::new(
                "a URL with credentials in it is not fetched".to_owned(),
            ));
        }
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = parsed.port_or_known_default();
        if !self.allow.iter().any(|a| a.admits(&host, port)) {
            let hosts: Vec<String> = self.allow.iter().map(ToString::to_string).collect();
            // With the port: `127.0.0.1` allowed and `127.0.0.1:8080` refused read
            // as if the host itself were refused.
            let asked = match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            };
            return Err(ToolError::new(format!(
                "`{asked}` is not a host and port this tool may fetch from (allowed: {}; a host alone is ports 80 and 443)",
                hosts.join(", ")
            )));
        }
        Ok(parsed)
    }

    async fn get(&self, url: reqwest::Url) -> Result<String, ToolError> {
        let shown = url.to_string();
        let response = self.client.get(url).send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "could not connect".to_owned()
            } else {
                e.without_url().to_string()
            };
            ToolError::new(format!("GET {shown}: {why}"))
        })?;
        let status = response.status();
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere");
            return Err(ToolError::new(format!(
                "GET {shown}: HTTP {status} redirects to `{to}`, which is another origin (or one redirect too many); not followed"
            )));
        }
        let kind = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        let mut cut = false;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ToolError::new(format!(
                    "GET {shown}: the body broke off: {}",
                    e.without_url()
                ))
            })?;
            let room = self.max_bytes.saturating_sub(body.len());
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                cut = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if is_binary(&kind) || body.contains(&0) {
            return Err(ToolError::new(format!(
                "GET {shown}: HTTP {status}, a binary body ({kind}); not shown"
            )));
        }
        let text = String::from_utf8_lossy(&body);
        let text = &text[..text.floor_char_boundary(self.max_bytes)];
        let note = if cut {
            format!(" · cut at {} bytes", self.max_bytes)
        } else {
            String::new()
        };
        let head = format!("HTTP {status} · {kind}{note}");
        if status.is_success() {
            Ok(format!("{head}\n\n{text}"))
        } else {
            Err(ToolError::new(format!(
                "GET {shown}: {head}\n\n{}",
                &text[..text.floor_char_boundary(2048)]
            )))
        }
    }
}

/// What the model asks `http_get`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct GetInput {
    /// The `http://` or `https://` URL to fetch.
    url: String,
}

impl Tool for HttpGet {
    fn name(&self) -> &str {
        "http_get"
    }

    fn description(&self) -> &str {
        "Fetches a web page or API response by URL (GET) and answers its status, content type and text. \
Only some hosts may be fetched; the error names them."
    }

    fn input_schema(&self) -> serde_json::Value {
        self.schema.clone()
    }

    fn is_idempotent(&self) -> bool {
        true
    }

    fn call(
        &self,
        _ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async move {
            let input: GetInput = serde_json::from_value(input)
                .map_err(|e| ToolError::new(format!("the input does not fit `http_get`: {e}")))?;
            let url = self.check(&input.url)?;
            let shown = url.to_string();
            tokio::time::timeout(self.timeout, self.get(url))
                .await
                .unwrap_or_else(|_| {
                    Err(ToolError::new(format!(
                        "GET {shown}: no whole answer within {} ms",
                        self.timeout.as_millis()
                    )))
                })
        })
    }
}

/// Whether a content type is not text.
fn is_binary(kind: &str) -> bool {
    let kind = kind.to_ascii_lowercase();
    let essence = kind.split(';').next().unwrap_or_default().trim();
    ["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|p| essence.starts_with(p))
        || matches!(
            essence,
            "application/octet-stream" | "application/pdf" | "application/zip" | "application/gzip"
        )
}

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Allowed {
    /// This host, any port.
    Host(String),
    /// This host at this port.
    HostPort(String, u16),
    /// Every subdomain of this domain (not the domain itself).
    Under(String),
}

impl Allowed {
    fn parse(entry: &str) -> Result<Self, BuiltinError> {
        let bad = || BuiltinError::BadHost(entry.to_owned());
        let entry_lc = entry.trim().to_ascii_lowercase();
        if let Some(domain) = entry_lc.strip_prefix("*.") {
            return host_ok(domain)
                .then(|| Self::Under(domain.to_owned()))
                .ok_or_else(bad);
        }
        // A URL-ish entry is parsed as one, for the host and port it names.
        let url = reqwest::Url::parse(&format!("http://{entry_lc}/")).map_err(|_| bad())?;
        let host = url.host_str().ok_or_else(bad)?.to_owned();
        if url.path() != "/" || !url.username().is_empty() || url.query().is_some() {
            return Err(bad());
        }
        let has_port = entry_lc
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !entry_lc.ends_with(']');
        match (has_port, url.port_or_known_default()) {
            (true, Some(port)) => Ok(Self::HostPort(host, port)),
            _ => Ok(Self::Host(host)),
        }
    }

    /// A host alone admits the web's ports (80, 443) only: `127.0.0.1` let a
    /// model read every local service. A wildcard admits DNS names, never an IP
    /// address.
    fn admits(&self, host: &str, port: Option<u16>) -> bool {
        let web_port = matches!(port, Some(80 | 443));
        let is_ip = host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok();
        match self {
            Self::Host(h) => h == host && web_port,
            Self::HostPort(h, p) => h == host && Some(*p) == port,
            Self::Under(domain) => {
                !is_ip
                    && web_port
                    && host
                        .strip_suffix(domain.as_str())
                        .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
            }
        }
    }
}

impl std::fmt::Display for Allowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(h) => write!(f, "{h}"),
            Self::HostPort(h, p) => write!(f, "{h}:{p}"),
            Self::Under(d) => write!(f, "*.{d}"),
        }
    }
}

/// Whether `domain` looks like a DNS name (its last label not a number: `*.1` is
/// no domain).
fn host_ok(domain: &str) -> bool {
    !domain.is_empty()
        && domain
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        && domain
            .rsplit('.')
            .next()
            .is_some_and(|last| !last.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
pub(super) fn allowed(entry: &str) -> Result<String, BuiltinError> {
    Allowed::parse(entry).map(|a| a.to_string())
}
