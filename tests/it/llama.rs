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
    // Generous: CI runs a dozen of these tests at once against one 2-core server, and a
    // 600-token answer queued behind the others took longer than 120 s (stop 35).
    c.timeout = Duration::from_secs(300);
    AnthropicProvider::new(c).unwrap()
}

fn openai() -> OpenAiProvider {
    let mut c = OpenAiConfig::new(None);
    c.base_url = format!("{}/v1", server());
    c.default_model = "smollm2-135m".into();
    // Generous: CI runs a dozen of these tests at once against one 2-core server, and a
    // 600-token answer queued behind the others took longer than 120 s (stop 35).
    c.timeout = Duration::from_secs(300);
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
async fn llama_context_overflow_is_a_typed_400_with_the_window_and_is_not_retried() {
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
        let ProviderErrorKind::ContextOverflow { overflow, .. } = &e.kind else {
            panic!("{e}")
        };
        // The server's own numbers: 1024 tokens per slot (8192 over 8 slots).
        assert_eq!(overflow.window, Some(1024), "{e}");
        assert!(overflow.prompt_tokens.unwrap() > 1024, "{e}");
        assert_eq!(e.attempts, 1);
        assert!(e.to_string().contains("context window"), "{e}");
    }
}

/// The perspectives as shipped (600-token answers) through `provider`, with the
/// merge model's window unknown: the merge must learn it and fit, never a 400.
async fn perspectives_merge_fits(provider: Arc<dyn Provider>) {
    let specs: Vec<AgentSpec> = fanfare_agents::perspectives()
        .unwrap()
        .into_iter()
        .map(|mut s| {
            s.temperature = Some(0.0);
            s
        })
        .collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out(
        "We will store all user queries in plain text logs for a year.",
        names,
    )
    .deadline(Duration::from_secs(600))
    .branch_timeout(Duration::from_secs(300))
    .merge(MergeStrategy::Llm {
        model: None,
        max_tokens: 1024,
        context_window: None,
    });
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    let text = report.render();
    assert!(report.status.is_success(), "{text}");
    assert!(!text.contains("HTTP 400"), "{text}");
    let synthesis = report.synthesis.as_ref().unwrap();
    assert!(!synthesis.text.as_deref().unwrap().trim().is_empty());
    let tree = synthesis.tree.as_ref().unwrap();
    // Whether the four answers fit one call depends on how long they came out;
    // when they did not, the window was learned and the merge went in levels.
    let answers: u64 = report
        .branches
        .iter()
        .map(|b| b.outcome.output().unwrap().usage.output_tokens)
        .sum();
    if answers > 1024 {
        assert!(
            tree.is_hierarchical(),
            "{answers} tokens of answers: {tree:?}"
        );
    }
    if tree.is_hierarchical() || tree.overflows > 0 {
        assert_eq!(tree.window, Some(1024), "{tree:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_perspectives_as_shipped_merge_within_a_1024_token_slot() {
    perspectives_merge_fits(Arc::new(Retry::new(
        openai(),
        ExponentialBackoff::default(),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_perspectives_as_shipped_merge_within_a_1024_token_slot() {
    perspectives_merge_fits(Arc::new(Retry::new(
        anthropic(),
        ExponentialBackoff::default(),
    )))
    .await;
}

/// 32 branches of short answers: far more than one 1024-token call holds.
async fn thirty_two_branches_merge_in_levels(provider: Arc<dyn Provider>) {
    let mut spec = AgentSpec::new(
        "reviewer",
        "You review plans. List every risk you see, one per line, with a sentence on each.",
    );
    spec.max_tokens = 48;
    spec.temperature = Some(0.0);
    let fanfare = Fanfare::builder(provider)
        .agent(spec)
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out(
        "We will store all user queries in plain text logs for a year.",
        vec!["reviewer"; 32],
    )
    .policy(fanfare::Policy::TolerantPartial { quorum: 24 })
    .deadline(Duration::from_secs(600))
    .branch_timeout(Duration::from_secs(300))
    .merge(MergeStrategy::Llm {
        model: None,
        max_tokens: 256,
        context_window: None,
    });
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    let text = report.render();
    assert!(report.status.is_success(), "{text}");
    assert!(!text.contains("HTTP 400"), "{text}");
    let synthesis = report.synthesis.as_ref().unwrap();
    assert!(
        !synthesis.text.as_deref().unwrap().trim().is_empty(),
        "{text}"
    );
    let tree = synthesis.tree.as_ref().unwrap();
    assert!(tree.is_hierarchical(), "{tree:?}");
    assert_eq!(tree.window, Some(1024), "{tree:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_32_branch_fan_out_merges_in_levels() {
    thirty_two_branches_merge_in_levels(Arc::new(Retry::new(
        openai(),
        ExponentialBackoff::default(),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_32_branch_fan_out_merges_in_levels() {
    thirty_two_branches_merge_in_levels(Arc::new(Retry::new(
        anthropic(),
        ExponentialBackoff::default(),
    )))
    .await;
}

/// Every shipped workflow, with short answers, through `provider`.
async fn shipped_workflows_run(provider: Arc<dyn Provider>) {
    let specs: Vec<AgentSpec> = fanfare_agents::specs()
        .unwrap()
        .into_iter()
        .map(|mut s| {
            s.max_tokens = s.max_tokens.min(48);
            s.temperature = Some(0.0);
            s
        })
        .collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await
        .unwrap();
    let documents = vec![
        "Plain text logs are easy to search but keep every query readable.".to_owned(),
        "Encrypted logs protect queries but make debugging slower.".to_owned(),
        "Sampling one query in a hundred keeps costs and exposure low.".to_owned(),
    ];
    for workflow in fanfare_agents::workflows().unwrap() {
        let items = workflow
            .steps
            .iter()
            .any(|s| {
                s.map
                    .as_ref()
                    .is_some_and(|m| m.over == fanfare::run::workflow::MapOver::Given)
            })
            .then(|| documents.clone());
        let request = workflow
            .request("Should we keep plain text logs of user queries?", items)
            .unwrap()
            .deadline(Duration::from_secs(600))
            .branch_timeout(Duration::from_secs(300));
        let report = fanfare.run(request).await.unwrap();
        let text = report.render();
        assert!(report.status.is_success(), "{}: {text}", workflow.name);
        assert!(!text.contains("HTTP 400"), "{}: {text}", workflow.name);
        assert!(
            report.branches.iter().all(|b| b.outcome.is_ok()),
            "{}: {text}",
            workflow.name
        );
        if let Some(s) = &report.synthesis {
            assert!(s.error.is_none(), "{}: {text}", workflow.name);
        }
    }
    fanfare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_every_shipped_workflow_runs() {
    shipped_workflows_run(Arc::new(Retry::new(
        openai(),
        ExponentialBackoff::default(),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_every_shipped_workflow_runs() {
    shipped_workflows_run(Arc::new(Retry::new(
        anthropic(),
        ExponentialBackoff::default(),
    )))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_enforces_a_steps_json_schema() {
    let mut spec = AgentSpec::new("legal", "You review plans for legal risk.");
    spec.max_tokens = 96;
    spec.temperature = Some(0.0);
    let fanfare = Fanfare::builder(Arc::new(Retry::new(
        openai(),
        ExponentialBackoff::default(),
    )))
    .agent(spec)
    .start()
    .await
    .unwrap();
    let schema = fanfare::provider::OutputSchema {
        name: "risk".into(),
        schema: serde_json::json!({
            "type": "object",
            "properties": {
                "risk": {"type": "string", "enum": ["low", "medium", "high"]},
                "reason": {"type": "string", "maxLength": 80}
            },
            "required": ["risk", "reason"]
        }),
    };
    let mut request = RunRequest::fan_out(
        "We will store all user queries in plain text logs.",
        Vec::<String>::new(),
    )
    .deadline(Duration::from_secs(120));
    request.steps = vec![fanfare::Step::agent("legal").schema(schema)];
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let out = report.branches[0].outcome.output().unwrap();
    let value: serde_json::Value = serde_json::from_str(&out.text).unwrap();
    assert!(
        ["low", "medium", "high"].contains(&value["risk"].as_str().unwrap()),
        "{value}"
    );
    assert!(value["reason"].is_string(), "{value}");
}

/// Four specialists over one ~600-token document, one call at a time: the task leads
/// every prompt, so the server's prompt cache serves it to every branch after the
/// first, as its own usage says. The cache is per slot: run these alone
/// (`--test-threads=1`, as CI does), or another test's request may take the warm slot.
async fn branches_after_the_first_read_the_document_from_the_cache<P: Provider>(wire: P) {
    read_from_the_cache(wire, false).await;
}

/// A fan-out of the perspectives over one document at concurrency 1 (`warm`: with the
/// cache warm-up, streamed, so the others go at the first branch's first token).
async fn read_from_the_cache<P: Provider>(wire: P, warm: bool) {
    use fanfare::provider::{AdmissionConfig, Stack};
    // Retried as a user's stack is: llama.cpp's HTTP server may close a kept-alive
    // connection just as the next call goes out on it ("connection closed before
    // message completed", once in CI), and a retry reads the cache all the same.
    let (provider, _) = Stack::new()
        .stream(warm)
        .admission(AdmissionConfig {
            max_concurrency: 1,
            adaptive: false,
            ..AdmissionConfig::default()
        })
        .retry(ExponentialBackoff::default())
        .build(wire);
    let specs: Vec<AgentSpec> = fanfare_agents::perspectives()
        .unwrap()
        .into_iter()
        .map(|mut s| {
            s.max_tokens = 8;
            s.temperature = Some(0.0);
            s
        })
        .collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await
        .unwrap();
    let document = (0..40)
        .map(|i| format!("We will store user query number {i} in plain text logs for audit."))
        .collect::<Vec<_>>()
        .join(" ");
    let request = RunRequest::fan_out(document, names)
        .deadline(Duration::from_secs(240))
        .branch_timeout(Duration::from_secs(180))
        .cache_warm(warm);
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    // The order the calls reached the server, one at a time through the gate (not the
    // dispatch order: the branches race for the gate, and which of them the scheduler
    // runs first is its choice).
    let mut by_call: Vec<_> = report.branches.iter().collect();
    by_call.sort_by_key(|b| b.called_at());
    let cached: Vec<u64> = by_call
        .iter()
        .map(|b| b.usage.cache_read_input_tokens)
        .collect();
    // The document is ~560 tokens; every branch after the first reads it all from
    // the cache (its own instructions after it are not shared).
    assert!(
        cached[1..].iter().all(|&c| c >= 500),
        "cached prompt tokens in the order the calls went: {cached:?}"
    );
    assert!(report.render().contains("prompt cache:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_fan_out_branches_read_the_shared_task_from_the_prompt_cache() {
    branches_after_the_first_read_the_document_from_the_cache(openai()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_openai_with_cache_warm_the_branches_read_the_prompt_cache_the_first_filled() {
    read_from_the_cache(openai(), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a llama.cpp server: FANFARE_LLAMA_URL=$(scripts/llm-server start)"]
async fn llama_anthropic_fan_out_branches_read_the_shared_task_from_the_prompt_cache() {
    branches_after_the_first_read_the_document_from_the_cache(anthropic()).await;
}
