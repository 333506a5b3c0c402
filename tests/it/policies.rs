use std::time::Duration;

use fanfare::run::{BranchError, CancelReason};
use fanfare::{BranchOutcome, Policy, RunRequest, RunStatus};

use crate::common::{eventually, runtime, sim};

/// `bad` fails at 50 ms; the others would take 10 s.
const ONE_BAD: &[(&str, u64, f64)] = &[
    ("a", 10_000, 0.0),
    ("bad", 50, 1.0),
    ("c", 10_000, 0.0),
    ("d", 10_000, 0.0),
];

#[tokio::test(start_paused = true)]
async fn fail_fast_cancels_siblings_and_aborts_their_model_calls() {
    let provider = sim(ONE_BAD);
    let fanfare = runtime(&provider, ONE_BAD).await;
    let report = fanfare
        .run(RunRequest::fan_out("task", ["a", "bad", "c", "d"]))
        .await
        .unwrap();
    let RunStatus::Failed { reason } = &report.status else {
        panic!("run should fail")
    };
    let reason = reason.to_string();
    assert!(reason.starts_with("branch 1 (bad)"), "{reason}");
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert!(
        report.wall < Duration::from_millis(100),
        "decided at 50 ms, took {:?}",
        report.wall
    );
    assert!(matches!(
        &report.branches[1].outcome,
        BranchOutcome::Failed {
            error: BranchError::Agent(_)
        }
    ));
    for i in [0, 2, 3] {
        assert_eq!(
            report.branches[i].outcome,
            BranchOutcome::Cancelled {
                reason: CancelReason::SiblingFailed {
                    index: 1,
                    agent: "bad".into()
                }
            }
        );
    }
    // The provider saw its three in-flight calls dropped, long before they would end.
    eventually(Duration::from_secs(1), || provider.stats().aborted == 3).await;
    assert_eq!(provider.stats().completed, 0);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tolerate_partial_meets_quorum_despite_a_failure() {
    let profiles = [
        ("a", 100, 0.0),
        ("bad", 50, 1.0),
        ("c", 200, 0.0),
        ("d", 300, 0.0),
    ];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("task", ["a", "bad", "c", "d"])
        .policy(Policy::TolerantPartial { quorum: 3 });
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    assert_eq!((report.totals.ok, report.totals.failed), (3, 1));
    // It keeps collecting until every branch has ended.
    assert!(report.wall >= Duration::from_millis(300));
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tolerate_partial_ends_as_soon_as_quorum_is_unreachable() {
    let provider = sim(ONE_BAD);
    let fanfare = runtime(&provider, ONE_BAD).await;
    let request = RunRequest::fan_out("task", ["a", "bad", "c", "d"])
        .policy(Policy::TolerantPartial { quorum: 4 });
    let report = fanfare.run(request).await.unwrap();
    let RunStatus::Failed { reason } = &report.status else {
        panic!("run should fail")
    };
    let reason = reason.to_string();
    assert!(reason.contains("quorum 4 unreachable"), "{reason}");
    assert!(
        report.wall < Duration::from_millis(100),
        "{:?}",
        report.wall
    );
    assert_eq!(report.totals.cancelled, 3);
    eventually(Duration::from_secs(1), || provider.stats().aborted == 3).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn tolerate_partial_fails_when_too_few_succeed() {
    let profiles = [("a", 10, 0.0), ("b", 10, 1.0), ("c", 10, 1.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request =
        RunRequest::fan_out("t", ["a", "b", "c"]).policy(Policy::TolerantPartial { quorum: 2 });
    let mut run = fanfare.start_run(request);
    let mut finished = Vec::new();
    while let Some(event) = run.events.recv().await {
        if let fanfare::RunEvent::BranchFinished { index, .. } = event {
            finished.push(index);
        }
    }
    let report = run.report().await.unwrap();
    assert!(!report.status.is_success());
    // Every branch still ends exactly once, failed or not.
    finished.sort_unstable();
    assert_eq!(finished, [0, 1, 2]);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_with_the_reason() {
    let profiles = [("a", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let err = fanfare
        .run(RunRequest::fan_out("t", ["a", "nope"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown agent `nope`") && err.contains("known: a"),
        "{err}"
    );
    let err = fanfare
        .run(RunRequest::fan_out("t", ["a"]).policy(Policy::TolerantPartial { quorum: 2 }))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("quorum 2"), "{err}");
    let err = fanfare
        .run(RunRequest::fan_out("t", Vec::<String>::new()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no steps"), "{err}");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_future_cancels_its_branches() {
    let profiles = [("a", 10_000, 0.0), ("b", 10_000, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let run = fanfare.run(RunRequest::fan_out("t", ["a", "b"]));
    assert!(tokio::time::timeout(Duration::from_millis(100), run)
        .await
        .is_err());
    eventually(Duration::from_secs(1), || provider.stats().aborted == 2).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_dropping_a_run_handle_cancels_the_run() {
    let profiles = [("a", 10_000, 0.0), ("b", 10_000, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let handle = fanfare.start_run(RunRequest::fan_out("t", ["a", "b"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(handle);
    eventually(Duration::from_secs(1), || provider.stats().aborted == 2).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_a_run_keeps_what_ended_and_cancels_the_rest() {
    // `quick` ends at 50 ms; `slow` would take 10 s; the run is stopped at 100 ms.
    let profiles = [("quick", 50, 0.0), ("slow", 10_000, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut handle = fanfare.start_run(RunRequest::fan_out("t", ["quick", "slow"]));
    tokio::time::sleep(Duration::from_millis(100)).await;
    handle.stop();
    let report = handle.report().await.expect("a stopped run still reports");
    let RunStatus::Failed { reason } = &report.status else {
        panic!("a stopped run fails: {:?}", report.status)
    };
    assert_eq!(reason.to_string(), "stopped before it ended");
    assert!(
        report.branches[0].outcome.is_ok(),
        "{:?}",
        report.branches[0]
    );
    assert_eq!(
        report.branches[1].outcome,
        BranchOutcome::Cancelled {
            reason: CancelReason::Stopped
        }
    );
    assert!(report.synthesis.is_none(), "no merge after a stop");
    assert!(report.wall < Duration::from_secs(1), "{:?}", report.wall);
    eventually(Duration::from_secs(1), || provider.stats().aborted == 1).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_a_run_that_ended_changes_nothing() {
    let profiles = [("a", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut handle = fanfare.start_run(RunRequest::fan_out("t", ["a"]));
    let report = handle.report().await.unwrap();
    handle.stop();
    assert!(report.status.is_success(), "{:?}", report.status);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn absurd_deadlines_are_refused_instead_of_overflowing() {
    let profiles = [("a", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let err = fanfare
        .run(RunRequest::fan_out("t", ["a"]).deadline(Duration::MAX))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("the deadline must be at most 30 days"),
        "{err}"
    );
    let err = fanfare
        .run(RunRequest::fan_out("t", ["a"]).soft_deadline(Duration::MAX))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("soft deadline"), "{err}");
    fanfare.shutdown().await;
}
