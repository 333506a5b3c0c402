//! `fanfare bench`: measured side by side in one run, so ratios survive a noisy machine.
//!
//! - `bench fanout`: N branches through the real `anthropic` provider (HTTP on
//!   127.0.0.1) against an in-process mock with a fixed latency, then one merge call
//!   whose prompt holds every reply; the same workload with bare reqwest + a tokio
//!   `JoinSet` (no actors, no policies); and, when a Python with the `anthropic` SDK is
//!   available, the classic `asyncio.gather`. One JSON line per case; overhead is
//!   wall − 2 × latency (the physical floor is one fan-out round plus one merge).
//! - `bench inproc`: the simulated provider at zero latency: orchestration overhead
//!   per branch, runs per second, memory per idle specialist, the cost of a restart.
//! - `bench serve` (`serve.rs`): N runs submitted at once to `fanfare serve`.
//! - `bench cache` (`cache.rs`): against a real server (llama.cpp), four specialists
//!   over one document: cached prompt tokens per call, instructions-first vs
//!   document-first layouts vs a run with `--cache-warm`.
//! - `bench cluster` (`cluster.rs`): one fan-out on this process's specialist, on
//!   one worker node, on two: branches per second and the cost per branch.
//! - `bench admission` (`admission.rs`): the cap starting at N against a server that
//!   allows fewer in flight: 429s, wasted calls, wall against the floor.

mod admission;
mod cache;
mod cluster;
mod serve;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, SimProfile,
    SimProvider, Stack,
};
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::json;

use crate::args::BenchCommand;

pub async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fanout {
            sizes,
            latency_ms,
            base_url,
            concurrency,
            warmup,
            python,
            repeat,
            document_bytes,
        } => {
            if sizes.is_empty() || sizes.contains(&0) {
                bail!("--n takes branch counts of at least 1");
            }
            if python.is_some() && document_bytes > 0 {
                bail!("--python runs the asyncio baseline on the one-line task only; leave out --document-bytes");
            }
            fanout(FanoutArgs {
                sizes,
                latency: Duration::from_millis(latency_ms),
                base_url,
                concurrency,
                warmup,
                python,
                perspectives: fanfare_agents::perspectives()?,
                repeat,
                task: task_text(document_bytes),
            })
            .await
        }
        BenchCommand::Inproc { sizes } => inproc(&sizes).await,
        BenchCommand::Admission {
            n,
            limit,
            latency_ms,
            initial,
        } => admission::admission(n, limit, Duration::from_millis(latency_ms), initial).await,
        BenchCommand::Serve {
            n,
            max_runs,
            max_queued,
        } => serve::serve(n, max_runs, max_queued).await,
        BenchCommand::Cache {
            base_url,
            wire,
            model,
            words,
        } => cache::cache(wire, &base_url, &model, words).await,
        BenchCommand::Cluster {
            n,
            latency_ms,
            repeat,
        } => cluster::cluster(n, Duration::from_millis(latency_ms), repeat).await,
    }
}

/// CPU time of the whole process (every thread, user and system), to the
/// nanosecond: `/proc/self/stat` counts in 10 ms ticks, coarse against the ~0.15 s
/// a 1,000-branch case takes.
fn cpu_seconds() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer to a
    // local and reads nothing else.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) } != 0 {
        return 0.0;
    }
    now.tv_sec as f64 + now.tv_nsec as f64 * 1e-9
}

/// Raises this process's soft limit on open files to its hard limit; returns the
/// limit now in force (`None`: unknown).
fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: both calls read or write one `rlimit` through a valid pointer to a
    // local; raising the soft limit up to the hard one needs no privilege.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Open file descriptors of this process now.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Waits (up to 5 s) until the process holds no more than a few files beyond
