//! `bench admission`: N branches with the admission ceiling set to N (starting there,
//! the gate's default, or slow start from `--initial`) against a
//! mock that answers 429 above `limit` calls in flight (with a `retry-after`), as a
//! provider's concurrency limit does; then once more through a new gate started from
//! what the first learned. Reports the 429s against the useful calls,
//! the wasted calls the run's own report counts, and the wall time against the
//! floor ceil(N / limit) × latency.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, Learned, Stack,
};
use fanfare::{Fanfare, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};
use serde_json::json;

pub async fn admission(
    n: usize,
    limit: usize,
    latency: Duration,
    initial: Option<usize>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        n >= 1 && limit >= 1,
        "--n and --limit take counts of at least 1"
    );
    let mock = MockServer::start(MockConfig {
        latency,
        max_concurrency: Some(limit),
        retry_after: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await?;
    // First contact, then a second gate for the same server that starts from what
    // the first learned (as the next `fanfare run` does from the user's cache).
    let learned = pass(&mock, n, limit, latency, initial, None).await?;
    if let Some(learned) = learned {
        pass(&mock, n, limit, latency, initial, Some(learned)).await?;
    }
    mock.stop().await;
    Ok(())
}

/// One fan-out of `n` through a fresh gate (started from `learned`, if given);
/// prints its line and returns what the gate learned.
async fn pass(
    mock: &MockServer,
    n: usize,
    limit: usize,
    latency: Duration,
    initial: Option<usize>,
    learned: Option<Learned>,
) -> anyhow::Result<Option<Learned>> {
    let before = mock.stats();
    let mut config = AnthropicConfig::new(ApiKey::new("bench"));
    config.base_url = mock.url();
    config.default_model = "bench-model".to_owned();
    let (provider, gate) = Stack::new()
        .admission(AdmissionConfig {
            max_concurrency: n,
            initial_concurrency: initial,
            ..AdmissionConfig::default()
        })
        .retry(ExponentialBackoff::new(20))
        .build(AnthropicProvider::new(config)?);
    let gate = gate.context("a stack with admission has a gate")?;
    if let Some(learned) = learned {
        gate.remember(None, learned);
    }
    let fanfare = Fanfare::builder(provider)
        .agent(AgentSpec::new("reviewer", "Review it."))
        .start()
        .await?;
    let request = RunRequest::fan_out("one task", vec!["reviewer"; n])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .deadline(Duration::from_secs(600))
        .branch_timeout(Duration::from_secs(600));
    let t0 = Instant::now();
    let report = fanfare.run(request).await?;
    let wall = t0.elapsed();
    fanfare.shutdown().await;
    let stats = mock.stats();
    let count = |s: &fanfare_mock::MockStats, code| s.by_status.get(&code).copied().unwrap_or(0);
    let refused = count(&stats, 429) - count(&before, 429);
    let useful = count(&stats, 200) - count(&before, 200);
    let floor = latency * n.div_ceil(limit) as u32;
    println!(
        "{}",
        json!({
            "case": "admission",
            "run": if learned.is_some() { "second (from what the first learned)" } else { "first contact" },
            "n": n,
            "server_limit": limit,
            "initial_cap": learned.map_or(initial.unwrap_or(n), |l| l.cap),
            "latency_ms": latency.as_millis() as u64,
            "ok": report.totals.ok,
            "failed": report.branches.len() - report.totals.ok,
            "http_429": refused,
            "useful_calls": useful,
            "http_429_per_useful_call": refused as f64 / useful.max(1) as f64,
            "report_wasted_calls": report.totals.wasted_calls,
            "report_rate_limited": report.totals.rate_limited,
            // The mock keeps its peak over both passes: the first's only.
            "peak_in_flight_at_server": learned.is_none().then_some(stats.max_in_flight),
            "cap_at_end": gate.metrics().cap,
            "wall_s": wall.as_secs_f64(),
            "floor_s": floor.as_secs_f64(),
            "wall_over_floor": wall.as_secs_f64() / floor.as_secs_f64(),
        })
    );
    Ok(gate.learned().first().map(|(_, l)| *l))
}
