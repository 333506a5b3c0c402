//! The wires against servers that misbehave on purpose: redirects, bad base URLs and
//! keys, a 404, answers that never end. Plain TCP servers on 127.0.0.1 where the mock
//! cannot misbehave the right way.

use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::{
    AnthropicConfig, AnthropicProvider, ApiKey, CompletionRequest, ExponentialBackoff,
    OpenAiConfig, OpenAiProvider, ProviderErrorKind, Retry,
};
use fanfare::Provider;
use fanfare_mock::MockServer;

use crate::providers::{anthropic, fast, openai, request};

/// A plain TCP server on 127.0.0.1 that answers every connection with `response`
/// and counts the connections it got.
async fn raw_server(response: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    raw_server_then(response, After::Close).await
}

/// What [`raw_server_then`] does once it has written its response.
#[derive(Clone, Copy)]
enum After {
    /// Closes the connection.
    Close,
    /// Sends nothing more and holds the connection open.
    Stall,
}

/// [`raw_server`], doing `after` once it has written.
async fn raw_server_then(
    response: String,
    after: After,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                match after {
                    After::Close => {
                        let _ = socket.shutdown().await;
                    }
                    After::Stall => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
    (url, hits)
}

fn http_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn regression_redirects_are_not_followed_so_the_key_never_reaches_another_host() {
    // The other host would answer properly: following the redirect would "work".
    let answer = r#"{"model":"m","content":[{"type":"text","text":"stolen"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1},"choices":[{"message":{"content":"stolen"}}]}"#;
    let (elsewhere, elsewhere_hits) = raw_server(http_response("200 OK", "", answer)).await;
    for status in [
        "307 Temporary Redirect",
        "302 Found",
        "301 Moved Permanently",
    ] {
        let location = format!("location: {elsewhere}/v1/messages\r\n");
        // A 3xx whose body looks like an answer must not be taken for one either.
        let (url, _) = raw_server(http_response(status, &location, answer)).await;
        let anthropic = Retry::new(anthropic(&url, "sk-secret"), ExponentialBackoff::default());
        let e = anthropic.complete(request(false)).await.unwrap_err();
        assert!(
            matches!(e.kind, ProviderErrorKind::Redirected { .. }),
            "{status}: {e}"
        );
        assert_eq!(e.attempts, 1, "a redirect is not retried");
        assert!(e.to_string().contains(&elsewhere), "{e}");
        let openai = openai(&url, Some("sk-secret"));
        let e = openai.complete(request(true)).await.unwrap_err();
        assert!(
            matches!(e.kind, ProviderErrorKind::Redirected { .. }),
            "{e}"
        );
    }
    assert_eq!(
        elsewhere_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no request, and so no key, went to the other host"
    );
}

#[test]
fn regression_bad_base_urls_and_keys_are_refused_when_the_provider_is_built() {
    for (url, want) in [
        ("not a url", "is not a URL"),
        ("", "is not a URL"),
        ("ftp://example.com", "must start with http:// or https://"),
    ] {
        let mut c = AnthropicConfig::new(ApiKey::new("k"));
        c.base_url = url.to_owned();
        let e = AnthropicProvider::new(c).unwrap_err().to_string();
        assert!(e.contains(want), "{url:?}: {e}");
        let mut c = OpenAiConfig::new(None);
        c.base_url = url.to_owned();
        assert!(OpenAiProvider::new(c).is_err(), "{url:?}");
    }
    let e = AnthropicProvider::new(AnthropicConfig::new(ApiKey::new("sk-a\u{7}b")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot carry"), "{e}");
    assert!(!e.contains("sk-a"), "the key is not shown: {e}");
    // Credentials in a URL are never shown.
    let mut c = AnthropicConfig::new(ApiKey::new("k"));
    c.base_url = "ftp://user:hunter2@example.com".to_owned();
    let e = AnthropicProvider::new(c).unwrap_err().to_string();
    assert!(!e.contains("hunter2"), "{e}");
    assert_eq!(
        fanfare::provider::redact_url("https://user:tok@host.example/v1"),
        "https://host.example/v1"
    );
}

#[tokio::test]
async fn regression_a_404_hints_at_the_base_path() {
    let mock = MockServer::start(fast()).await.unwrap();
    // An Anthropic base URL given with /v1, as OpenAI's would be: the request goes
    // to /v1/v1/messages, which the mock does not serve.
    let e = anthropic(&format!("{}/v1", mock.url()), "k")
        .complete(request(false))
        .await
        .unwrap_err();
    assert!(
        matches!(e.kind, ProviderErrorKind::Status { status: 404, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("Anthropic's has no /v1"), "{e}");
}

#[tokio::test]
async fn regression_the_mock_takes_what_real_apis_take_and_counts_what_it_refuses() {
    let mock = MockServer::start(fast()).await.unwrap();
    let provider = anthropic(&mock.url(), "k");
    let big = CompletionRequest::new("a", "s", "word ".repeat(600_000)); // 3 MB
    assert!(
        provider.complete(big).await.is_ok(),
        "2 MB was the old limit"
    );
    let huge = CompletionRequest::new("a", "s", "word ".repeat(7_000_000)); // 35 MB
    let e = provider.complete(huge).await.unwrap_err();
    assert!(
        matches!(e.kind, ProviderErrorKind::Status { status: 413, .. }),
        "{e}"
    );
    assert_eq!(
        mock.stats().by_status.get(&413),
        Some(&1),
        "the refusal is counted"
    );
}

/// A server that answers 200 with an endless body (chunked, no length), as
/// `content_type`.
async fn endless_server(content_type: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                // Up to 1 GB, until the client hangs up.
                for _ in 0..16 * 1024 {
                    if socket.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[tokio::test]
async fn regression_an_endless_answer_is_cut_at_the_size_cap_not_read_into_memory() {
    for (content_type, stream) in [("application/json", false), ("text/event-stream", true)] {
        let url = endless_server(content_type).await;
        let mut c = AnthropicConfig::new(ApiKey::new("k"));
        c.base_url = url;
        c.max_response_bytes = 1024 * 1024;
        let e = AnthropicProvider::new(c)
            .unwrap()
            .complete(request(stream))
            .await
            .unwrap_err();
        assert_eq!(
            e.kind,
            ProviderErrorKind::TooLarge {
                limit_bytes: 1024 * 1024
            },
            "{content_type}"
        );
    }
}

#[tokio::test]
async fn regression_a_body_that_never_ends_hits_the_call_timeout_error_bodies_too() {
    // The timeout used to cover the headers and then, afresh, an answer's body; an
    // error's body (read for its excerpt) had no limit at all, so a server that sent
    // a 500's headers and stalled held the call until the branch deadline.
    for status in [
        "500 Internal Server Error",
        "429 Too Many Requests",
        "200 OK",
    ] {
        // Headers that promise 1,000 bytes of body, and the first few of them.
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"error\":"
        );
        let (url, _) = raw_server_then(head, After::Stall).await;
        let mut a = AnthropicConfig::new(ApiKey::new("k"));
        a.base_url = url.clone();
        a.timeout = Duration::from_millis(300);
        let mut o = OpenAiConfig::new(None);
        o.base_url = format!("{url}/v1");
        o.timeout = Duration::from_millis(300);
        let wires: [Box<dyn Provider>; 2] = [
            Box::new(AnthropicProvider::new(a).unwrap()),
            Box::new(OpenAiProvider::new(o).unwrap()),
        ];
        for wire in &wires {
            for stream in [false, true] {
                let call = wire.complete(request(stream));
                let Ok(ended) = tokio::time::timeout(Duration::from_secs(30), call).await else {
                    panic!("{} ({status}, stream {stream}) never ended", wire.name());
                };
                let e = ended.unwrap_err();
                assert!(
                    matches!(e.kind, ProviderErrorKind::Timeout { after_ms: 300 }),
                    "{} ({status}, stream {stream}): {e}",
                    wire.name()
                );
            }
        }
    }
}

#[tokio::test]
async fn regression_an_error_body_that_echoes_the_key_keeps_no_trace_of_it() {
    // A proxy answered 401 with the key it was given in the body; the excerpt went
    // into the report, the journal and the event stream.
    use base64::Engine as _;
    let key = "sk-ant-api03-echoed-secret-0123456789";
    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
    let body = format!(r#"{{"error":{{"message":"invalid x-api-key {key} (base64 {encoded})"}}}}"#);
    let response = format!(
        "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let (url, _) = raw_server(response).await;
    let mut a = AnthropicConfig::new(ApiKey::new(key));
    a.base_url = url.clone();
    let mut o = OpenAiConfig::new(Some(ApiKey::new(key)));
    o.base_url = format!("{url}/v1");
    let providers: [Box<dyn Provider>; 2] = [
        Box::new(AnthropicProvider::new(a).unwrap()),
        Box::new(OpenAiProvider::new(o).unwrap()),
    ];
    for provider in providers {
        for stream in [false, true] {
            let e = provider.complete(request(stream)).await.unwrap_err();
            let shown = format!("{e} {e:?} {}", serde_json::to_string(&e).unwrap());
            assert!(
                !shown.contains(key) && !shown.contains(&encoded),
                "{}: {shown}",
                provider.name()
            );
            assert!(shown.contains("[redacted key]"), "{shown}");
        }
    }
}

#[tokio::test]
async fn a_loopback_port_with_nothing_listening_is_named_and_tried_twice_not_ten_times() {
    // Regression: against a base URL with nothing listening the user waited 51 s
    // (10 attempts) for "transport error: … Connection refused".
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let policy =
        ExponentialBackoff::new(10).waits(Duration::from_millis(1), Duration::from_millis(1));
    for provider in [
        Box::new(Retry::new(anthropic(&url, "k"), policy.clone())) as Box<dyn Provider>,
        Box::new(Retry::new(openai(&url, None), policy.clone())),
    ] {
        let error = provider
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap_err();
        assert_eq!(
            error.kind,
            ProviderErrorKind::NotListening {
                address: format!("127.0.0.1:{port}")
            }
        );
        assert_eq!(error.attempts, 2, "{error}");
        assert!(
            error.to_string().contains("is the server running"),
            "{error}"
        );
    }
}

#[tokio::test]
async fn regression_an_answer_without_usage_is_counted_by_the_estimate_not_as_nothing() {
    // The seventh probe: an OpenAI-compatible server that leaves `usage` out was
    // counted as 0 tokens, and a budget never ran down.
    let body = r#"{"id":"x","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"a fairly short answer of some words"},"finish_reason":"stop"}]}"#;
    let (url, _) = raw_server(http_response("200 OK", "", body)).await;
    let answer = openai(&format!("{url}/v1"), Some("k"))
        .complete(request(false))
        .await
        .unwrap();
    assert!(answer.usage.input_tokens > 0, "{:?}", answer.usage);
    assert!(answer.usage.output_tokens >= 7, "{:?}", answer.usage);
}
