//! `fanfare serve` as a process: killed with SIGKILL mid-run, started again on the
//! same journal, it finishes the run without calling again what had answered; and
//! SIGTERM drains and exits 0. Plain HTTP/1.1 over a TcpStream, 127.0.0.1 only.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A spec directory with agents `a` (fast) and `b` (`b_ms`) on the simulated provider.
fn agents(dir: &Path, name: &str, b_ms: u64) -> PathBuf {
    let agents = dir.join(name);
    std::fs::create_dir_all(&agents).unwrap();
    for (agent, ms) in [("a", 20), ("b", b_ms)] {
        let spec = format!("name = \"{agent}\"\nprompt = \"p\"\n[sim]\nlatency_ms = {ms}\n");
        std::fs::write(agents.join(format!("{agent}.toml")), spec).unwrap();
    }
    agents
}

/// Starts `fanfare serve` and returns it with the address it says it serves on.
fn serve(db: &Path, agents: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .args(["serve", "--listen", "127.0.0.1:0", "--drain", "1s", "--db"])
        .arg(db)
        .arg("--agents")
        .arg(agents)
        .env_remove("RUST_LOG")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split("serving on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// One request; the status and the body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
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

/// Reads a run's event stream until `n` branches have finished.
fn until_branches(addr: &str, id: &str, n: usize) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/runs/{id}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    )
    .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("event: branch_finished").count() < n {
        let got = s.read(&mut buf).unwrap();
        assert!(got > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..got]));
    }
}

fn status_of(addr: &str, id: &str) -> serde_json::Value {
    let (code, body) = http(addr, "GET", &format!("/v1/runs/{id}"), "");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_serve_killed_mid_run_resumes_it_at_the_next_start_without_calling_again_what_answered() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let (mut first, addr) = serve(&db, &agents(dir.path(), "slow", 60_000));
    let (code, body) = http(
        &addr,
        "POST",
        "/v1/runs",
        r#"{"input": "Should we keep logs?", "agents": ["a", "b"], "merge": "code"}"#,
    );
    assert_eq!(code, 202, "{body}");
    let id = serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    until_branches(&addr, &id, 1);
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut second, addr) = serve(&db, &agents(dir.path(), "fast", 20));
    let started = Instant::now();
    let run = loop {
        let run = status_of(&addr, &id);
        if run["status"] == "succeeded" {
            break run;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{run}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let branches = run["report"]["branches"].as_array().unwrap();
    assert_eq!(branches[0]["reused"], true, "{}", branches[0]);
    assert!(branches[1].get("reused").is_none(), "{}", branches[1]);

    let ok = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let exit = second.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}