/// `baseline`: the last case's sockets have closed.
async fn sockets_closed(baseline: usize) {
    let until = Instant::now() + Duration::from_secs(5);
    while open_files() > baseline + 64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss_mb(field: &str) -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Options of `bench fanout`.
pub struct FanoutArgs {
    pub sizes: Vec<usize>,
    pub latency: Duration,
    pub base_url: Option<String>,
    pub concurrency: Option<usize>,
    pub warmup: usize,
    pub python: Option<PathBuf>,
    pub perspectives: Vec<AgentSpec>,
    /// Measured repetitions per case (interleaved); the median is reported.
    pub repeat: usize,
    /// What every branch reads: the task, with a document if one was asked for.
    pub task: String,
}

/// One repetition of a case, timed from the request to the merged answer (setting
/// a client or a runtime up and shutting it down is outside): wall time, CPU time
/// of the process over it (the in-process mock's share included, for both clients
/// alike), branches ok and failed.
type Measured = (Duration, f64, usize, usize);

/// Over a case's repetitions: the median wall time and, taken apart, the median CPU
/// time (the CPU of the median-wall run alone moved by ±30% between runs); the fewest
/// branches ok and the most failed, so one bad repetition shows.
fn median(runs: Vec<Measured>) -> Measured {
    let mut walls: Vec<Duration> = runs.iter().map(|r| r.0).collect();
    walls.sort();
    let mut cpus: Vec<f64> = runs.iter().map(|r| r.1).collect();
    cpus.sort_by(f64::total_cmp);
    let ok = runs.iter().map(|r| r.2).min().unwrap_or(0);
    let failed = runs.iter().map(|r| r.3).max().unwrap_or(0);
    (walls[walls.len() / 2], cpus[cpus.len() / 2], ok, failed)
}

fn agents(perspectives: &[AgentSpec]) -> Vec<AgentSpec> {
    perspectives
        .iter()
        .map(|s| AgentSpec {
            max_tokens: 512,
            model: Some("bench-model".to_owned()),
            ..s.clone()
        })
        .collect()
}

const TASK: &str =
    "Our new API will process 1M requests/day, storing all user queries in plain text logs.";

/// The task, followed by a document of about `document_bytes` bytes of numbered words
/// (the same text in every case, so the two clients send the same bytes).
fn task_text(document_bytes: usize) -> String {
    let mut text = TASK.to_owned();
    if document_bytes > 0 {
        text.push_str("\n\nThe design document:\n");
        let start = text.len();
        let mut word = 0u64;
        while text.len() - start < document_bytes {
            use std::fmt::Write as _;
            let _ = write!(text, "clause{word} ");
            word += 1;
        }
    }
    text
}

async fn fanfare_case(
    base_url: &str,
    task: &str,
    n: usize,
    concurrency: usize,
    perspectives: &[AgentSpec],
) -> anyhow::Result<Measured> {
    let mut config = AnthropicConfig::new(ApiKey::new("bench"));
    config.base_url = base_url.to_owned();
    config.default_model = "bench-model".to_owned();
    let (provider, _gate) = Stack::new()
        .admission(AdmissionConfig {
            max_concurrency: concurrency,
            initial_concurrency: concurrency,
            ..AdmissionConfig::default()
        })
        .retry(ExponentialBackoff::default())
        .build(AnthropicProvider::new(config)?);
    let specs = agents(perspectives);
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await?;
    let request = RunRequest::fan_out(task, (0..n).map(|i| names[i % names.len()].clone()))
        .policy(Policy::TolerantPartial { quorum: 1 })
        .deadline(Duration::from_secs(600))
        .branch_timeout(Duration::from_secs(300))
        .merge(MergeStrategy::Llm {
            model: None,
            max_tokens: 512,
            context_window: None,
        });
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let report = fanfare.run(request).await?;
    let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
    if std::env::var_os("FANFARE_BENCH_DEBUG").is_some() {
        let first_start = report
            .branches
            .iter()
            .filter_map(|b| b.start)
            .max()
            .unwrap_or_default();
        let last_end = report
            .branches
            .iter()
            .map(|b| b.end)
            .max()
            .unwrap_or_default();
        let s = report.synthesis.as_ref().map(|s| (s.start, s.end));
        eprintln!("n={n}: last dispatch {first_start:?}, last branch end {last_end:?}, merge {s:?}, wall {wall:?}");
    }
    fanfare.shutdown().await;
    let ok = report.totals.ok;
    if let Some(b) = report.branches.iter().find(|b| !b.outcome.is_ok()) {
        eprintln!(
            "fanfare bench: {} of fanfare's branches did not succeed, the first: {:?}",
            n - ok,
            b.outcome
        );
    }
    Ok((wall, cpu, ok, n - ok))
}

async fn reqwest_case(
    base_url: &str,
    task: &str,
    n: usize,
    concurrency: usize,
    perspectives: &[AgentSpec],
) -> anyhow::Result<Measured> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let mut set = tokio::task::JoinSet::new();
    let task: Arc<str> = task.into();
    for i in 0..n {
        let (client, url, limit, task) = (client.clone(), url.clone(), limit.clone(), task.clone());
        let system = perspectives[i % perspectives.len()].prompt.clone();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let body = json!({"model": "bench-model", "max_tokens": 512, "system": system,
                              "messages": [{"role": "user", "content": &*task}]});
            let r = client
                .post(&url)
                .header("x-api-key", "bench")
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await?;
            let v: serde_json::Value = r.json().await?;
            v.pointer("/content/0/text")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .context("an answer with no text")
        });
    }
    let mut replies = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        let reply = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = &reply {
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
        replies.push(reply.ok());
    }
    let fanned = t0.elapsed();
    if let Some(e) = first_error {
        eprintln!("fanfare bench: the bare client's calls failed, the first with: {e}");
    }
    let ok = replies.iter().filter(|r| r.is_some()).count();
    let merged: String = replies
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| format!("## {i}\n{t}\n"))
        .collect();
    let body = json!({"model": "bench-model", "max_tokens": 512, "system": "Merge these.",
                      "messages": [{"role": "user", "content": merged}]});
    // A client needs the merged text: read and parse the answer, as fanfare does
    // (until 2026-11-27 the reference stopped at the status line).
    let merged: serde_json::Value = client
        .post(&url)
        .header("x-api-key", "bench")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        merged.pointer("/content/0/text").is_some(),
        "the merge call answered no text"
    );
    let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
    if std::env::var_os("FANFARE_BENCH_DEBUG").is_some() {
        eprintln!(
            "n={n} (reqwest): last branch end {fanned:?}, merge {:?}, wall {:?}",
            wall - fanned,
            wall
        );
    }
    Ok((wall, cpu, ok, n - ok))
}

