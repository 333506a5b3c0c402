//! `bench run`: the path a user types. N agent specs on disk (one per branch, a
//! name and a prompt, nothing else), `fanfare run --agents DIR --provider anthropic
//! --base-url URL --merge llm --json TASK` as a process of its own with every other
//! setting at its default, timed by the report's own `wall_s` (and, beside it, the
//! process from start to exit). In the same run, alternated, the bare client sends the
//! same requests (the specs read back from disk, the default model) and one merge
//! call. Each case talks to a mock of its own.
//!
//! With `--limit L` the mock answers 429 above L calls in flight, and the command
//! runs twice against the same mock with the same cache directory: first contact,
//! then the same command again, which starts from what the first learned. Reported:
//! 429s, failed branches, wall against the floor (ceil(N / L) rounds and the merge).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::{self, AgentSpec};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::{json, Value};

use super::measure::{open_files, sockets_closed};
use super::reference::reqwest_case;
use super::TASK;
use crate::limits::raise_open_file_limit;

/// The model `fanfare run` asks for when nothing names one.
pub(super) const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

/// Options of `bench run`.
pub struct RunBench {
    pub sizes: Vec<usize>,
    pub latency: Duration,
    pub repeat: usize,
    /// The mock's limit on calls in flight.
    pub limit: Option<usize>,
}

/// One `fanfare run` as a user runs it.
struct Ran {
    /// The report's `wall_s`.
    wall: f64,
    /// From spawning the process to its exit.
    process: f64,
    ok: u64,
    failed: u64,
    /// 429s the mock sent during it.
    refused: u64,
}

/// Writes `n` specs, `b00000`…, each a name and one of the perspectives' prompts in
/// turn (as a user who writes a spec per specialist does), and reads them back.
pub(super) fn write_specs(dir: &Path, n: usize) -> anyhow::Result<Vec<AgentSpec>> {
    let perspectives = fanfare_agents::perspectives()?;
    for i in 0..n {
        let prompt = &perspectives[i % perspectives.len()].prompt;
        // A JSON string is a TOML basic string.
        let text = format!(
            "name = \"b{i:05}\"\nprompt = {}\n",
            serde_json::to_string(prompt)?
        );
        std::fs::write(dir.join(format!("b{i:05}.toml")), text)?;
    }
    let mut specs = spec::load_dir(dir)?;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(specs)
}

