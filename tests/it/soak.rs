//! The soak: many 4-specialist fan-outs on the sim provider with 2% panics, 1% hangs
//! and 5% provider 500s per task. Every run must reach a terminal state by its
//! deadline (+100 ms), ≥ 95% of them must meet quorum 3, and nothing may leak. Paused
//! time makes it deterministic; `cargo run --release --example soak` is the big one.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::faults::Faulty;
use fanfare::agent::faults::{Faults, Trigger};
use fanfare::provider::{SimConfig, SimProfile, SimProvider};
use fanfare::supervision::RestartIntensity;
use fanfare::supervision::SupervisionConfig;
use fanfare::{Fanfare, Policy, RunRequest};
use futures::StreamExt;

use crate::common::TestAgent;

pub const RUNS: usize = 10_000;

#[tokio::test(start_paused = true)]
async fn soak_every_run_ends_by_its_deadline_and_nothing_leaks() {
    crate::common::quiet_injected_panics();
    let tasks_before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let provider = Arc::new(SimProvider::new(SimConfig {
        seed: 3,
        default: SimProfile {
            latency: Duration::from_millis(40),
            jitter: Duration::from_millis(40),
            failure_rate: 0.0,
            words: 12,
        },
        ..SimConfig::default()
    }));
    let faults = |seed| Faults {
        panic: Some(Trigger::probability(0.02)),
        hang: Some(Trigger::probability(0.01)),
        provider_500: Some(Trigger::probability(0.05)),
        seed,
        ..Faults::default()
    };
    let names = ["legal", "technical", "financial", "security"];
    let mut builder = Fanfare::builder(provider.clone()).supervision(SupervisionConfig {
        intensity: RestartIntensity {
            max_restarts: 1_000,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(1),
        },
        ..SupervisionConfig::default()
    });
    for (i, n) in names.iter().enumerate() {
        builder = builder.agent(Faulty::new(TestAgent::new(n), faults(i as u64)));
    }
    let fanfare = builder.start().await.unwrap();
    let live = fanfare.live_actors();
    let deadline = Duration::from_secs(2);
    let reports: Vec<_> = futures::stream::iter(0..RUNS)
        .map(|i| {
            let f = fanfare.clone();
            async move {
                let request = RunRequest::fan_out(format!("task {i}"), names)
                    .policy(Policy::TolerantPartial { quorum: 3 })
                    .deadline(deadline)
                    .branch_timeout(Duration::from_millis(500))
                    .crash_retries(1);
                f.run(request).await
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(reports.len(), RUNS);
    let mut met = 0;
    for r in &reports {
        let r = r.as_ref().expect("every run produces a report");
        assert!(
            r.branches.iter().all(|b| b.end <= r.wall),
            "no branch outlives its run"
        );
        assert_eq!(
            r.status.is_success(),
            r.totals.ok >= 3,
            "the verdict follows the quorum"
        );
        assert!(
            r.wall <= deadline + Duration::from_millis(100),
            "run {} took {:?}",
            r.run_id,
            r.wall
        );
        met += usize::from(r.status.is_success());
    }
    let rate = met as f64 / RUNS as f64;
    if rate < 0.95 {
        let mut why = std::collections::BTreeMap::<String, usize>::new();
        for r in reports.iter().flatten() {
            for b in &r.branches {
                let e = b.error.clone().unwrap_or_else(|| "ok".into());
                *why.entry(e.chars().take(60).collect()).or_default() += 1;
            }
        }
        eprintln!("{why:#?}");
    }
    assert!(
        rate >= 0.95,
        "only {:.1}% of runs met quorum 3",
        rate * 100.0
    );
    let restarts: u32 = fanfare.status().await.iter().map(|s| s.restarts).sum();
    assert!(restarts > 0, "the panics were supervised");
    fanfare.shutdown().await;
    crate::common::eventually(Duration::from_secs(5), || {
        let s = provider.stats();
        live.get() == 0
            && s.started == s.completed + s.failed + s.aborted
            && tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                == tasks_before
    })
    .await;
    println!(
        "soak: {RUNS} runs, {:.2}% met quorum 3, {restarts} restarts",
        rate * 100.0
    );
}
