//! Run with `cargo run --release --example rate_limited`: a 1,000-branch fan-out
//! through the real `anthropic` provider against the in-process `mock-llm` that
//! answers 429 above 50 requests in flight (200 ms latency), twice.
//!
//! The first gate sends the whole fan-out (it assumes nothing before the server has
//! spoken), meets one wave of 429s, and settles at what the server carried; every
//! branch is retried, none is lost. Its [`Admission::learned`] is then handed to a
//! second gate for the same server ([`Admission::remember`]) — what the CLI does
//! between runs through the user's cache, and `fanfare serve` through its journal —
//! which starts there and draws only the few 429s of its probing. Prints failures,
//! 429s, the final cap, and wall time against the floor ceil(1000/50) × 200 ms = 4 s.
//! Offline (127.0.0.1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    Admission, AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff,
    Learned, Retry,
};
use fanfare::{Fanfare, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};

fn spec(name: &str) -> AgentSpec {
    AgentSpec::new(name, format!("You review proposals from the {name} angle."))
}

/// One fan-out through a new gate, started from `learned` if given; returns what
/// the gate learned.
async fn fan_out(
    mock: &MockServer,
    learned: Option<Learned>,
) -> Result<Option<Learned>, Box<dyn std::error::Error>> {
    let refused_before = mock.stats().by_status.get(&429).copied().unwrap_or(0);
    let mut config = AnthropicConfig::new(ApiKey::new("mock"));
    config.base_url = mock.url();
    let gate = Arc::new(Admission::new(
        AnthropicProvider::new(config)?,
        AdmissionConfig {
            max_concurrency: 1_000,
            ..AdmissionConfig::default()
        },
    ));
    if let Some(learned) = learned {
        // `None`: the provider's default model, the lane these calls use.
        gate.remember(None, learned);
    }
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
    let floor = Duration::from_millis(200) * 20;
    let refused = mock.stats().by_status.get(&429).copied().unwrap_or(0) - refused_before;
    println!(
        "{}",
        match learned {
            None => "first contact",
            Some(_) => "a second gate, from what the first learned",
        }
    );
    println!(
        "  branches ok / failed      {} / {}",
        report.totals.ok,
        report.branches.len() - report.totals.ok
    );
    println!("  429s from the server      {refused}");
    println!(
        "  admission                 {} calls, cap now {}, max {} in flight, {} cuts",
        m.admitted, m.cap, m.max_in_flight, m.decreases
    );
    println!(
        "  wall                      {:.2}s (floor {:.2}s, ratio {:.2})",
        wall.as_secs_f64(),
        floor.as_secs_f64(),
        wall.as_secs_f64() / floor.as_secs_f64()
    );
    Ok(gate.learned().first().map(|(_, l)| *l))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(200),
        max_concurrency: Some(50),
        retry_after: Duration::from_millis(100),
        ..MockConfig::default()
    })
    .await?;
    let learned = fan_out(&mock, None).await?;
    if let Some(learned) = learned {
        println!(
            "  learned                   cap {}, refused at {} in flight",
            learned.cap, learned.refused_at
        );
        fan_out(&mock, Some(learned)).await?;
    }
    Ok(())
}
