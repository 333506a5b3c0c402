//! `run_workflow`: an agent hands a sub-task to a workflow of the same runtime,
//! which runs as a child run of its branch.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{Completion, Scripted, ToolCall, Usage};
use fanfare::run::{Step, SubWorkflow};
use fanfare::{Fanfare, RunRequest};

/// A turn that asks `workflow` to do `input`.
fn delegating(workflow: &str, input: &str) -> Completion {
    Completion {
        model: "scripted-1".into(),
        attempts: 1,
        usage: Usage {
            input_tokens: 20,
            output_tokens: 5,
            ..Usage::default()
        },
        tool_calls: vec![ToolCall::from_raw(
            "c1",
            "run_workflow",
            &serde_json::json!({"workflow": workflow, "input": input}).to_string(),
        )],
        ..Completion::default()
    }
}

/// `boss` may call `run_workflow`; `helper` answers.
fn agents() -> Vec<AgentSpec> {
    let mut boss = AgentSpec::new("boss", "You hand sub-tasks to workflows.");
    boss.tools = vec!["run_workflow".into()];
    vec![boss, AgentSpec::new("helper", "You help.")]
}

#[tokio::test]
async fn a_branch_hands_a_sub_task_to_a_workflow_and_answers_with_its_result() {
    let script = Scripted::new();
    script.push_completion(delegating("help", "the sub-task"));
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agents_from(agents())
        .workflow(SubWorkflow::new("help", vec![Step::agent("helper")]))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("The task.", ["boss"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let boss = &report.branches[0];
    // The helper's answer went back to the boss as the tool's result.
    let asked = script.requests();
    let helper = asked.iter().find(|r| r.agent == "helper").unwrap();
    assert!(format!("{helper:?}").contains("the sub-task"));
    let second = asked.iter().filter(|r| r.agent == "boss").nth(1).unwrap();
    let result = &second.messages.last().unwrap().tool_results[0];
    assert_eq!(
        (result.content.as_str(), result.is_error),
        ("helper answered", false)
    );
    // The child run is in the report under the branch, and its tokens are the
    // branch's: two boss turns (25 + 13) and the helper's one (13).
    assert_eq!(boss.delegated.len(), 1);
    assert_eq!(boss.delegated[0].branches[0].agent, "helper");
    let out = boss.outcome.output().unwrap();
    assert_eq!(out.tool_log[0].usage.total(), 13);
    assert_eq!(boss.usage.total(), 25 + 13 + 13);
    assert_eq!(report.totals.usage.total(), 25 + 13 + 13);
    let shown = report.render();
    assert!(shown.contains("↳ run_workflow → run-"), "{shown}");
}

#[tokio::test]
async fn sub_runs_nest_at_most_three_deep() {
    // A workflow whose agent hands its task to the same workflow again.
    let script = Scripted::new();
    for _ in 0..4 {
        script.push_completion(delegating("again", "once more"));
    }
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agents_from(agents())
        .workflow(SubWorkflow::new("again", vec![Step::agent("boss")]))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("The task.", ["boss"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    // Three runs deep, the fourth call is refused as a tool error.
    let mut level = &report.branches[0];
    for _ in 0..3 {
        assert_eq!(level.delegated.len(), 1, "{}", report.render());
        level = &level.delegated[0].branches[0];
    }
    assert!(level.delegated.is_empty());
    let refused = level.outcome.output().unwrap().tool_log[0]
        .error
        .clone()
        .unwrap_or_default();
    assert!(refused.contains("runs nest at most 3 deep"), "{refused}");
}

#[tokio::test]
async fn a_workflow_that_does_not_exist_or_fails_is_a_tool_error_the_model_reads() {
    let script = Scripted::new();
    script.push_completion(delegating("nowhere", "x"));
    script.push_completion(delegating("broken", "x"));
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agents_from(agents())
        .workflow(SubWorkflow::new("help", vec![Step::agent("helper")]))
        // Its agent is not in the runtime: its run fails.
        .workflow(SubWorkflow::new("broken", vec![Step::agent("ghost")]))
        .start()
        .await
        .unwrap();
    // One branch, two turns: a workflow that is not there, then one that fails.
    let report = fanfare
        .run(RunRequest::fan_out("The task.", ["boss"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let out = report.branches[0].outcome.output().unwrap();
    let errors: Vec<String> = out
        .tool_log
        .iter()
        .map(|u| u.error.clone().unwrap_or_default())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("\"nowhere\" is not one of"),
        "{}",
        errors[0]
    );
    assert!(
        errors[1].contains("the workflow `broken` did not answer"),
        "{}",
        errors[1]
    );
}

/// An agent that never answers, and says when its work is dropped.
struct Stuck {
    dropped: Arc<tokio::sync::Notify>,
}

struct Noted(Arc<tokio::sync::Notify>);

impl Drop for Noted {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl fanfare::Agent for Stuck {
    fn name(&self) -> &str {
        "stuck"
    }

    async fn run(&self, _ctx: &fanfare::AgentContext, _task: fanfare::Task) -> fanfare::AgentReply {
        let _noted = Noted(self.dropped.clone());
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_sub_run_is_cancelled_with_the_branch_that_started_it() {
    let script = Scripted::new();
    script.push_completion(delegating("stall", "x"));
    let dropped = Arc::new(tokio::sync::Notify::new());
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agents_from(agents())
        .agent(Stuck {
            dropped: dropped.clone(),
        })
        .workflow(SubWorkflow::new("stall", vec![Step::agent("stuck")]))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("The task.", ["boss"])
        .branch_timeout(std::time::Duration::from_millis(300));
    let report = fanfare.run(request).await.unwrap();
    // The boss's branch timed out: the stuck agent's work in the child run was
    // dropped with it (no sub-run outlives its branch).
    assert!(!report.branches[0].outcome.is_ok(), "{}", report.render());
    tokio::time::timeout(std::time::Duration::from_secs(10), dropped.notified())
        .await
        .expect("the sub-run's branch was never cancelled");
    fanfare.shutdown().await;
}
