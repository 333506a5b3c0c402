//! A spec agent that calls tools, end to end through the runtime.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{Completion, Scripted, ToolCall};
use fanfare::{Fanfare, RunRequest};

use super::tool_journal::{calls, Key};

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

/// An approver that hands each request to the test and waits for its decision.
#[derive(Clone)]
struct Desk {
    asked: tokio::sync::mpsc::UnboundedSender<(
        fanfare::agent::tools::ApprovalRequest,
        tokio::sync::oneshot::Sender<fanfare::agent::tools::Decision>,
    )>,
}

impl fanfare::agent::tools::Approver for Desk {
    fn decide(
        &self,
        request: fanfare::agent::tools::ApprovalRequest,
    ) -> futures::future::BoxFuture<'static, fanfare::agent::tools::Decision> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.asked.send((request, tx));
        Box::pin(async move {
            rx.await
                .unwrap_or(fanfare::agent::tools::Decision::Reject { reason: None })
        })
    }
}

#[tokio::test]
async fn a_call_needing_approval_waits_for_its_own_decision_while_the_other_branch_goes_on() {
    use fanfare::agent::tools::{ApprovalState, Approvals, Decision};
    let script = Scripted::new();
    // Both branches call `count` first; the scripted default answers their second turn.
    script.push_completion(calls(&[("c1", "left")]));
    script.push_completion(calls(&[("c1", "right")]));
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let counted = seen.clone();
    let count = tool("count", "Counts a key.", move |_ctx, k: Key| {
        let counted = counted.clone();
        async move {
            counted.lock().unwrap().push(k.key.clone());
            Ok::<_, ToolError>(format!("counted {}", k.key))
        }
    })
    .needs_approval();
    let mut specs = Vec::new();
    for name in ["one", "two"] {
        let mut a = AgentSpec::new(name, "You count.");
        a.tools = vec!["count".into()];
        specs.push(a);
    }
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(count)
        .agents_from(specs)
        .start()
        .await
        .unwrap();
    let (asked, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let request = RunRequest::fan_out("Count.", ["one", "two"])
        .approver(Approvals::new(Desk { asked }))
        .policy(fanfare::Policy::TolerantPartial { quorum: 1 });
    let mut handle = fanfare.start_run(request);
    let (first, decide_first) = requests.recv().await.unwrap();
    let (second, decide_second) = requests.recv().await.unwrap();
    assert_ne!(first.id, second.id, "each call its own approval");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing ran before a decision"
    );
    // Approve one with other arguments: only it runs, with them.
    decide_first
        .send(Decision::Edit {
            input: serde_json::json!({"key": "edited"}),
        })
        .unwrap();
    let mut states = Vec::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            fanfare::RunEvent::Approval { id, state, .. } => states.push((id, state)),
            fanfare::RunEvent::ToolFinished { .. } => break,
            _ => {}
        }
    }
    assert_eq!(*seen.lock().unwrap(), ["edited"]);
    decide_second
        .send(Decision::Reject {
            reason: Some("not today".into()),
        })
        .unwrap();
    let report = handle.report().await.unwrap();
    fanfare.shutdown().await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["edited"],
        "the rejected call did not run"
    );
    assert!(states.contains(&(first.id.clone(), ApprovalState::Pending)));
    assert!(states.contains(&(first.id.clone(), ApprovalState::Edited)));
    // The report's digest is of the arguments that ran (it was of the model's).
    let ran = report
        .branches
        .iter()
        .filter_map(|b| b.outcome.output())
        .flat_map(|o| &o.tool_log)
        .find(|u| u.error.is_none())
        .expect("the edited call is in the report");
    assert_eq!(
        ran.input_digest,
        fanfare::agent::tools::ToolUse::digest(&serde_json::json!({"key": "edited"}))
    );
    let rejected = report
        .branches
        .iter()
        .filter_map(|b| b.outcome.output())
        .flat_map(|o| &o.tool_log)
        .find(|u| u.error.is_some())
        .expect("the rejected call is in the report");
    assert!(
        rejected
            .error
            .as_deref()
            .unwrap()
            .contains("rejected (not today)"),
        "{rejected:?}"
    );
}