fn line(
    framework: &str,
    n: usize,
    wall: Duration,
    floor: Duration,
    cpu: f64,
    ok: usize,
    failed: usize,
) -> serde_json::Value {
    json!({
        "framework": framework, "n": n, "wall_s": wall.as_secs_f64(),
        "overhead_s": wall.as_secs_f64() - floor.as_secs_f64(), "cpu_s": cpu,
        "peak_rss_mb": rss_mb("VmHWM:"), "ok": ok, "failed": failed,
    })
}

fn python_case(
    python: &PathBuf,
    base_url: &str,
    n: usize,
    latency: Duration,
) -> anyhow::Result<serde_json::Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_asyncio.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .args([
            "--base-url",
            base_url,
            "--n",
            &n.to_string(),
            "--latency-ms",
            &latency.as_millis().to_string(),
        ])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "the Python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    serde_json::from_str(last).with_context(|| format!("the Python baseline printed `{last}`"))
}

/// `bench fanout`; prints one JSON line per case and the ratios.
pub async fn fanout(args: FanoutArgs) -> anyhow::Result<()> {
    let floor = args.latency * 2;
    if let Some(url) = &args.base_url {
        // External server: warm up, then one measured case, printed last.
        let n = *args.sizes.first().unwrap_or(&1000);
        let c = args.concurrency.unwrap_or(n.max(1));
        for _ in 0..args.warmup {
            fanfare_case(url, &args.task, n.min(100), c, &args.perspectives).await?;
        }
        let (wall, cpu, ok, failed) =
            fanfare_case(url, &args.task, n, c, &args.perspectives).await?;
        crate::output::line(format_args!(
            "{}",
            line("fanfare", n, wall, floor, cpu, ok, failed)
        ))?;
        return Ok(());
    }
    // Each case talks to a mock of its own, on a port of its own: a case of N
    // branches opens N connections, whose ports then sit in TIME_WAIT for a minute;
    // against the same address, two 10,000-branch cases ran out of ephemeral ports
    // (see BENCHMARKS.md). A new destination port is a fresh set of 4-tuples.
    // Every case holds 2 × N sockets in this one process (the client's and the
    // mock's ends), and the last case's may still be closing when the next starts: at
    // a 20,000 limit, 10,000-branch cases failed thousands of connects with "Too many
    // open files", either client's. Raise the soft limit as far as allowed, say when
    // it is short, and start each case once the last one's sockets are gone.
    let limit = raise_open_file_limit();
    let widest = args.sizes.iter().max().copied().unwrap_or(0);
    if limit.is_some_and(|l| l < 2 * widest as u64 + 256) {
        eprintln!(
            "fanfare bench: {} branches need about {} open files in this process (client \
             and mock); the limit is {}: raise it (ulimit -n) or expect failed connects",
            widest,
            2 * widest + 256,
            limit.unwrap_or(0)
        );
    }
    let baseline = open_files();
    let mock = || {
        MockServer::start(MockConfig {
            latency: args.latency,
            ..MockConfig::default()
        })
    };
    for &n in &args.sizes {
        let c = args.concurrency.unwrap_or(n.max(1));
        // Warm up at this size, unmeasured: the first case of a size grows the heap
        // (fresh pages, zeroed by the kernel) and the one after it found them ready —
        // fanfare, always first, measured 0.2 s slower on its first 1,000-branch case.
        sockets_closed(baseline).await;
        let warm = mock().await?;
        fanfare_case(&warm.url(), &args.task, n, c, &args.perspectives).await?;
        warm.stop().await;
        sockets_closed(baseline).await;
        let warm = mock().await?;
        reqwest_case(&warm.url(), &args.task, n, c, &args.perspectives).await?;
        warm.stop().await;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for rep in 0..args.repeat.max(1) {
            // Alternate which goes first, so neither always follows the other.
            for fanfare_turn in [rep % 2 == 0, rep % 2 != 0] {
                sockets_closed(baseline).await;
                let server = mock().await?;
                let url = server.url();
                if fanfare_turn {
                    a.push(fanfare_case(&url, &args.task, n, c, &args.perspectives).await?);
                } else {
                    b.push(reqwest_case(&url, &args.task, n, c, &args.perspectives).await?);
                }
                server.stop().await;
            }
        }
        let (wall, cpu, ok, failed) = median(a);
        let ours = line("fanfare", n, wall, floor, cpu, ok, failed);
        crate::output::line(format_args!("{ours}"))?;
        let (wall, cpu, ok, failed) = median(b);
        let reference = line("reqwest-joinset", n, wall, floor, cpu, ok, failed);
        crate::output::line(format_args!("{reference}"))?;
        let overhead = |v: &serde_json::Value| v["overhead_s"].as_f64().unwrap_or(f64::NAN);
        let cpu = |v: &serde_json::Value| v["cpu_s"].as_f64().unwrap_or(f64::NAN);
        let mut ratios = json!({"ratio": "overhead vs reqwest-joinset", "n": n,
            "value": overhead(&ours) / overhead(&reference), "cpu": cpu(&ours) / cpu(&reference)});
        if let Some(python) = &args.python {
            let server = mock().await?;
            let py = python_case(python, &server.url(), n, args.latency);
            server.stop().await;
            match py {
                Ok(py) => {
                    crate::output::line(format_args!("{py}"))?;
                    ratios["python_over_fanfare"] = json!(overhead(&py) / overhead(&ours));
                }
                Err(e) => eprintln!("fanfare bench: {e:#}"),
            }
        }
        crate::output::line(format_args!("{ratios}"))?;
    }
    Ok(())
}

