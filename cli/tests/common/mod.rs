//! What the process tests share: plain HTTP/1.1 to a server on 127.0.0.1.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One request; the status and the body.
pub fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// A run's status (with its report once it ended).
pub fn status_of(addr: &str, id: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/runs/{id}"), "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A cache directory of its own for one command under test (its `XDG_CACHE_HOME`):
/// what one test's runs learn about a server's limits, at a port another test may
/// get next, must reach neither another test nor the developer's own cache.
pub fn private_cache() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cache-{}-{n}", std::process::id()))
}
