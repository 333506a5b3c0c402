//! The runs API, the event streams, the OpenAI-compatible face and /metrics.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::{SimConfig, SimProvider};
use fanfare::Fanfare;
use fanfare_serve::{Catalog, ServeConfig, Server};
use serde_json::{json, Value};

use crate::common::*;

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
    // Every event carries its kind and run, the status and done ones too (they
    // lacked both), and the merge's result reads `text`, not Rust's `Ok`.
    for (_, kind, data) in &all {
        assert_eq!(
            (data["event"].as_str(), data["run"].as_str()),
            (Some(kind.as_str()), Some(id.as_str())),
            "{data}"
        );
    }
    let merged = all.iter().find(|e| e.1 == "synthesis_finished").unwrap();
    assert!(merged.2["result"]["text"].is_string(), "{}", merged.2);
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
    assert_eq!(
        run["report"]["run_id"],
        id.as_str(),
        "the report names its run as the API does"
    );
    assert_eq!(run["report"]["branches"].as_array().unwrap().len(), 2);
    assert_eq!(run["request"]["agents"], json!(["fast", "slow"]));
    let list: Value = get_json(format!("{}/v1/runs?status=succeeded", s.base)).await;
    assert_eq!(list["runs"][0]["id"], id.as_str());
    // The list says what each run was asked and how it went, from its report.
    let listed = &list["runs"][0];
    assert_eq!(listed["input_head"], "the plan");
    assert_eq!(
        listed["workflow"],
        Value::Null,
        "a fan-out names no workflow"
    );
    assert_eq!(
        (listed["branches"].as_i64(), listed["branches_ok"].as_i64()),
        (Some(2), Some(2))
    );
    let wall = run["report"]["wall_s"].as_f64().unwrap();
    assert!(
        (listed["wall_s"].as_f64().unwrap() - wall).abs() < 0.001,
        "{listed}"
    );
    assert_eq!(
        listed["tokens"].as_u64(),
        Some(
            run["report"]["totals"]["usage"]["input_tokens"]
                .as_u64()
                .unwrap()
                + run["report"]["totals"]["usage"]["output_tokens"]
                    .as_u64()
                    .unwrap()
        )
    );
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
        "fanfare_branch_duration_seconds_count{step=\"fast\",outcome=\"ok\"} 1",
        "fanfare_branch_duration_seconds_count{step=\"slow\",outcome=\"ok\"} 1",
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
    // Regression: an impossible quorum was reported under `workflow`.
    let (code, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["fast"], "policy": "partial:99999"}),
    )
    .await;
    assert_eq!(
        (code, body["error"]["field"].as_str()),
        (422, Some("policy")),
        "{body}"
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
        .header("Content-Type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 0, "nothing ran");
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
    assert_eq!(branches[0]["reused"], "before_resume", "{}", branches[0]);
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
    let models: Value = get_json(format!("{}/v1/models", s.base)).await;
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
    let list: Value = get_json(format!("{}/v1/runs", s.base)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reconnects_mid_run_with_last_event_id_gets_every_event_exactly_once() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            slow: Duration::from_millis(300),
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
    // Read until the fast branch has finished, then hang up.
    let response = client()
        .get(format!("{}/v1/runs/{id}/events", s.base))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut first = String::new();
    while !first.contains("event: branch_finished") {
        first.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    // Keep only whole events; the rest is read again after reconnecting.
    let whole = &first[..first.rfind("\n\n").unwrap() + 2];
    let seen: Vec<i64> = whole
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    let last = seen.last().unwrap().to_string();
    let rest = events(&s.base, &id, Some(&last)).await;
    let mut ids = seen.clone();
    ids.extend(rest.iter().map(|(i, _, _)| i.parse::<i64>().unwrap()));
    let all = events(&s.base, &id, None).await;
    let expected: Vec<i64> = (1..=all.len() as i64).collect();
    assert_eq!(ids, expected, "every event once, in order");
    assert_eq!(rest.last().unwrap().1, "done");
    assert!(!rest.is_empty() && seen.len() >= 3);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_journal_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let first = start(&db, Options::default()).await;
    let fanfare = Fanfare::builder(Arc::new(SimProvider::new(SimConfig::default())))
        .start()
        .await
        .unwrap();
    let mut config = ServeConfig::new(&db);
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let e = Server::start(fanfare.clone(), Catalog::default(), config.clone())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("in use by another fanfare serve"),
        "{e}"
    );
    // Regression: the lock was on `<db>.lock`, by name, so a link to the journal
    // started a second server and every run was billed twice.
    let hard = dir.path().join("hard.db");
    std::fs::hard_link(&db, &hard).unwrap();
    let soft = dir.path().join("soft.db");
    std::os::unix::fs::symlink(&db, &soft).unwrap();
    for link in [&hard, &soft] {
        let mut linked = config.clone();
        linked.db = link.clone();
        let e = Server::start(fanfare.clone(), Catalog::default(), linked)
            .await
            .err()
            .unwrap_or_else(|| panic!("a second server started on {}", link.display()));
        assert!(
            e.to_string().contains("in use by another fanfare serve"),
            "{e}"
        );
    }
    first.stop().await;
    let second = Server::start(fanfare.clone(), Catalog::default(), config).await;
    assert!(second.is_ok(), "{:?}", second.err());
    drop(second);
    fanfare.shutdown().await;
}
