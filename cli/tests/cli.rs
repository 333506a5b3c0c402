#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! The `fanfare` binary, run as a user would. These use real time but assert only
//! on structure and ordering, never on speed.

#[path = "cli/batch.rs"]
mod batch;
mod common;
#[path = "cli/dry_run.rs"]
mod dry_run;
#[path = "cli/inputs.rs"]
mod inputs;
#[path = "cli/models.rs"]
mod models;
#[path = "cli/readme.rs"]
mod readme;
#[path = "cli/tools.rs"]
mod tools;
#[path = "cli/workflows.rs"]
mod workflows;

use std::path::Path;
use std::process::{Command, Output};

fn fanfare(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd).output().unwrap()
}

/// [`fanfare`] with a (made-up) Anthropic key, for a run refused before any call.
fn fanfare_with_key(args: &[&str], cwd: &Path) -> Output {
    command(args, cwd)
        .env("ANTHROPIC_API_KEY", "sk-ant-not-a-real-key")
        .output()
        .unwrap()
}

/// The binary with `args` in `cwd`, its own cache, no log filter and no keys.
fn command(args: &[&str], cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanfare"));
    command
        .env("XDG_CACHE_HOME", common::private_cache())
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        // These tests are about the sim default: a developer's real keys must not
        // turn them into paid API calls.
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("OPENAI_API_KEY");
    command
}

/// The repository's top, where `agents/specs` is.
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

const TASK: &str =
    "Our new API will process 1M requests/day, storing all user queries in plain text logs.";

#[test]
fn run_prints_four_perspectives_and_a_synthesis_and_says_it_is_simulated() {
    let out = fanfare(&["run", TASK], repo());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for agent in ["legal", "technical", "financial", "security"] {
        assert!(stdout.contains(&format!("── {agent} · ok")), "{stdout}");
    }
    assert!(stdout.contains("══ synthesis (llm merge) ══"), "{stdout}");
    assert!(stdout.contains("simulated"), "{stdout}");
    assert!(stderr.contains("SIMULATED"), "{stderr}");
}

