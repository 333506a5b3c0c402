use std::time::Duration;

use fanfare::run::DeadlineKind;
use fanfare::{BranchOutcome, Policy, RunRequest};

use crate::common::{eventually, runtime, sim};

#[tokio::test(start_paused = true)]
async fn branch_timeout_ends_the_branch_and_aborts_its_call() {
    let profiles = [("slow", 10_000, 0.0), ("fast", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("t", ["slow", "fast"])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .branch_timeout(Duration::from_secs(1));
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success());
    assert_eq!(
        report.branches[0].outcome,
        BranchOutcome::TimedOut {
            deadline: DeadlineKind::Branch
        }
    );
    let ended = report.branches[0].end;
    assert!(
        ended >= Duration::from_secs(1) && ended < Duration::from_millis(1010),
        "{ended:?}"
    );
    eventually(Duration::from_secs(1), || provider.stats().aborted == 1).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn run_deadline_caps_every_branch() {
    let profiles = [
        ("slow", 10_000, 0.0),
        ("slower", 20_000, 0.0),
        ("fast", 100, 0.0),
    ];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("t", ["slow", "slower", "fast"])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .deadline(Duration::from_secs(2));
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success());
    for i in [0, 1] {
        assert_eq!(
            report.branches[i].outcome,
            BranchOutcome::TimedOut {
                deadline: DeadlineKind::Run
            }
        );
    }
    assert!(
        report.wall >= Duration::from_secs(2) && report.wall < Duration::from_millis(2010),
        "{:?}",
        report.wall
    );
    eventually(Duration::from_secs(1), || provider.stats().aborted == 2).await;
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn fail_fast_treats_a_timeout_as_a_failure() {
    let profiles = [
        ("slow", 10_000, 0.0),
        ("ok", 100, 0.0),
        ("other", 5_000, 0.0),
    ];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request =
        RunRequest::fan_out("t", ["slow", "ok", "other"]).branch_timeout(Duration::from_secs(1));
    let report = fanfare.run(request).await.unwrap();
    assert!(!report.status.is_success());
    assert_eq!(report.branches[0].outcome.label(), "timed_out");
    assert_eq!(report.branches[1].outcome.label(), "ok");
    assert_eq!(report.branches[2].outcome.label(), "cancelled");
    eventually(Duration::from_secs(1), || provider.stats().aborted == 2).await;
    fanfare.shutdown().await;
}
