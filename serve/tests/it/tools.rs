//! Tool calls in `serve` survive a crash: a resumed run does not run again a call
//! whose result was kept, and does not repeat a call that was in flight unless its
//! tool is idempotent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{BoxFuture, Completion, CompletionRequest, ProviderError, ToolCall};
use fanfare::{Fanfare, Provider};
use serde_json::json;

use crate::common::{start_on, submit, until_status, until_streamed, Options};

/// How many times a model turn after a tool's answer was asked for a key naming
/// `flaky` (the first such turn fails).
static FLAKY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A model that calls `count` with the run's input as the key, and once a tool
/// answered, answers after `hold` (the first time for a key naming `flaky`, it
/// fails instead).
struct Caller {
    hold: Duration,
}

impl Provider for Caller {
    fn name(&self) -> &str {
        "caller"
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        let answered = request.messages.iter().any(|m| !m.tool_results.is_empty());
        let key = request
            .shared_prefix
            .as_deref()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let hold = self.hold;
        if answered
            && key.contains("flaky")
            && FLAKY.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0
        {
            let kind = fanfare::provider::ProviderErrorKind::Status {
                status: 400,
                retry_after_ms: None,
                excerpt: "a bad turn".into(),
            };
            let error = ProviderError::new("caller", "caller-1", &request, kind);
            return Box::pin(std::future::ready(Err(error)));
        }
        Box::pin(async move {
            let mut out = Completion {
                model: "caller-1".into(),
                attempts: 1,
                ..Completion::default()
            };
            if answered {
                tokio::time::sleep(hold).await;
                out.text = format!("counted {key}");
            } else {
                out.tool_calls = vec![ToolCall::from_raw(
                    "c1",
                    "count",
                    &json!({ "key": key }).to_string(),
                )];
            }
            Ok(out)
        })
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Key {
    key: String,
}

/// A runtime whose `counter` agent calls `count` (not idempotent), which records
/// each key it is called with, and hangs on a key naming `hang`.
async fn counting(hold: Duration) -> (Fanfare, Arc<Mutex<Vec<String>>>) {
    counting_with(hold, false).await
}

/// [`counting`], its tool needing approval when `approval` says so.
pub(crate) async fn counting_with(
    hold: Duration,
    approval: bool,
) -> (Fanfare, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let counted = seen.clone();
    let count = tool("count", "Counts a key.", move |_ctx, k: Key| {
        let counted = counted.clone();
        async move {
            counted.lock().unwrap().push(k.key.clone());
            if k.key.contains("hang") {
                std::future::pending::<()>().await;
            }
            Ok::<_, ToolError>(format!("counted {}", k.key))
        }
    });
    let count = if approval {
        count.needs_approval()
    } else {
        count
    };
    let mut agent = AgentSpec::new("counter", "You count with the count tool.");
    agent.tools = vec!["count".into()];
    let fanfare = Fanfare::builder(Arc::new(Caller { hold }))
        .tool(count)
        .agent(agent)
        .start()
        .await
        .unwrap();
    (fanfare, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_serve_stopped_between_tool_calls_runs_no_finished_call_again_and_no_interrupted_one(
) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    // The first process: every run's call ends (and is kept), then its model
    // holds the next turn; one run's call hangs.
    let (fanfare, first) = counting(Duration::from_secs(600)).await;
    let options = || Options {
        max_running: 32,
        drain: Duration::ZERO,
        ..Options::default()
    };
    let s = start_on(&db, options(), fanfare).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = submit(
            &s.base,
            json!({"input": format!("key-{i}"), "agents": ["counter"], "merge": "none"}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (_, body) = submit(
        &s.base,
        json!({"input": "hang-1", "agents": ["counter"], "merge": "none"}),
    )
    .await;
    let hung = body["id"].as_str().unwrap().to_owned();
    // One run fails after its call answered.
    let (_, body) = submit(
        &s.base,
        json!({"input": "flaky-1", "agents": ["counter"], "merge": "none"}),
    )
    .await;
    let flaky = body["id"].as_str().unwrap().to_owned();
    // A call's end is told only once its result is kept.
    for id in &ids {
        until_streamed(&s.base, id, "event: tool_finished").await;
    }
    until_streamed(&s.base, &hung, "event: tool_started").await;
    until_status(&s.base, &flaky, "failed").await;
    assert_eq!(first.lock().unwrap().len(), 22);
    let stopped = s.stop().await;
    assert_eq!(stopped.interrupted, 21);

    // The next process on the same journal.
    let (fanfare, second) = counting(Duration::from_millis(1)).await;
    let s = start_on(&db, options(), fanfare).await;
    for id in &ids {
        let run = until_status(&s.base, id, "succeeded").await;
        let log = &run["report"]["branches"][0]["outcome"]["tool_log"];
        assert_eq!(log[0]["kept"], true, "{run}");
    }
    let run = until_status(&s.base, &hung, "failed").await;
    let why = run["report"]["branches"][0]["error"]
        .as_str()
        .or_else(|| run["error"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        run.to_string()
            .contains("was in flight when the run was interrupted"),
        "{why}: {run}"
    );
    assert!(
        second.lock().unwrap().is_empty(),
        "a tool call ran again: {:?}",
        second.lock().unwrap()
    );
    // The kept turns are the server's: no client stream shows them.
    let events = crate::common::events(&s.base, &ids[0], None).await;
    assert!(
        events.iter().all(|e| !e.1.starts_with("kept_")),
        "{events:?}"
    );

    // A repair of the run that failed after its call answered does not run the
    // call again (probe 9, N3: it ran every finished call again from scratch).
    let (status, body) = submit(
        &s.base,
        json!({"input": "flaky-1", "agents": ["counter"], "merge": "none", "repair_of": flaky}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let repair = body["id"].as_str().unwrap().to_owned();
    let run = until_status(&s.base, &repair, "succeeded").await;
    let log = &run["report"]["branches"][0]["outcome"]["tool_log"];
    assert_eq!(log[0]["kept"], true, "{run}");
    // A repair of the run whose call was in flight asks a person first (N3: it
    // ran it again without asking); rejected, the model is told and answers.
    let (status, body) = submit(
        &s.base,
        json!({"input": "hang-1", "agents": ["counter"], "merge": "none", "repair_of": hung}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let repair = body["id"].as_str().unwrap().to_owned();
    let waiting = until_waiting(&s.base, &repair, 1).await;
    assert!(
        waiting[0]["why"]
            .as_str()
            .is_some_and(|w| w.contains("in flight")),
        "{waiting:?}"
    );
    let approval = waiting[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = decide(&s.base, &repair, &approval, json!({"decision": "reject"})).await;
    assert_eq!(status, 200);
    until_status(&s.base, &repair, "succeeded").await;
    assert!(
        second.lock().unwrap().is_empty(),
        "a tool call ran again: {:?}",
        second.lock().unwrap()
    );
    s.stop().await;
}

async fn approvals(base: &str, id: &str) -> serde_json::Value {
    crate::common::get_json(format!("{base}/v1/runs/{id}/approvals")).await
}

async fn decide(
    base: &str,
    id: &str,
    approval: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = crate::common::client()
        .post(format!("{base}/v1/runs/{id}/approvals/{approval}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Polls until run `id` has `n` approvals waiting; answers them.
async fn until_waiting(base: &str, id: &str, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..500 {
        let list = approvals(base, id).await;
        let waiting = list["approvals"].as_array().cloned().unwrap_or_default();
        if waiting.len() == n {
            return waiting;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} never had {n} approvals waiting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_for_approval_is_decided_over_the_api_and_waits_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let options = || Options {
        drain: Duration::ZERO,
        body_limit: 1 << 20,
        ..Options::default()
    };
    let (fanfare, first) = counting_with(Duration::from_millis(1), true).await;
    let s = start_on(&db, options(), fanfare).await;
    let mut ids = Vec::new();
    for key in ["approve-me", "reject-me", "restart-me"] {
        let (_, body) = submit(
            &s.base,
            json!({"input": key, "agents": ["counter"], "merge": "none"}),
        )
        .await;
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let waiting = until_waiting(&s.base, &ids[0], 1).await;
    assert_eq!(waiting[0]["tool"], "count");
    assert_eq!(waiting[0]["input"]["key"], "approve-me");
    let approval = waiting[0]["id"].as_str().unwrap().to_owned();
    // A decision that does not parse, and one for no waiting call, are refused.
    let (status, _) = decide(&s.base, &ids[0], &approval, json!({"decision": "maybe"})).await;
    assert_eq!(status, 422);
    let (status, _) = decide(&s.base, &ids[0], "9-9-9", json!({"decision": "approve"})).await;
    assert_eq!(status, 404);
    // An edit larger than a model's call may be is refused, and the call still
    // waits (it was answered `edited`, then rejected; probe 10).
    let big = json!({"decision": "edit", "input": {"key": "k".repeat(300 * 1024)}});
    let (status, body) = decide(&s.base, &ids[0], &approval, big).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        until_waiting(&s.base, &ids[0], 1).await[0]["id"],
        approval.as_str()
    );
    let (status, body) = decide(&s.base, &ids[0], &approval, json!({"decision": "approve"})).await;
    assert_eq!((status, body["state"].as_str()), (200, Some("approved")));
    until_status(&s.base, &ids[0], "succeeded").await;

    let waiting = until_waiting(&s.base, &ids[1], 1).await;
    let approval = waiting[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = decide(
        &s.base,
        &ids[1],
        &approval,
        json!({"decision": "reject", "reason": "not this one"}),
    )
    .await;
    assert_eq!(status, 200);
    let run = until_status(&s.base, &ids[1], "succeeded").await;
    assert!(run.to_string().contains("rejected (not this one)"), "{run}");
    assert_eq!(*first.lock().unwrap(), ["approve-me"]);

    // Still waiting when the server stops: asked again, under the same id, after.
    let before = until_waiting(&s.base, &ids[2], 1).await;
    s.stop().await;
    let (fanfare, second) = counting_with(Duration::from_millis(1), true).await;
    let s = start_on(&db, options(), fanfare).await;
    let after = until_waiting(&s.base, &ids[2], 1).await;
    assert_eq!(before[0]["id"], after[0]["id"]);
    let approval = after[0]["id"].as_str().unwrap().to_owned();
    let (status, _) = decide(&s.base, &ids[2], &approval, json!({"decision": "approve"})).await;
    assert_eq!(status, 200);
    until_status(&s.base, &ids[2], "succeeded").await;
    assert_eq!(*second.lock().unwrap(), ["restart-me"]);
    let kinds: Vec<String> = crate::common::events(&s.base, &ids[2], None)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(kinds.iter().any(|k| k == "approval"), "{kinds:?}");
    s.stop().await;
}
