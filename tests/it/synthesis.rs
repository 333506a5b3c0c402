use std::sync::Arc;

use fanfare::run::Scorer;
use fanfare::run::MERGE_SYSTEM_PROMPT;
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest};

use fanfare::provider::Scripted;

use crate::common::{runtime, sim, TestAgent};

#[tokio::test(start_paused = true)]
async fn llm_merge_prompt_labels_outputs_and_names_failures() {
    // Branches use the scripted provider too; it answers "{agent} answered" and
    // records every request.
    let recording = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(recording.clone()))
        .agent(TestAgent::new("legal"))
        .agent(TestAgent::panicking_every("security", 1))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("Store logs?", ["legal", "security"])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .merge(MergeStrategy::llm());
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let requests = recording.requests();
    let merge = requests.iter().find(|r| r.agent == "synthesiser").unwrap();
    assert_eq!(merge.system, MERGE_SYSTEM_PROMPT);
    // Regression (sixth probe): without the run's deadline a merge call waited at a
    // rate limit whose reset was past it, and the run said only that its merge
    // timed out; with it, the stack fails the call at once and says why.
    assert!(
        merge.deadline.is_some(),
        "the merge call carries the run's deadline"
    );
    let prompt = &merge.messages[0].content;
    assert!(prompt.contains("Task:\nStore logs?"), "{prompt}");
    assert!(prompt.contains("## legal\nlegal answered"), "{prompt}");
    assert!(
        prompt.contains("Missing perspectives: security (panicked: security panics on task 1)"),
        "{prompt}"
    );
    let synthesis = report.synthesis.unwrap();
    assert_eq!(synthesis.text.as_deref(), Some("synthesiser answered"));
    assert_eq!(report.totals.usage.input_tokens, 20);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn code_merge_is_keyed_by_agent_and_calls_no_model() {
    let profiles = [("a", 10, 0.0), ("b", 10, 1.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("t", ["a", "b"])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .merge(MergeStrategy::Code);
    let report = fanfare.run(request).await.unwrap();
    let text = report.synthesis.unwrap().text.unwrap();
    assert!(text.starts_with("## a\n[simulated a]"), "{text}");
    assert!(text.contains("## b\n(no output: "), "{text}");
    assert_eq!(provider.stats().started, 2, "no merge call");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn select_best_picks_the_highest_score() {
    let profiles = [("short", 10, 0.0), ("long", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let scorer = Scorer::new(|agent, _| if agent == "long" { 2.0 } else { 1.0 });
    let request =
        RunRequest::fan_out("t", ["short", "long"]).merge(MergeStrategy::SelectBest(scorer));
    let report = fanfare.run(request).await.unwrap();
    let synthesis = report.synthesis.unwrap();
    assert_eq!(synthesis.chosen.as_deref(), Some("long"));
    assert!(synthesis.text.unwrap().starts_with("[simulated long]"));
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_an_empty_answer_is_a_failure_not_an_ok_branch_or_an_empty_synthesis() {
    use fanfare::agent::spec::AgentSpec;
    use fanfare::provider::Completion;
    let blank = Scripted::answering(|r| Completion {
        text: if r.agent == "quiet" {
            "  \n".into()
        } else {
            format!("{} says", r.agent)
        },
        model: "scripted-1".into(),
        attempts: 1,
        ..Completion::default()
    });
    let fanfare = Fanfare::builder(Arc::new(blank))
        .agent(AgentSpec::new("quiet", "p"))
        .agent(AgentSpec::new("loud", "p"))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(
            RunRequest::fan_out("t", ["quiet", "loud"])
                .policy(Policy::TolerantPartial { quorum: 1 })
                .merge(MergeStrategy::Code),
        )
        .await
        .unwrap();
    assert_eq!(report.branches[0].outcome.label(), "failed");
    assert!(
        report.branches[0]
            .error
            .as_deref()
            .unwrap()
            .contains("answered with no text"),
        "{:?}",
        report.branches[0].error
    );
    assert!(report.branches[1].outcome.is_ok());
    fanfare.shutdown().await;
    // An empty merge answer fails the synthesis with the reason.
    let silent = Scripted::answering(|r| Completion {
        text: if r.agent == "synthesiser" {
            String::new()
        } else {
            "fine".into()
        },
        model: "scripted-1".into(),
        attempts: 1,
        ..Completion::default()
    });
    let fanfare = Fanfare::builder(Arc::new(silent))
        .agent(AgentSpec::new("loud", "p"))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", ["loud"]).merge(MergeStrategy::llm()))
        .await
        .unwrap();
    let fanfare::RunStatus::Failed { reason } = &report.status else {
        panic!("{:?}", report.status)
    };
    assert!(
        reason
            .to_string()
            .contains("merge model answered with no text"),
        "{reason}"
    );
    fanfare.shutdown().await;
}
