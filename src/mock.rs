//! `fanfare mock-llm`: a local HTTP server that speaks both the Anthropic Messages
//! and the OpenAI Chat Completions wire formats, streaming included, with injectable
//! latency, errors, 429s, hangs and garbage. Tests, examples and benchmarks use it.
//!
//! Text is deterministic (a function of the prompt); usage is realistic (about four
//! tokens per three words). `GET /stats` reports requests, in-flight and peak
//! in-flight counts, responses by status, and requests the client abandoned.
//!
//! [`serve`] takes its listener and a shutdown future, so tests bind `127.0.0.1:0`
//! and the binary passes Ctrl-C.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::provider::estimate_tokens;

/// What the mock server does.
#[derive(Clone, Debug, PartialEq)]
pub struct MockConfig {
    /// Fixed latency before answering (spread over the stream when streaming).
    pub latency: Duration,
    /// Uniform extra latency in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability of an HTTP 500.
    pub error_rate: f64,
    /// Probability of an HTTP 429 with `retry-after`.
    pub rate_429: f64,
    /// Above this many requests in flight, answer 429 (`None`: no limit).
    pub max_concurrency: Option<usize>,
    /// Probability of never answering (until the client gives up).
    pub hang_rate: f64,
    /// Probability of a 200 whose body is not JSON.
    pub garbage_rate: f64,
    /// The wait suggested with each 429 (`retry-after-ms`, and `retry-after` in
    /// whole seconds, rounded up).
    pub retry_after: Duration,
    /// When set, requests must carry this key (`x-api-key` or a bearer token).
    pub require_key: Option<String>,
    /// Seed of the fault rolls and jitter.
    pub seed: u64,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(200),
            jitter: Duration::ZERO,
            error_rate: 0.0,
            rate_429: 0.0,
            max_concurrency: None,
            hang_rate: 0.0,
            garbage_rate: 0.0,
            retry_after: Duration::from_millis(200),
            require_key: None,
            seed: 0,
        }
    }
}

/// Counters served at `GET /stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MockStats {
    /// Completion requests received.
    pub requests: u64,
    /// Requests being handled now.
    pub in_flight: u64,
    /// The most ever in flight at once.
    pub max_in_flight: u64,
    /// Requests whose client went away before the answer was complete.
    pub aborted: u64,
    /// Responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
}

struct Shared {
    config: MockConfig,
    counter: AtomicU64,
    in_flight: AtomicU64,
    stats: Mutex<MockStats>,
}

impl Shared {
    fn count_status(&self, status: u16) {
        if let Ok(mut s) = self.stats.lock() {
            *s.by_status.entry(status).or_default() += 1;
        }
    }
}

/// Tracks one request in flight; counts an abort if dropped before `finish`.
struct InFlight {
    shared: Arc<Shared>,
    finished: bool,
}

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> (Self, u64) {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        if let Ok(mut s) = shared.stats.lock() {
            s.requests += 1;
            s.max_in_flight = s.max_in_flight.max(now);
        }
        (
            Self {
                shared: shared.clone(),
                finished: false,
            },
            now,
        )
    }

    fn finish(mut self, status: u16) {
        self.finished = true;
        self.shared.count_status(status);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.finished {
            if let Ok(mut s) = self.shared.stats.lock() {
                s.aborted += 1;
            }
        }
    }
}

/// A running mock server (for tests): its address, its stats, and a stop switch.
pub struct MockServer {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Binds `127.0.0.1:0` and serves `config` in the background.
    pub async fn start(config: MockConfig) -> std::io::Result<Self> {
        // A deep accept queue: benchmarks open thousands of connections at once, and a
        // dropped SYN costs the client a one-second retransmit.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            counter: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            stats: Mutex::default(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task,
        })
    }

    /// `http://127.0.0.1:PORT` (the Anthropic base URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counters so far.
    pub fn stats(&self) -> MockStats {
        snapshot(&self.shared)
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `config` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        config,
        counter: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        stats: Mutex::default(),
    });
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

fn snapshot(shared: &Shared) -> MockStats {
    let mut s = shared.stats.lock().map(|s| s.clone()).unwrap_or_default();
    s.in_flight = shared.in_flight.load(Ordering::SeqCst);
    s
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(anthropic))
        .route("/v1/chat/completions", post(openai))
        .route("/chat/completions", post(openai))
        .route("/stats", get(stats))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "owned_by": "fanfare"}]})) }),
        )
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(snapshot(&shared))
}

#[derive(Clone, Copy, PartialEq)]
enum Wire {
    Anthropic,
    OpenAi,
}

