//! End-to-end against a real model server nobody on this project wrote: llama.cpp's
//! server with SmolLM2-135M (see `scripts/llm-server`). Ignored by default because
//! they need that server; CI starts it and runs them with
//! `FANFARE_LLAMA_URL=$(scripts/llm-server start) cargo test --test it -- --ignored llama`.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, OpenAiConfig, OpenAiProvider,
    Retry, Streamed,
};
use fanfare::provider::{CompletionRequest, ProviderErrorKind};
use fanfare::{Fanfare, MergeStrategy, Provider, RunRequest};

fn server() -> String {
    std::env::var("FANFARE_LLAMA_URL").expect(
        "FANFARE_LLAMA_URL must point at a running llama.cpp server (scripts/llm-server start)",
    )
}

fn anthropic() -> AnthropicProvider {
    let mut c = AnthropicConfig::new(ApiKey::new("local-no-key-needed"));
    c.base_url = server();
    c.default_model = "smollm2-135m".into();
    c.timeout = Duration::from_secs(120);
    AnthropicProvider::new(c).unwrap()
}

fn openai() -> OpenAiProvider {
    let mut c = OpenAiConfig::new(None);
    c.base_url = format!("{}/v1", server());
    c.default_model = "smollm2-135m".into();
    c.timeout = Duration::from_secs(120);
    OpenAiProvider::new(c).unwrap()
}

/// The four shipped perspectives, with short answers so the 135M model is quick.
fn perspectives() -> Vec<AgentSpec> {
    fanfare_agents::perspectives()
        .unwrap()
        .into_iter()
        .map(|mut s| {
            s.max_tokens = 24;
            s.temperature = Some(0.0);
            s
        })
        .collect()
}

async fn fan_out_and_merge(provider: Arc<dyn Provider>, expect_provider: &str) {
    let specs = perspectives();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("We will store all user queries in plain text logs.", names)
        .deadline(Duration::from_secs(240))
        .branch_timeout(Duration::from_secs(180))
        .merge(MergeStrategy::Llm {
            model: None,
            max_tokens: 32,
            context_window: None,
        });
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(
        report.status.is_success(),
        "{:?}\n{}",
        report.status,
        report.render()
    );
    assert_eq!(report.provider, expect_provider);
    assert!(!report.simulated);
    assert_eq!(report.totals.ok, 4);
    for b in &report.branches {
        let out = b.outcome.output().unwrap();
        assert!(!out.text.trim().is_empty(), "{} said nothing", b.agent);
        assert!(
            out.usage.output_tokens > 0 && out.usage.output_tokens <= 24,
            "{}: {:?}",
            b.agent,
            out.usage
        );
        assert!(
            out.usage.total() > out.usage.output_tokens,
            "{}: prompt tokens counted: {:?}",
            b.agent,
            out.usage
        );
        assert_eq!(out.model.as_deref(), Some("smollm2-135m"));
    }
    let synthesis = report.synthesis.unwrap();
    assert!(!synthesis.text.unwrap().trim().is_empty());
    assert!(synthesis.usage.output_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_messages_fan_out_and_merge() {
    fan_out_and_merge(
        Arc::new(Retry::new(anthropic(), ExponentialBackoff::default())),
        "anthropic",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_messages_streamed_fan_out_and_merge() {
    fan_out_and_merge(
        Arc::new(Retry::new(
            Streamed(anthropic()),
            ExponentialBackoff::default(),
        )),
        "anthropic",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_chat_completions_fan_out_and_merge() {
    fan_out_and_merge(
        Arc::new(Retry::new(openai(), ExponentialBackoff::default())),
        "openai",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_chat_completions_streamed_fan_out_and_merge() {
    fan_out_and_merge(
        Arc::new(Retry::new(
            Streamed(openai()),
            ExponentialBackoff::default(),
        )),
        "openai",
    )
    .await;
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_context_overflow_is_a_400_that_is_not_retried() {
    let long = "plain text logs ".repeat(1500);
    for provider in [
        Box::new(anthropic()) as Box<dyn Provider>,
        Box::new(openai()),
    ] {
        let retry = Retry::new(provider, ExponentialBackoff::default());
        let e = retry
            .complete(CompletionRequest::new("legal", "Be brief.", long.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind, ProviderErrorKind::Status { status: 400, .. }),
            "{e}"
        );
        assert_eq!(e.attempts, 1);
        assert!(e.to_string().contains("context"), "{e}");
    }
}
