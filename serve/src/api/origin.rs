//! Who may talk to the server from a browser: a pure decision over a request's
//! headers, and the middleware that applies it before any route.
//!
//! A web page the user happens to visit can send requests to a server on their
//! machine. Three doors are shut here:
//! - **A body that is not JSON** (415): a page can POST `text/plain` or a form
//!   without the browser asking the server first (no CORS preflight), and the
//!   server read any body as JSON. A JSON body needs a preflight, and the server
//!   answers no CORS, so the browser never sends it.
//! - **Another origin** (403): browsers name the page's origin in `Origin` (and say
//!   `Sec-Fetch-Site: cross-site`); a request from another origin than the server's
//!   own is refused, whatever its method (a bodiless POST such as a repair needs no
//!   preflight either).
//! - **Another host name** on a loopback bind (403): DNS rebinding points a page's own
//!   name at 127.0.0.1, which makes it the same origin as far as the browser is
//!   concerned; its `Host` still names it. Loopback binds answer `localhost`,
//!   `127.0.0.1`, `[::1]`, the address they listen on and the names given with
//!   `--allow-host`; other binds need the token anyway.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// What the server knows of itself for the check.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    /// Bound to a loopback address: the `Host` header is checked.
    pub loopback: bool,
    /// Host names allowed besides the loopback ones (`--allow-host`).
    pub allowed: Arc<Vec<String>>,
}

impl Guard {
    /// The guard of a server listening on `listen`, which also answers to the names
    /// in `allow_hosts`. The address it listens on is one of its names (on
    /// 127.0.0.2, `127.0.0.2`).
    pub(crate) fn new(listen: std::net::SocketAddr, mut allow_hosts: Vec<String>) -> Guard {
        allow_hosts.push(listen.ip().to_string());
        Guard {
            loopback: listen.ip().is_loopback(),
            allowed: Arc::new(allow_hosts),
        }
    }
}

/// The parts of a request the check reads.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen<'a> {
    pub post: bool,
    pub host: Option<&'a str>,
    pub origin: Option<&'a str>,
    pub fetch_site: Option<&'a str>,
    pub content_type: Option<&'a str>,
    /// The request carries a body (a non-zero length, or chunked).
    pub body: bool,
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The `Host` is not one of this server's names.
    Host(String),
    /// The request comes from a page of another origin.
    CrossOrigin(String),
    /// A POST whose body is not declared JSON.
    NotJson(String),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Host(_) | Refusal::CrossOrigin(_) => StatusCode::FORBIDDEN,
            Refusal::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    fn message(&self) -> String {
        match self {
            Refusal::Host(host) => format!(
                "Host `{host}` is not a name of this server: a server on a loopback address answers localhost, 127.0.0.1, [::1] and the address it listens on (add names with --allow-host)"
            ),
            Refusal::CrossOrigin(origin) => format!(
                "a request from the web page at `{origin}` is refused: this server answers its own page and clients that are not browsers"
            ),
            Refusal::NotJson(given) => format!(
                "the request body must be JSON, sent with `Content-Type: application/json` (got `{given}`)"
            ),
        }
    }
}

/// The host name in a `Host` header or an origin's authority, lower-cased, without
/// its port (`[::1]:7878` → `::1`).
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    if let Some(rest) = a.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    match a.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_owned(),
        _ => a,
    }
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
}

/// Whether a request may go on; see the module docs.
pub(crate) fn judge(guard: &Guard, seen: &Seen<'_>) -> Result<(), Refusal> {
    if guard.loopback {
        if let Some(host) = seen.host {
            let name = host_name(host);
            let known = matches!(name.as_str(), "localhost" | "127.0.0.1" | "::1")
                || guard.allowed.iter().any(|a| a.eq_ignore_ascii_case(&name));
            if !known {
                return Err(Refusal::Host(host.to_owned()));
            }
        }
    }
    if let Some(origin) = seen.origin {
        // Same origin: the page's authority is the one this request was sent to.
        let authority = origin.split_once("://").map_or("", |(_, a)| a);
        let same = seen
            .host
            .is_some_and(|h| !authority.is_empty() && authority.eq_ignore_ascii_case(h.trim()));
        if !same {
            return Err(Refusal::CrossOrigin(origin.to_owned()));
        }
    }
    if seen.fetch_site == Some("cross-site") {
        return Err(Refusal::CrossOrigin(
            seen.origin.unwrap_or("another site").to_owned(),
        ));
    }
    if seen.post && (seen.body || seen.content_type.is_some()) {
        match seen.content_type {
            Some(ct) if is_json(ct) => {}
            other => return Err(Refusal::NotJson(other.unwrap_or("none").to_owned())),
        }
    }
    Ok(())
}

