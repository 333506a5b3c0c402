//! A spec agent that calls tools, end to end through the runtime.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{Completion, Scripted, ToolCall};
use fanfare::{Fanfare, RunRequest};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Add {
    a: f64,
    b: f64,
}

#[tokio::test]
async fn a_spec_agent_offered_a_tool_runs_the_call_and_answers_with_its_result() {
    let script = Scripted::new();
    script.push_completion(Completion {
        model: "m".into(),
        attempts: 1,
        tool_calls: vec![ToolCall::from_raw("c1", "add", r#"{"a": 2, "b": 3}"#)],
        ..Completion::default()
    });
    let mut calc = AgentSpec::new("calc", "You add numbers with the add tool.");
    calc.tools = vec!["add".into()];
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(tool(
            "add",
            "Adds two numbers.",
            |_ctx, i: Add| async move { Ok::<_, ToolError>((i.a + i.b).to_string()) },
        ))
        .agent(calc)
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("What is 2 + 3?", ["calc"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let out = report.branches[0].outcome.output().unwrap();
    assert_eq!((out.tool_calls, out.tool_errors), (1, 0));
    assert_eq!(out.attempts, 2, "two turns");
    let asked = script.requests();
    let second = asked.iter().filter(|r| r.agent == "calc").nth(1).unwrap();
    assert_eq!(second.messages.last().unwrap().tool_results[0].content, "5");
}
