use std::sync::Arc;

use super::*;
use crate::agent::{AgentContext, AgentError, RunId};
use crate::provider::{Completion, CompletionRequest, Scripted, ToolCall, Usage};

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Add {
    /// The first number.
    a: f64,
    /// The second number.
    b: f64,
}

fn add() -> impl Tool {
    tool("add", "Adds two numbers.", |_ctx, i: Add| async move {
        Ok((i.a + i.b).to_string())
    })
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Nothing {}

fn boom() -> impl Tool {
    tool("boom", "Panics.", |_ctx, _: Nothing| async move {
        if true {
            panic!("the tool broke");
        }
        Ok(String::new())
    })
}

fn branch() -> BranchId {
    BranchId {
        run: RunId(7),
        index: 2,
        item: None,
    }
}

/// An answer calling `calls`, with 10 + 5 tokens.
fn calling(calls: Vec<ToolCall>) -> Completion {
    Completion {
        text: String::new(),
        model: "m".into(),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        attempts: 1,
        stop_reason: Some("tool_use".into()),
        tool_calls: calls,
        ..Completion::default()
    }
}

fn context(script: &Scripted, tools: Vec<Arc<dyn Tool>>) -> AgentContext {
    AgentContext {
        provider: Arc::new(script.clone()),
        tools: Toolbox::new(tools).unwrap(),
    }
}

#[test]
fn a_typed_tools_schema_is_derived_from_its_type() {
    let schema = add().input_schema();
    assert_eq!(schema["type"], "object");
    assert_eq!(schema["properties"]["a"]["type"], "number");
    assert_eq!(
        schema["properties"]["a"]["description"],
        "The first number."
    );
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["a", "b"]);
}

#[test]
fn a_toolbox_refuses_two_tools_of_one_name_and_names_the_wires_do_not_take() {
    let twice = Toolbox::new(vec![Arc::new(add()), Arc::new(add())]);
    assert_eq!(twice.unwrap_err(), ToolboxError::Duplicate("add".into()));
    let spaced = tool(
        "add two",
        "x",
        |_ctx, i: Add| async move { Ok(i.a.to_string()) },
    );
    assert!(matches!(
        Toolbox::new(vec![Arc::new(spaced)]),
        Err(ToolboxError::BadName(_))
    ));
}