/// The middleware: refuses what [`judge`] refuses, before any route runs.
pub(crate) async fn check(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let length = text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.trim().parse::<u64>().ok());
    let seen = Seen {
        post: request.method() == Method::POST,
        host: text(header::HOST.as_str()),
        origin: text(header::ORIGIN.as_str()),
        fetch_site: text("sec-fetch-site"),
        content_type: text(header::CONTENT_TYPE.as_str()),
        body: length.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING),
    };
    match judge(&guard, &seen) {
        Ok(()) => next.run(request).await,
        Err(refusal) => ApiError::new(refusal.status(), refusal.message()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_of_requests() {
        let loopback = Guard {
            loopback: true,
            allowed: Arc::new(vec!["fanfare.internal".to_owned()]),
        };
        let open = Guard::default();
        let json = Some("application/json");
        let post = |host, origin, ct, body| Seen {
            post: true,
            host,
            origin,
            content_type: ct,
            body,
            ..Seen::default()
        };
        let get = |host, origin| Seen {
            host,
            origin,
            ..Seen::default()
        };
        let host = |h: &str| Err(Refusal::Host(h.to_owned()));
        let cross = |o: &str| Err(Refusal::CrossOrigin(o.to_owned()));
        let not_json = |c: &str| Err(Refusal::NotJson(c.to_owned()));
        let table: Vec<(&Guard, Seen<'_>, Result<(), Refusal>)> = vec![
            // A client that is not a browser: no Origin, JSON.
            (
                &loopback,
                post(Some("127.0.0.1:7878"), None, json, true),
                Ok(()),
            ),
            (
                &loopback,
                post(
                    Some("localhost:7878"),
                    None,
                    Some("application/json; charset=utf-8"),
                    true,
                ),
                Ok(()),
            ),
            (&loopback, get(Some("[::1]:7878"), None), Ok(())),
            (&loopback, get(Some("fanfare.internal:80"), None), Ok(())),
            (&loopback, get(None, None), Ok(())),
            // The server's own page, from its own origin.
            (
                &loopback,
                post(
                    Some("127.0.0.1:7878"),
                    Some("http://127.0.0.1:7878"),
                    json,
                    true,
                ),
                Ok(()),
            ),
            // A bodiless POST (a repair) from a client.
            (
                &loopback,
                post(Some("127.0.0.1:7878"), None, None, false),
                Ok(()),
            ),
            // DNS rebinding: the page's own name, pointed at 127.0.0.1.
            (
                &loopback,
                get(Some("evil.example:7878"), Some("http://evil.example:7878")),
                host("evil.example:7878"),
            ),
            (
                &loopback,
                get(Some("127.0.0.2:7878"), None),
                host("127.0.0.2:7878"),
            ),
            // Other binds have the token; their Host is not checked.
            (&open, get(Some("api.example.com"), None), Ok(())),
            // A page of another origin, even on this machine.
            (
                &loopback,
                post(
                    Some("127.0.0.1:7878"),
                    Some("http://127.0.0.2:8000"),
                    Some("text/plain"),
                    true,
                ),
                cross("http://127.0.0.2:8000"),
            ),
            (
                &loopback,
                post(Some("127.0.0.1:7878"), Some("null"), json, true),
                cross("null"),
            ),
            (
                &loopback,
                post(
                    Some("127.0.0.1:7878"),
                    Some("http://127.0.0.1:9999"),
                    None,
                    false,
                ),
                cross("http://127.0.0.1:9999"),
            ),
            (
                &open,
                get(Some("api.example.com"), Some("https://evil.example")),
                cross("https://evil.example"),
            ),
            // Bodies that are not declared JSON.
            (
                &loopback,
                post(Some("127.0.0.1:7878"), None, Some("text/plain"), true),
                not_json("text/plain"),
            ),
            (
                &loopback,
                post(
                    Some("127.0.0.1:7878"),
                    None,
                    Some("application/x-www-form-urlencoded"),
                    true,
                ),
                not_json("application/x-www-form-urlencoded"),
            ),
            (
                &loopback,
                post(Some("127.0.0.1:7878"), None, None, true),
                not_json("none"),
            ),
            (
                &open,
                post(
                    Some("a"),
                    None,
                    Some("multipart/form-data; boundary=x"),
                    false,
                ),
                not_json("multipart/form-data; boundary=x"),
            ),
        ];
        for (guard, seen, want) in table {
            assert_eq!(judge(guard, &seen), want, "{seen:?}");
        }
        // A browser that says the request is cross-site is refused without Origin.
        let seen = Seen {
            fetch_site: Some("cross-site"),
            host: Some("127.0.0.1:7878"),
            ..Seen::default()
        };
        assert!(matches!(
            judge(&loopback, &seen),
            Err(Refusal::CrossOrigin(_))
        ));
    }

    #[test]
    fn regression_a_server_on_127_0_0_2_refused_its_own_address() {
        let host = |h| Seen {
            host: Some(h),
            ..Seen::default()
        };
        let on = |addr: &str| Guard::new(addr.parse().unwrap(), Vec::new());
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.2:7878", "127.0.0.2:7878", true),
            ("127.0.0.2:7878", "localhost:7878", true),
            ("127.0.0.2:7878", "127.0.0.3:7878", false),
            ("[::1]:7878", "[::1]:7878", true),
            ("127.0.0.1:7878", "127.0.0.2:7878", false),
        ];
        for (listen, given, ok) in cases {
            assert_eq!(
                judge(&on(listen), &host(given)).is_ok(),
                *ok,
                "listening on {listen}, Host {given}"
            );
        }
    }

    #[test]
    fn host_names_lose_their_port_and_case() {
        for (given, name) in [
            ("127.0.0.1:7878", "127.0.0.1"),
            ("LocalHost", "localhost"),
            ("[::1]:7878", "::1"),
            ("[::1]", "::1"),
            ("evil.example:80", "evil.example"),
        ] {
            assert_eq!(host_name(given), name);
        }
    }
}
