//! Graceful shutdown: drain, then stop in reverse order, leaving nothing behind.

use std::time::Duration;

use fanfare::{Policy, RunError, RunRequest};

use crate::common::{runtime, sim};

#[tokio::test(start_paused = true)]
async fn shutdown_drains_runs_in_flight_and_refuses_new_ones() {
    let profiles = [("a", 2_000, 0.0), ("b", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut in_flight = fanfare.start_run(RunRequest::fan_out("t", ["a", "b"]));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let late = fanfare.clone();
    let shutdown = tokio::spawn(fanfare.shutdown_with_drain(Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(matches!(
        late.run(RunRequest::fan_out("t", ["b"])).await,
        Err(RunError::ShuttingDown)
    ));
    let report = in_flight.report().await.unwrap();
    assert!(
        report.status.is_success(),
        "the run in flight finished: {:?}",
        report.status
    );
    assert_eq!(shutdown.await.unwrap(), 0, "nothing had to be aborted");
}

#[tokio::test(start_paused = true)]
async fn past_the_drain_deadline_runs_are_aborted_and_nothing_is_left_behind() {
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    let profiles = [("a", 60_000, 0.0), ("b", 60_000, 0.0), ("c", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let live = fanfare.live_actors();
    assert_eq!(
        live.get(),
        7,
        "root, supervisor, orchestrator, synthesiser, three specialists"
    );
    let mut runs: Vec<_> = (0..3)
        .map(|_| {
            fanfare.start_run(
                RunRequest::fan_out("t", ["a", "b", "c"])
                    .policy(Policy::TolerantPartial { quorum: 1 }),
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fanfare
            .clone()
            .shutdown_with_drain(Duration::from_secs(1))
            .await,
        3
    );
    for run in &mut runs {
        assert!(matches!(
            run.report().await,
            Err(RunError::OrchestratorGone)
        ));
    }
    drop(runs);
    // Every model call was aborted, every actor and task is gone.
    crate::common::eventually(Duration::from_secs(5), || {
        provider.stats().aborted == 6
            && live.get() == 0
            && tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
                == before
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_clean_shutdown_logs_no_top_level_actor_exit() {
    // About one clean run in ten ended with `ERROR … top-level actor exited
    // actor="orchestrator" exit=stopped`: the root heard of shutdown by a cast that
    // the orchestrator's exit could overtake (ractor hands an actor its children's
    // exits before its messages), took the exit for a crash and restarted it. This
    // single-threaded test does not reproduce that race (`bench fanout --n 1000`
    // did: 3 in 15 repetitions before, none in 30 after); it holds the clean case.
    let logs = crate::providers::Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let profiles = [("a", 1, 0.0)];
    for _ in 0..20 {
        let provider = sim(&profiles);
        let fanfare = runtime(&provider, &profiles).await;
        fanfare.run(RunRequest::fan_out("t", ["a"])).await.unwrap();
        fanfare.shutdown().await;
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!logs.contains("top-level actor"), "{logs}");
}
