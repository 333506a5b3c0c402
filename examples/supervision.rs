//! Run with `cargo run --example supervision`: a specialist that panics on every 3rd
//! task, run 9 times under fail-fast and 9 times under tolerate-partial (quorum 2).
//! Prints one row per run: the status, each branch's outcome, and the restarts the
//! supervisor has made so far. Offline, on the simulated provider.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::CompletionRequest;
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::{Agent, AgentContext, AgentOutput, AgentReply, Fanfare, Policy, RunRequest, Task};

/// Asks the model, but panics on every `every`-th task it is given.
struct Flaky {
    every: u32,
    seen: AtomicU32,
}

impl Agent for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        if n.is_multiple_of(self.every) {
            panic!("flaky specialist gives up on task {n}");
        }
        let c = ctx
            .provider
            .complete(CompletionRequest::new(
                "flaky",
                "You are flaky.",
                task.prompt().to_string(),
            ))
            .await?;
        Ok(AgentOutput::from(c))
    }
}

/// Asks the model and never fails.
struct Steady(&'static str);

impl Agent for Steady {
    fn name(&self) -> &str {
        self.0
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let c = ctx
            .provider
            .complete(CompletionRequest::new(
                self.0,
                "You are steady.",
                task.prompt().to_string(),
            ))
            .await?;
        Ok(AgentOutput::from(c))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The panics are the experiment: report them in one line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!(
            "  (panic, caught by fanfare: {})",
            info.payload_as_str().unwrap_or("?")
        )
    }));
    for policy in [Policy::FailFast, Policy::TolerantPartial { quorum: 2 }] {
        let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
            Duration::from_millis(30),
        )));
        let fanfare = Fanfare::builder(provider)
            .agent(Steady("alpha"))
            .agent(Flaky {
                every: 3,
                seen: AtomicU32::new(0),
            })
            .agent(Steady("gamma"))
            .start()
            .await?;
        println!("policy {policy}");
        println!(
            "  {:<4} {:<10} {:<10} {:<10} {:<10} {:>8}",
            "run", "status", "alpha", "flaky", "gamma", "restarts"
        );
        for i in 1..=9 {
            let request = RunRequest::fan_out(format!("task {i}"), ["alpha", "flaky", "gamma"])
                .policy(policy);
            let report = fanfare.run(request).await?;
            // Give the supervisor a moment to process the crash before we ask it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let restarts: u32 = fanfare.status().await.iter().map(|s| s.restarts).sum();
            let outcome = |i: usize| report.branches[i].outcome.label();
            let status = if report.status.is_success() {
                "ok"
            } else {
                "FAILED"
            };
            println!(
                "  {i:<4} {status:<10} {:<10} {:<10} {:<10} {restarts:>8}",
                outcome(0),
                outcome(1),
                outcome(2)
            );
        }
        println!();
        fanfare.shutdown().await;
    }
    println!("fail-fast ends a run at the first crash and cancels its siblings;");
    println!("tolerate-partial records the crashed branch as failed and keeps the others.");
    println!("Either way the supervisor restarts the specialist and the next run reaches it.");
    Ok(())
}