/// Runs `fanfare run` on the specs in `agents` against `mock`, learning limits in
/// `cache`.
async fn fanfare_run(mock: &MockServer, agents: &Path, cache: &Path) -> anyhow::Result<Ran> {
    let refused = || mock.stats().by_status.get(&429).copied().unwrap_or(0);
    let before = refused();
    let exe = std::env::current_exe().context("finding the fanfare binary")?;
    let t0 = Instant::now();
    let out = tokio::process::Command::new(exe)
        .args(["run", "--json", "--merge", "llm", "--provider", "anthropic"])
        .args(["--base-url", &mock.url(), "--agents"])
        .arg(agents)
        .arg(TASK)
        .env("ANTHROPIC_API_KEY", "bench")
        .env("XDG_CACHE_HOME", cache)
        .env_remove("RUST_LOG")
        .env_remove("ANTHROPIC_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .await
        .context("running fanfare run")?;
    let process = t0.elapsed().as_secs_f64();
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "fanfare run printed no report (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    let count = |k: &str| report["totals"][k].as_u64().unwrap_or(0);
    let ok = count("ok");
    let branches = report["branches"].as_array().map_or(0, Vec::len) as u64;
    Ok(Ran {
        wall: report["wall_s"]
            .as_f64()
            .context("a report without wall_s")?,
        process,
        ok,
        failed: branches - ok,
        refused: refused() - before,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// `bench run`: one JSON line per case and size, then the ratio.
pub async fn run(args: RunBench) -> anyhow::Result<()> {
    if args.sizes.is_empty() || args.sizes.contains(&0) {
        bail!("--n takes branch counts of at least 1");
    }
    // The child raises its own limit; this process holds the mock's end of every
    // connection.
    raise_open_file_limit();
    let baseline = open_files();
    for &n in &args.sizes {
        let dir = tempfile::tempdir()?;
        let agents = dir.path().join("agents");
        std::fs::create_dir(&agents)?;
        let specs = write_specs(&agents, n)?;
        match args.limit {
            None => open_server(&args, n, &agents, &specs, dir.path(), baseline).await?,
            Some(limit) => limited_server(&args, n, limit, &agents, dir.path(), baseline).await?,
        }
    }
    Ok(())
}

/// A mock with no limit: `fanfare run` beside the bare client, alternated.
async fn open_server(
    args: &RunBench,
    n: usize,
    agents: &Path,
    specs: &[AgentSpec],
    scratch: &Path,
    baseline: usize,
) -> anyhow::Result<()> {
    let mock = || {
        MockServer::start(MockConfig {
            latency: args.latency,
            ..MockConfig::default()
        })
    };
    let floor = 2.0 * args.latency.as_secs_f64();
    let (mut walls, mut processes, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    let mut worst = (0u64, 0u64);
    // One unmeasured round of each, then the measured ones, the order rotating.
    for rep in 0..=args.repeat.max(1) {
        for k in 0..2 {
            sockets_closed(baseline).await;
            let server = mock().await?;
            if (rep + k) % 2 == 0 {
                // A cache of its own each time: no run learns from another.
                let cache = scratch.join(format!("cache-{rep}"));
                let ran = fanfare_run(&server, agents, &cache).await;
                server.stop().await;
                let ran = ran?;
                if rep > 0 {
                    walls.push(ran.wall);
                    processes.push(ran.process);
                    worst = (worst.0.max(ran.failed), worst.1.max(ran.refused));
                }
            } else {
                let measured = reqwest_case(&server.url(), TASK, n, n, specs, DEFAULT_MODEL).await;
                server.stop().await;
                let (wall, _, _, failed) = measured?;
                if failed > 0 {
                    eprintln!("fanfare bench: {failed} of the bare client's calls failed");
                }
                if rep > 0 {
                    bare.push(wall.as_secs_f64());
                }
            }
        }
    }
    let (wall, process, bare) = (median(walls), median(processes), median(bare));
    for line in [
        json!({"case": "fanfare run", "n": n, "wall_s": wall, "process_s": process,
               "failed": worst.0, "http_429": worst.1, "floor_s": floor}),
        json!({"case": "bare client", "n": n, "wall_s": bare, "floor_s": floor}),
        json!({"ratio": "fanfare run wall / bare client wall", "n": n, "value": wall / bare,
               "fanfare_over_floor": wall / floor, "bare_over_floor": bare / floor}),
    ] {
        crate::output::line(format_args!("{line}"))?;
    }
    Ok(())
}

/// A mock that answers 429 above `limit` in flight: the same command twice, the
/// second starting from what the first learned.
async fn limited_server(
    args: &RunBench,
    n: usize,
    limit: usize,
    agents: &Path,
    scratch: &Path,
    baseline: usize,
) -> anyhow::Result<()> {
    let rounds = n.div_ceil(limit) as f64;
    let floor = (rounds + 1.0) * args.latency.as_secs_f64();
    for rep in 0..args.repeat.max(1) {
        sockets_closed(baseline).await;
        // The same mock (the same endpoint) for both runs, and the same cache.
        let mock = MockServer::start(MockConfig {
            latency: args.latency,
            max_concurrency: Some(limit),
            retry_after: Duration::from_millis(200),
            ..MockConfig::default()
        })
        .await?;
        let cache: PathBuf = scratch.join(format!("limited-{rep}"));
        for which in ["first contact", "second run"] {
            let ran = fanfare_run(&mock, agents, &cache).await;
            let ran = match ran {
                Ok(r) => r,
                Err(e) => {
                    mock.stop().await;
                    return Err(e);
                }
            };
            crate::output::line(format_args!(
                "{}",
                json!({"case": "fanfare run", "server_limit": limit, "n": n, "run": which,
                       "wall_s": ran.wall, "process_s": ran.process, "floor_s": floor,
                       "wall_over_floor": ran.wall / floor, "ok": ran.ok, "failed": ran.failed,
                       "http_429": ran.refused,
                       "http_429_per_branch": ran.refused as f64 / n as f64})
            ))?;
        }
        mock.stop().await;
    }
    Ok(())
}
