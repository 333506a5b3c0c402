//! Regression tests for what a careful user's probe found: each is named after what
//! broke. They run the real binary; none asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fanfare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    c.env_remove("RUST_LOG")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("OPENAI_BASE_URL");
    c
}

/// A spec directory with agents `a` and `b` on the simulated provider, `ms` each.
fn agents(dir: &Path, ms: u64) -> PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    for name in ["a", "b"] {
        let spec = format!("name = \"{name}\"\nprompt = \"p\"\n[sim]\nlatency_ms = {ms}\n");
        std::fs::write(agents.join(format!("{name}.toml")), spec).unwrap();
    }
    agents
}

fn docs(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let p = dir.join(format!("doc{i}.md"));
            std::fs::write(&p, format!("document number {i}")).unwrap();
            p
        })
        .collect()
}

fn batch(agents: &Path, docs: &[PathBuf], out: &Path, extra: &[&str]) -> Command {
    let mut c = fanfare();
    c.arg("batch")
        .args(docs)
        .args(["--merge", "code", "--agents"])
        .arg(agents)
        .arg("--out")
        .arg(out)
        .args(extra);
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn lines(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn regression_a_configuration_error_in_batch_exits_2_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 3);
    let out = dir.path().join("out.jsonl");
    let run = batch(&agents, &docs, &out, &["--policy", "partial:99"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("quorum 99"), "{}", stderr(&run));
    assert!(lines(&out).is_empty(), "no document was marked failed");
    // The corrected rerun runs them all.
    let run = batch(&agents, &docs, &out, &["--policy", "partial:1"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("batch: 3 ok, 0 failed, 0 skipped"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn regression_the_same_file_named_twice_runs_once_and_out_may_not_be_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 1);
    let twice = vec![docs[0].clone(), dir.path().join(".").join("doc0.md")];
    let out = dir.path().join("out.jsonl");
    let run = batch(&agents, &twice, &out, &[]).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("more than once"), "{}", stderr(&run));
    assert_eq!(lines(&out).len(), 1);
    let run = batch(&agents, &docs, &docs[0], &[]).output().unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("is one of the input documents"),
        "{}",
        stderr(&run)
    );
    assert_eq!(
        std::fs::read_to_string(&docs[0]).unwrap(),
        "document number 0",
        "the input is untouched"
    );
}

#[test]
fn regression_a_corrupt_line_is_run_again_and_a_second_batch_on_one_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 2);
    let out = dir.path().join("out.jsonl");
    // A kill between writes once left half lines that a rerun counted as done.
    std::fs::write(
        &out,
        format!("{{\"document\":\"{}\",\"sta", docs[0].display()),
    )
    .unwrap();
    let run = batch(&agents, &docs, &out, &[]).output().unwrap();
    assert!(
        stderr(&run).contains("unreadable line ignored"),
        "{}",
        stderr(&run)
    );
    assert!(stderr(&run).contains("batch: 2 ok"), "{}", stderr(&run));
    // While one batch holds the file, another is refused.
    let slow_agents = self::agents(&dir.path().join("slow"), 3_000);
    let more = self::docs(&dir.path().join("slow"), 2);
    let held = dir.path().join("held.jsonl");
    let mut first = batch(&slow_agents, &more, &held, &[])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let second = batch(&slow_agents, &more, &held, &[]).output().unwrap();
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(2), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("being written by another batch"),
        "{}",
        stderr(&second)
    );
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn regression_ctrl_c_in_batch_cancels_the_calls_in_flight_and_keeps_what_finished() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: Duration::from_secs(60),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 4);
    let out = dir.path().join("out.jsonl");
    let url = format!("{}/v1", mock.url());
    let child = batch(
        &agents,
        &docs,
        &out,
        &[
            "--provider",
            "openai",
            "--base-url",
            &url,
            "--concurrency",
            "2",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while mock.stats().in_flight < 4 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mock.stats().in_flight,
        4,
        "two documents × two agents in flight"
    );
    signal(&child, "-INT");
    let stopped = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "it did not wait for the calls"
    );
    assert!(stderr(&output).contains("resume"), "{}", stderr(&output));
    let t1 = Instant::now();
    while mock.stats().aborted < 4 && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        mock.stats().aborted,
        4,
        "the calls in flight were cancelled, not billed"
    );
    drop(mock);
}

#[test]
fn regression_sigterm_cancels_a_run_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 60_000);
    let child = fanfare()
        .args(["run", "--agents"])
        .arg(&agents)
        .arg("a task")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    assert!(stderr(&output).contains("cancelled"), "{}", stderr(&output));
}

#[test]
fn regression_a_closed_stdout_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let mut child = fanfare()
        .args(["run", "--json", "--agents"])
        .arg(&agents)
        .arg("a task")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_ne!(output.status.code(), Some(101), "{}", stderr(&output));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

#[test]
fn regression_zero_and_nonsense_limits_are_refused_at_once() {
    for args in [
        &["--max-concurrency", "0"][..],
        &["--max-attempts", "0"],
        &["--rpm", "0"],
        &["--tpm", "0"],
        &["--budget-usd", "NaN"],
        &["--budget-usd", "-1"],
        &["--soft-deadline", "1s"],
    ] {
        let out = fanfare().arg("run").args(args).arg("t").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    // A bad base URL is a configuration error at once, not ten retries per branch.
    for url in ["not a url", "", "ftp://example.com"] {
        let t0 = Instant::now();
        let out = fanfare()
            .args(["run", "--provider", "openai", "--base-url", url, "t"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url:?}: {}", stderr(&out));
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
    // A key with bytes a header cannot carry is named as such.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "sk-abc\u{1}def").unwrap();
    let out = fanfare()
        .args(["run", "--provider", "anthropic", "--api-key-file"])
        .arg(&key)
        .arg("t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot carry"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sk-abc"), "{}", stderr(&out));
}

#[test]
fn regression_budget_usd_on_a_model_without_a_price_is_refused_before_anything_runs() {
    let out = fanfare()
        .args([
            "run",
            "--provider",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--model",
            "house-model",
            "--budget-usd",
            "1",
            "t",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no price for model `house-model`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn regression_credentials_in_a_base_url_are_not_printed() {
    let out = fanfare()
        .args([
            "run",
            "--provider",
            "openai",
            "--base-url",
            "http://user:hunter2@127.0.0.1:9/v1",
            "--max-attempts",
            "1",
            "--merge",
            "none",
            "t",
        ])
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("hunter2"), "{}", stderr(&out));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
}

#[test]
fn regression_an_io_error_prints_its_cause_once() {
    let out = fanfare()
        .args(["run", "--agents", "/nonexistent/specs", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
}

#[test]
fn regression_logs_written_to_a_file_have_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    // A panicking agent makes the runtime log a warning.
    let out = fanfare()
        .args([
            "run",
            "--policy",
            "partial:1",
            "--fault",
            "a:panic:every=1",
            "--agents",
        ])
        .arg(&agents)
        .arg("t")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("WARN"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