fn error_body(wire: Wire, kind: &str, message: &str) -> Value {
    match wire {
        Wire::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
        Wire::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Text of a message's `content`: a string, or an array of `{type: text, text}` blocks.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

const WORDS: &[&str] = &[
    "the",
    "risk",
    "is",
    "that",
    "volume",
    "grows",
    "faster",
    "than",
    "controls",
    "so",
    "measure",
    "first",
    "then",
    "decide",
    "logs",
    "should",
    "hold",
    "less",
    "data",
    "and",
    "expire",
    "sooner",
    "costs",
    "scale",
    "with",
    "retention",
    "while",
    "value",
    "does",
    "not",
];

/// A deterministic reply: `n` words chosen by hashing the prompt.
fn reply_text(prompt: &str, max_tokens: u64) -> String {
    let h = prompt.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let n = (24 + h % 16).min(max_tokens.saturating_mul(3) / 4).max(1);
    let mut words: Vec<&str> = (0..n)
        .map(|i| WORDS[(mix(h, i) % WORDS.len() as u64) as usize])
        .collect();
    if let Some(first) = words.first_mut() {
        *first = "Mock";
    }
    format!("{}.", words.join(" "))
}

struct Parsed {
    model: String,
    max_tokens: u64,
    stream: bool,
    include_usage: bool,
    prompt: String,
    input_tokens: u64,
}

fn parse(wire: Wire, body: &str) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let model = v
        .get("model")
        .and_then(Value::as_str)
        .ok_or("missing field `model`")?
        .to_owned();
    let messages = v
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("missing field `messages`")?;
    if messages.is_empty() {
        return Err("`messages` must not be empty".to_owned());
    }
    let max_tokens = match wire {
        Wire::Anthropic => v
            .get("max_tokens")
            .and_then(Value::as_u64)
            .ok_or("missing field `max_tokens`")?,
        Wire::OpenAi => v
            .get("max_completion_tokens")
            .or_else(|| v.get("max_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(256),
    };
    let system = match v.get("system") {
        Some(s) => content_text(s),
        None => String::new(),
    };
    let all: Vec<String> = messages
        .iter()
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .collect();
    let prompt = all.last().cloned().unwrap_or_default();
    let input_tokens =
        estimate_tokens(&system) + all.iter().map(|t| estimate_tokens(t)).sum::<u64>() + 3;
    Ok(Parsed {
        model,
        max_tokens,
        stream: v.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: v
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        prompt,
        input_tokens,
    })
}

fn authorised(config: &MockConfig, headers: &HeaderMap) -> bool {
    let Some(key) = &config.require_key else {
        return true;
    };
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    header("x-api-key") == key
        || header("authorization").strip_prefix("Bearer ") == Some(key.as_str())
}

async fn anthropic(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    handle(shared, Wire::Anthropic, headers, body).await
}

async fn openai(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    handle(shared, Wire::OpenAi, headers, body).await
}

async fn handle(shared: Arc<Shared>, wire: Wire, headers: HeaderMap, body: String) -> Response {
    let (guard, in_flight) = InFlight::enter(&shared);
    let config = &shared.config;
    let n = shared.counter.fetch_add(1, Ordering::SeqCst);
    let key = mix(config.seed, n);
    let reply = |guard: InFlight, status: StatusCode, body: Value| {
        guard.finish(status.as_u16());
        (status, Json(body)).into_response()
    };
    if !authorised(config, &headers) {
        let body = error_body(wire, "authentication_error", "invalid or missing API key");
        return reply(guard, StatusCode::UNAUTHORIZED, body);
    }
    let parsed = match parse(wire, &body) {
        Ok(p) => p,
        Err(message) => {
            return reply(
                guard,
                StatusCode::BAD_REQUEST,
                error_body(wire, "invalid_request_error", &message),
            );
        }
    };
    let over_limit = config
        .max_concurrency
        .is_some_and(|max| in_flight > max as u64);
    if over_limit || unit(mix(key, 1)) < config.rate_429 {
        let why = if over_limit {
            "too many requests in flight"
        } else {
            "rate limit (injected)"
        };
        let mut response = reply(
            guard,
            StatusCode::TOO_MANY_REQUESTS,
            error_body(wire, "rate_limit_error", why),
        );
        let ms = config.retry_after.as_millis() as u64;
        let h = response.headers_mut();
        h.insert("retry-after-ms", HeaderValue::from(ms));
        h.insert("retry-after", HeaderValue::from(ms.div_ceil(1000)));
        return response;
    }
    if unit(mix(key, 2)) < config.error_rate {
        return reply(
            guard,
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body(wire, "api_error", "internal error (injected)"),
        );
    }
    if unit(mix(key, 3)) < config.hang_rate {
        // Never answer; the client's timeout or cancellation ends this (counted as aborted).
        std::future::pending::<()>().await;
    }
    let jitter_nanos = config.jitter.as_nanos() as u64;
    let jitter = if jitter_nanos == 0 {
        0
    } else {
        mix(key, 4) % (jitter_nanos + 1)
    };
    let latency = config.latency + Duration::from_nanos(jitter);
    if unit(mix(key, 5)) < config.garbage_rate {
        tokio::time::sleep(latency).await;
        guard.finish(200);
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            "<html>this is not json {",
        )
            .into_response();
    }
    let text = reply_text(&parsed.prompt, parsed.max_tokens);
    if parsed.stream {
        return stream(guard, wire, parsed, text, latency, n);
    }
    tokio::time::sleep(latency).await;
    let output_tokens = estimate_tokens(&text);
    let body = match wire {
        Wire::Anthropic => json!({
            "id": format!("msg_mock_{n}"), "type": "message", "role": "assistant", "model": parsed.model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": parsed.input_tokens, "output_tokens": output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        }),
        Wire::OpenAi => json!({
            "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": unix_now(),
            "model": parsed.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": parsed.input_tokens, "completion_tokens": output_tokens,
                      "total_tokens": parsed.input_tokens + output_tokens}
        }),
    };
    reply(guard, StatusCode::OK, body)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds the SSE events of a streamed answer, the latency spread over the deltas.
fn stream(
    guard: InFlight,
    wire: Wire,
    p: Parsed,
    text: String,
    latency: Duration,
    n: u64,
) -> Response {
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    let chunks: Vec<String> = words
        .chunks(words.len().div_ceil(4).max(1))
        .map(|c| c.concat())
        .collect();
    let pause = latency / (chunks.len() as u32 + 1);
    let output_tokens = estimate_tokens(&text);
    let mut events: Vec<Event> = Vec::new();
    let data = |name: Option<&str>, v: Value| {
        let e = Event::default().data(v.to_string());
        match name {
            Some(n) => e.event(n),
            None => e,
        }
    };
    let id = format!("mock-{n}");
    match wire {
        Wire::Anthropic => {
            events.push(data(Some("message_start"), json!({"type": "message_start", "message": {
                "id": format!("msg_{id}"), "type": "message", "role": "assistant", "model": p.model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": p.input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})));
            events.push(data(Some("content_block_start"), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            events.push(data(Some("ping"), json!({"type": "ping"})));
            for c in &chunks {
                events.push(data(Some("content_block_delta"), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": c}})));
            }
            events.push(data(
                Some("content_block_stop"),
                json!({"type": "content_block_stop", "index": 0}),
            ));
            events.push(data(Some("message_delta"), json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": output_tokens}})));
            events.push(data(Some("message_stop"), json!({"type": "message_stop"})));
        }
        Wire::OpenAi => {
            let created = unix_now();
            let chunk = |delta: Value, finish: Value| {
                json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": p.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            events.push(data(
                None,
                chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            ));
            for c in &chunks {
                events.push(data(None, chunk(json!({"content": c}), Value::Null)));
            }
            events.push(data(None, chunk(json!({}), json!("stop"))));
            if p.include_usage {
                events.push(data(None, json!({"id": format!("chatcmpl-{id}"), "object": "chat.completion.chunk", "created": created, "model": p.model, "choices": [],
                    "usage": {"prompt_tokens": p.input_tokens, "completion_tokens": output_tokens, "total_tokens": p.input_tokens + output_tokens}})));
            }
            events.push(Event::default().data("[DONE]"));
        }
    }
    // The guard rides along with the stream: a client that hangs up mid-stream drops
    // it unfinished, which counts as an abort.
    let total = events.len();
    let body = futures::stream::unfold(
        (events.into_iter().enumerate(), Some(guard)),
        move |(mut it, mut guard)| async move {
            let (i, event) = it.next()?;
            if i > 0 && i <= chunks_len(total) {
                tokio::time::sleep(pause).await;
            }
            if i + 1 == total {
                if let Some(g) = guard.take() {
                    g.finish(200);
                }
            }
            Some((Ok::<_, Infallible>(event), (it, guard)))
        },
    );
    Sse::new(body).into_response()
}

/// The pause applies between the first and the last events (where the text is).
fn chunks_len(total: usize) -> usize {
    total.saturating_sub(1)
}
