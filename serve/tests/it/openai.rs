//! The OpenAI-compatible endpoint against what the probe did to it: a workflow with
//! no merge answered 500 after running whole; a client that left kept its run
//! running; the official client's retries started a new run each time.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Posts `body` to the chat endpoint.
async fn chat(base: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{base}/v1/chat/completions"))
        .json(body)
        .send()
        .await
        .unwrap()
}

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "the plan"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_workflow_with_no_merge_answers_with_its_last_step() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    for stream in [false, true] {
        let mut body = ask("fanfare/chain");
        body["stream"] = json!(stream);
        let r = chat(&s.base, &body).await;
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().await.unwrap();
        // `slow` read what `fast` answered: the last step's output is the answer.
        assert!(text.contains("slow read: fast read: the plan"), "{text}");
        assert!(!text.contains("no merged answer"), "{text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_retry_with_the_same_idempotency_key_answers_from_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let call = || {
        client()
            .post(format!("{}/v1/chat/completions", s.base))
            .header("Idempotency-Key", "chat-7")
            .json(&ask("fanfare/pair"))
            .send()
    };
    let (a, b) = tokio::join!(call(), call());
    let (a, b): (Value, Value) = (
        a.unwrap().json().await.unwrap(),
        b.unwrap().json().await.unwrap(),
    );
    assert_eq!(a["id"], b["id"], "{a} {b}");
    let runs = get_json(format!("{}/v1/runs", s.base)).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(s.fast.started.load(Ordering::SeqCst), 1);
    s.stop().await;
}

/// Sends a chat call over a raw connection, waits until its run is running, and
/// closes the connection before the answer; returns the run's id.
async fn leave_early(s: &Running, extra: &str) -> String {
    let body = serde_json::to_string(&ask("fanfare/pair")).unwrap();
    let addr = s.base.trim_start_matches("http://").to_owned();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut socket = std::net::TcpStream::connect(&addr).unwrap();
    socket.write_all(request.as_bytes()).unwrap();
    let id = loop {
        let runs = get_json(format!("{}/v1/runs?status=running", s.base)).await;
        if let Some(id) = runs["runs"][0]["id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(socket);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_client_that_leaves_cancels_its_run_unless_it_means_to_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::held()).await;
    let gone = leave_early(&s, "").await;
    until_status(&s.base, &gone, "cancelled").await;
    // With an Idempotency-Key (or X-Fanfare-Keep-Running), the run goes on.
    for header in [
        "Idempotency-Key: k-1\r\n",
        "X-Fanfare-Keep-Running: true\r\n",
    ] {
        let kept = leave_early(&s, header).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(get(&s.base, &kept).await["status"], "running", "{header}");
        client()
            .delete(format!("{}/v1/runs/{kept}", s.base))
            .send()
            .await
            .unwrap();
        until_status(&s.base, &kept, "cancelled").await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_failed_run_is_a_424_the_clients_do_not_retry() {
    // It answered 500, which the official clients retry twice: each retry a paid run.
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    for stream in [false, true] {
        let body = json!({
            "model": "fanfare/pair",
            "stream": stream,
            "messages": [{"role": "user", "content": "PLEASE FAIL"}],
        });
        let r = chat(&s.base, &body).await;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        if stream {
            // The status went out with the first chunk: the error says it.
            assert!(text.contains("\"code\":424"), "{text}");
        } else {
            assert_eq!(status, 424, "{text}");
        }
        assert!(text.contains("has no merged answer"), "{text}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_what_a_workflow_cannot_do_is_refused_not_ignored() {
    // `n: 1000000`, tools, a response format, `temperature: "hot"` and a message
    // with no text were all answered 200 with one plain choice (a paid run).
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let base = ask("fanfare/pair");
    let with = |key: &str, value: Value| {
        let mut b = base.clone();
        b[key] = value;
        b
    };
    let cases = [
        (with("n", json!(1_000_000)), "n"),
        (
            with(
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            "tools",
        ),
        (with("tool_choice", json!("required")), "tool_choice"),
        (
            with("response_format", json!({"type": "json_object"})),
            "response_format",
        ),
        (with("temperature", json!("hot")), "temperature"),
        (with("max_tokens", json!(-5)), "max_tokens"),
        // The seventh probe: `max_tokens: 5` was answered with 424 tokens. A cap is
        // kept by an LLM merge; `pair` merges by code, so it cannot be kept.
        (with("max_tokens", json!(5)), "max_tokens"),
        (with("max_completion_tokens", json!(0)), "max_tokens"),
        (
            with(
                "messages",
                json!([{"role": "tool", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]),
            ),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let r = chat(&s.base, &body).await;
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
    }
    // Accepted as they are: one choice, no tools.
    for body in [
        with("n", json!(1)),
        with("tool_choice", json!("none")),
        with("temperature", json!(0.2)),
    ] {
        let r = chat(&s.base, &body).await;
        assert_eq!(r.status().as_u16(), 200, "{body}");
    }
    assert_eq!(
        s.fast.started.load(Ordering::SeqCst),
        3,
        "only the accepted ones ran"
    );
    s.stop().await;
}
