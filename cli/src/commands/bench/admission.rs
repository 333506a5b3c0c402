//! `bench admission`: N branches with the admission ceiling set to N (starting there,
//! the gate's default, or slow start from `--initial`) against a
//! mock that answers 429 above `limit` calls in flight (with a `retry-after`), as a
//! provider's concurrency limit does. Reports the 429s against the useful calls,
//! the wasted calls the run's own report counts, and the wall time against the
//! floor ceil(N / limit) × latency.

use std::time::{Duration, Instant};

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, Stack,
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
    let refused = stats.by_status.get(&429).copied().unwrap_or(0);
    let useful = stats.by_status.get(&200).copied().unwrap_or(0);
    let floor = latency * n.div_ceil(limit) as u32;
    let cap = gate.map(|g| g.metrics().cap).unwrap_or(0);
    println!(
        "{}",
        json!({
            "case": "admission",
            "n": n,
            "server_limit": limit,
            "initial_cap": initial.unwrap_or(n),
            "latency_ms": latency.as_millis() as u64,
            "ok": report.totals.ok,
            "failed": report.branches.len() - report.totals.ok,
            "http_429": refused,
            "useful_calls": useful,
            "http_429_per_useful_call": refused as f64 / useful.max(1) as f64,
            "report_wasted_calls": report.totals.wasted_calls,
            "report_rate_limited": report.totals.rate_limited,
            "peak_in_flight_at_server": stats.max_in_flight,
            "cap_at_end": cap,
            "wall_s": wall.as_secs_f64(),
            "floor_s": floor.as_secs_f64(),
            "wall_over_floor": wall.as_secs_f64() / floor.as_secs_f64(),
        })
    );
    Ok(())
}
