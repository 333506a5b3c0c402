//! What a web page can make the server do: nothing. A page the user visits may send
//! requests to a server on their machine; the probe had one on 127.0.0.2 start a
//! 200-branch run on a tokenless loopback server, and a page whose name was rebound
//! to 127.0.0.1 list runs and read reports.

use std::io::{Read as _, Write as _};
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;

/// One raw HTTP/1.1 request with exactly these headers (reqwest would set `Host`
/// itself); the status and the body.
fn raw(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    (
        status,
        text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned(),
    )
}

const RUN: &str = r#"{"input": "x", "agents": ["fast"], "merge": "none"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_web_page_cannot_start_a_run_or_read_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let base = s.base.clone();
    let host = base.trim_start_matches("http://").to_owned();
    let (cases, own) = tokio::task::spawn_blocking(move || {
        let host = host.as_str();
        let cases = [
            // A page's "simple" POST: text/plain needs no preflight.
            (
                raw(
                    &base,
                    "POST",
                    "/v1/runs",
                    &[("Host", host), ("Content-Type", "text/plain")],
                    RUN,
                ),
                415,
            ),
            (
                raw(
                    &base,
                    "POST",
                    "/v1/runs",
                    &[
                        ("Host", host),
                        ("Content-Type", "application/x-www-form-urlencoded"),
                    ],
                    RUN,
                ),
                415,
            ),
            (raw(&base, "POST", "/v1/runs", &[("Host", host)], RUN), 415),
            (
                raw(
                    &base,
                    "POST",
                    "/v1/chat/completions",
                    &[("Host", host), ("Content-Type", "text/plain")],
                    "{}",
                ),
                415,
            ),
            // JSON from a page of another origin (a browser names it).
            (
                raw(
                    &base,
                    "POST",
                    "/v1/runs",
                    &[
                        ("Host", host),
                        ("Origin", "http://127.0.0.2:8000"),
                        ("Content-Type", "application/json"),
                    ],
                    RUN,
                ),
                403,
            ),
            (
                raw(
                    &base,
                    "POST",
                    "/v1/runs/run-1/repair",
                    &[("Host", host), ("Origin", "http://127.0.0.2:8000")],
                    "",
                ),
                403,
            ),
            (
                raw(
                    &base,
                    "GET",
                    "/v1/runs",
                    &[("Host", host), ("Sec-Fetch-Site", "cross-site")],
                    "",
                ),
                403,
            ),
            // DNS rebinding: the page's own name pointed at 127.0.0.1.
            (
                raw(&base, "GET", "/v1/runs", &[("Host", "evil.example")], ""),
                403,
            ),
            (
                raw(
                    &base,
                    "GET",
                    "/v1/runs/run-1",
                    &[
                        ("Host", "evil.example:80"),
                        ("Origin", "http://evil.example"),
                    ],
                    "",
                ),
                403,
            ),
        ];
        // The server's own page and plain clients still work.
        let own = raw(
            &base,
            "POST",
            "/v1/runs",
            &[
                ("Host", host),
                ("Origin", &format!("http://{host}")),
                ("Content-Type", "application/json"),
            ],
            RUN,
        );
        (cases, own)
    })
    .await
    .unwrap();
    for (i, ((status, body), want)) in cases.iter().enumerate() {
        assert_eq!(*status, *want, "case {i}: {body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"]["message"].is_string(), "case {i}: {body}");
    }
    assert_eq!(own.0, 202, "{}", own.1);
    let id = serde_json::from_str::<serde_json::Value>(&own.1).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let runs = get_json(format!("{}/v1/runs", s.base)).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "only the own page's run: {runs}"
    );
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 1);
    // No CORS answer lets another origin in.
    let preflight = client()
        .request(reqwest::Method::OPTIONS, format!("{}/v1/runs", s.base))
        .header("Origin", "http://127.0.0.2:8000")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_host_names_are_answered_on_a_loopback_bind() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            allow_hosts: vec!["fanfare.internal".to_owned()],
            ..Options::default()
        },
    )
    .await;
    let base = s.base.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        [
            "fanfare.internal:7878",
            "localhost",
            "[::1]:1",
            "other.internal",
        ]
        .map(|h| raw(&base, "GET", "/v1/runs", &[("Host", h)], "").0)
    })
    .await
    .unwrap();
    assert_eq!(statuses, [200, 200, 200, 403]);
    // A JSON body still goes through with the charset named.
    let r = client()
        .post(format!("{}/v1/runs", s.base))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(RUN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_the_bearer_scheme_is_case_insensitive_and_keys_are_visible_characters() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            token: Some("s3cret"),
            ..Options::default()
        },
    )
    .await;
    for (auth, want) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("Bearer wrong", 401),
        ("Basic s3cret", 401),
    ] {
        let r = client()
            .get(format!("{}/v1/runs", s.base))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{auth}");
    }
    let r = client()
        .post(format!("{}/v1/runs", s.base))
        .header("Authorization", "Bearer s3cret")
        .header("Idempotency-Key", "a\tb")
        .json(&serde_json::json!({"input": "x", "agents": ["fast"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    s.stop().await;
}
