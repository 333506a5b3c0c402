//! Run with `cargo run --release --example rate_limited`: a 1,000-branch fan-out
//! through the real `anthropic` provider against the in-process `mock-llm` that
//! answers 429 above 50 requests in flight (200 ms latency). Admission control adapts
//! its concurrency cap instead of storming; prints failures, 429s, the final cap, and
//! wall time against the floor ceil(1000/50) × 200 ms = 4 s. Offline (127.0.0.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    Admission, AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff,
    Retry,
};
use fanfare::{Fanfare, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};

fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let latency = Duration::from_millis(200);
    let mock = MockServer::start(MockConfig {
        latency,
        max_concurrency: Some(50),
        retry_after: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await?;
    let mut config = AnthropicConfig::new(ApiKey::new("mock"));
    config.base_url = mock.url();
    let gate = Arc::new(Admission::new(
        AnthropicProvider::new(config)?,
        AdmissionConfig {
            max_concurrency: 200,
            ..AdmissionConfig::default()
        },
    ));
    let provider = Arc::new(Retry::new(gate.clone(), ExponentialBackoff::default()));
    let names = ["legal", "technical", "financial", "security"];
    let fanfare = Fanfare::builder(provider)
        .agents_from(names.map(spec))
        .start()
        .await?;
    let request = RunRequest::fan_out(
        "Should we log user queries?",
        (0..1000).map(|i| names[i % 4]),
    )
    .policy(Policy::TolerantPartial { quorum: 1 });
    let t0 = Instant::now();
    let report = fanfare.run(request).await?;
    let wall = t0.elapsed();
    fanfare.shutdown().await;
    let m = gate.metrics();
    let floor = latency * 20;
    println!(
        "branches ok / failed      {} / {}",
        report.totals.ok,
        report.branches.len() - report.totals.ok
    );
    println!(
        "429s from the server      {}",
        mock.stats().by_status.get(&429).copied().unwrap_or(0)
    );
    println!(
        "admission                 {} calls, cap now {}, max {} in flight, {} cuts",
        m.admitted, m.cap, m.max_in_flight, m.decreases
    );
    println!(
        "wall                      {:.2}s (floor {:.2}s, ratio {:.2})",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(())
}
