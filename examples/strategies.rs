//! Run with `cargo run --example strategies`: the same workload — 200 runs of a
//! 5-specialist fan-out where `flaky` panics on 5% of its tasks — under one-for-one,
//! one-for-all and rest-for-one supervision, printing a table of outcomes, restarts,
//! escalations and latency. Offline, on the simulated provider and paused time, so the
//! latencies are exact virtual times.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::faults::{Faults, Faulty, Trigger};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{SimConfig, SimProfile, SimProvider};
use fanfare::supervision::{Strategy, SupervisionConfig};
use fanfare::{Fanfare, Policy, RunRequest};
use futures::StreamExt;

const AGENTS: [&str; 5] = ["intake", "flaky", "legal", "security", "finance"];

/// A perspective agent: one model call with a one-line system prompt.
fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    fanfare::agent::faults::silence_injected_panics();
    println!(
        "{:<13} {:>5} {:>8} {:>9} {:>9} {:>9} {:>12} {:>8} {:>8}",
        "strategy",
        "runs",
        "runs ok",
        "br. ok",
        "br. fail",
        "restarts",
        "escalations",
        "p50 ms",
        "max ms"
    );
    for strategy in [
        Strategy::OneForOne,
        Strategy::OneForAll,
        Strategy::RestForOne,
    ] {
        let provider = Arc::new(SimProvider::new(SimConfig {
            seed: 1,
            default: SimProfile {
                latency: Duration::from_millis(80),
                jitter: Duration::from_millis(80),
                ..SimProfile::instant()
            },
            ..SimConfig::default()
        }));
        let mut builder = Fanfare::builder(provider).supervision(SupervisionConfig {
            strategy,
            ..SupervisionConfig::default()
        });
        for name in AGENTS {
            let faults = if name == "flaky" {
                Faults {
                    panic: Some(Trigger::probability(0.05)),
                    seed: 9,
                    ..Faults::default()
                }
            } else {
                Faults::default()
            };
            builder = builder.agent(Faulty::new(spec(name), faults));
        }
        let fanfare = builder.start().await?;
        let reports: Vec<_> = futures::stream::iter(0..200)
            .map(|i| {
                let f = fanfare.clone();
                async move {
                    f.run(
                        RunRequest::fan_out(format!("proposal {i}"), AGENTS)
                            .policy(Policy::TolerantPartial { quorum: 4 }),
                    )
                    .await
                }
            })
            .buffer_unordered(20)
            .collect()
            .await;
        let reports: Vec<_> = reports.into_iter().collect::<Result<_, _>>()?;
        let mut walls: Vec<u128> = reports.iter().map(|r| r.wall.as_millis()).collect();
        walls.sort_unstable();
        let status = fanfare.status().await;
        println!(
            "{:<13} {:>5} {:>8} {:>9} {:>9} {:>9} {:>12} {:>8} {:>8}",
            format!("{strategy:?}"),
            reports.len(),
            reports.iter().filter(|r| r.status.is_success()).count(),
            reports.iter().map(|r| r.totals.ok).sum::<usize>(),
            reports
                .iter()
                .map(|r| r.totals.failed + r.totals.timed_out + r.totals.cancelled)
                .sum::<usize>(),
            status.iter().map(|s| s.restarts).sum::<u32>(),
            status.iter().map(|s| s.escalations).sum::<u32>(),
            walls[walls.len() / 2],
            walls[walls.len() - 1]
        );
        fanfare.shutdown().await;
    }
    println!("\none-for-one costs one branch per panic; one-for-all also stops every sibling and");
    println!("so their in-flight branches; rest-for-one stops those registered after `flaky`.");
    Ok(())
}
