//! Repair: a partly failed run mended by calling only what failed, against the mock
//! LLM server over the real Anthropic wire format.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::agent::{Agent, AgentContext, AgentError, AgentOutput, AgentReply, Task};
use fanfare::provider::{AnthropicConfig, AnthropicProvider, ApiKey, CompletionRequest};
use fanfare::Fanfare;
use fanfare_mock::{MockConfig, MockServer};
use fanfare_serve::{Catalog, ServeConfig, Server};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::*;

/// Calls the model; the agents named in `fail_once` refuse their first task.
struct Flaky {
    name: String,
    fail_once: Arc<Mutex<HashSet<String>>>,
}

impl Agent for Flaky {
    fn name(&self) -> &str {
        &self.name
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        if self.fail_once.lock().unwrap().remove(&self.name) {
            return Err(AgentError::Rejected {
                reason: "not today".to_owned(),
            });
        }
        let request =
            CompletionRequest::new(self.name.clone(), "Be brief.", task.prompt().to_string());
        Ok(AgentOutput::from(ctx.provider.complete(request).await?))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repairing_a_run_with_2_of_8_failed_calls_the_model_3_times_and_reports_all_8() {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(5),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut config = AnthropicConfig::new(ApiKey::new("k"));
    config.base_url = mock.url();
    config.default_model = "mock-model".into();
    let provider = Arc::new(AnthropicProvider::new(config).unwrap());
    let names: Vec<String> = (0..8).map(|i| format!("a{i}")).collect();
    let fail_once = Arc::new(Mutex::new(HashSet::from([
        "a2".to_owned(),
        "a5".to_owned(),
    ])));
    let mut builder = Fanfare::builder(provider);
    for name in &names {
        builder = builder.agent(Flaky {
            name: name.clone(),
            fail_once: fail_once.clone(),
        });
    }
    let fanfare = builder.start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeConfig::new(dir.path().join("j.db"));
    serve.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let catalog = Catalog {
        workflows: Vec::new(),
        agents: fanfare.agents(),
    };
    let server = Server::start(fanfare, catalog, serve).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let (code, body) = submit(
        &base,
        json!({"input": "Should we keep logs?", "agents": names, "policy": "partial:6", "merge": "llm"}),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    let first = body["id"].as_str().unwrap().to_owned();
    let run = until_status(&base, &first, "succeeded").await;
    assert_eq!(
        run["report"]["totals"]["failed"], 2,
        "{}",
        run["report"]["totals"]
    );
    let before = mock.stats().requests;
    assert_eq!(before, 6 + 1, "six branches and the merge");

    // A body asking for other settings was ignored without a word; it is refused.
    let refused = client()
        .post(format!("{base}/v1/runs/{first}/repair"))
        .header("Content-Type", "application/json")
        .body(r#"{"deadline": "5s"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 422);
    assert_eq!(mock.stats().requests, before, "nothing ran");
    // Regression: three repairs at once started three runs, each paying for the
    // failed branches and the merge again. One starts; the others are it.
    let mend = || async {
        let (code, body) = repair(&base, &first).await;
        (code, body["id"].as_str().unwrap().to_owned())
    };
    let (a, b, c) = tokio::join!(mend(), mend(), mend());
    let mut codes = vec![a.0, b.0, c.0];
    codes.sort();
    assert_eq!(codes, [200, 200, 202]);
    assert!(a.1 == b.1 && b.1 == c.1, "{a:?} {b:?} {c:?}");
    let second = a.1;
    assert_ne!(second, first);
    let run = until_status(&base, &second, "succeeded").await;
    assert_eq!(
        mock.stats().requests - before,
        2 + 1,
        "the two failed branches and the merge"
    );
    // Once it has succeeded, a repair of the same run is still that one.
    assert_eq!(mend().await, (200, second.clone()));
    assert_eq!(mock.stats().requests - before, 3, "nothing ran again");
    let branches = run["report"]["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 8);
    assert!(branches.iter().all(|b| b["outcome"]["status"] == "ok"));
    let reused: Vec<bool> = branches
        .iter()
        .map(|b| b["reused"] == "earlier_run")
        .collect();
    assert_eq!(reused, [true, true, false, true, true, false, true, true]);
    // Regression (sixth probe): the repair's totals counted the reused branches'
    // calls and cost again; they count what the repair called.
    assert_eq!(
        run["report"]["totals"]["attempts"], 2,
        "{}",
        run["report"]["totals"]
    );
    assert_eq!(run["report"]["totals"]["ok"], 8);
    assert_eq!(run["request"]["repair_of"], first.as_str());

    // A repair must run the same request, of a run that has ended.
    let (code, body) = submit(
        &base,
        json!({"input": "Another question", "agents": names, "repair_of": first}),
    )
    .await;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("repair_of")),
        "{body}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_run_with_a_map_can_be_repaired_and_a_succeeded_one_is_not() {
    // Every repair of a run with a map step was refused (422: the map step's own
    // joined output was offered for reuse), and a repair of a run that had
    // succeeded paid for its merge again.
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    // The last step fails on the task; the map's two items succeed.
    let (code, run) = submit(
        &s.base,
        json!({"input": "PLEASE FAIL", "workflow": "each", "items": ["one", "two"]}),
    )
    .await;
    assert_eq!(code, 202, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "failed").await;
    let items_called = s.fast.started.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(items_called, 2);
    let (status, mended) = repair(&s.base, &id).await;
    assert_eq!(status, 202, "{mended}");
    let again = mended["id"].as_str().unwrap();
    until_status(&s.base, again, "failed").await;
    assert_eq!(
        s.fast.started.load(std::sync::atomic::Ordering::SeqCst),
        items_called,
        "the map's items were reused, not called again"
    );
    // A run that succeeded has nothing to repair.
    let (_, ok) = submit(&s.base, json!({"input": "x", "workflow": "pair"})).await;
    let ok = ok["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &ok, "succeeded").await;
    let (status, refused) = repair(&s.base, &ok).await;
    assert_eq!(status, 422);
    assert!(
        refused.to_string().contains("nothing to repair"),
        "{refused}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_repair_of_a_repair_cancelled_before_it_started_reuses_the_first_runs_answers()
{
    // The cancelled repair had answered nothing, so a repair of it called every
    // branch again: answers paid for twice.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_running: 1,
            slow: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .await;
    let ordering = std::sync::atomic::Ordering::SeqCst;
    let (_, first) = submit(
        &s.base,
        json!({"input": "PLEASE FAIL", "workflow": "each", "items": ["one", "two"]}),
    )
    .await;
    let first = first["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &first, "failed").await;
    assert_eq!(s.fast.started.load(ordering), 2);
    // Hold the only slot, so the repair waits in the queue, and cancel it there.
    let (_, blocker) = submit(&s.base, json!({"input": "x", "agents": ["slow"]})).await;
    let blocker = blocker["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &blocker, "running").await;
    let mend = |id: String| {
        let base = s.base.clone();
        async move {
            repair(&base, &id).await.1["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let cancel = |id: String| client().delete(format!("{}/v1/runs/{id}", s.base)).send();
    let queued = mend(first.clone()).await;
    assert_eq!(cancel(queued.clone()).await.unwrap().status().as_u16(), 200);
    let again = mend(queued).await;
    cancel(blocker).await.unwrap();
    until_status(&s.base, &again, "failed").await;
    assert_eq!(
        s.fast.started.load(ordering),
        2,
        "the first run's answers were reused through the cancelled repair"
    );
    s.stop().await;
}
