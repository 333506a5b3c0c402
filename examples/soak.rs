//! Run with `cargo run --release --example soak [RUNS]`: the big soak — RUNS (default
//! 100,000) runs of a 4-specialist fan-out on the simulated provider with 2% panics,
//! 1% hangs and 5% provider 500s per task, 16 runs in flight, tolerate-partial with
//! quorum 3 and one crash retry. Prints how many runs met quorum, the latest any run
//! ended against its deadline, restarts, and what was left alive after shutdown.
//! Paused time: latencies are exact virtual times; the wall clock shows CPU cost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare::agent::faults::{Faults, Faulty, Trigger};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{SimConfig, SimProfile, SimProvider};
use fanfare::supervision::RestartIntensity;
use fanfare::supervision::SupervisionConfig;
use fanfare::{Fanfare, Policy, RunRequest};
use futures::StreamExt;

/// A perspective agent: one model call with a one-line system prompt.
fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    fanfare::agent::faults::silence_injected_panics();
    let runs: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("RUNS must be a whole number, got `{n}`"))?,
        None => 100_000,
    };
    let provider = Arc::new(SimProvider::new(SimConfig {
        seed: 3,
        default: SimProfile {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(40),
            failure_rate: 0.0,
            words: 12,
        },
        ..SimConfig::default()
    }));
    let names = ["legal", "technical", "financial", "security"];
    let agents = names.iter().enumerate().map(|(i, n)| {
        let faults = Faults {
            panic: Some(Trigger::probability(0.02)),
            hang: Some(Trigger::probability(0.01)),
            provider_500: Some(Trigger::probability(0.05)),
            seed: i as u64,
            ..Faults::default()
        };
        Faulty::new(spec(n), faults)
    });
    let intensity = RestartIntensity {
        max_restarts: 1_000,
        window: Duration::from_secs(10),
        cool_down: Duration::from_secs(1),
    };
    let fanfare = Fanfare::builder(provider.clone())
        .agents_from(agents)
        .supervision(SupervisionConfig {
            intensity,
            ..SupervisionConfig::default()
        })
        .start()
        .await?;
    let live = fanfare.live_actors();
    let deadline = Duration::from_secs(2);
    let clock = Instant::now();
    let reports: Vec<_> = futures::stream::iter(0..runs)
        .map(|i| {
            let f = fanfare.clone();
            let request = RunRequest::fan_out(format!("task {i}"), names)
                .policy(Policy::TolerantPartial { quorum: 3 })
                .deadline(deadline)
                .branch_timeout(Duration::from_millis(500))
                .crash_retries(1);
            async move { f.run(request).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let cpu = clock.elapsed();
    let reports: Vec<_> = reports.into_iter().collect::<Result<_, _>>()?;
    let met = reports.iter().filter(|r| r.status.is_success()).count();
    let latest = reports.iter().map(|r| r.wall).max().unwrap_or_default();
    let restarts: u32 = fanfare.status().await.iter().map(|s| s.restarts).sum();
    fanfare.shutdown().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = provider.stats();
    println!("runs                      {runs}");
    println!("reached a terminal state  {}", reports.len());
    println!(
        "met quorum 3              {met} ({:.2}%)",
        met as f64 * 100.0 / runs as f64
    );
    println!(
        "latest run end            {:?} (deadline {deadline:?})",
        latest
    );
    println!("restarts                  {restarts}");
    println!(
        "model calls               {} started, {} completed, {} failed, {} aborted",
        s.started, s.completed, s.failed, s.aborted
    );
    println!("actors alive after        {}", live.get());
    println!(
        "wall clock (CPU cost)     {:.2?} ({:.1} µs per run)",
        cpu,
        cpu.as_secs_f64() * 1e6 / runs as f64
    );
    Ok(())
}
