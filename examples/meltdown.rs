//! Run with `cargo run --example meltdown`: a specialist that panics on every task
//! trips its restart intensity (3 restarts in 10 s), its circuit opens for a 5 s
//! cool-down — branches to it fail at once instead of waiting — and then it is
//! started afresh. One run every 500 ms; a row per run with the supervisor's view.
//! Offline, on the simulated provider and paused time.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::faults::{Faults, Faulty, Trigger};
use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::supervision::RestartIntensity;
use fanfare::{Fanfare, Policy, RunRequest};

/// A perspective agent: one model call with a one-line system prompt.
fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    fanfare::agent::faults::silence_injected_panics();
    let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(120),
    )));
    let melting = Faults {
        panic: Some(Trigger::every(1)),
        ..Faults::default()
    };
    let fanfare = Fanfare::builder(provider)
        .agent(Faulty::new(spec("steady"), Faults::default()))
        .agent(Faulty::new(spec("melting"), melting))
        .restart_intensity(RestartIntensity {
            max_restarts: 3,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
        })
        .start()
        .await?;
    let started = tokio::time::Instant::now();
    println!(
        "{:>5} {:>7} {:>8} {:>9} {:>9} {:>12} {:>8}  melting branch",
        "run", "t (s)", "status", "steady", "restarts", "escalations", "circuit"
    );
    for i in 1..=20 {
        let request = RunRequest::fan_out(format!("proposal {i}"), ["steady", "melting"])
            .policy(Policy::TolerantPartial { quorum: 1 });
        let report = fanfare.run(request).await?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status = fanfare.status().await;
        let melting = &status[1];
        let branch = &report.branches[1];
        println!(
            "{:>5} {:>7.2} {:>8} {:>9} {:>9} {:>12} {:>8}  {} after {} ms",
            i,
            started.elapsed().as_secs_f64(),
            if report.status.is_success() {
                "ok"
            } else {
                "FAILED"
            },
            report.branches[0].outcome.label(),
            melting.restarts,
            melting.escalations,
            if melting.is_up() { "closed" } else { "OPEN" },
            branch
                .error
                .as_deref()
                .map(|e| e.split(':').next().unwrap_or(e))
                .unwrap_or("ok"),
            branch.duration().as_millis()
        );
        tokio::time::sleep(Duration::from_millis(450)).await;
    }
    fanfare.shutdown().await;
    println!("\nAfter 3 restarts within 10 s the 4th crash escalates: the circuit opens and the");
    println!("branch fails in 0 ms with the reason; after the 5 s cool-down it is tried afresh.");
    Ok(())
}
