//! `bench inproc`: what fanfare itself costs, on the simulated provider — per branch
//! with calls that return at once and with calls that wait, per map item, runs per
//! second, memory per idle specialist, a supervised restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{Provider, SimProfile, SimProvider};
use fanfare::{Fanfare, Policy, RunRequest};
use serde_json::json;

use super::measure::{cpu_seconds, median, rss_mb};
use super::{capped_stack, fan_out_request, TASK};

/// `bench inproc`: orchestration costs on the zero-latency simulated provider.
pub async fn inproc(sizes: &[usize]) -> anyhow::Result<()> {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let names = ["legal", "technical", "financial", "security"];
    let specs: Vec<AgentSpec> = names
        .iter()
        .map(|n| AgentSpec {
            order: 100,
            max_tokens: 64,
            source: "bench".into(),
            ..AgentSpec::new(*n, format!("You are the {n} reviewer."))
        })
        .collect();
    let fanfare = Fanfare::builder(provider.clone())
        .agents_from(specs.clone())
        .code("lines", |input| {
            let n = input.options.get("n").and_then(|v| v.as_u64()).unwrap_or(0);
            let text = (0..n)
                .map(|i| format!("item {i}: {}", "x".repeat(90)))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(fanfare::run::CodeOutput {
                text,
                conflicts: Vec::new(),
            })
        })
        .start()
        .await?;
    // Warm-up.
    fanfare.run(RunRequest::fan_out(TASK, names)).await?;
    for &n in sizes {
        let request = RunRequest::fan_out(TASK, (0..n).map(|i| names[i % 4]))
            .policy(Policy::TolerantPartial { quorum: 1 });
        let t0 = Instant::now();
        let report = fanfare.run(request).await?;
        let wall = t0.elapsed();
        crate::output::line(format_args!(
            "{}",
            json!({"case": "overhead_per_branch", "n": n, "wall_s": wall.as_secs_f64(),
            "us_per_branch": wall.as_secs_f64() * 1e6 / n as f64, "ok": report.totals.ok})
        ))?;
    }
    parked(1_000).await?;
    // A map over an upstream list of n lines (~100 bytes each), 256 items at once:
    // what each item costs when its task carries the list it was mapped from; then
    // the same under a token budget, whose estimate of every item reads the items.
    let maps = sizes.iter().filter(|&&n| n <= 10_000);
    for (&n, budgeted) in maps.flat_map(|n| [(n, false), (n, true)]) {
        use fanfare::run::{Map, MapSource};
        let mut request = RunRequest::fan_out(TASK, Vec::<String>::new());
        if budgeted {
            request = request.budget(fanfare::run::Budget {
                max_tokens: Some(u64::MAX / 2),
                ..Default::default()
            });
        }
        request.steps = vec![
            fanfare::Step::code("lines", json!({ "n": n })),
            fanfare::Step::agent(names[0]).after([0]).map(Map {
                over: MapSource::Step(0),
                concurrency: 256,
                policy: Policy::FailFast,
            }),
        ];
        let t0 = Instant::now();
        let report = fanfare.run(request).await?;
        let wall = t0.elapsed();
        let ok = report.branches[1]
            .items
            .iter()
            .filter(|i| i.outcome.is_ok())
            .count();
        crate::output::line(format_args!(
            "{}",
            json!({"case": if budgeted { "budgeted_map_item_over_upstream_list" } else { "map_item_over_upstream_list" },
            "items": n, "wall_s": wall.as_secs_f64(),
            "us_per_item": wall.as_secs_f64() * 1e6 / n.max(1) as f64, "ok": ok})
        ))?;
    }
    // Runs per second: 4-branch fan-outs, 64 in flight, for ~2 s.
    let t0 = Instant::now();
    let mut done = 0usize;
    while t0.elapsed() < Duration::from_secs(2) {
        let batch = (0..64).map(|_| {
            let f = fanfare.clone();
            async move { f.run(RunRequest::fan_out(TASK, names)).await }
        });
        done += futures::future::join_all(batch)
            .await
            .iter()
            .filter(|r| r.is_ok())
            .count();
    }
    crate::output::line(format_args!(
        "{}",
        json!({"case": "runs_per_second", "fanout": 4, "in_flight": 64,
        "runs_per_s": done as f64 / t0.elapsed().as_secs_f64()})
    ))?;
    fanfare.shutdown().await;

    // Memory per idle specialist: RSS before and after spawning many.
    let count = 10_000;
    let before = rss_mb("VmRSS:");
    let many = Fanfare::builder(provider.clone())
        .agents_from((0..count).map(|i| AgentSpec {
            name: format!("idle-{i}"),
            ..specs[0].clone()
        }))
        .start()
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_mb("VmRSS:");
    crate::output::line(format_args!(
        "{}",
        json!({"case": "rss_per_idle_specialist", "specialists": count,
        "kib_each": (after - before) * 1024.0 / count as f64})
    ))?;
    many.shutdown().await;

    // One supervised restart: a panic, the supervisor's decision, the new actor up.
    let flaky = fanfare::agent::faults::Faulty::new(
        specs[0].clone(),
        fanfare::agent::faults::Faults {
            panic: Some(fanfare::agent::faults::Trigger::every(1)),
            ..Default::default()
        },
    );
    let intensity = fanfare::supervision::RestartIntensity {
        max_restarts: 1_000_000,
        window: Duration::from_secs(1),
        cool_down: Duration::from_secs(1),
    };
    let sup = fanfare::supervision::SupervisionConfig {
        intensity,
        backoff: fanfare::supervision::Backoff {
            base: Duration::ZERO,
            cap: Duration::ZERO,
        },
        ..Default::default()
    };
    let crashy = Fanfare::builder(provider)
        .agent(flaky)
        .supervision(sup)
        .start()
        .await?;
    let mut events = crashy.supervision_events();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let restarts = 1_000;
    let t0 = Instant::now();
    for _ in 0..restarts {
        let _ = crashy.run(RunRequest::fan_out(TASK, ["legal"])).await?;
        while !matches!(
            events.recv().await,
            Ok(fanfare::supervision::SupervisorEvent::Restarted { .. })
        ) {}
    }
    let per = t0.elapsed() / restarts;
    std::panic::set_hook(default_hook);
    crate::output::line(format_args!(
        "{}",
        json!({"case": "supervised_restart", "restarts": restarts,
        "us_per_crash_to_restarted": per.as_secs_f64() * 1e6,
        "note": "a run whose branch panics, plus the restart, end to end"})
    ))?;
    crashy.shutdown().await;
    Ok(())
}

