//! The real wire formats against `fanfare mock-llm` on 127.0.0.1. Real time, but the
//! assertions are on outcomes, counts and shapes, never on speed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::provider::{
    AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, OpenAiConfig, OpenAiProvider,
    Retry,
};
use fanfare::provider::{CompletionRequest, ProviderErrorKind};
use fanfare::{Agent, AgentContext, AgentReply, Fanfare, Policy, Provider, RunRequest, Task};
use fanfare_mock::{MockConfig, MockServer};

use crate::common::TestAgent;

pub(crate) fn anthropic(url: &str, key: &str) -> AnthropicProvider {
    let mut c = AnthropicConfig::new(ApiKey::new(key));
    c.base_url = url.to_owned();
    c.default_model = "mock-model".into();
    c.timeout = Duration::from_secs(10);
    AnthropicProvider::new(c).unwrap()
}

pub(crate) fn openai(url: &str, key: Option<&str>) -> OpenAiProvider {
    let mut c = OpenAiConfig::new(key.map(ApiKey::new));
    c.base_url = format!("{url}/v1");
    c.default_model = "mock-model".into();
    c.timeout = Duration::from_secs(10);
    OpenAiProvider::new(c).unwrap()
}

pub(crate) fn fast() -> MockConfig {
    MockConfig {
        latency: Duration::from_millis(5),
        retry_after: Duration::from_millis(10),
        ..MockConfig::default()
    }
}

pub(crate) fn request(stream: bool) -> CompletionRequest {
    let mut r = CompletionRequest::new(
        "legal",
        "You are a lawyer.",
        "Should we keep plain text logs?",
    );
    r.max_tokens = 64;
    r.stream = stream;
    r
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_streamed_call_on_either_wire_hands_its_text_to_the_delta_sink_as_it_comes() {
    let mock = MockServer::start(fast()).await.unwrap();
    let providers: [Box<dyn Provider>; 2] = [
        Box::new(anthropic(&mock.url(), "k")),
        Box::new(openai(&mock.url(), Some("k"))),
    ];
    for provider in &providers {
        let pieces = Arc::new(Mutex::new(Vec::new()));
        let log = pieces.clone();
        let mut r = request(true);
        r.deltas = Some(fanfare::provider::DeltaSink::new(move |d| {
            if let fanfare::provider::Delta::Text(t) = d {
                log.lock().unwrap().push(t);
            }
        }));
        let c = provider.complete(r).await.unwrap();
        let pieces = pieces.lock().unwrap().clone();
        assert!(pieces.len() > 1, "{}: {pieces:?}", provider.name());
        assert_eq!(pieces.concat(), c.text, "{}", provider.name());
    }
}

#[tokio::test]
async fn both_wire_formats_round_trip_plain_and_streamed() {
    let mock = MockServer::start(fast()).await.unwrap();
    let providers: [Box<dyn Provider>; 2] = [
        Box::new(anthropic(&mock.url(), "k")),
        Box::new(openai(&mock.url(), Some("k"))),
    ];
    for provider in &providers {
        for stream in [false, true] {
            let c = provider.complete(request(stream)).await.unwrap();
            assert!(
                c.text.starts_with("Mock "),
                "{} stream={stream}: {}",
                provider.name(),
                c.text
            );
            assert!(
                c.usage.input_tokens > 0 && c.usage.output_tokens > 0,
                "{:?}",
                c.usage
            );
            assert!(c.stop_reason.is_some());
            assert_eq!(c.model, "mock-model");
        }
    }
    // Same prompt, same text, whichever format or mode.
    let a = providers[0].complete(request(false)).await.unwrap().text;
    let b = providers[1].complete(request(true)).await.unwrap().text;
    assert_eq!(a, b);
    assert_eq!(mock.stats().by_status.get(&200), Some(&6));
}

#[tokio::test]
async fn a_429_and_500_storm_ends_with_every_branch_ok_and_attempts_reported() {
    let mock = MockServer::start(MockConfig {
        rate_429: 0.3,
        error_rate: 0.1,
        seed: 11,
        ..fast()
    })
    .await
    .unwrap();
    let provider = Retry::new(
        anthropic(&mock.url(), "k"),
        ExponentialBackoff::new(12).waits(Duration::from_millis(5), Duration::from_millis(50)),
    );
    let names = ["legal", "technical", "financial", "security"];
    let mut b = Fanfare::builder(Arc::new(provider));
    for n in names {
        b = b.agent(TestAgent::new(n));
    }
    let fanfare = b.start().await.unwrap();
    let request = RunRequest::fan_out("task", (0..100).map(|i| names[i % 4]))
        .policy(Policy::TolerantPartial { quorum: 1 });
    let report = fanfare.run(request).await.unwrap();
    assert_eq!(
        report.totals.ok,
        100,
        "{:?}",
        report.branches.iter().find(|b| !b.outcome.is_ok())
    );
    let stats = mock.stats();
    let rejected = stats.by_status.get(&429).copied().unwrap_or(0)
        + stats.by_status.get(&500).copied().unwrap_or(0);
    assert!(rejected > 0, "{stats:?}");
    assert_eq!(
        report.totals.attempts,
        100 + rejected,
        "every retry is counted"
    );
    assert!(report.branches.iter().any(|b| b.attempts > 1));
    fanfare.shutdown().await;
}

#[tokio::test]
async fn client_errors_are_not_retried_and_name_provider_model_and_branch() {
    let mock = MockServer::start(MockConfig {
        require_key: Some("right".into()),
        ..fast()
    })
    .await
    .unwrap();
    let provider = Retry::new(
        anthropic(&mock.url(), "wrong"),
        ExponentialBackoff::default(),
    );
    let e = provider.complete(request(false)).await.unwrap_err();
    assert_eq!(e.attempts, 1);
    assert!(
        matches!(e.kind, ProviderErrorKind::Status { status: 401, .. }),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.starts_with("anthropic (mock-model) for `legal`: HTTP 401"),
        "{text}"
    );
    let e = Retry::new(openai(&mock.url(), None), ExponentialBackoff::default())
        .complete(request(true))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ProviderErrorKind::Status { status: 401, .. }),
        "{e}"
    );
    assert_eq!(mock.stats().requests, 2);
}

