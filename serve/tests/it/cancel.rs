//! Cancelling runs: DELETE /v1/runs/{id} on a queued or running run.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

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
async fn regression_a_cancelled_run_kept_no_report() {
    // Cancelling threw the run's report away: what its ended branches had answered
    // (and cost) was gone. Now `fast` keeps its answer and `slow` says it was stopped.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            slow: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .await;
    let body = json!({"input": "x", "agents": ["fast", "slow"], "merge": "none"});
    let (_, run) = submit(&s.base, body).await;
    let id = run["id"].as_str().unwrap();
    let n: i64 = id.trim_start_matches("run-").parse().unwrap();
    loop {
        let finished = s
            .journal
            .events_of_kind(n, "branch_finished")
            .await
            .unwrap();
        if !finished.is_empty() && s.slow.started.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r: Value = client()
        .delete(format!("{}/v1/runs/{id}", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["status"], "cancelled");
    let run = get(&s.base, id).await;
    assert_eq!(run["status"], "cancelled");
    let branches = run["report"]["branches"].as_array().expect("a report");
    assert_eq!(branches[0]["outcome"]["status"], "ok", "{}", branches[0]);
    assert_eq!(
        branches[1]["outcome"]["status"], "cancelled",
        "{}",
        branches[1]
    );
    assert_eq!(branches[1]["outcome"]["reason"]["kind"], "stopped");
    let kinds: Vec<String> = events(&s.base, id, None)
        .await
        .into_iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "branch_finished").count(),
        2,
        "the cancelled branch's end is journaled too: {kinds:?}"
    );
    assert_eq!(kinds.last().map(String::as_str), Some("done"));
    s.stop().await;
}

/// Sends `request` whole on a new connection and closes it at once, resetting it
/// (the client went away before the answer).
async fn send_and_leave(base: &str, request: String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    stream.set_zero_linger().unwrap();
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_client_that_leaves_mid_request_strands_no_run() {
    // A client that disconnected after sending its POST or DELETE dropped the handler
    // halfway: runs stayed `queued` with nothing to start them, a withdrawn run was
    // resumed at the next start, a running one could no longer be cancelled.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_running: 2,
            max_queued: 256,
            ..Options::default()
        },
    )
    .await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let body = json!({"input": "x", "agents": ["fast"], "merge": "none"}).to_string();
    let post = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..100 {
        send_and_leave(&s.base, post.clone()).await;
    }
    // Cancels that leave too, on whatever the list holds now.
    let listed = get_json(format!("{}/v1/runs?limit=100", s.base)).await;
    for run in listed["runs"].as_array().unwrap().iter().take(30) {
        let id = run["id"].as_str().unwrap();
        let delete = format!("DELETE /v1/runs/{id} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        send_and_leave(&s.base, delete).await;
    }
    // Every run the journal took ends: none is left queued or running.
    let mut open = Vec::new();
    for _ in 0..300 {
        let listed = get_json(format!("{}/v1/runs?limit=200", s.base)).await;
        open = listed["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| matches!(r["status"].as_str(), Some("queued" | "running")))
            .map(|r| r["id"].clone())
            .collect();
        if open.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open.is_empty(), "stranded: {open:?}");
    s.stop().await;
}