#[tokio::test]
async fn calls_run_in_parallel_their_failures_go_back_as_errors_and_the_answer_counts_every_turn() {
    let script = Scripted::new();
    script.push_completion(calling(vec![
        ToolCall::from_raw("c1", "add", r#"{"a": 2, "b": 3}"#),
        ToolCall::from_raw("c2", "add", r#"{"a": "two"}"#),
        ToolCall::from_raw("c3", "clock", "{}"),
        ToolCall::from_raw("c4", "boom", "{}"),
        ToolCall::from_raw("c5", "add", "{a: 1"),
    ]));
    let ctx = context(&script, vec![Arc::new(add()), Arc::new(boom())]);
    let request = CompletionRequest::new("calc", "You add.", "2 + 3?");
    let names = vec!["add".to_owned(), "boom".to_owned()];
    let out = converse(&ctx, request, &names, 4, Governed::plain(branch()))
        .await
        .unwrap();
    // The second turn answered (the scripted default), with every turn counted.
    assert_eq!(out.text, "calc answered");
    assert_eq!((out.tool_calls, out.tool_errors), (5, 4));
    assert_eq!(out.attempts, 2);
    assert_eq!(out.usage.input_tokens, 20);
    let asked = script.requests();
    assert_eq!(asked[0].tools.len(), 2, "the tools were offered");
    let results = &asked[1].messages[2].tool_results;
    let by_id = |id: &str| results.iter().find(|r| r.call_id == id).unwrap();
    assert_eq!(
        (by_id("c1").content.as_str(), by_id("c1").is_error),
        ("5", false)
    );
    assert!(by_id("c2").is_error && by_id("c2").content.contains("schema"));
    assert!(by_id("c3").is_error && by_id("c3").content.contains("no tool `clock`"));
    assert!(by_id("c4").is_error && by_id("c4").content.contains("the tool broke"));
    assert!(by_id("c5").is_error && by_id("c5").content.contains("not JSON"));
    assert_eq!(
        asked[1].messages[1].tool_calls.len(),
        5,
        "the calls went back too"
    );
}

#[tokio::test]
async fn a_model_that_keeps_calling_tools_ends_at_max_turns_and_an_unknown_tool_in_a_spec_is_refused(
) {
    let script = Scripted::new();
    for i in 0..3 {
        script.push_completion(calling(vec![ToolCall::from_raw(
            format!("c{i}"),
            "add",
            r#"{"a": 1, "b": 1}"#,
        )]));
    }
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "Go on.");
    let names = vec!["add".to_owned()];
    let e = converse(&ctx, request.clone(), &names, 3, Governed::plain(branch()))
        .await
        .unwrap_err();
    // What its three answered turns used is counted (it was paid for).
    let AgentError::Spent {
        cause,
        usage,
        attempts,
        model,
    } = &e
    else {
        panic!("{e}");
    };
    // Named, so that the failed branch's tokens are priced.
    assert_eq!(model.as_deref(), Some("m"));
    assert!(
        matches!(&**cause, AgentError::Rejected { reason } if reason.contains("after 3 turns")),
        "{e}"
    );
    assert_eq!((usage.total(), *attempts), (45, 3));
    let missing = converse(
        &ctx,
        request,
        &["search".to_owned()],
        3,
        Governed::plain(branch()),
    )
    .await
    .unwrap_err();
    assert!(missing.to_string().contains("`search`"), "{missing}");
}

#[tokio::test]
async fn regression_a_tool_loop_does_not_send_a_turn_past_what_the_budget_reserved_for_it() {
    let script = Scripted::new();
    for i in 0..3 {
        script.push_completion(calling(vec![ToolCall::from_raw(
            format!("c{i}"),
            "add",
            r#"{"a": 1, "b": 1}"#,
        )]));
    }
    let ctx = context(&script, vec![Arc::new(add())]);
    let mut request = CompletionRequest::new("calc", "You add.", "Go on.");
    request.max_tokens = 1000;
    let names = vec!["add".to_owned()];
    // The first turn's prompt, the tool's description and schema in it.
    let first = {
        let mut r = request.clone();
        let tool = add();
        r.tools = vec![crate::provider::ToolSpec {
            name: tool.name().to_owned(),
            description: tool.description().to_owned(),
            input_schema: tool.input_schema(),
        }]
        .into();
        r.prompt_tokens() + 1000
    };
    // Room for the first turn and not a second of up to 1,000 tokens out.
    let e = converse(
        &ctx,
        request.clone(),
        &names,
        4,
        Governed {
            allowance: Some(first + 5),
            ..Governed::plain(branch())
        },
    )
    .await
    .unwrap_err();
    assert_eq!(script.requests().len(), 1, "the second turn was sent");
    let AgentError::Spent { cause, usage, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!(usage.total(), 15);
    assert!(
        cause
            .to_string()
            .contains("turn 2 was not sent: it could use"),
        "{e}"
    );
}

#[tokio::test]
async fn regression_a_first_turn_whose_tools_take_it_past_the_reservation_is_not_sent() {
    let script = Scripted::new();
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "Go on.");
    let e = converse(
        &ctx,
        request,
        &["add".to_owned()],
        4,
        Governed {
            allowance: Some(20),
            ..Governed::plain(branch())
        },
    )
    .await
    .unwrap_err();
    assert!(script.requests().is_empty(), "it was sent");
    assert!(e.to_string().contains("turn 1 was not sent"), "{e}");
}

#[tokio::test]
async fn regression_a_call_with_huge_arguments_fails_the_branch_instead_of_riding_every_turn() {
    let script = Scripted::new();
    let huge = format!(r#"{{"a": 1, "b": 2, "pad": "{}"}}"#, "x".repeat(300_000));
    script.push_completion(calling(vec![ToolCall::from_raw("c1", "add", &huge)]));
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "Go on.");
    let e = converse(
        &ctx,
        request,
        &["add".to_owned()],
        4,
        Governed::plain(branch()),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("bytes of arguments (at most 262144)"),
        "{e}"
    );
    assert_eq!(script.requests().len(), 1);
}

#[tokio::test]
async fn regression_a_deadline_that_comes_while_tools_run_is_named_not_blamed_on_the_model() {
    let script = Scripted::new();
    script.push_completion(calling(vec![ToolCall::from_raw("c1", "nap", "{}")]));
    let nap = tool("nap", "Sleeps.", |_ctx, _: Nothing| async move {
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        Ok(String::new())
    });
    let ctx = context(&script, vec![Arc::new(nap)]);
    let mut request = CompletionRequest::new("calc", "You nap.", "Go on.");
    request.deadline = Some(tokio::time::Instant::now() + std::time::Duration::from_millis(100));
    let e = converse(
        &ctx,
        request,
        &["nap".to_owned()],
        4,
        Governed::plain(branch()),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("deadline came while its tools ran (turn 1)"),
        "{e}"
    );
    assert_eq!(
        script.requests().len(),
        1,
        "no model turn after the deadline"
    );
}

#[tokio::test]
async fn a_turn_runs_at_most_32_calls_answers_the_rest_as_not_run_and_fails_past_256() {
    let script = Scripted::new();
    let many = |n: usize| {
        (0..n)
            .map(|i| ToolCall::from_raw(format!("c{i}"), "add", r#"{"a": 1, "b": 2}"#))
            .collect::<Vec<_>>()
    };
    script.push_completion(calling(many(40)));
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "Go on.");
    let names = vec!["add".to_owned()];
    let out = converse(&ctx, request.clone(), &names, 4, Governed::plain(branch()))
        .await
        .unwrap();
    assert_eq!(out.tool_log.len(), MAX_CALLS_PER_TURN);
    let results = &script.requests()[1].messages[2].tool_results;
    assert_eq!(results.len(), 40, "every call has an answer");
    let not_run = results
        .iter()
        .filter(|r| r.is_error && r.content.starts_with("not run"))
        .count();
    assert_eq!(not_run, 8);

    let script = Scripted::new();
    script.push_completion(calling(many(MAX_ASKED_PER_TURN + 1)));
    let ctx = context(&script, vec![Arc::new(add())]);
    let e = converse(&ctx, request, &names, 4, Governed::plain(branch()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("257 tool calls in one turn"), "{e}");
    assert_eq!(script.requests().len(), 1);
}

#[test]
fn a_calls_idempotency_key_names_its_run_branch_and_call() {
    let ctx = ToolContext::new(
        BranchId {
            run: RunId(7),
            index: 2,
            item: Some(4),
        },
        "calc",
        "c1",
    );
    assert_eq!(ctx.idempotency_key(), "run-7/2.4/c1");
}

/// A server's tools, as a fixed list.
struct Server(Vec<(&'static str, &'static str)>);

impl ToolSource for Server {
    fn tools(&self) -> Vec<(String, Arc<dyn Tool>)> {
        self.0
            .iter()
            .map(|(own, wire)| {
                let t: Arc<dyn Tool> = Arc::new(tool(wire, "", |_ctx, _: Nothing| async move {
                    Ok(String::new())
                }));
                (own.to_string(), t)
            })
            .collect()
    }
}

#[test]
fn a_spec_names_own_tools_a_whole_server_or_one_of_its_tools() {
    let toolbox = Toolbox::new(vec![Arc::new(add())])
        .unwrap()
        .with_server(
            "fs",
            Arc::new(Server(vec![
                ("read_file", "fs__read_file"),
                ("list.dir", "fs__list_dir"),
            ])),
        )
        .unwrap();
    let names = |spec: &[&str]| -> Result<Vec<String>, String> {
        let spec: Vec<String> = spec.iter().map(|s| s.to_string()).collect();
        toolbox
            .resolve(&spec)
            .map(|tools| tools.iter().map(|t| t.name().to_owned()).collect())
    };
    // (a spec's tools, the names offered or a part of the error)
    type Case<'a> = (&'a [&'a str], Result<&'a [&'a str], &'a str>);
    let cases: &[Case] = &[
        (&["add"], Ok(&["add"])),
        (&["fs.*"], Ok(&["fs__read_file", "fs__list_dir"])),
        (&["fs.list.dir", "add"], Ok(&["fs__list_dir", "add"])),
        (
            &["fs.*", "fs.read_file"],
            Ok(&["fs__read_file", "fs__list_dir"]),
        ),
        (
            &["clock"],
            Err("the tool `clock`, which this runtime does not have (it has: add)"),
        ),
        (
            &["web.*"],
            Err("the MCP server `web`, which this runtime does not have (it has: fs)"),
        ),
        (
            &["fs.write"],
            Err("has no tool `write` (it has: read_file, list.dir)"),
        ),
    ];
    for (spec, want) in cases {
        match (names(spec), want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{spec:?}"),
            (Err(got), Err(want)) => assert!(got.contains(want), "{spec:?}: {got}"),
            (got, want) => panic!("{spec:?}: {got:?}, wanted {want:?}"),
        }
    }
    let twice = toolbox.with_server("fs", Arc::new(Server(vec![])));
    assert_eq!(
        twice.unwrap_err(),
        ToolboxError::DuplicateServer("fs".into())
    );
}

#[tokio::test]
async fn the_specs_tool_choice_binds_the_first_turn_and_the_model_chooses_after() {
    let script = Scripted::new();
    script.push_completion(calling(vec![ToolCall::from_raw(
        "c1",
        "add",
        r#"{"a": 1, "b": 2}"#,
    )]));
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "Go on.");
    let mut governed = Governed::plain(branch());
    governed.first_choice = crate::provider::ToolChoice::Tool("add".into());
    converse(&ctx, request, &["add".to_owned()], 4, governed)
        .await
        .unwrap();
    let asked: Vec<_> = script
        .requests()
        .into_iter()
        .map(|r| r.tool_choice)
        .collect();
    assert_eq!(
        asked,
        [
            crate::provider::ToolChoice::Tool("add".into()),
            crate::provider::ToolChoice::Auto
        ]
    );
}

#[tokio::test]
async fn regression_a_newline_in_a_models_tool_name_forges_no_line() {
    let script = Scripted::new();
    let forged = "add\nFAKE LINE ✗ there is no tool";
    script.push_completion(calling(vec![ToolCall::from_raw("c1", forged, "{}")]));
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "2 + 3?");
    let out = converse(
        &ctx,
        request,
        &["add".to_owned()],
        4,
        Governed::plain(branch()),
    )
    .await
    .unwrap();
    let used = &out.tool_log[0];
    assert!(!used.tool.contains('\n'), "{:?}", used.tool);
    let error = used.error.as_deref().unwrap();
    assert!(error.starts_with("there is no tool"), "{error}");
    assert!(!error.contains('\n'), "{error:?}");
}

/// An approver that edits every call to `input`.
struct EditsTo(serde_json::Value);

impl Approver for EditsTo {
    fn decide(&self, _request: ApprovalRequest) -> futures::future::BoxFuture<'static, Decision> {
        let input = self.0.clone();
        Box::pin(async move { Decision::Edit { input } })
    }
}

#[tokio::test]
async fn regression_a_persons_edit_is_held_to_the_models_limit_on_arguments() {
    // An edit of 300 KiB ran, past the 256 KiB a model's call may have.
    let script = Scripted::new();
    script.push_completion(calling(vec![ToolCall::from_raw(
        "c1",
        "add",
        r#"{"a": 1, "b": 2}"#,
    )]));
    let held = tool("add", "Adds two numbers.", |_ctx, i: Add| async move {
        Ok((i.a + i.b).to_string())
    })
    .needs_approval();
    let ctx = context(&script, vec![Arc::new(held)]);
    let request = CompletionRequest::new("calc", "You add.", "1 + 2?");
    let mut governed = Governed::plain(branch());
    let big = "9".repeat(300 * 1024);
    governed.approvals = Some(Approvals::new(EditsTo(
        serde_json::json!({"a": 1, "b": 2, "note": big}),
    )));
    let out = converse(&ctx, request, &["add".to_owned()], 4, governed)
        .await
        .unwrap();
    let error = out.tool_log[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("the edited arguments have") && error.contains("at most 262144"),
        "{error}"
    );
}

#[tokio::test]
async fn regression_a_worker_without_the_runs_journal_or_approver_runs_no_tool_call() {
    // On a cluster worker a tool call was neither kept (a crash ran it twice) nor
    // asked for approval (probe 10, D2). The task says its run governs its calls.
    let mut task = crate::agent::task::test_task("2 + 3?");
    task.tools_governed = true;
    let sent: crate::agent::Task =
        serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
    assert!(sent.tools_governed, "it travels with the task");
    let governed = Governed::of(&sent);
    let script = Scripted::new();
    script.push_completion(calling(vec![ToolCall::from_raw(
        "c1",
        "add",
        r#"{"a": 2, "b": 3}"#,
    )]));
    let ctx = context(&script, vec![Arc::new(add())]);
    let request = CompletionRequest::new("calc", "You add.", "2 + 3?");
    let e = converse(&ctx, request, &["add".to_owned()], 4, governed)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("a cluster worker"), "{e}");
    // Where the run is, with its journal or approver, it calls.
    let mut here = crate::agent::task::test_task("2 + 3?");
    here.tools_governed = true;
    here.approvals = Some(Approvals::new(EditsTo(serde_json::json!({"a": 1, "b": 1}))));
    assert!(!Governed::of(&here).governed_elsewhere);
}
