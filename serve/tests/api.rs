//! The runs API against a real server on 127.0.0.1:0, with in-process agents whose
//! calls can be held, counted and seen to be aborted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::{Agent, AgentContext, AgentOutput, AgentReply, Task};
use fanfare::provider::{SimConfig, SimProvider};
use fanfare::Fanfare;
use fanfare_serve::{Catalog, ServeConfig, Server, Stopped, Token};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Counts of one agent's calls.
#[derive(Clone, Default)]
struct Calls {
    started: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
    aborted: Arc<AtomicUsize>,
}

/// Answers its input after `delay`; counts calls, and calls dropped unfinished.
struct Held {
    name: &'static str,
    delay: Duration,
    calls: Calls,
}

struct AbortGuard(Option<Arc<AtomicUsize>>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Agent for Held {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        self.calls.started.fetch_add(1, Ordering::SeqCst);
        let mut guard = AbortGuard(Some(self.calls.aborted.clone()));
        // Whoever watches sees the answer come in two pieces, the delay between.
        let send = |text: String| {
            if let Some(sink) = &task.deltas {
                sink.send(fanfare::provider::Delta::Text(text));
            }
        };
        send(format!("{} read: ", self.name));
        tokio::time::sleep(self.delay).await;
        send(task.input.clone());
        guard.0 = None;
        self.calls.finished.fetch_add(1, Ordering::SeqCst);
        Ok(AgentOutput::text(format!(
            "{} read: {}",
            self.name, task.input
        )))
    }
}

/// A workflow `pair`: both agents, merged by code; written beside the journal.
fn pair_workflow(db: &Path) -> fanfare::run::workflow::Workflow {
    let path = db.with_file_name("pair.toml");
    std::fs::write(
        &path,
        "name = \"pair\"\ndescription = \"both, merged by code\"\nmerge = \"code\"\n\
         [[steps]]\nname = \"fast\"\nagent = \"fast\"\n[[steps]]\nname = \"slow\"\nagent = \"slow\"\n",
    )
    .unwrap();
    fanfare::run::workflow::Workflow::load(&path).unwrap()
}

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Stopped>,
    fast: Calls,
    slow: Calls,
}

impl Running {
    async fn stop(mut self) -> Stopped {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await.unwrap()
    }
}

struct Options {
    max_running: usize,
    max_queued: usize,
    slow: Duration,
    token: Option<&'static str>,
    drain: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_running: 4,
            max_queued: 16,
            slow: Duration::from_millis(50),
            token: None,
            drain: Duration::from_secs(5),
        }
    }
}

async fn start(db: &Path, o: Options) -> Running {
    let fast = Calls::default();
    let slow = Calls::default();
    let fanfare = Fanfare::builder(Arc::new(SimProvider::new(SimConfig::default())))
        .agent(Held {
            name: "fast",
            delay: Duration::from_millis(1),
            calls: fast.clone(),
        })
        .agent(Held {
            name: "slow",
            delay: o.slow,
            calls: slow.clone(),
        })
        .start()
        .await
        .unwrap();
    let catalog = Catalog {
        workflows: vec![pair_workflow(db)],
        agents: fanfare.agents(),
    };
    let mut config = ServeConfig::new(db);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.max_running = o.max_running;
    config.max_queued = o.max_queued;
    config.token = o.token.and_then(Token::new);
    config.drain = o.drain;
    config.body_limit = 4096;
    let server = Server::start(fanfare, catalog, config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });
    Running {
        base,
        stop: Some(stop),
        task,
        fast,
        slow,
    }
}

