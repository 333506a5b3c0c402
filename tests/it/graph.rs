use std::time::Duration;

use std::sync::Arc;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::CancelReason;
use fanfare::{
    Agent, AgentContext, AgentOutput, AgentReply, BranchOutcome, Fanfare, Policy, RunRequest, Step,
    Task,
};

use crate::common::{runtime, sim};

/// Answers after `ms` with what it was given: each upstream output, by agent.
struct Relay {
    name: &'static str,
    ms: u64,
}

impl Agent for Relay {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let seen: Vec<String> = task
            .upstream
            .iter()
            .map(|u| format!("{}={}", u.agent, u.text))
            .collect();
        Ok(AgentOutput::text(format!(
            "{} after [{}]",
            self.name,
            seen.join("; ")
        )))
    }
}

fn step(agent: &str, deps: &[usize]) -> Step {
    Step::agent(agent).after(deps.iter().copied())
}

#[tokio::test(start_paused = true)]
async fn dependent_steps_serialise_and_independent_chains_overlap() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agent(Relay {
            name: "draft",
            ms: 100,
        })
        .agent(Relay {
            name: "review",
            ms: 100,
        })
        .agent(Relay {
            name: "side",
            ms: 150,
        })
        .start()
        .await
        .unwrap();
    let mut request = RunRequest::fan_out("t", Vec::<String>::new());
    request.steps = vec![step("draft", &[]), step("review", &[0]), step("side", &[])];
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let review = &report.branches[1];
    assert!(review.start.unwrap() >= report.branches[0].end);
    // draft→review is 200 ms; side runs alongside it.
    assert!(report.wall >= Duration::from_millis(200) && report.wall < Duration::from_millis(220));
    // Regression: this once checked a prefix every answer has. The dependent step
    // must see exactly its upstream's output, and nothing from the independent step.
    let text = &review.outcome.output().unwrap().text;
    assert_eq!(text, "review after [draft=draft after []]");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_step_cancels_what_depends_on_it() {
    let profiles = [("draft", 10, 1.0), ("review", 100, 0.0), ("side", 50, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut request = RunRequest::fan_out("t", Vec::<String>::new())
        .policy(Policy::TolerantPartial { quorum: 1 });
    request.steps = vec![step("draft", &[]), step("review", &[0]), step("side", &[])];
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success());
    assert_eq!(
        report.branches[1].outcome,
        BranchOutcome::Cancelled {
            reason: CancelReason::UpstreamFailed {
                agent: "draft".into()
            }
        }
    );
    assert_eq!(report.branches[1].start, None);
    assert!(report.branches[2].outcome.is_ok());
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_step_may_only_depend_on_earlier_steps() {
    let profiles = [("a", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut request = RunRequest::fan_out("t", Vec::<String>::new());
    request.steps = vec![step("a", &[1]), step("a", &[])];
    let err = fanfare.run(request).await.unwrap_err().to_string();
    assert!(err.contains("step 0 depends on step 1"), "{err}");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_merge_takes_the_ends_of_the_graph_not_a_chains_earlier_steps() {
    let scripted = fanfare::provider::Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(scripted.clone()))
        .agent(Relay {
            name: "draft",
            ms: 10,
        })
        .agent(Relay {
            name: "review",
            ms: 10,
        })
        .agent(Relay {
            name: "side",
            ms: 10,
        })
        .start()
        .await
        .unwrap();
    let mut request =
        RunRequest::fan_out("t", Vec::<String>::new()).merge(fanfare::MergeStrategy::llm());
    request.steps = vec![step("draft", &[]), step("review", &[0]), step("side", &[])];
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let prompt = &scripted.requests()[0].messages[0].content;
    assert!(
        prompt.contains("## review") && prompt.contains("## side"),
        "{prompt}"
    );
    // The draft reached the merge through the review, not beside it.
    assert!(!prompt.contains("## draft"), "{prompt}");
    fanfare.shutdown().await;
}
