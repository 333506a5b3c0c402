use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::{Budget, RefusalReason};
use fanfare::{BranchOutcome, Fanfare, Policy, RunRequest};
use std::sync::Arc;
use std::time::Duration;

use crate::common::TestAgent;

#[tokio::test(start_paused = true)]
async fn a_token_capped_run_stops_dispatching_at_the_cap_and_names_the_refused_branches() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(50),
    )));
    let fanfare = Fanfare::builder(provider)
        .agent(TestAgent::new("a"))
        .start()
        .await
        .unwrap();
    let budget = Budget {
        max_tokens: Some(350),
        branch_tokens: 100,
        ..Budget::default()
    };
    let request = RunRequest::fan_out("one two three", vec!["a"; 10])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .budget(budget);
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success());
    assert_eq!(
        (report.totals.ok, report.totals.refused),
        (3, 7),
        "{}",
        report.render()
    );
    for b in &report.branches[3..] {
        assert!(matches!(
            b.outcome,
            BranchOutcome::Refused {
                reason: RefusalReason::TokenBudget { cap: 350, .. }
            }
        ));
        assert!(
            b.error
                .as_deref()
                .unwrap()
                .starts_with("refused: token budget"),
            "{:?}",
            b.error
        );
        assert_eq!(b.start, None, "never dispatched");
    }
    assert!(report.totals.usage.total() <= 350);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn under_fail_fast_a_refusal_ends_the_run_with_the_reason() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::fixed(
        Duration::from_millis(50),
    )));
    let fanfare = Fanfare::builder(provider)
        .agent(TestAgent::new("a"))
        .start()
        .await
        .unwrap();
    let budget = Budget {
        max_tokens: Some(150),
        branch_tokens: 100,
        ..Budget::default()
    };
    let report = fanfare
        .run(RunRequest::fan_out("t", vec!["a"; 3]).budget(budget))
        .await
        .unwrap();
    let fanfare::RunStatus::Failed { reason } = &report.status else {
        panic!()
    };
    let reason = reason.to_string();
    assert!(
        reason.contains("branch 1 (a) refused: token budget"),
        "{reason}"
    );
    fanfare.shutdown().await;
}
