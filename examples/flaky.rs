//! Run with `cargo run --example flaky`: 300 runs of a 4-specialist fan-out where
//! `security` is flaky (8% panics, 8% provider 500s, 3% hangs), under fail-fast,
//! tolerate-partial (quorum 3), and tolerate-partial with one crash retry, printing
//! how many runs succeed, what the flaky branch ended as, and latency. Offline, on
//! the simulated provider and paused time (exact virtual latencies).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::faults::{Faults, Faulty, Trigger};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{SimConfig, SimProfile, SimProvider};
use fanfare::supervision::RestartIntensity;
use fanfare::{Fanfare, Policy, RunRequest};
use futures::StreamExt;

const AGENTS: [&str; 4] = ["legal", "technical", "financial", "security"];

/// A perspective agent: one model call with a one-line system prompt.
fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    fanfare::agent::faults::silence_injected_panics();
    let setups = [
        ("fail-fast", Policy::FailFast, 0),
        ("partial:3", Policy::TolerantPartial { quorum: 3 }, 0),
        ("partial:3 +retry", Policy::TolerantPartial { quorum: 3 }, 1),
    ];
    println!(
        "{:<17} {:>8} {:>22} {:>9} {:>8} {:>8}",
        "policy", "runs ok", "security: ok/fail/t-o", "restarts", "p50 ms", "p99 ms"
    );
    for (label, policy, retries) in setups {
        let provider = Arc::new(SimProvider::new(SimConfig {
            seed: 2,
            default: SimProfile {
                latency: Duration::from_millis(100),
                jitter: Duration::from_millis(100),
                ..SimProfile::instant()
            },
            ..SimConfig::default()
        }));
        let flaky = Faults {
            panic: Some(Trigger::probability(0.08)),
            provider_500: Some(Trigger::probability(0.08)),
            hang: Some(Trigger::probability(0.03)),
            seed: 5,
            ..Faults::default()
        };
        let agents = AGENTS.map(|n| {
            Faulty::new(
                spec(n),
                if n == "security" {
                    flaky.clone()
                } else {
                    Faults::default()
                },
            )
        });
        // Generous restart intensity: this experiment is about policies, not circuits
        // (see the meltdown example for those).
        let intensity = RestartIntensity {
            max_restarts: 100,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
        };
        let fanfare = Fanfare::builder(provider)
            .agents_from(agents)
            .restart_intensity(intensity)
            .start()
            .await?;
        let reports: Vec<_> = futures::stream::iter(0..300)
            .map(|i| {
                let f = fanfare.clone();
                let request = RunRequest::fan_out(format!("proposal {i}"), AGENTS)
                    .policy(policy)
                    .branch_timeout(Duration::from_secs(1))
                    .crash_retries(retries);
                async move { f.run(request).await }
            })
            .buffer_unordered(10)
            .collect()
            .await;
        let reports: Vec<_> = reports.into_iter().collect::<Result<_, _>>()?;
        let mut security: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &reports {
            *security.entry(r.branches[3].outcome.label()).or_default() += 1;
        }
        let mut walls: Vec<u128> = reports.iter().map(|r| r.wall.as_millis()).collect();
        walls.sort_unstable();
        let restarts: u32 = fanfare.status().await.iter().map(|s| s.restarts).sum();
        let get = |k| security.get(k).copied().unwrap_or(0);
        println!(
            "{:<17} {:>8} {:>22} {:>9} {:>8} {:>8}",
            label,
            reports.iter().filter(|r| r.status.is_success()).count(),
            format!("{}/{}/{}", get("ok"), get("failed"), get("timed_out")),
            restarts,
            walls[walls.len() / 2],
            walls[walls.len() * 99 / 100]
        );
        fanfare.shutdown().await;
    }
    println!("\nfail-fast gives up on the run at the first bad branch; partial:3 keeps three good");
    println!("answers; a crash retry reruns a panicked branch on the restarted specialist.");
    Ok(())
}
