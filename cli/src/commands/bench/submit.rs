//! `bench submit`: `fanfare serve` as an operator starts it (a process of its own,
//! its defaults, N agent specs on disk, the real `anthropic` provider against a
//! mock), then rounds of RUNS runs of N branches each submitted at once over HTTP,
//! as clients would; round 0 is the fresh server's first runs, then `--repeat` more.
//! Each run's wall is its report's `wall_s`; beside it, the time
//! from the client's submission to the run's end as the client sees it (polled
//! every 5 ms). The floor is one fan-out round and one merge: 2 × latency.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt as _;

use super::reference::reqwest_case;
use super::run::DEFAULT_MODEL;
use super::TASK;
use crate::limits::raise_open_file_limit;

/// A `fanfare serve` process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Served {
    child: tokio::process::Child,
    base: String,
}

impl Served {
    async fn start(dir: &Path, agents: &Path, mock: &MockServer) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the fanfare binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--provider",
                "anthropic",
            ])
            .args(["--base-url", &mock.url(), "--db"])
            .arg(dir.join("journal.db"))
            .arg("--agents")
            .arg(agents)
            .env("ANTHROPIC_API_KEY", "bench")
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting fanfare serve")?;
        let stderr = child.stderr.take().context("fanfare serve's stderr")?;
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut said = Vec::new();
        let base = loop {
            let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .context("fanfare serve did not say where it listens within 30 s")??;
            let Some(line) = line else {
                bail!("fanfare serve exited: {}", said.join("\n"));
            };
            if let Some(rest) = line.split("serving on ").nth(1) {
                break rest.split_whitespace().next().unwrap_or("").to_owned();
            }
            said.push(line);
        };
        // Keep reading its stderr, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, base })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: `kill` sends a signal to a process this one started and still
            // owns (it has not been waited for); no memory is touched.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// One round: `runs` runs submitted at once, each waited for. Returns, per run, its
/// report's wall and the client's, and how many branches did not succeed.
async fn round(
    client: &reqwest::Client,
    base: &str,
    agents: &[String],
    runs: usize,
) -> anyhow::Result<Vec<(f64, f64, u64)>> {
    let body = json!({"input": TASK, "agents": agents, "merge": "llm"});
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..runs {
        let (client, base, body) = (client.clone(), base.to_owned(), body.clone());
        set.spawn(async move {
            let t0 = Instant::now();
            let r = client
                .post(format!("{base}/v1/runs"))
                .json(&body)
                .send()
                .await?;
            let status = r.status();
            let accepted: Value = r.json().await?;
            anyhow::ensure!(
                status.is_success(),
                "submission refused: {status} {accepted}"
            );
            let id = accepted["id"].as_str().context("no run id")?.to_owned();
            loop {
                let run: Value = client
                    .get(format!("{base}/v1/runs/{id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                match run["status"].as_str() {
                    Some("queued" | "running") => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Some(_) => {
                        let seen = t0.elapsed().as_secs_f64();
                        let report = &run["report"];
                        let wall = report["wall_s"]
                            .as_f64()
                            .context("a report without wall_s")?;
                        let branches = report["branches"].as_array().map_or(0, Vec::len) as u64;
                        let ok = report["totals"]["ok"].as_u64().unwrap_or(0);
                        return Ok((wall, seen, branches - ok));
                    }
                    None => bail!("an unreadable run: {run}"),
                }
            }
        });
    }
    let mut out = Vec::with_capacity(runs);
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

/// `bench submit`.
pub async fn submit(runs: usize, n: usize, latency: Duration, repeat: usize) -> anyhow::Result<()> {
    raise_open_file_limit();
    let dir = tempfile::tempdir()?;
    let agents_dir = dir.path().join("agents");
    std::fs::create_dir(&agents_dir)?;
    let specs = super::run::write_specs(&agents_dir, n)?;
    // What a fresh server's first round costs at the least: the bare client making
    // the same RUNS × N calls at once from a fresh client (new connections), and one
    // merge, against a mock of its own.
    let bare = MockServer::start(MockConfig {
        latency,
        ..MockConfig::default()
    })
    .await?;
    let calls = runs * n;
    let measured = reqwest_case(&bare.url(), TASK, calls, calls, &specs, DEFAULT_MODEL).await;
    bare.stop().await;
    let (wall, _, _, failed) = measured?;
    let floor = 2.0 * latency.as_secs_f64();
    crate::output::line(format_args!(
        "{}",
        json!({"case": "bare client, every run's calls at once from a fresh client",
               "calls": calls, "wall_s": wall.as_secs_f64(), "floor_s": floor,
               "wall_over_floor": wall.as_secs_f64() / floor, "failed": failed})
    ))?;
    let agents: Vec<String> = specs.into_iter().map(|s| s.name).collect();
    let mock = MockServer::start(MockConfig {
        latency,
        ..MockConfig::default()
    })
    .await?;
    let served = Served::start(dir.path(), &agents_dir, &mock).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let mut result = Ok(());
    for r in 0..=repeat {
        match round(&client, &served.base, &agents, runs).await {
            Ok(mut walls) => {
                walls.sort_by(|a, b| a.0.total_cmp(&b.0));
                let max =
                    |f: fn(&(f64, f64, u64)) -> f64| walls.iter().map(f).fold(f64::NAN, f64::max);
                // Round 0 is the fresh server's first runs.
                let line = json!({"case": "fanfare serve", "runs": runs, "n": n,
                    "round": r, "fresh_server": r == 0, "floor_s": floor,
                    "wall_s": walls.iter().map(|w| w.0).collect::<Vec<_>>(),
                    "worst_wall_over_floor": max(|w| w.0) / floor,
                    "worst_client_seen_s": max(|w| w.1),
                    "failed": walls.iter().map(|w| w.2).sum::<u64>()});
                crate::output::line(format_args!("{line}"))?;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    served.stop().await;
    mock.stop().await;
    result
}
