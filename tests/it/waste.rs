//! Wasted calls: what the provider counted (and billed) for answers that were not
//! used — retried failures, 429s, hedges' losers — appear in the report.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{ExponentialBackoff, ProviderErrorKind, Retry, Scripted};
use fanfare::{Fanfare, Policy, RunRequest};

#[tokio::test(start_paused = true)]
async fn retried_429s_and_a_branch_that_gave_up_are_counted_as_wasted_calls() {
    let scripted = Scripted::new();
    // A 429 and six 503s, then answers: with four attempts each, one branch runs
    // out of attempts on errors, the other gets the first answer.
    scripted.push_error(ProviderErrorKind::RateLimited {
        retry_after_ms: Some(10),
        excerpt: String::new(),
    });
    for _ in 0..6 {
        scripted.push_error(ProviderErrorKind::Status {
            status: 503,
            retry_after_ms: Some(10),
            excerpt: String::new(),
        });
    }
    let provider = Retry::new(scripted, ExponentialBackoff::new(4));
    let fanfare = Fanfare::builder(Arc::new(provider))
        .agent(AgentSpec::new("a", "You are a."))
        .agent(AgentSpec::new("b", "You are b."))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", ["a", "b"]).policy(Policy::TolerantPartial { quorum: 1 }))
        .await
        .unwrap();
    fanfare.shutdown().await;
    let mut wasted: Vec<u32> = report.branches.iter().map(|b| b.wasted_calls).collect();
    wasted.sort();
    // The two branches' calls interleave on the queue of errors, but together they
    // made 8 attempts and used 1 answer: 7 wasted, one of them a 429.
    assert_eq!(wasted, [3, 4]);
    assert_eq!(report.totals.attempts, 8, "{}", report.render());
    assert_eq!(
        report.totals.wasted_calls,
        7,
        "{}",
        serde_json::to_string_pretty(&report.branches).unwrap()
    );
    assert_eq!(report.totals.rate_limited, 1);
    assert_eq!(report.totals.ok, 1);
    assert!(report
        .render()
        .contains("wasted calls: 7 (1 refused for load"));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["totals"]["wasted_calls"], 7);
}
