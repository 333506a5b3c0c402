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

/// A runtime on `script` with the `add` tool and a `calc` agent offered it.
async fn calculator(script: &Scripted) -> Fanfare {
    let mut calc = AgentSpec::new("calc", "You add numbers with the add tool.");
    calc.tools = vec!["add".into()];
    Fanfare::builder(Arc::new(script.clone()))
        .tool(tool(
            "add",
            "Adds two numbers.",
            |_ctx, i: Add| async move { Ok::<_, ToolError>((i.a + i.b).to_string()) },
        ))
        .agent(calc)
        .start()
        .await
        .unwrap()
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
    let fanfare = calculator(&script).await;
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

#[tokio::test]
async fn each_tool_call_is_an_event_as_it_happens_and_a_line_of_the_report() {
    let script = Scripted::new();
    script.push_completion(Completion {
        model: "m".into(),
        attempts: 1,
        tool_calls: vec![
            ToolCall::from_raw("c1", "add", r#"{"a": 2, "b": 3}"#),
            ToolCall::from_raw("c2", "add", r#"{"a": "two"}"#),
        ],
        ..Completion::default()
    });
    let fanfare = calculator(&script).await;
    let mut handle = fanfare.start_run(RunRequest::fan_out("What is 2 + 3?", ["calc"]));
    let mut seen = Vec::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            fanfare::RunEvent::ToolStarted { call_id, tool, .. } => {
                seen.push(format!("started {call_id} {tool}"))
            }
            fanfare::RunEvent::ToolFinished { call_id, error, .. } => {
                seen.push(format!("finished {call_id} {}", error.is_some()))
            }
            // The scripted model keeps every request (their delta sinks among them),
            // so the channel does not close with the run: stop at its end.
            fanfare::RunEvent::RunFinished { .. } => break,
            _ => {}
        }
    }
    let report = handle.report().await.unwrap();
    fanfare.shutdown().await;
    seen.sort();
    assert_eq!(
        seen,
        [
            "finished c1 false",
            "finished c2 true",
            "started c1 add",
            "started c2 add"
        ]
    );
    let out = report.branches[0].outcome.output().unwrap();
    let log: Vec<(&str, u32, bool)> = out
        .tool_log
        .iter()
        .map(|u| (u.tool.as_str(), u.turn, u.error.is_some()))
        .collect();
    assert_eq!(log, [("add", 1, false), ("add", 1, true)]);
    assert_eq!(out.tool_log[0].input_digest.len(), 16);
    assert_ne!(out.tool_log[0].input_digest, out.tool_log[1].input_digest);
    let text = report.render();
    assert!(text.contains("⚙ add · turn 1"), "{text}");
    assert!(text.contains("failed: the arguments do not fit"), "{text}");
}

/// A runtime on `provider` with the `add` tool and a `calc` agent offered it.
async fn calculator_on(provider: Arc<dyn fanfare::Provider>) -> Fanfare {
    let mut calc = AgentSpec::new("calc", "You add numbers with the add tool.");
    calc.tools = vec!["add".into()];
    Fanfare::builder(provider)
        .tool(tool(
            "add",
            "Adds two numbers.",
            |_ctx, i: Add| async move { Ok::<_, ToolError>((i.a + i.b).to_string()) },
        ))
        .agent(calc)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn mock_llm_calls_an_offered_tool_and_quotes_its_result_on_both_wires_plain_and_streamed() {
    use crate::providers::{anthropic, fast, openai};
    let mock = fanfare_mock::MockServer::start(fast()).await.unwrap();
    for (wire, stream) in [
        ("anthropic", false),
        ("anthropic", true),
        ("openai", false),
        ("openai", true),
    ] {
        let stack = fanfare::provider::Stack::new().stream(stream);
        let (provider, _) = match wire {
            "anthropic" => stack.build(anthropic(&mock.url(), "k")),
            _ => stack.build(openai(&mock.url(), None)),
        };
        let fanfare = calculator_on(provider).await;
        let request = RunRequest::fan_out("What is 2 + 3?", ["calc"]);
        let report = fanfare.run(request).await.unwrap();
        fanfare.shutdown().await;
        let case = format!("{wire}, streamed {stream}");
        assert!(report.status.is_success(), "{case}: {}", report.render());
        let out = report.branches[0].outcome.output().unwrap();
        assert_eq!(
            (out.tool_calls, out.tool_errors),
            (1, 0),
            "{case}: {:?}",
            out.tool_log
        );
        assert_eq!(out.attempts, 2, "{case}: two turns");
        // The mock's arguments are numbers of the schema's shape; the tool's sum is
        // quoted in the answer.
        assert!(out.text.contains("The tool said: "), "{case}: {}", out.text);
    }
    mock.stop().await;
}