/// `bench inproc`: orchestration costs on the zero-latency simulated provider.
pub async fn inproc(sizes: &[usize]) -> anyhow::Result<()> {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let names = ["legal", "technical", "financial", "security"];
    let specs: Vec<AgentSpec> = names
        .iter()
        .map(|n| AgentSpec {
            name: (*n).to_owned(),
            description: String::new(),
            prompt: format!("You are the {n} reviewer."),
            order: 100,
            model: None,
            max_tokens: 64,
            temperature: None,
            sim: None,
            faults: Default::default(),
            source: "bench".into(),
        })
        .collect();
    let fanfare = Fanfare::builder(provider.clone())
        .agents_from(specs.clone())
        .code("lines", |input| {
            let n = input.options.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
            let text = (0..n)
                .map(|i| format!("item {i}: {}", "x".repeat(90)))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(fanfare::run::CodeOutput {
                text,
                conflicts: Vec::new(),
            })
        })
        .start()
        .await?;
    // Warm-up.
    fanfare.run(RunRequest::fan_out(TASK, names)).await?;
    for &n in sizes {
        let request = RunRequest::fan_out(TASK, (0..n).map(|i| names[i % 4]))
            .policy(Policy::TolerantPartial { quorum: 1 });
        let t0 = Instant::now();
        let report = fanfare.run(request).await?;
        let wall = t0.elapsed();
        crate::output::line(format_args!(
            "{}",
            json!({"case": "overhead_per_branch", "n": n, "wall_s": wall.as_secs_f64(),
            "us_per_branch": wall.as_secs_f64() * 1e6 / n as f64, "ok": report.totals.ok})
        ))?;
    }
    // A map over an upstream list of n lines (~100 bytes each), 256 items at once:
    // what each item costs when its task carries the list it was mapped from; then
    // the same under a token budget, whose estimate of every item reads the items.
    let maps = sizes.iter().filter(|&&n| n <= 10_000);
    for (&n, budgeted) in maps.flat_map(|n| [(n, false), (n, true)]) {
        use fanfare::run::{Map, MapSource};
        let mut request = RunRequest::fan_out(TASK, Vec::<String>::new());
        if budgeted {
            request = request.budget(fanfare::run::Budget {
                max_tokens: Some(u64::MAX / 2),
                ..Default::default()
            });
        }
        request.steps = vec![
            fanfare::Step::code("lines", json!({ "n": n })),
            fanfare::Step::agent(names[0]).after([0]).map(Map {
                over: MapSource::Step(0),
                concurrency: 256,
                policy: Policy::FailFast,
            }),
        ];
        let t0 = Instant::now();
        let report = fanfare.run(request).await?;
        let wall = t0.elapsed();
        let ok = report.branches[1]
            .items
            .iter()
            .filter(|i| i.outcome.is_ok())
            .count();
        crate::output::line(format_args!(
            "{}",
            json!({"case": if budgeted { "budgeted_map_item_over_upstream_list" } else { "map_item_over_upstream_list" },
            "items": n, "wall_s": wall.as_secs_f64(),
            "us_per_item": wall.as_secs_f64() * 1e6 / n.max(1) as f64, "ok": ok})
        ))?;
    }
    // Runs per second: 4-branch fan-outs, 64 in flight, for ~2 s.
    let t0 = Instant::now();
    let mut done = 0usize;
    while t0.elapsed() < Duration::from_secs(2) {
        let batch = (0..64).map(|_| {
            let f = fanfare.clone();
            async move { f.run(RunRequest::fan_out(TASK, names)).await }
        });
        done += futures::future::join_all(batch)
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    crate::output::line(format_args!(
        "{}",
        json!({"case": "runs_per_second", "fanout": 4, "in_flight": 64,
        "runs_per_s": done as f64 / t0.elapsed().as_secs_f64()})
    ))?;
    fanfare.shutdown().await;

    // Memory per idle specialist: RSS before and after spawning many.
    let count = 10_000;
    let before = rss_mb("VmRSS:");
    let many = Fanfare::builder(provider.clone())
        .agents_from((0..count).map(|i| AgentSpec {
            name: format!("idle-{i}"),
            ..specs[0].clone()
        }))
        .start()
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_mb("VmRSS:");
    crate::output::line(format_args!(
        "{}",
        json!({"case": "rss_per_idle_specialist", "specialists": count,
        "kib_each": (after - before) * 1024.0 / count as f64})
    ))?;
    many.shutdown().await;

    // One supervised restart: a panic, the supervisor's decision, the new actor up.
    let flaky = fanfare::agent::faults::Faulty::new(
        specs[0].clone(),
        fanfare::agent::faults::Faults {
            panic: Some(fanfare::agent::faults::Trigger::every(1)),
            ..Default::default()
        },
    );
    let intensity = fanfare::supervision::RestartIntensity {
        max_restarts: 1_000_000,
        window: Duration::from_secs(1),
        cool_down: Duration::from_secs(1),
    };
    let sup = fanfare::supervision::SupervisionConfig {
        intensity,
        backoff: fanfare::supervision::Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        },
        ..Default::default()
    };
    let crashy = Fanfare::builder(provider)
        .agent(flaky)
        .supervision(sup)
        .start()
        .await?;
    let mut events = crashy.supervision_events();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let restarts = 1_000;
    let t0 = Instant::now();
    for _ in 0..restarts {
        let _ = crashy.run(RunRequest::fan_out(TASK, ["legal"])).await?;
        while !matches!(
            events.recv().await,
            Ok(fanfare::supervision::SupervisorEvent::Restarted { .. })
        ) {}
    }
    let per = t0.elapsed() / restarts;
    std::panic::set_hook(default_hook);
    crate::output::line(format_args!(
        "{}",
        json!({"case": "supervised_restart", "restarts": restarts,
        "us_per_crash_to_restarted": per.as_secs_f64() * 1e6,
        "note": "a run whose branch panics, plus the restart, end to end"})
    ))?;
    crashy.shutdown().await;
    Ok(())
}
