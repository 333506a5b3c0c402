//! Tool loops kept as they happen (`agent::tools::durable`): what a journal is
//! handed, and a resumed loop answered from it.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{Completion, Scripted, ToolCall};
use fanfare::{Fanfare, RunRequest};

/// Tool turns kept in memory, as a journal would keep them.
#[derive(Clone, Default)]
pub(crate) struct Memory(pub(crate) Arc<std::sync::Mutex<Vec<fanfare::agent::tools::ToolTurn>>>);

impl fanfare::agent::tools::ToolJournal for Memory {
    fn asked(
        &self,
        _branch: fanfare::agent::BranchId,
        turn: fanfare::agent::tools::ToolTurn,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        self.0.lock().unwrap().push(turn);
        Box::pin(std::future::ready(Ok(())))
    }

    fn started(
        &self,
        _branch: fanfare::agent::BranchId,
        turn: u32,
        call_id: String,
        edited: Option<serde_json::Value>,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let mut turns = self.0.lock().unwrap();
        if let Some(t) = turns.iter_mut().find(|t| t.turn == turn) {
            if let Some(input) = edited {
                t.edits.push((call_id.clone(), input));
            }
            t.started.push(call_id);
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn answered(
        &self,
        _branch: fanfare::agent::BranchId,
        turn: u32,
        result: fanfare::provider::ToolResult,
    ) -> futures::future::BoxFuture<'static, Result<(), String>> {
        let mut turns = self.0.lock().unwrap();
        if let Some(t) = turns.iter_mut().find(|t| t.turn == turn) {
            t.results.push(result);
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct Key {
    pub(crate) key: String,
}

/// A runtime on `script` whose `count` tool counts its calls by key; idempotent or
/// not.
pub(crate) async fn counting(
    script: &Scripted,
    idempotent: bool,
) -> (Fanfare, Arc<std::sync::Mutex<Vec<String>>>) {
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let counted = seen.clone();
    let count = tool("count", "Counts a key.", move |_ctx, k: Key| {
        let counted = counted.clone();
        async move {
            counted.lock().unwrap().push(k.key.clone());
            Ok::<_, ToolError>(format!("counted {}", k.key))
        }
    });
    let count = if idempotent {
        count.idempotent()
    } else {
        count
    };
    let mut agent = AgentSpec::new("counter", "You count with the count tool.");
    agent.tools = vec!["count".into()];
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(count)
        .agent(agent)
        .start()
        .await
        .unwrap();
    (fanfare, seen)
}

pub(crate) fn calls(keys: &[(&str, &str)]) -> Completion {
    Completion {
        model: "m".into(),
        attempts: 1,
        usage: fanfare::provider::Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Default::default()
        },
        tool_calls: keys
            .iter()
            .map(|(id, key)| ToolCall::from_raw(*id, "count", &format!(r#"{{"key": "{key}"}}"#)))
            .collect(),
        ..Completion::default()
    }
}

#[tokio::test]
async fn a_resumed_tool_loop_runs_no_kept_call_again_and_repeats_an_interrupted_one_only_if_idempotent(
) {
    // A first attempt, its every turn kept: `a`, then `b` and `c` together.
    let script = Scripted::new();
    script.push_completion(calls(&[("c1", "a")]));
    script.push_completion(calls(&[("c2", "b"), ("c3", "c")]));
    let (fanfare, seen) = counting(&script, true).await;
    let memory = Memory::default();
    let request = RunRequest::fan_out("Count.", ["counter"])
        .tool_journal(fanfare::agent::tools::ToolKeeper::new(memory.clone()));
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    assert_eq!(*seen.lock().unwrap(), ["a", "b", "c"]);
    let mut kept = memory.0.lock().unwrap().clone();
    assert_eq!(kept.len(), 2, "two turns of calls");
    assert_eq!(kept[1].results.len(), 2);
    // Interrupted while `c` was in flight: its result was never kept.
    kept[1].results.retain(|r| r.call_id != "c3");
    let replay = vec![fanfare::agent::tools::Replay {
        index: 0,
        item: None,
        turns: kept,
        earlier: Default::default(),
    }];

    for idempotent in [true, false] {
        let script = Scripted::new();
        script.push_completion(Completion {
            text: "counted a, b and c".into(),
            model: "m".into(),
            attempts: 1,
            usage: fanfare::provider::Usage {
                input_tokens: 5,
                output_tokens: 2,
                ..Default::default()
            },
            ..Completion::default()
        });
        let (fanfare, seen) = counting(&script, idempotent).await;
        let report = fanfare
            .run(RunRequest::fan_out("Count.", ["counter"]).replay(replay.clone()))
            .await
            .unwrap();
        fanfare.shutdown().await;
        if idempotent {
            assert!(report.status.is_success(), "{}", report.render());
            // Only the call in flight ran again; the model was asked once, for the
            // turn after the kept ones.
            assert_eq!(*seen.lock().unwrap(), ["c"]);
            assert_eq!(script.requests().len(), 1);
            let out = report.branches[0].outcome.output().unwrap();
            let kept: Vec<bool> = out.tool_log.iter().map(|u| u.kept).collect();
            assert_eq!(kept, [true, true, false]);
            // The kept turns were paid for: they count.
            assert_eq!(out.usage.total(), 15 * 2 + 7);
        } else {
            assert!(!report.status.is_success());
            assert!(seen.lock().unwrap().is_empty(), "nothing ran again");
            assert!(
                script.requests().iter().all(|r| r.agent != "counter"),
                "the model was not asked"
            );
            let why = report.branches[0].outcome.problem().unwrap();
            assert!(
                why.contains("`c3` of the tool `count`") && why.contains("not run again"),
                "{why}"
            );
        }
    }
}

#[tokio::test]
async fn regression_a_key_a_tool_read_is_redacted_before_it_is_kept_reported_or_sent_on() {
    // A tool that reads a `.env` file: the key went to the journal, the events, the
    // report, and back to the model (probe 9, N5).
    const SECRET: &str = "sk-ant-api03-PROBE-SECRET-0123456789";
    let script = Scripted::new();
    script.push_completion(calls(&[("c1", ".env")]));
    let mut agent = AgentSpec::new("counter", "You read files with the count tool.");
    agent.tools = vec!["count".into()];
    let reads = tool("count", "Reads a file.", |_ctx, k: Key| async move {
        Ok::<_, ToolError>(format!("{}: ANTHROPIC_API_KEY={SECRET}\n", k.key))
    });
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(reads)
        .agent(agent)
        .redact(fanfare::provider::ApiKey::new(SECRET).redactor())
        .start()
        .await
        .unwrap();
    let memory = Memory::default();
    let request = RunRequest::fan_out("Read .env.", ["counter"])
        .tool_journal(fanfare::agent::tools::ToolKeeper::new(memory.clone()));
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let kept = memory.0.lock().unwrap().clone();
    let result = &kept[0].results[0].content;
    assert_eq!(
        result,
        &format!(
            ".env: ANTHROPIC_API_KEY={}\n",
            fanfare::provider::Redactor::MARK
        )
    );
    let sent = script.requests();
    let second = sent.iter().filter(|r| r.agent == "counter").nth(1).unwrap();
    let sent_on = &second.messages.last().unwrap().tool_results[0].content;
    assert!(!sent_on.contains(SECRET), "{sent_on}");
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains(SECRET));
}

/// Kept turn `n`: one call of `count` with key `key`, begun, answered if `answered`.
fn kept_turn(n: u32, key: &str, answered: bool) -> fanfare::agent::tools::ToolTurn {
    let id = format!("c{n}");
    let turn = calls(&[(&id, key)]);
    fanfare::agent::tools::ToolTurn {
        turn: n,
        model: "m".into(),
        text: String::new(),
        calls: turn.tool_calls,
        usage: fanfare::provider::Usage::default(),
        attempts: 1,
        results: answered
            .then(|| fanfare::provider::ToolResult {
                call_id: id.clone(),
                content: format!("counted {key}"),
                is_error: false,
            })
            .into_iter()
            .collect(),
        started: vec![id],
        unsure: Vec::new(),
        edits: Vec::new(),
    }
}

fn replay_of(turns: Vec<fanfare::agent::tools::ToolTurn>) -> Vec<fanfare::agent::tools::Replay> {
    vec![fanfare::agent::tools::Replay {
        index: 0,
        item: None,
        turns,
        earlier: Default::default(),
    }]
}

#[tokio::test]
async fn regression_a_branch_that_refused_to_repeat_a_call_is_not_retried() {
    // After a restart the branch failed, rightly, on a call of unknown outcome; the
    // step's retry then started afresh and ran that call and the finished ones
    // again (probe 10, D1).
    let script = Scripted::new();
    let (fanfare, seen) = counting(&script, false).await;
    let replay = replay_of(vec![
        kept_turn(1, "t1", true),
        kept_turn(2, "in flight", false),
    ]);
    let mut request = RunRequest::fan_out("Count.", ["counter"]).replay(replay);
    request.steps[0].retries = 1;
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(!report.status.is_success(), "{}", report.render());
    let why = report.branches[0].outcome.problem().unwrap();
    assert!(why.contains("`c2` of the tool `count`"), "{why}");
    assert!(seen.lock().unwrap().is_empty(), "nothing ran again");
    assert!(
        script.requests().iter().all(|r| r.agent != "counter"),
        "the model was not asked"
    );
}

#[tokio::test]
async fn regression_a_steps_retry_after_a_resume_starts_its_conversation_again() {
    // The first attempt after the restart is answered from the kept turns; here it
    // fails (its fourth kept turn still calls tools: max_turns). A retry of the step
    // replayed the same kept turns, and failed the same way each time.
    let script = Scripted::new();
    let (fanfare, seen) = counting(&script, false).await;
    let turns = (1..=4).map(|n| kept_turn(n, "k", true)).collect();
    let mut request = RunRequest::fan_out("Count.", ["counter"]).replay(replay_of(turns));
    request.steps[0].retries = 1;
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    // The retry asked the model afresh (the script's default answer: no calls).
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        script
            .requests()
            .iter()
            .filter(|r| r.agent == "counter")
            .count(),
        1
    );
}

#[tokio::test]
async fn regression_a_call_approved_with_a_persons_edit_runs_again_with_it_after_a_restart() {
    // In flight at the restart, its tool idempotent: it ran again with the model's
    // arguments, asked for approval again (the edit was lost).
    let mut kept = kept_turn(1, "model's", false);
    kept.edits = vec![("c1".into(), serde_json::json!({"key": "person's"}))];
    let replay = replay_of(vec![kept]);
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let counted = seen.clone();
    let count = tool("count", "Counts a key.", move |_ctx, k: Key| {
        let counted = counted.clone();
        async move {
            counted.lock().unwrap().push(k.key.clone());
            Ok::<_, ToolError>(format!("counted {}", k.key))
        }
    })
    .idempotent()
    .needs_approval();
    let mut agent = AgentSpec::new("counter", "You count with the count tool.");
    agent.tools = vec!["count".into()];
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .tool(count)
        .agent(agent)
        .start()
        .await
        .unwrap();
    // No approver: a call asked again would be rejected.
    let report = fanfare
        .run(RunRequest::fan_out("Count.", ["counter"]).replay(replay))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    assert_eq!(*seen.lock().unwrap(), ["person's"]);
}

#[tokio::test]
async fn regression_what_replaced_turns_used_before_a_restart_counts_in_the_branch() {
    // A crash in a retried step's second attempt lost the first attempt's spend.
    let script = Scripted::new();
    let (fanfare, _seen) = counting(&script, false).await;
    let mut replay = replay_of(vec![kept_turn(1, "k", true)]);
    replay[0].earlier = (
        2,
        fanfare::provider::Usage {
            input_tokens: 3_000,
            output_tokens: 1_500,
            ..Default::default()
        },
    );
    let request = RunRequest::fan_out("Count.", ["counter"]).replay(replay);
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    // The earlier attempt's 4,500, the kept turn's 0 and the answer's 13.
    assert_eq!(report.branches[0].usage.total(), 4_500 + 13);
    assert_eq!(report.totals.usage.total(), 4_500 + 13);
}
