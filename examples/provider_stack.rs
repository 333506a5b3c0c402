//! Run with `cargo run --example provider_stack`: the spec agents in
//! `agents/specs/` on a real wire — OpenAI's Chat Completions over HTTP — through the
//! layers a production run wants, built with [`Stack`]: an attempt timeout, the
//! admission gate (at most 8 calls in flight here, and it learns a server's limit
//! from its 429s), retries with jittered backoff, streamed answers.
//!
//! The server is fanfare's own mock, started in this process on 127.0.0.1 and told
//! to fail 20% of requests with a 500: the retries make every branch succeed anyway,
//! and the report counts the attempts. Point `base_url` at
//! `https://api.openai.com/v1` with a key (or at a local llama.cpp or vLLM server)
//! and the same program runs on a real model. Offline as written.

use std::path::Path;
use std::time::Duration;

use fanfare::agent::spec;
use fanfare::provider::{
    AdmissionConfig, ApiKey, ExponentialBackoff, OpenAiConfig, OpenAiProvider, Stack,
};
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(300),
        error_rate: 0.2,
        ..MockConfig::default()
    })
    .await?;

    // The wire: where to send, with which key (never logged: `ApiKey` hides it).
    let mut config = OpenAiConfig::new(Some(ApiKey::new("sk-not-needed-by-the-mock")));
    config.base_url = format!("{}/v1", mock.url());
    let wire = OpenAiProvider::new(config)?;

    // The layers, in the one order `Stack` knows is right.
    let (provider, gate) = Stack::new()
        .stream(true)
        .timeout(Duration::from_secs(30))
        .admission(AdmissionConfig {
            max_concurrency: 8,
            ..AdmissionConfig::default()
        })
        .retry(ExponentialBackoff::new(5))
        .build(wire);

    let specs = spec::load_dir(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/agents/specs"
    )))?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(provider)
        .agents_from(specs)
        .start()
        .await?;
    let request = RunRequest::fan_out("Should we log every user query in plain text?", names)
        .policy(Policy::TolerantPartial { quorum: 3 })
        .merge(MergeStrategy::llm());
    let report = fanfare.run(request).await?;
    println!("{}", report.render());
    if let Some(gate) = gate {
        let m = gate.metrics();
        println!(
            "gate: {} calls admitted, at most {} in flight (cap {}), {} answered 429",
            m.admitted, m.max_in_flight, m.cap, m.rate_limited
        );
    }
    let stats = mock.stats();
    println!(
        "the mock answered {} requests, {} of them with a 500",
        stats.requests,
        stats.by_status.get(&500).copied().unwrap_or(0)
    );
    fanfare.shutdown().await;
    mock.stop().await;
    Ok(())
}
