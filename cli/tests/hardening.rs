//! Regression tests for what a careful user's probe found: each is named after what
//! broke. They run the real binary; none asserts on speed.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
#[path = "hardening/inputs.rs"]
mod inputs;
#[path = "hardening/signals.rs"]
mod signals;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fanfare() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    c.env("XDG_CACHE_HOME", common::private_cache())
        .env_remove("RUST_LOG")
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
    assert!(stderr(&run).contains("torn line"), "{}", stderr(&run));
    assert!(stderr(&run).contains("batch: 2 ok"), "{}", stderr(&run));
    assert_eq!(lines(&out).len(), 2, "every line is whole");
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

#[test]
fn regression_a_torn_last_line_is_cut_not_glued_to_the_next_record() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 3);
    let out = dir.path().join("out.jsonl");
    let run = batch(&agents, &docs[..2], &out, &[]).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    // A kill mid-write: the second record is cut 10 bytes short.
    let whole = std::fs::read(&out).unwrap();
    std::fs::write(&out, &whole[..whole.len() - 10]).unwrap();
    let run = batch(&agents, &docs, &out, &[]).output().unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("torn line"), "{}", stderr(&run));
    // The torn document and the new one ran; every line parses; nothing is lost.
    assert!(stderr(&run).contains("batch: 2 ok"), "{}", stderr(&run));
    let written = lines(&out);
    assert_eq!(written.len(), 3, "{written:?}");
    let run = batch(&agents, &docs, &out, &[]).output().unwrap();
    assert!(
        stderr(&run).contains("0 ok, 0 failed, 3 skipped"),
        "{}",
        stderr(&run)
    );
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
fn regression_logs_written_to_a_file_have_no_colour_codes_and_a_panic_is_told_once() {
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
    // Told once (the panic hook printed it a second time), and what supervision
    // did about it is said after the report.
    assert_eq!(err.matches("injected panic in `a`").count(), 1, "{err}");
    assert!(err.contains("supervision: `a` restarted 1×"), "{err}");
}

/// `n` agent specs, `s000`…, one per branch, as a user with many specialists has.
fn many_agents(dir: &Path, n: usize) -> PathBuf {
    let agents = dir.join("many");
    std::fs::create_dir_all(&agents).unwrap();
    for i in 0..n {
        let spec = format!("name = \"s{i:03}\"\nprompt = \"Review it from angle {i}.\"\n");
        std::fs::write(agents.join(format!("s{i:03}.toml")), spec).unwrap();
    }
    agents
}

/// `fanfare run` of every agent in `agents` against `mock`, with the defaults and
/// the learned-limits store in `cache`.
fn run_against(mock: &fanfare_mock::MockServer, agents: &Path, cache: &Path) -> Output {
    fanfare()
        .env("XDG_CACHE_HOME", cache)
        .env("ANTHROPIC_API_KEY", "test-key")
        .args([
            "run",
            "--json",
            "--merge",
            "code",
            "--provider",
            "anthropic",
        ])
        .args(["--base-url", &mock.url(), "--agents"])
        .arg(agents)
        .arg("Review the plan.")
        .output()
        .unwrap()
}

#[test]
fn regression_a_run_sends_every_branch_at_once_to_a_server_with_room() {
    // The gate used to start at 16 and double per round trip: 100 specialists
    // against a 1 s server took three rounds, with at most 52 calls in flight.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: Duration::from_millis(300),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agents = many_agents(dir.path(), 100);
    let out = run_against(&mock, &agents, &dir.path().join("cache"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        mock.stats().max_in_flight,
        100,
        "every branch in flight at once: {:?}",
        mock.stats()
    );
}

#[test]
fn regression_the_second_run_against_a_limited_server_starts_from_what_the_first_learned() {
    // First contact with a server that carries 10 calls: one wave of 429s. The
    // second run of the same command starts at what worked, from the user's cache.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: Duration::from_millis(50),
            max_concurrency: Some(10),
            retry_after: Duration::from_millis(50),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agents = many_agents(dir.path(), 60);
    let cache = dir.path().join("cache");
    let refused = || mock.stats().by_status.get(&429).copied().unwrap_or(0);
    let first = run_against(&mock, &agents, &cache);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let wave = refused();
    assert!((1..=60).contains(&wave), "{wave} 429s at first contact");
    let kept = std::fs::read_to_string(cache.join("fanfare/limits.json")).unwrap();
    assert!(kept.contains(&mock.url()), "{kept}");
    assert!(
        !kept.contains("test-key"),
        "the key itself is never kept: {kept}"
    );
    let second = run_against(&mock, &agents, &cache);
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("starts at"),
        "the run says where it starts: {}",
        stderr(&second)
    );
    let again = refused() - wave;
    assert!(
        again < wave,
        "{again} 429s on the second run, {wave} on the first"
    );
    // `fanfare limits` shows it and forgets it.
    let list = fanfare()
        .env("XDG_CACHE_HOME", &cache)
        .args(["limits", "list"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&list.stdout).contains(&mock.url()),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    let clear = fanfare()
        .env("XDG_CACHE_HOME", &cache)
        .args(["limits", "clear"])
        .output()
        .unwrap();
    assert_eq!(clear.status.code(), Some(0), "{}", stderr(&clear));
    assert!(!cache.join("fanfare/limits.json").exists());
}

#[test]
fn regression_a_key_the_provider_refuses_exits_2_not_1() {
    // A 401 exited 1, "the run failed its policy"; it is a configuration error.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: Duration::from_millis(1),
            require_key: Some("the-right-key".into()),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let out = fanfare()
        .env("ANTHROPIC_API_KEY", "a-wrong-key")
        .args([
            "run",
            "--provider",
            "anthropic",
            "--base-url",
            &mock.url(),
            "--agents",
        ])
        .arg(&agents)
        .arg("t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused the API key (HTTP 401)"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("a-wrong-key"));
}

#[test]
fn regression_fault_rolls_follow_the_seed() {
    // `--fault security:panic:0.5` fired on 11 of 11 seeds: the rolls ignored --seed.
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let fired = (0..11)
        .filter(|seed| {
            let out = fanfare()
                .args(["run", "--json", "--merge", "none", "--policy", "partial:1"])
                .args(["--fault", "a:provider-500:0.5", "--max-attempts", "1"])
                .args(["--seed", &seed.to_string(), "--agents"])
                .arg(&agents)
                .arg("t")
                .output()
                .unwrap();
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            report["branches"][0]["outcome"]["status"] == "failed"
        })
        .count();
    assert!(
        (1..11).contains(&fired),
        "the fault fired on {fired} of 11 seeds"
    );
}