#[tokio::test]
async fn a_garbage_body_is_a_decode_error_not_a_panic() {
    let mock = MockServer::start(MockConfig {
        garbage_rate: 1.0,
        ..fast()
    })
    .await
    .unwrap();
    for stream in [false, true] {
        let e = anthropic(&mock.url(), "k")
            .complete(request(stream))
            .await
            .unwrap_err();
        assert!(matches!(e.kind, ProviderErrorKind::Decode { .. }), "{e}");
        // The wire keeps only the request's agent name while the call runs: the
        // error still names the branch that asked.
        assert_eq!(
            (e.provider.as_str(), e.agent.as_str()),
            ("anthropic", "legal")
        );
        let e = openai(&mock.url(), None)
            .complete(request(stream))
            .await
            .unwrap_err();
        assert!(matches!(e.kind, ProviderErrorKind::Decode { .. }), "{e}");
        assert_eq!((e.provider.as_str(), e.agent.as_str()), ("openai", "legal"));
        assert!(
            e.to_string().contains("not json"),
            "the excerpt shows the body: {e}"
        );
    }
}

#[tokio::test]
async fn a_hanging_server_hits_the_call_timeout_and_the_request_is_dropped() {
    let mock = MockServer::start(MockConfig {
        hang_rate: 1.0,
        ..fast()
    })
    .await
    .unwrap();
    let mut c = AnthropicConfig::new(ApiKey::new("k"));
    c.base_url = mock.url();
    c.timeout = Duration::from_millis(300);
    let e = AnthropicProvider::new(c)
        .unwrap()
        .complete(request(false))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ProviderErrorKind::Timeout { after_ms: 300 }),
        "{e}"
    );
    eventually(Duration::from_secs(5), || mock.stats().aborted == 1).await;
}

/// Panics after a delay, so that its siblings' requests are in flight by then.
struct CrashAfter(Duration);

impl Agent for CrashAfter {
    fn name(&self) -> &str {
        "crash"
    }

    async fn run(&self, _: &AgentContext, _: Task) -> AgentReply {
        tokio::time::sleep(self.0).await;
        panic!("crash after {:?}", self.0);
    }
}

#[tokio::test]
async fn fail_fast_aborts_the_siblings_http_requests() {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let fanfare = Fanfare::builder(Arc::new(anthropic(&mock.url(), "k")))
        .agent(TestAgent::new("a"))
        .agent(TestAgent::new("b"))
        .agent(CrashAfter(Duration::from_millis(300)))
        .start()
        .await
        .unwrap();
    // a and b reach the server; 300 ms later the crash decides the run.
    let request = RunRequest::fan_out("t", ["a", "b", "crash"]);
    let run = tokio::spawn({
        let f = fanfare.clone();
        async move { f.run(request).await }
    });
    let report = run.await.unwrap().unwrap();
    assert!(!report.status.is_success());
    eventually(Duration::from_secs(10), || {
        let s = mock.stats();
        s.requests == 2 && s.aborted == 2 && s.in_flight == 0
    })
    .await;
    fanfare.shutdown().await;
}

#[tokio::test]
async fn a_branch_timeout_cancels_its_http_request() {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_secs(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let fanfare = Fanfare::builder(Arc::new(openai(&mock.url(), None)))
        .agent(TestAgent::new("slow"))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("t", ["slow"]).branch_timeout(Duration::from_millis(500));
    let report = fanfare.run(request).await.unwrap();
    assert_eq!(report.branches[0].outcome.label(), "timed_out");
    eventually(Duration::from_secs(10), || mock.stats().aborted == 1).await;
    fanfare.shutdown().await;
}

/// Collects everything `tracing` writes.
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn api_keys_never_reach_debug_output_errors_reports_or_logs() {
    const SECRET: &str = "sk-ant-SECRET-0123456789";
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockServer::start(MockConfig {
        require_key: Some("another-key".into()),
        ..fast()
    })
    .await
    .unwrap();
    let provider = anthropic(&mock.url(), SECRET);
    let debug = format!("{provider:?}");
    let fanfare = Fanfare::builder(Arc::new(Retry::new(
        provider,
        ExponentialBackoff::default(),
    )))
    .agent(TestAgent::new("legal"))
    .start()
    .await
    .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", ["legal"]))
        .await
        .unwrap();
    let json = serde_json::to_string(&report).unwrap();
    let rendered = report.render();
    fanfare.shutdown().await;
    assert!(!report.status.is_success());
    assert!(json.contains("HTTP 401"), "{json}");
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.is_empty());
    for (what, text) in [
        ("Debug", &debug),
        ("report JSON", &json),
        ("human report", &rendered),
        ("logs", &logs),
    ] {
        assert!(
            !text.contains(SECRET) && !text.contains("0123456789"),
            "the key leaked into {what}"
        );
    }
}