#[test]
fn json_report_has_the_synthesis_after_the_slowest_branch() {
    let out = fanfare(&["run", "--json", "--merge", "llm", TASK], repo());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["simulated"], true);
    let branches = report["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 4);
    let slowest_end = branches
        .iter()
        .map(|b| b["end_s"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let synth_start = report["synthesis"]["start_s"].as_f64().unwrap();
    let synth_end = report["synthesis"]["end_s"].as_f64().unwrap();
    let wall = report["wall_s"].as_f64().unwrap();
    assert!(
        synth_start >= slowest_end,
        "merge starts after the slowest branch"
    );
    assert!(wall >= synth_end, "wall covers the merge");
    assert!(branches
        .iter()
        .all(|b| b["outcome"]["status"] == "ok" && b["usage"]["output_tokens"].as_u64() > Some(0)));
}

#[test]
fn built_in_agents_are_used_outside_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let out = fanfare(&["agents", "list"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(stdout.starts_with("agents from built-in:"), "{stdout}");
    assert_eq!(stdout.lines().count(), 11, "{stdout}");
    for name in ["legal", "security", "grammar", "summariser", "critic"] {
        assert!(stdout.contains(&format!("  {name} ")), "{name}: {stdout}");
    }
}

#[test]
fn built_in_workflows_are_listed_and_a_dry_run_calls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = fanfare(&["workflows", "list"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for name in ["perspectives", "research", "summarise", "validation"] {
        assert!(stdout.contains(&format!("  {name} ")), "{name}: {stdout}");
    }
    let out = fanfare(
        &[
            "run",
            "--workflow",
            "research",
            "--dry-run",
            "why is the sky blue",
        ],
        dir.path(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("runs together:"), "{stdout}");
    assert!(stdout.contains("critical path"), "{stdout}");
    assert!(stdout.contains("nothing was called"), "{stdout}");
}

#[test]
fn a_malformed_spec_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ok.toml"),
        "name = \"ok\"\nprompt = \"p\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"bad\"\nprompt = \"p\"\nmax_tokens = \"many\"\n",
    )
    .unwrap();
    let out = fanfare(
        &["run", "--agents", dir.path().to_str().unwrap(), "task"],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:3:"), "{stderr}");
    assert!(
        stderr.contains("max_tokens") || stderr.contains("invalid type"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one-line reason: {stderr}");
}

#[test]
fn a_missing_prompt_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.toml"),
        "name = \"x\"\nprompt_file = \"nope.md\"\n",
    )
    .unwrap();
    let out = fanfare(
        &["agents", "list", "--agents", dir.path().to_str().unwrap()],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("x.toml: field `prompt_file`: cannot read"),
        "{stderr}"
    );
}

#[test]
fn bad_flags_and_missing_input_exit_non_zero_with_a_reason() {
    let out = fanfare(&["run"], repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no task given"));
    let out = fanfare(&["run", "--policy", "partial:0", "t"], repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad quorum"));
    let out = fanfare(&["run", "--deadline", "soon", "t"], repo());
    assert_eq!(out.status.code(), Some(2));
    let out = fanfare(&["run", "--only", "astrology", "t"], repo());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named `astrology`"));
}

#[test]
fn a_run_that_fails_its_policy_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "name = \"a\"\nprompt = \"p\"\n[sim]\nlatency_ms = 1\nfailure_rate = 1.0\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "name = \"b\"\nprompt = \"p\"\n[sim]\nlatency_ms = 1\n",
    )
    .unwrap();
    let out = fanfare(
        &["run", "--agents", dir.path().to_str().unwrap(), "t"],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("run failed: branch 0 (a)"), "{stderr}");
}

#[test]
fn a_price_file_prices_a_custom_model_in_the_report() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: std::time::Duration::from_millis(1),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prices = dir.path().join("prices.toml");
    std::fs::write(
        &prices,
        "[models.\"house-model\"]\ninput_per_mtok = 1000000.0\noutput_per_mtok = 0.0\n",
    )
    .unwrap();
    let url = mock.url();
    let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .env("XDG_CACHE_HOME", common::private_cache())
        .args([
            "run",
            "--json",
            "--provider",
            "openai",
            "--model",
            "house-model",
            "--prices",
        ])
        .arg(&prices)
        .args(["--base-url", &format!("{url}/v1"), TASK])
        .current_dir(repo())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["provider"], "openai");
    // $1 per input token: the cost is exactly the input tokens counted.
    let input = report["totals"]["usage"]["input_tokens"].as_f64().unwrap();
    assert!(input > 0.0);
    assert_eq!(report["totals"]["cost_usd"].as_f64(), Some(input));
    assert_eq!(report["totals"]["unpriced_calls"], 0);
    drop(mock);
}

#[test]
fn bench_fanout_prints_comparable_json_lines() {
    let out = fanfare(
        &[
            "bench",
            "fanout",
            "--n",
            "4,20",
            "--latency-ms",
            "20",
            "--repeat",
            "1",
        ],
        repo(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (framework, n) in [
        ("fanfare", 4),
        ("reqwest-joinset", 4),
        ("fanfare", 20),
        ("reqwest-joinset", 20),
    ] {
        let line = lines
            .iter()
            .find(|l| l["framework"] == framework && l["n"] == n)
            .unwrap();
        assert_eq!(line["ok"], n, "{line}");
        assert_eq!(line["failed"], 0);
        for key in ["wall_s", "overhead_s", "cpu_s", "peak_rss_mb"] {
            assert!(line[key].is_number(), "{key} in {line}");
        }
    }
    assert!(lines
        .iter()
        .any(|l| l["ratio"] == "overhead vs reqwest-joinset" && l["n"] == 20));
}

#[test]
fn every_shipped_workflow_runs_offline_on_the_simulated_provider() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(
            dir.path().join(format!("{name}.md")),
            format!("Document {name} is about topic {name}."),
        )
        .unwrap();
    }
    for (workflow, extra) in [
        ("perspectives", vec![]),
        ("validation", vec![]),
        ("research", vec![]),
        ("summarise", vec!["--each", "*.md"]),
    ] {
        let mut args = vec!["run", "--workflow", workflow, "--json"];
        args.extend(extra);
        args.push("Is a four-day week a good idea for a small team?");
        let out = fanfare(&args, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{workflow}: {stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["status"], "succeeded", "{workflow}: {report}");
        let branches = report["branches"].as_array().unwrap();
        assert!(
            branches.iter().all(|b| b["outcome"]["status"] == "ok"),
            "{workflow}: {report}"
        );
        if workflow == "summarise" {
            assert_eq!(
                branches[0]["items"].as_array().unwrap().len(),
                3,
                "{report}"
            );
        }
    }
}

#[test]
fn run_repair_reuses_what_succeeded_and_runs_only_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let first = fanfare(
        &[
            "run",
            TASK,
            "--json",
            "--policy",
            "partial:3",
            "--fault",
            "security:provider-500:every=1",
            "--max-attempts",
            "1",
        ],
        repo(),
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = dir.path().join("report.json");
    std::fs::write(&report, &first.stdout).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!(before["branches"][3]["outcome"]["status"], "failed");

    let second = fanfare(
        &["run", TASK, "--json", "--repair", report.to_str().unwrap()],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("3 answer(s) reused"), "{stderr}");
    let after: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let branches = after["branches"].as_array().unwrap();
    let reused: Vec<bool> = branches
        .iter()
        .map(|b| b["reused"] == "earlier_run")
        .collect();
    assert_eq!(reused, [true, true, true, false]);
    assert!(branches.iter().all(|b| b["outcome"]["status"] == "ok"));
    // The reused answers are the earlier ones, word for word.
    assert_eq!(
        branches[0]["outcome"]["text"],
        before["branches"][0]["outcome"]["text"]
    );

    // A report of another workflow is refused, naming the mismatch.
    let wrong = fanfare(
        &[
            "run",
            TASK,
            "--only",
            "legal",
            "--repair",
            report.to_str().unwrap(),
        ],
        repo(),
    );
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("has 4 branches, this run has 1 steps"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    // Regression: another task reused the old answers and exited 0. It is refused;
    // and the report keeps its task, so a repair need not type it again.
    let other = fanfare(
        &[
            "run",
            "Another task entirely.",
            "--repair",
            report.to_str().unwrap(),
        ],
        repo(),
    );
    assert_eq!(other.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("is not the one"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert_eq!(before["asked"]["task"], TASK);
    let untyped = fanfare(
        &["run", "--json", "--repair", report.to_str().unwrap()],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&untyped.stderr);
    assert!(untyped.status.success(), "{stderr}");
    assert!(stderr.contains("3 answer(s) reused"), "{stderr}");

    // Regression (seventh probe): a simulator's report repaired with a real provider
    // mixed simulated answers into a report that said `simulated: false`. Refused
    // before any call (nothing listens at the base URL).
    let real = fanfare(
        &[
            "run",
            "--json",
            "--provider",
            "openai",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--repair",
            report.to_str().unwrap(),
        ],
        repo(),
    );
    assert_eq!(real.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&real.stderr).contains("was answered by the simulator"),
        "{}",
        String::from_utf8_lossy(&real.stderr)
    );
}
