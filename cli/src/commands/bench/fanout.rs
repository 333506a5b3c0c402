//! `bench fanout`: N branches through the real `anthropic` provider (HTTP on
//! 127.0.0.1) against an in-process mock with a fixed latency, then one merge call
//! whose prompt holds every reply — run three ways, alternated: fanfare whole;
//! fanfare's provider stack alone in a bare `JoinSet` (the provider layer's share of
//! the cost); bare reqwest + a `JoinSet` (no actors, no policies, no provider
//! layer; `reference.rs`). With a Python that has the `anthropic` SDK, also `asyncio.gather`. One
//! JSON line per case; overhead is wall − 2 × latency (the physical floor is one
//! fan-out round plus one merge).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{AnthropicConfig, AnthropicProvider, ApiKey, CompletionRequest, Provider};
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::json;

use super::measure::{cpu_seconds, median, open_files, rss_mb, sockets_closed, Measured};
use super::reference::reqwest_case;
use super::{capped_stack, fan_out_request, TASK};
use crate::limits::raise_open_file_limit;

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

/// The three ways one fan-out is run, side by side.
#[derive(Clone, Copy)]
enum Case {
    /// fanfare whole.
    Fanfare,
    /// fanfare's provider stack alone, in a bare `JoinSet`.
    Stack,
    /// Bare reqwest in a `JoinSet`.
    Reqwest,
}

impl Case {
    /// In the order their medians are printed.
    const ALL: [Case; 3] = [Case::Fanfare, Case::Stack, Case::Reqwest];

    async fn run(
        self,
        url: &str,
        args: &FanoutArgs,
        n: usize,
        c: usize,
    ) -> anyhow::Result<Measured> {
        let (task, perspectives) = (&args.task, &args.perspectives);
        match self {
            Case::Fanfare => fanfare_case(url, task, n, c, perspectives).await,
            Case::Stack => stack_case(url, task, n, c, perspectives).await,
            Case::Reqwest => {
                reqwest_case(url, task, n, c, &agents(perspectives), "bench-model").await
            }
        }
    }
}

pub(super) fn agents(perspectives: &[AgentSpec]) -> Vec<AgentSpec> {
    perspectives
        .iter()
        .map(|s| AgentSpec {
            max_tokens: 512,
            model: Some("bench-model".to_owned()),
            ..s.clone()
        })
        .collect()
}

/// The task, followed by a document of about `document_bytes` bytes of numbered words
/// (the same text in every case, so the two clients send the same bytes).
pub(super) fn task_text(document_bytes: usize) -> String {
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

/// The provider both fanfare cases call: the real `anthropic` wire to `base_url`,
/// under the capped stack.
pub(super) fn anthropic_stack(
    base_url: &str,
    concurrency: usize,
) -> anyhow::Result<Arc<dyn Provider>> {
    let mut config = AnthropicConfig::new(ApiKey::new("bench"));
    config.base_url = base_url.to_owned();
    config.default_model = "bench-model".to_owned();
    Ok(capped_stack(AnthropicProvider::new(config)?, concurrency))
}

async fn fanfare_case(
    base_url: &str,
    task: &str,
    n: usize,
    concurrency: usize,
    perspectives: &[AgentSpec],
) -> anyhow::Result<Measured> {
    let provider = anthropic_stack(base_url, concurrency)?;
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

/// fanfare's provider stack alone (the fanfare case's, on the same wire) in a bare
/// `JoinSet`: the requests a fan-out's spec agents make, then the merge call. The gap
/// between this and `reqwest_case` is the provider layer's; between this and
/// `fanfare_case`, the runtime's (actors, scheduler, report).
async fn stack_case(
    base_url: &str,
    task: &str,
    n: usize,
    concurrency: usize,
    perspectives: &[AgentSpec],
) -> anyhow::Result<Measured> {
    let stack = anthropic_stack(base_url, concurrency)?;
    let specs = agents(perspectives);
    let task: Arc<str> = task.into();
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let spec = &specs[i % specs.len()];
        let request = fan_out_request(spec, task.clone());
        let stack = stack.clone();
        set.spawn(async move { stack.complete(request).await });
    }
    let mut replies = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|r| Ok(r?)) {
            Ok(c) => replies.push(c.text),
            Err(e) => {
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("fanfare bench: the provider stack's calls failed, the first with: {e}");
    }
    let ok = replies.len();
    let merged: String = replies
        .iter()
        .enumerate()
        .map(|(i, t)| format!("## {i}\n{t}\n"))
        .collect();
    let mut merge = CompletionRequest::new("merge", "Merge these.", merged);
    merge.max_tokens = 512;
    merge.model = Some("bench-model".to_owned());
    stack.complete(merge).await?;
    let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
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
        for case in Case::ALL {
            sockets_closed(baseline).await;
            let warm = mock().await?;
            case.run(&warm.url(), &args, n, c).await?;
            warm.stop().await;
        }
        let mut measured: [Vec<Measured>; 3] = Default::default();
        for rep in 0..args.repeat.max(1) {
            // Rotate which goes first, so none always follows another.
            for k in 0..Case::ALL.len() {
                let at = (rep + k) % Case::ALL.len();
                sockets_closed(baseline).await;
                let server = mock().await?;
                let result = Case::ALL[at].run(&server.url(), &args, n, c).await;
                server.stop().await;
                measured[at].push(result?);
            }
        }
        let [ours, stack, reference] = measured.map(median);
        let line_of =
            |name, (wall, cpu, ok, failed): Measured| line(name, n, wall, floor, cpu, ok, failed);
        let ours = line_of("fanfare", ours);
        let stack = line_of("fanfare-provider-joinset", stack);
        let reference = line_of("reqwest-joinset", reference);
        for l in [&ours, &stack, &reference] {
            crate::output::line(format_args!("{l}"))?;
        }
        let overhead = |v: &serde_json::Value| v["overhead_s"].as_f64().unwrap_or(f64::NAN);
        let cpu = |v: &serde_json::Value| v["cpu_s"].as_f64().unwrap_or(f64::NAN);
        let mut ratios = json!({"ratio": "overhead vs reqwest-joinset", "n": n,
            "value": overhead(&ours) / overhead(&reference), "cpu": cpu(&ours) / cpu(&reference),
            // The same gap in two layers: fanfare's provider stack alone against the
            // bare client, and the runtime around it against that stack.
            "provider_stack": overhead(&stack) / overhead(&reference),
            "provider_stack_cpu": cpu(&stack) / cpu(&reference),
            "runtime_over_stack": overhead(&ours) / overhead(&stack),
            "runtime_over_stack_cpu": cpu(&ours) / cpu(&stack)});
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
