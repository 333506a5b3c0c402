//! Run with `cargo run --example actor_specialist`: the two ways to write a
//! specialist in Rust, side by side in one fan-out, on the simulated provider.
//!
//! - `Glossary` implements [`Agent`]: one async method, called with the branch's
//!   task; fanfare wraps it in a supervised actor. Most specialists are written so.
//! - `Counter` is a raw `ractor::Actor` speaking [`AgentMsg`], registered with
//!   [`Specialist::actor`]: for a specialist that keeps state between tasks in its
//!   actor, or is an actor already. Its state here (tasks seen) starts again at 0
//!   whenever the supervisor restarts it.
//!
//! Both are routed, supervised and reported like the spec agents beside them.

use std::sync::Arc;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::{
    Agent, AgentContext, AgentMsg, AgentOutput, AgentReply, Fanfare, MergeStrategy, Policy,
    RunRequest, Specialist, Task,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Lists the task's long words: an [`Agent`] with no model call.
struct Glossary;

impl Agent for Glossary {
    fn name(&self) -> &str {
        "glossary"
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        let mut words: Vec<&str> = task
            .input
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 7)
            .collect();
        words.sort_unstable();
        words.dedup();
        Ok(AgentOutput::text(format!("Terms: {}", words.join(", "))))
    }
}

/// Counts the tasks it has seen: a raw actor whose state is that count.
struct Counter;

impl Actor for Counter {
    type Msg = AgentMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<AgentMsg>, (): ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<AgentMsg>,
        message: AgentMsg,
        seen: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        // `Cancel` needs nothing here: answers are immediate, so there is no work
        // in progress to stop.
        if let AgentMsg::Run { task, reply } = message {
            *seen += 1;
            let words = task.input.split_whitespace().count();
            let answer = format!("Task {seen} seen by this actor: {words} words.");
            // The caller may have given up (a deadline): not an error here.
            let _ = reply.send(Ok(AgentOutput::text(answer)));
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agent(Glossary)
        .specialist(Specialist::actor("counter", || (Counter, ())))
        .agents_from(fanfare_agents::perspectives()?)
        .start()
        .await?;
    for task in [
        "Should we adopt a four-day week for the engineering organisation?",
        "Should we store every customer conversation for training purposes?",
    ] {
        let request = RunRequest::fan_out(task, ["glossary", "counter", "legal"])
            .policy(Policy::TolerantPartial { quorum: 2 })
            .merge(MergeStrategy::Code);
        let report = fanfare.run(request).await?;
        println!("{}", report.render());
    }
    fanfare.shutdown().await;
    Ok(())
}
