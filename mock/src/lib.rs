//! A local mock LLM server (`fanfare mock-llm`): an HTTP server that speaks both the Anthropic Messages
//! and the OpenAI Chat Completions wire formats, streaming included, with injectable
//! latency, errors, 429s, hangs and garbage. Tests, examples and benchmarks use it.
//!
//! Text is deterministic (a function of the prompt); usage is realistic (about four
//! tokens per three words). A request that offers tools gets a call of one (the one
//! `tool_choice` names, else the first), with arguments of its input schema's shape
//! (its required properties; a `default` or example where the schema gives one); a
//! request carrying a tool's result gets an answer that quotes it. `GET /stats` reports requests, in-flight and peak
//! in-flight counts, responses by status, and requests the client abandoned.
//!
//! [`serve`] takes its listener and a shutdown future, so tests bind `127.0.0.1:0`
//! and the binary passes Ctrl-C.
//!
//! This package is test support: the `fanfare` library does not depend on it, so a
//! library user never compiles axum. It is deliberately independent of the library
//! too (it counts tokens its own way, as a real server would).
//!
//! # Layout
//! - this file: configuration, counters, [`MockServer`] and [`serve`];
//! - `handler`: one request, with the injected faults decided up front;
//! - `wire`: the two wire formats (parsing requests, answer bodies, stream events).

mod handler;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;

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
    /// Requests allowed per `rate_window`, as a provider's requests-per-minute limit
    /// (`None`: no limit). Every answer then carries the provider's rate-limit
    /// headers (`anthropic-ratelimit-requests-*` on the Anthropic route,
    /// `x-ratelimit-*-requests` on the OpenAI route), and a request over the limit
    /// gets a 429 whose `retry-after` is the window's end.
    pub requests_per_window: Option<u64>,
    /// The window `requests_per_window` counts in (fixed windows from the start).
    pub rate_window: Duration,
    /// Probability of never answering (until the client gives up).
    pub hang_rate: f64,
    /// Probability of a 200 whose body is not JSON.
    pub garbage_rate: f64,
    /// Probability that the connection is cut after the headers (a reset).
    pub reset_rate: f64,
    /// Probability that a streamed answer is cut halfway through its events.
    pub midstream_close_rate: f64,
    /// The wait suggested with each 429 (`retry-after-ms`, and `retry-after` in
    /// whole seconds, rounded up).
    pub retry_after: Duration,
    /// When set, requests must carry this key (`x-api-key` or a bearer token).
    pub require_key: Option<String>,
    /// Seed of the fault rolls and jitter.
    pub seed: u64,
    /// Answer as this model instead of the one asked for (as servers that rename or
    /// alias models do).
    pub answer_model: Option<String>,
    /// Refuse prompts of more tokens than this, with the 400 a real server gives:
    /// llama.cpp's `exceed_context_size_error` (with `n_ctx` and `n_prompt_tokens`) on
    /// the OpenAI route, Anthropic's `prompt is too long: N tokens > M maximum` on the
    /// Anthropic route (`None`: no limit).
    pub context_window: Option<u64>,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(200),
            jitter: Duration::ZERO,
            error_rate: 0.0,
            rate_429: 0.0,
            max_concurrency: None,
            requests_per_window: None,
            rate_window: Duration::from_secs(60),
            hang_rate: 0.0,
            garbage_rate: 0.0,
            reset_rate: 0.0,
            midstream_close_rate: 0.0,
            retry_after: Duration::from_millis(200),
            require_key: None,
            seed: 0,
            answer_model: None,
            context_window: None,
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
    /// Responses by HTTP status (413 included: bodies over the request limit).
    pub by_status: BTreeMap<u16, u64>,
    /// Connections cut on purpose after the headers (`reset_rate`).
    #[serde(default)]
    pub resets: u64,
    /// Streams cut on purpose halfway (`midstream_close_rate`).
    #[serde(default)]
    pub midstream_closes: u64,
}

pub(crate) struct Shared {
    pub(crate) config: MockConfig,
    pub(crate) counter: AtomicU64,
    in_flight: AtomicU64,
    stats: Mutex<MockStats>,
    /// The current rate window: when it started, and the requests counted in it.
    window: Mutex<(std::time::Instant, u64)>,
}

/// Where a request stands against `requests_per_window`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quota {
    pub(crate) limit: u64,
    /// Left after this request (0 when it was refused, too).
    pub(crate) remaining: u64,
    /// Until the window ends.
    pub(crate) reset: Duration,
    pub(crate) refused: bool,
}

impl Shared {
    fn new(config: MockConfig) -> Self {
        Self {
            config,
            counter: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            stats: Mutex::default(),
            window: Mutex::new((std::time::Instant::now(), 0)),
        }
    }

    /// Counts a request against `requests_per_window` (`None`: no such limit).
    pub(crate) fn take_quota(&self) -> Option<Quota> {
        let limit = self.config.requests_per_window?;
        let span = self.config.rate_window.max(Duration::from_millis(1));
        let mut w = self.window.lock().ok()?;
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(w.0);
        if elapsed >= span {
            // Fixed windows from the start: skip the ones nobody asked in.
            let whole = (elapsed.as_nanos() / span.as_nanos()) as u32;
            w.0 += span * whole;
            w.1 = 0;
        }
        let reset = (w.0 + span).saturating_duration_since(now);
        let refused = w.1 >= limit;
        if !refused {
            w.1 += 1;
        }
        Some(Quota {
            limit,
            remaining: limit - w.1.min(limit),
            reset,
            refused,
        })
    }

    fn count_status(&self, status: u16) {
        if let Ok(mut s) = self.stats.lock() {
            *s.by_status.entry(status).or_default() += 1;
        }
    }

    /// Counts a connection cut on purpose (`midstream`: halfway through a stream).
    pub(crate) fn count_cut(&self, midstream: bool) {
        if let Ok(mut s) = self.stats.lock() {
            if midstream {
                s.midstream_closes += 1;
            } else {
                s.resets += 1;
            }
        }
    }
}

/// Tracks one request in flight; counts an abort if dropped before `finish`.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    finished: bool,
}

impl InFlight {
    pub(crate) fn enter(shared: &Arc<Shared>) -> (Self, u64) {
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

    pub(crate) fn finish(mut self, status: u16) {
        self.finished = true;
        self.shared.count_status(status);
    }

    /// Ends the request as cut on purpose (not counted as the client's abort).
    pub(crate) fn cut(mut self, midstream: bool) {
        self.finished = true;
        self.shared.count_cut(midstream);
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
        let listener = bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
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

/// A listener on `addr` with a deep accept queue (4,096): benchmarks open thousands
/// of connections at once, and a SYN the queue drops costs its client a retransmit
/// (with tokio's default of 1,024, a 1,000-call fan-out lost 200-370 SYNs, and those
/// calls waited for another's connection to come free instead).
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves `config` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: MockConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(config));
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
        .route("/v1/messages", post(handler::anthropic))
        .route("/v1/chat/completions", post(handler::openai))
        .route("/chat/completions", post(handler::openai))
        .route("/stats", get(stats))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "mock-1", "object": "model", "owned_by": "fanfare"}]})) }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(snapshot(&shared))
}
