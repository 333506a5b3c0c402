//! Run with `cargo run --release --example chaos [RUNS]`: a chaos soak in real time —
//! RUNS (default 10,000) runs of a 4-specialist fan-out through the real `anthropic`
//! provider, streamed, against the mock server misbehaving on purpose: random latency,
//! 5% 500s, 3% 429s, 1% hangs, 1% garbage bodies, 1% connections cut after the headers
//! and 2% streams cut halfway. 64 runs in flight, tolerate-partial with quorum 2, a
//! 3 s deadline.
//!
//! It checks what must hold whatever the faults, prints a table, and exits non-zero if
//! any fails: no run lost (every run produces a report), no run past its deadline by
//! more than 100 ms, no actor or task left after shutdown, and memory flat (resident
//! set at the end against after the first 10% of runs).

use std::time::{Duration, Instant};

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, Stack,
};
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};
use futures::StreamExt;

/// Resident set size of this process, in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("RUNS must be a whole number, got `{n}`"))?,
        None => 10_000,
    };
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let calm = std::env::var("CHAOS_CALM").is_ok();
    let only = std::env::var("CHAOS_ONLY").ok();
    let rate = |name: &str, r: f64| {
        if calm || only.as_deref().is_some_and(|o| o != name) {
            0.0
        } else {
            r
        }
    };
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(20),
        jitter: Duration::from_millis(60),
        error_rate: rate("error_rate", 0.05),
        rate_429: rate("rate_429", 0.03),
        retry_after: Duration::from_millis(50),
        hang_rate: rate("hang_rate", 0.01),
        garbage_rate: rate("garbage_rate", 0.01),
        reset_rate: rate("reset_rate", 0.01),
        midstream_close_rate: rate("midstream_close_rate", 0.02),
        seed: 11,
        ..MockConfig::default()
    })
    .await?;
    let mut config = AnthropicConfig::new(ApiKey::new("chaos"));
    config.base_url = mock.url();
    let (provider, gate) = Stack::new()
        .stream(std::env::var("CHAOS_PLAIN").is_err())
        .timeout(Duration::from_secs(2))
        .admission(AdmissionConfig::default())
        .retry(
            ExponentialBackoff::new(3).waits(Duration::from_millis(20), Duration::from_millis(200)),
        )
        .build(AnthropicProvider::new(config)?);
    let names = ["legal", "technical", "financial", "security"];
    let mut builder = Fanfare::builder(provider);
    for name in names {
        let mut spec = AgentSpec::new(name, format!("You review plans from the {name} angle."));
        spec.max_tokens = 64;
        builder = builder.agent(spec);
    }
    let fanfare = builder.start().await?;
    let live = fanfare.live_actors();
    let deadline = Duration::from_secs(3);
    let started = Instant::now();
    let warm = (runs / 10).max(1);
    let mut rss_warm = 0.0;
    let (mut lost, mut late, mut met, mut done) = (0usize, 0usize, 0usize, 0usize);
    let mut latest = Duration::ZERO;
    let mut outcomes = std::collections::BTreeMap::<&'static str, usize>::new();
    let mut why = std::collections::BTreeMap::<String, usize>::new();
    let mut stream = futures::stream::iter(0..runs)
        .map(|i| {
            let fanfare = fanfare.clone();
            async move {
                let request = RunRequest::fan_out(format!("Proposal {i}: keep logs?"), names)
                    .policy(Policy::TolerantPartial { quorum: 2 })
                    .deadline(deadline)
                    .branch_timeout(Duration::from_millis(2_500))
                    .merge(MergeStrategy::Code);
                fanfare.run(request).await
            }
        })
        .buffer_unordered(64);
    while let Some(result) = stream.next().await {
        done += 1;
        if done == warm {
            rss_warm = rss_mib();
        }
        match result {
            Err(e) => {
                lost += 1;
                eprintln!("chaos: a run produced no report: {e}");
            }
            Ok(report) => {
                latest = latest.max(report.wall);
                if report.wall > deadline + Duration::from_millis(100) {
                    late += 1;
                }
                met += usize::from(report.status.is_success());
                for b in &report.branches {
                    *outcomes.entry(b.outcome.label()).or_default() += 1;
                    if let Some(e) = &b.error {
                        let short: String = e
                            .split(" for `")
                            .nth(1)
                            .unwrap_or(e)
                            .chars()
                            .skip_while(|c| *c != ':')
                            .take(70)
                            .collect();
                        *why.entry(short).or_default() += 1;
                    }
                }
            }
        }
    }
    drop(stream);
    let rss_end = rss_mib();
    let wall = started.elapsed();
    let stats = mock.stats();
    let admission = gate.map(|g| g.metrics()).unwrap_or_default();
    fanfare.shutdown().await;
    // The last handles on the provider (and its pooled connections) and the server.
    drop(mock);
    // Give aborted tasks a moment to be reaped before counting what is left.
    let mut tasks_left = 0;
    for _ in 0..100 {
        tasks_left = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            .saturating_sub(tasks_before);
        if tasks_left == 0 && live.get() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "chaos: {runs} runs in {:.1}s ({:.0} runs/s), 64 in flight",
        wall.as_secs_f64(),
        runs as f64 / wall.as_secs_f64()
    );
    println!("  mock: {} requests; by status {:?}; {} resets, {} streams cut, {} abandoned by the client",
        stats.requests, stats.by_status, stats.resets, stats.midstream_closes, stats.aborted);
    println!(
        "  admission: {} calls admitted, {} 429s seen",
        admission.admitted, admission.rate_limited
    );
    println!("  branches: {outcomes:?}");
    let mut reasons: Vec<(String, usize)> = why.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, n) in reasons.iter().take(6) {
        println!("    {n:>6} × {reason}");
    }
    println!(
        "  runs meeting quorum 2: {met} ({:.2}%)",
        100.0 * met as f64 / runs as f64
    );
    println!("  | check                          | value      | must be |");
    println!("  | runs lost (no report)          | {lost:<10} | 0       |");
    println!("  | runs past deadline + 100 ms    | {late:<10} | 0       |");
    println!(
        "  | latest run (deadline 3 s)      | {:<10} | ≤ 3.1 s |",
        format!("{:.3} s", latest.as_secs_f64())
    );
    println!(
        "  | actors left after shutdown     | {:<10} | 0       |",
        live.get()
    );
    println!("  | tasks left after shutdown      | {tasks_left:<10} | 0       |");
    println!(
        "  | RSS after 10% / at the end     | {:<10} | flat    |",
        format!("{rss_warm:.0}/{rss_end:.0} MiB")
    );
    let flat = rss_end <= rss_warm * 1.5 + 16.0;
    if lost > 0 || late > 0 || live.get() > 0 || tasks_left > 0 || !flat {
        return Err("chaos: an invariant failed (see the table)".into());
    }
    Ok(())
}
