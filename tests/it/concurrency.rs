use std::time::Duration;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::{MergeStrategy, Policy, RunRequest};

use crate::common::{runtime, sim};

const FOUR: &[(&str, u64, f64)] = &[
    ("a", 100, 0.0),
    ("b", 200, 0.0),
    ("c", 300, 0.0),
    ("d", 400, 0.0),
];

#[tokio::test(start_paused = true)]
async fn wall_time_is_the_slowest_branch_not_the_sum() {
    let provider = sim(FOUR);
    let fanfare = runtime(&provider, FOUR).await;
    let report = fanfare
        .run(RunRequest::fan_out("task", ["a", "b", "c", "d"]))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    // Sum would be 1000 ms; max is 400 ms.
    assert!(
        report.wall >= Duration::from_millis(400),
        "{:?}",
        report.wall
    );
    assert!(
        report.wall < Duration::from_millis(420),
        "{:?}",
        report.wall
    );
    let slowest = report.slowest().unwrap();
    assert_eq!(slowest.agent, "d");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn wall_time_with_llm_merge_is_slowest_plus_synthesis() {
    let mut profiles = FOUR.to_vec();
    profiles.push(("synthesiser", 150, 0.0));
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, FOUR).await;
    let request = RunRequest::fan_out("task", ["a", "b", "c", "d"]).merge(MergeStrategy::llm());
    let report = fanfare.run(request).await.unwrap();
    let synthesis = report.synthesis.as_ref().unwrap();
    assert!(synthesis
        .text
        .as_deref()
        .unwrap()
        .contains("Merging the a, b, c, d perspectives"));
    assert!(synthesis.start >= Duration::from_millis(400));
    assert!(
        report.wall >= Duration::from_millis(550) && report.wall < Duration::from_millis(570),
        "{:?}",
        report.wall
    );
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn many_runs_in_flight_do_not_queue_behind_each_other() {
    let provider = sim(FOUR);
    let fanfare = runtime(&provider, FOUR).await;
    let started = tokio::time::Instant::now();
    let runs = (0..50).map(|i| {
        let f = fanfare.clone();
        async move {
            f.run(RunRequest::fan_out(
                format!("task {i}"),
                ["a", "b", "c", "d"],
            ))
            .await
        }
    });
    let reports = futures::future::join_all(runs).await;
    // 50 sequential runs would take 20 s; concurrent ones take one run's time.
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert!(reports.iter().all(|r| r.as_ref().unwrap().totals.ok == 4));
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_run_does_not_block_a_fast_one() {
    let profiles = [("slow", 30_000, 0.0), ("fast", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let slow = fanfare.start_run(RunRequest::fan_out("slow one", ["slow"]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let report = fanfare
        .run(RunRequest::fan_out("fast one", ["fast"]))
        .await
        .unwrap();
    assert!(report.status.is_success());
    assert!(report.wall < Duration::from_millis(150));
    drop(slow);
    fanfare.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_branches_end_with_a_thousand_outcomes() {
    let provider = SimProvider::with_profile(SimProfile::instant());
    let names = ["a", "b", "c", "d"];
    let profiles: Vec<(&str, u64, f64)> = names.iter().map(|n| (*n, 0, 0.0)).collect();
    let fanfare = runtime(&provider, &profiles).await;
    let agents = (0..1000).map(|i| names[i % 4]);
    let request = RunRequest::fan_out("task", agents)
        .policy(Policy::TolerantPartial { quorum: 1000 })
        .merge(MergeStrategy::Code);
    let report = fanfare.run(request).await.unwrap();
    assert_eq!(report.totals.ok, 1000, "{:?}", report.status);
    assert!(report
        .branches
        .iter()
        .enumerate()
        .all(|(i, b)| b.index == i && b.agent == names[i % 4]));
    assert_eq!(provider.stats().completed, 1000);
    fanfare.shutdown().await;
}