fn client() -> reqwest::Client {
    // The workspace builds reqwest without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn submit(base: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("{base}/v1/runs"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn get(base: &str, id: &str) -> Value {
    client()
        .get(format!("{base}/v1/runs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Waits (real time, bounded) until run `id` has status `want`.
async fn until_status(base: &str, id: &str, want: &str) -> Value {
    for _ in 0..500 {
        let run = get(base, id).await;
        if run["status"] == want {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {id} never became {want}: {}", get(base, id).await);
}

/// The events of a run's stream, read to its end, as (id, kind, data).
async fn events(base: &str, id: &str, last: Option<&str>) -> Vec<(String, String, Value)> {
    let mut request = client().get(format!("{base}/v1/runs/{id}/events"));
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or("")
                    .to_owned()
            };
            (
                field("id"),
                field("event"),
                serde_json::from_str(&field("data")).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// Reads run `id`'s event stream until `text` appears in it.
async fn until_streamed(base: &str, id: &str, text: &str) {
    use futures::StreamExt as _;
    let response = client()
        .get(format!("{base}/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if seen.contains(text) {
            return;
        }
    }
    panic!("the stream of {id} ended without `{text}`: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitted_run_streams_its_branches_then_done_and_keeps_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (code, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "code"}),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let id = body["id"].as_str().unwrap().to_owned();
    let all = events(&s.base, &id, None).await;
    let kinds: Vec<&str> = all.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"status"));
    assert_eq!(kinds.last(), Some(&"done"), "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "branch_started").count(), 2);
    assert_eq!(kinds.iter().filter(|k| **k == "branch_finished").count(), 2);
    let ids: Vec<String> = all.iter().map(|(i, _, _)| i.clone()).collect();
    let expected: Vec<String> = (1..=all.len()).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected, "events are numbered from 1 without gaps");
    let branch = &all
        .iter()
        .find(|(_, k, _)| k == "branch_finished")
        .unwrap()
        .2;
    assert_eq!(branch["run"], id.as_str());
    // Reconnecting after event 2 gives exactly the rest.
    let rest = events(&s.base, &id, Some("2")).await;
    assert_eq!(rest.len(), all.len() - 2);
    assert_eq!(rest[0].0, "3");
    let run = get(&s.base, &id).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["report"]["status"], "succeeded");
    assert_eq!(run["report"]["branches"].as_array().unwrap().len(), 2);
    assert_eq!(run["request"]["agents"], json!(["fast", "slow"]));
    let list: Value = client()
        .get(format!("{}/v1/runs?status=succeeded", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["runs"][0]["id"], id.as_str());
    let metrics = client()
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "fanfare_runs{status=\"succeeded\"} 1",
        "fanfare_branch_duration_seconds_count{agent=\"fast\",outcome=\"ok\"} 1",
        "fanfare_branch_duration_seconds_count{agent=\"slow\",outcome=\"ok\"} 1",
        "fanfare_runs_in_progress 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_returns_the_first_run_and_refuses_a_different_body() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let send = |body: Value| {
        client()
            .post(format!("{}/v1/runs", s.base))
            .header("Idempotency-Key", "order-7")
            .json(&body)
            .send()
    };
    let body = json!({"input": "x", "agents": ["fast"], "merge": "none"});
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status().as_u16(), 202);
    let first: Value = first.json().await.unwrap();
    let again = send(body).await.unwrap();
    assert_eq!(again.status().as_u16(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first["id"], again["id"]);
    let other = send(json!({"input": "y", "agents": ["fast"]}))
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 422);
    let other: Value = other.json().await.unwrap();
    assert!(other["error"]["message"]
        .as_str()
        .unwrap()
        .contains("different request"));
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 1, "billed once");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (code, body) = submit(&s.base, json!({"input": "x", "agents": ["fast", "nobody"]})).await;
    assert_eq!(code, 422);
    assert_eq!(body["error"]["field"], "agents[1]");
    let (code, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["fast"], "deadline": "soon"}),
    )
    .await;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("deadline"))
    );
    let big = "x".repeat(10_000);
    let (code, body) = submit(&s.base, json!({"input": big, "agents": ["fast"]})).await;
    assert_eq!(code, 413, "{body}");
    assert!(body["error"]["message"].is_string());
    let r = client()
        .get(format!("{}/v1/runs/run-99", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client()
        .get(format!("{}/v1/runs/banana", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let r = client()
        .get(format!("{}/v1/runs?limit=0", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = client()
        .post(format!("{}/v1/runs", s.base))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 0, "nothing ran");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_queue_a_submission_is_shed_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_running: 1,
            max_queued: 1,
            slow: Duration::from_secs(30),
            drain: Duration::ZERO,
            ..Options::default()
        },
    )
    .await;
    let body = json!({"input": "x", "agents": ["slow"], "merge": "none"});
    assert_eq!(submit(&s.base, body.clone()).await.0, 202);
    assert_eq!(submit(&s.base, body.clone()).await.0, 202);
    let r = client()
        .post(format!("{}/v1/runs", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let list: Value = client()
        .get(format!("{}/v1/runs", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        2,
        "a shed run leaves no row"
    );
    let stopped = s.stop().await;
    assert_eq!(stopped.interrupted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_run_aborts_its_calls_and_a_queued_one_never_starts() {
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
    let body = json!({"input": "x", "agents": ["slow"], "merge": "none"});
    let (_, first) = submit(&s.base, body.clone()).await;
    let (_, second) = submit(&s.base, body).await;
    let (first, second) = (
        first["id"].as_str().unwrap(),
        second["id"].as_str().unwrap(),
    );
    until_status(&s.base, first, "running").await;
    while s.slow.started.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancel = |id: String| client().delete(format!("{}/v1/runs/{id}", s.base)).send();
    let r: Value = cancel(second.to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "cancelled");
    let r: Value = cancel(first.to_owned())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "cancelled");
    for _ in 0..200 {
        if s.slow.aborted.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        s.slow.aborted.load(Ordering::SeqCst),
        1,
        "the call was aborted"
    );
    assert_eq!(
        s.slow.started.load(Ordering::SeqCst),
        1,
        "the queued run never started"
    );
    let again = cancel(first.to_owned()).await.unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let kinds: Vec<String> = events(&s.base, first, None)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(kinds.last().map(String::as_str), Some("done"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_interrupted_by_shutdown_resumes_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let s = start(
        &db,
        Options {
            slow: Duration::from_secs(30),
            drain: Duration::from_millis(100),
            ..Options::default()
        },
    )
    .await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["fast", "slow"], "merge": "code"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    // Wait until the fast branch's end is in the journal (its event is streamed).
    until_streamed(&s.base, &id, "event: branch_finished").await;
    let stopped = s.stop().await;
    assert_eq!(stopped.interrupted, 1);
    // The next process takes it back and finishes it, without calling again the
    // branch that had answered.
    let s = start(&db, Options::default()).await;
    let run = until_status(&s.base, &id, "succeeded").await;
    let branches = run["report"]["branches"].as_array().unwrap();
    assert_eq!(branches.len(), 2);
    assert_eq!(branches[0]["reused"], true, "{}", branches[0]);
    assert!(branches[1].get("reused").is_none());
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 0, "not billed twice");
    assert_eq!(s.slow.started.load(Ordering::SeqCst), 1);
    let kinds: Vec<String> = events(&s.base, &id, None)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert!(
        kinds.iter().filter(|k| *k == "status").count() >= 4,
        "{kinds:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_run_route_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            token: Some("s3cret-token"),
            ..Options::default()
        },
    )
    .await;
    let r = client()
        .get(format!("{}/v1/runs", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(format!("{}/v1/runs", s.base))
        .bearer_auth("s3cret-tokeN")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(format!("{}/v1/runs", s.base))
        .bearer_auth("s3cret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn listening_beyond_loopback_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fanfare = Fanfare::builder(Arc::new(SimProvider::new(SimConfig::default())))
        .start()
        .await
        .unwrap();
    let mut config = ServeConfig::new(dir.path().join("j.db"));
    config.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let e = Server::start(fanfare.clone(), Catalog::default(), config)
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("without a bearer token"), "{e}");
    fanfare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_answers_as_an_openai_model_plain_and_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let models: Value = client()
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "fanfare/pair");
    let ask = |stream: bool| {
        client()
            .post(format!("{}/v1/chat/completions", s.base))
            .json(&json!({
                "model": "fanfare/pair", "stream": stream, "temperature": 0.3,
                "messages": [{"role": "user", "content": [{"type": "text", "text": "the plan"}]}],
            }))
            .send()
    };
    let plain: Value = ask(false).await.unwrap().json().await.unwrap();
    let answer = plain["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        answer.contains("fast read: the plan") && answer.contains("slow read: the plan"),
        "{answer}"
    );
    assert_eq!(plain["choices"][0]["finish_reason"], "stop");
    assert!(plain["id"].as_str().unwrap().starts_with("chatcmpl-run-"));
    let text = ask(true).await.unwrap().text().await.unwrap();
    let chunks: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(chunks.last(), Some(&"[DONE]"));
    let streamed: String = chunks[..chunks.len() - 1]
        .iter()
        .map(|c| serde_json::from_str::<Value>(c).unwrap())
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, answer);
    // Each call is a run like any other.
    let list: Value = client()
        .get(format!("{}/v1/runs", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["runs"].as_array().unwrap().len(), 2);
    let wrong = client()
        .post(format!("{}/v1/chat/completions", s.base))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 404);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(wrong["error"]["param"], "model");
    s.stop().await;
}

/// The page's DOM after headless Chromium has run its script for a while.
fn rendered(url: &str) -> String {
    let chromium = std::env::var("FANFARE_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {chromium}: {e}"));
    assert!(
        out.status.success(),
        "{chromium}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test api -- --ignored (CI runs it)"]
async fn the_live_page_draws_a_bar_per_branch_with_its_streamed_text_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            slow: Duration::from_secs(60),
            drain: Duration::ZERO,
            ..Options::default()
        },
    )
    .await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_streamed(&s.base, &id, "event: branch_finished").await;
    let url = format!("{}/#{id}", s.base);
    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    // The run is live: the fast branch is done, the slow one still running with the
    // first piece of its answer shown.
    assert!(
        dom.contains(r#"<div id="run" data-status="running">"#),
        "{dom}"
    );
    let fast = dom.split(r#"data-key="0""#).nth(1).unwrap();
    assert!(fast.starts_with(r#" data-outcome="ok">"#), "{fast}");
    assert!(
        fast.contains(r#"<div class="text">fast read: the plan</div>"#),
        "{fast}"
    );
    let slow = dom.split(r#"data-key="1""#).nth(1).unwrap();
    assert!(slow.starts_with(r#" data-outcome="running">"#), "{slow}");
    assert!(
        slow.contains(r#"<div class="text">slow read: </div>"#),
        "{slow}"
    );
    assert!(
        slow.contains(r#"class="bar" style="left: "#),
        "the bar is drawn: {slow}"
    );
    // The runs list shows it.
    assert!(dom.contains(&format!(r#"data-id="{id}""#)), "{dom}");
    s.stop().await;
}
