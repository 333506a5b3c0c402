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

/// A model that calls `count` with the run's input as the key, and once a tool
/// answered, answers after `hold`.
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
    // A call's end is told only once its result is kept.
    for id in &ids {
        until_streamed(&s.base, id, "event: tool_finished").await;
    }
    until_streamed(&s.base, &hung, "event: tool_started").await;
    assert_eq!(first.lock().unwrap().len(), 21);
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
    s.stop().await;
}