#[tokio::test]
async fn a_call_needing_approval_in_a_run_with_no_approver_is_rejected_saying_why() {
    let script = Scripted::new();
    script.push_completion(calls(&[("c1", "a")]));
    let mut agent = AgentSpec::new("careful", "You count.");
    agent.tools = vec!["count".into()];
    agent.needs_approval = true;
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let counted = seen.clone();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(tool("count", "Counts.", move |_ctx, k: Key| {
            counted.lock().unwrap().push(k.key.clone());
            async move { Ok::<_, ToolError>(k.key) }
        }))
        .agent(agent)
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("Count.", ["careful"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(seen.lock().unwrap().is_empty());
    let out = report.branches[0].outcome.output().unwrap();
    let error = out.tool_log[0].error.as_deref().unwrap();
    assert!(
        error.contains("needs a person's approval") && error.contains("--approve-all"),
        "{error}"
    );
}

#[tokio::test]
async fn regression_a_steps_retried_tool_loops_count_every_paid_turn_in_the_report() {
    // The model never stops calling: each attempt fails after its 2 turns (15
    // tokens each), and the step tries 3 times.
    let script = Scripted::new();
    for i in 0..6 {
        script.push_completion(calls(&[(&format!("c{i}"), "k")]));
    }
    let count = tool("count", "Counts.", |_ctx, k: Key| async move {
        Ok::<_, ToolError>(k.key)
    });
    let mut agent = AgentSpec::new("counter", "You count.");
    agent.tools = vec!["count".into()];
    agent.max_turns = 2;
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(count)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let mut step = fanfare::run::Step::agent("counter");
    step.retries = 2;
    let mut request = RunRequest::fan_out("Count.", Vec::<String>::new());
    request.steps = vec![step];
    request.merge = None;
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(!report.status.is_success());
    let branch = &report.branches[0];
    assert_eq!(branch.usage.total(), 6 * 15, "{}", report.render());
    assert_eq!(branch.attempts, 6);
    assert_eq!(report.totals.usage.total(), 6 * 15);
}

#[tokio::test]
async fn regression_a_tool_agent_under_a_roomy_budget_is_not_held_to_one_calls_estimate() {
    // Its tool's description alone is more than one call's estimate: held to that
    // estimate, every tool agent failed under any budget.
    let script = Scripted::new();
    script.push_completion(calls(&[("c1", "a")]));
    let long = format!("Counts a key. {}", "Use it well. ".repeat(3_000));
    let count = tool("count", &long, |_ctx, k: Key| async move {
        Ok::<_, ToolError>(k.key)
    });
    let mut agent = AgentSpec::new("counter", "You count.");
    agent.tools = vec!["count".into()];
    agent.max_tokens = 64;
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(count)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let roomy = RunRequest::fan_out("Count.", ["counter"]).budget(fanfare::run::Budget {
        max_tokens: Some(1_000_000),
        ..Default::default()
    });
    let report = fanfare.run(roomy).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    // A budget that cannot hold the first turn still refuses it.
    let tight = RunRequest::fan_out("Count.", ["counter"]).budget(fanfare::run::Budget {
        max_tokens: Some(2_000),
        ..Default::default()
    });
    let report = fanfare.run(tight).await.unwrap();
    fanfare.shutdown().await;
    assert!(!report.status.is_success());
    assert!(
        report.render().contains("turn 1 was not sent"),
        "{}",
        report.render()
    );
}

/// A runtime whose `counter` agent offers `count`, which never answers.
async fn hanging(script: &Scripted) -> Fanfare {
    let mut agent = AgentSpec::new("counter", "You count with the count tool.");
    agent.tools = vec!["count".into()];
    let hang = tool("count", "Never answers.", |_ctx, _k: Key| async move {
        std::future::pending::<()>().await;
        Ok::<_, ToolError>(String::new())
    });
    Fanfare::builder(Arc::new(script.clone()))
        .tool(hang)
        .agent(agent)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn regression_a_branch_cut_in_its_tool_loop_reports_the_turns_it_paid_for() {
    // Timed out or stopped while a tool ran, after a paid turn: the branch
    // reported 0 tokens (probe 9, H1).
    for stopped in [false, true] {
        let script = Scripted::new();
        script.push_completion(calls(&[("c1", "a")]));
        let fanfare = hanging(&script).await;
        let request = RunRequest::fan_out("Count.", ["counter"])
            .branch_timeout(std::time::Duration::from_millis(400));
        let mut handle = fanfare.start_run(request);
        if stopped {
            // The call is running: the paid turn is behind it.
            while let Some(event) = handle.events.recv().await {
                if format!("{event:?}").contains("ToolStarted") {
                    break;
                }
            }
            handle.stop();
        }
        let report = handle.report().await.unwrap();
        fanfare.shutdown().await;
        let b = &report.branches[0];
        let case = if stopped { "stopped" } else { "timed out" };
        assert!(!b.outcome.is_ok(), "{case}: {}", report.render());
        assert_eq!(b.usage.total(), 15, "{case}: {}", report.render());
        assert_eq!(b.attempts, 1, "{case}");
        assert_eq!(report.totals.usage.total(), 15, "{case}");
    }
}
