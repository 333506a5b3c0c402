//! Run with `cargo run --example perspectives [TEXT]`: a 4-way perspective analysis
//! (legal, technical, financial, security specs) plus a Rust-written data-audit
//! specialist, on the simulated provider, with events printed as branches finish and
//! an LLM merge at the end. Offline.

use std::sync::Arc;

use fanfare::agent::spec;
use fanfare::provider::{SimConfig, SimProvider};
use fanfare::{Fanfare, MergeStrategy, Policy, RunEvent, RunRequest};
use fanfare_agents::{perspectives, DataHandlingAudit};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::env::args().nth(1).unwrap_or_else(|| {
        "Our new API will process 1M requests/day, storing all user queries in plain text logs."
            .to_owned()
    });
    let specs = perspectives()?;
    let provider = SimProvider::new(SimConfig {
        per_agent: spec::sim_profiles(&specs),
        ..SimConfig::default()
    });
    let mut agents: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    agents.push("data-audit".to_owned());
    let fanfare = Fanfare::builder(Arc::new(provider))
        .agents_from(specs)
        .agent(DataHandlingAudit)
        .start()
        .await?;

    let request = RunRequest::fan_out(text, agents)
        .policy(Policy::TolerantPartial { quorum: 4 })
        .merge(MergeStrategy::llm());
    let mut run = fanfare.start_run(request);
    println!("branches as they finish:");
    while let Some(event) = run.events.recv().await {
        match event {
            RunEvent::BranchFinished {
                agent, outcome, at, ..
            } => {
                println!(
                    "  {:>6.2}s  {agent:<11} {}",
                    at.as_secs_f64(),
                    outcome.label()
                )
            }
            RunEvent::SynthesisStarted { branches_ok, .. } => {
                println!("  merging {branches_ok} answers…")
            }
            _ => {}
        }
    }
    let report = run.report().await?;
    println!("\n{}", report.render());
    fanfare.shutdown().await;
    Ok(())
}
