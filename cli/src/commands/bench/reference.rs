//! `bench fanout`'s reference: bare reqwest and a tokio `JoinSet` making the calls
//! fanfare's fan-out makes (the same bodies), then the merge call, with no actors, no
//! policies, no provider layer.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use fanfare::agent::spec::{AgentSpec, FAN_OUT_ASK};
use serde_json::json;

use super::measure::{cpu_seconds, Measured};

/// The body the bare client sends for one branch: the one fanfare's `anthropic`
/// wire sends for a fan-out branch (the task first, marked for caching, then the
/// specialist's instructions, then the ask; the specialist's temperature), so that
/// the mock does the same work for both clients and answers them the same words.
/// Until 2026-11-28 the bare client sent the instructions as the system prompt and
/// the task as the message, an older layout with a smaller body and other answers,
/// and neither it nor the provider-stack case sent the temperature.
fn reference_body(task: &str, model: &str, spec: &AgentSpec) -> serde_json::Value {
    let (system, temperature) = (spec.prompt.as_str(), spec.temperature);
    // Like the wire, an empty block is left out.
    let mut blocks = Vec::new();
    if !task.is_empty() {
        blocks.push(json!({"type": "text", "text": task, "cache_control": {"type": "ephemeral"}}));
    }
    if !system.is_empty() {
        blocks.push(json!({"type": "text", "text": system}));
    }
    let mut body = json!({"model": model, "max_tokens": spec.max_tokens, "system": blocks,
                          "messages": [{"role": "user", "content": FAN_OUT_ASK}]});
    if let Some(t) = temperature {
        // As the wire writes an `f32`: its shortest decimal (0.2, not 0.2000000029…).
        body["temperature"] = json!(t.to_string().parse::<f64>().unwrap_or(f64::from(t)));
    }
    body
}

/// `n` branches (branch `i` asks `specs[i % len]`, of `model`), at most
/// `concurrency` at once, then the merge.
pub(super) async fn reqwest_case(
    base_url: &str,
    task: &str,
    n: usize,
    concurrency: usize,
    specs: &[AgentSpec],
    model: &str,
) -> anyhow::Result<Measured> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/messages", base_url.trim_end_matches('/'));
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let (t0, cpu0) = (Instant::now(), cpu_seconds());
    let mut set = tokio::task::JoinSet::new();
    let task: Arc<str> = task.into();
    for i in 0..n {
        let (client, url, limit, task) = (client.clone(), url.clone(), limit.clone(), task.clone());
        let spec = specs[i % specs.len()].clone();
        let model = model.to_owned();
        set.spawn(async move {
            let _permit = limit.acquire_owned().await?;
            let body = reference_body(&task, &model, &spec);
            let r = client
                .post(&url)
                .header("x-api-key", "bench")
                .header("anthropic-version", "2023-06-01")
                .json(&body)
                .send()
                .await?;
            let v: serde_json::Value = r.json().await?;
            v.pointer("/content/0/text")
                .and_then(|t| t.as_str())
                .map(str::to_owned)
                .context("an answer with no text")
        });
    }
    let mut replies = Vec::with_capacity(n);
    let mut first_error = None;
    while let Some(r) = set.join_next().await {
        let reply = r.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = &reply {
            first_error.get_or_insert_with(|| format!("{e:#}"));
        }
        replies.push(reply.ok());
    }
    let fanned = t0.elapsed();
    if let Some(e) = first_error {
        eprintln!("fanfare bench: the bare client's calls failed, the first with: {e}");
    }
    let ok = replies.iter().filter(|r| r.is_some()).count();
    let merged: String = replies
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| format!("## {i}\n{t}\n"))
        .collect();
    let body = json!({"model": model, "max_tokens": 512, "system": "Merge these.",
                      "messages": [{"role": "user", "content": merged}]});
    // A client needs the merged text: read and parse the answer, as fanfare does
    // (until 2026-11-27 the reference stopped at the status line).
    let merged: serde_json::Value = client
        .post(&url)
        .header("x-api-key", "bench")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    anyhow::ensure!(
        merged.pointer("/content/0/text").is_some(),
        "the merge call answered no text"
    );
    let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
    if std::env::var_os("FANFARE_BENCH_DEBUG").is_some() {
        eprintln!(
            "n={n} (reqwest): last branch end {fanned:?}, merge {:?}, wall {:?}",
            wall - fanned,
            wall
        );
    }
    Ok((wall, cpu, ok, n - ok))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::fan_out_request;
    use crate::commands::bench::fanout::{agents, anthropic_stack};
    use crate::commands::bench::TASK;
    use fanfare::agent::{BranchId, RunId};
    use fanfare::{Agent as _, AgentContext, Task};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Answers one HTTP request on 127.0.0.1 with a one-word Messages answer and
    /// hands back the request's body.
    async fn capture_one(listener: tokio::net::TcpListener) -> serde_json::Value {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let body_at = loop {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the client closed before its request was whole");
            got.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&got);
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a request with a content-length");
            if got.len() >= end + 4 + length {
                break end + 4;
            }
        };
        let answer = r#"{"model":"bench-model","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        socket.write_all(reply.as_bytes()).await.unwrap();
        serde_json::from_slice(&got[body_at..]).unwrap()
    }

    /// A provider stack in front of a server on 127.0.0.1 that takes one request, and
    /// that request's body once `call` has made it through the stack.
    async fn body_sent<F, Fut>(call: F) -> serde_json::Value
    where
        F: FnOnce(std::sync::Arc<dyn fanfare::Provider>) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let captured = tokio::spawn(capture_one(listener));
        call(anthropic_stack(&url, 1).unwrap()).await;
        captured.await.unwrap()
    }

    /// The bare client and fanfare must ask the mock the same thing: when the layout
    /// of a fan-out's request changed (the task moved into a cached system block),
    /// the reference kept the old one and the mock did less work for it. Checked
    /// against what fanfare's own spec agent sends (the fanfare case) and what the
    /// provider-stack case sends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bare_client_sends_the_body_fanfare_sends() {
        let specs = agents(&fanfare_agents::perspectives().unwrap());
        let spec = &specs[1];
        let by_stack = body_sent(|stack| async move {
            stack
                .complete(fan_out_request(spec, TASK.into()))
                .await
                .unwrap();
        })
        .await;
        assert_eq!(by_stack, reference_body(TASK, "bench-model", spec));
        let by_agent = body_sent(|provider| async move {
            let task = Task {
                branch: BranchId {
                    run: RunId(1),
                    index: 1,
                    item: None,
                },
                input: TASK.into(),
                upstream: Vec::new().into(),
                model: None,
                templated: false,
                schema: None,
                allowance: None,
                tool_journal: None,
                approvals: None,
                replay: std::sync::Arc::new([]),
                tools_governed: false,
                depth: 0,
                delegator: None,
                meter: None,
                deadline: None,
                deltas: None,
            };
            spec.run(
                &AgentContext {
                    provider,
                    tools: Default::default(),
                },
                task,
            )
            .await
            .unwrap();
        })
        .await;
        assert_eq!(by_agent, reference_body(TASK, "bench-model", spec));
    }
}