/// What a branch costs when its call waits, as a real one does: `n` branches on the
/// simulator with a fixed 200 ms latency, fanfare's run beside the same provider stack
/// (`Retry<Admission<…>>`) called from a bare `JoinSet`, the two alternated after a
/// warm-up round; medians over the rounds. On the instant simulator no call parks, so
/// the wake-ups between a branch's tasks and the timers it arms cost nothing there;
/// here they show (in process, no sockets: the gap `bench fanout` sees at 1,000).
async fn parked(n: usize) -> anyhow::Result<()> {
    const ROUNDS: usize = 7;
    let latency = Duration::from_millis(200);
    let stack = capped_stack(SimProvider::with_profile(SimProfile::fixed(latency)), n);
    let specs: Vec<AgentSpec> = ["legal", "technical", "financial", "security"]
        .iter()
        .map(|name| AgentSpec::new(*name, format!("You are the {name} reviewer.")))
        .collect();
    let fanfare = Fanfare::builder(stack.clone())
        .agents_from(specs.clone())
        .start()
        .await?;
    let (mut ours, mut bare) = (Vec::new(), Vec::new());
    for round in 0..=ROUNDS {
        for fanfare_turn in [round % 2 == 0, round % 2 != 0] {
            let (t0, cpu0) = (Instant::now(), cpu_seconds());
            let ok = if fanfare_turn {
                let names = (0..n).map(|i| specs[i % specs.len()].name.clone());
                let request =
                    RunRequest::fan_out(TASK, names).policy(Policy::TolerantPartial { quorum: 1 });
                fanfare.run(request).await?.totals.ok
            } else {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    let (stack, spec) = (stack.clone(), &specs[i % specs.len()]);
                    let request = fan_out_request(spec, TASK.into());
                    set.spawn(async move { stack.complete(request).await.is_ok() });
                }
                let mut ok = 0;
                while let Some(done) = set.join_next().await {
                    ok += usize::from(done.unwrap_or(false));
                }
                ok
            };
            let (wall, cpu) = (t0.elapsed(), cpu_seconds() - cpu0);
            if round > 0 {
                let into = if fanfare_turn { &mut ours } else { &mut bare };
                into.push((wall, cpu, ok, n - ok));
            }
        }
    }
    fanfare.shutdown().await;
    let (our_wall, our_cpu, our_ok, _) = median(ours);
    let (bare_wall, bare_cpu, bare_ok, _) = median(bare);
    let per_branch_us = |cpu: f64| cpu * 1e6 / n as f64;
    crate::output::line(format_args!(
        "{}",
        json!({"case": "parked_branch", "n": n, "latency_ms": latency.as_millis() as u64,
        "rounds": ROUNDS, "fanfare_wall_ms": our_wall.as_secs_f64() * 1e3,
        "stack_wall_ms": bare_wall.as_secs_f64() * 1e3,
        "fanfare_cpu_us_per_branch": per_branch_us(our_cpu),
        "stack_cpu_us_per_branch": per_branch_us(bare_cpu), "fewest_ok": our_ok.min(bare_ok)})
    ))?;
    Ok(())
}
