use fanfare::agent::spec::AgentSpec;
use fanfare::provider::{
    AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, SimProfile,
    SimProvider, Stack,
};
use fanfare::run::{Budget, RefusalReason};
use fanfare::{BranchOutcome, Fanfare, Policy, RunRequest};
use fanfare_mock::{MockConfig, MockServer};
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

/// 500 branches of a 64-token agent against the mock, priced as claude-haiku-4-5 (or
/// answered by a model with no price), under `cap` dollars.
async fn five_hundred_branches_under(cap: f64, answer_model: Option<&str>) -> fanfare::RunReport {
    let mock = MockServer::start(MockConfig {
        latency: Duration::from_millis(5),
        answer_model: answer_model.map(str::to_owned),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut config = AnthropicConfig::new(ApiKey::new("k"));
    config.base_url = mock.url();
    config.default_model = "claude-haiku-4-5".into();
    let (provider, _) = Stack::new()
        .admission(AdmissionConfig::default())
        .retry(ExponentialBackoff::default())
        .build(AnthropicProvider::new(config).unwrap());
    let mut agent = AgentSpec::new("a", "You are a careful reviewer of plans.");
    agent.max_tokens = 64;
    let fanfare = Fanfare::builder(provider)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("Should we keep plain text logs?", vec!["a"; 500])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .budget(Budget {
            max_cost_usd: Some(cap),
            ..Budget::default()
        });
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_budget_usd_caps_a_500_branch_fan_out_before_any_answer_is_priced() {
    // Once, every branch was sent: the first wave was estimated at $0; and a server
    // answering with a model name that has no price turned the cap off.
    let cap = 0.01;
    let mut answered_under_the_cap = None;
    for answer_model in [None, Some("renamed-by-the-server")] {
        let report = five_hundred_branches_under(cap, answer_model).await;
        let spent = report.totals.cost_usd.unwrap_or(0.0);
        // Each branch reserved its prompt plus its full 64-token allowance; the
        // answers use less, so the spend stays under the cap (a few tokens of
        // estimate error per call in flight aside).
        assert!(
            spent <= cap * 1.02,
            "{answer_model:?}: spent ${spent:.5} of ${cap}"
        );
        assert!(
            report.totals.ok >= 20,
            "{answer_model:?}: {}",
            report.totals.ok
        );
        // An answer from an unknown model is priced as the model asked for, so the
        // cap lets through no more branches than with a priced answer.
        let ok = *answered_under_the_cap.get_or_insert(report.totals.ok);
        assert!(
            report.totals.ok <= ok + 2,
            "{answer_model:?}: {} > {ok}",
            report.totals.ok
        );
        assert_eq!(report.totals.ok + report.totals.refused, 500);
        let refused = report
            .branches
            .iter()
            .find(|b| b.outcome.label() == "refused")
            .unwrap();
        assert!(
            matches!(
                refused.outcome,
                BranchOutcome::Refused {
                    reason: RefusalReason::CostBudget { .. }
                }
            ),
            "{:?}",
            refused.outcome
        );
    }
}

#[tokio::test(start_paused = true)]
async fn regression_budget_tokens_reserve_the_agents_max_tokens_not_a_fixed_512() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let mut agent = AgentSpec::new("a", "Be brief.");
    agent.max_tokens = 2_000;
    let fanfare = Fanfare::builder(provider)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("one two three", vec!["a"; 3])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .budget(Budget {
            max_tokens: Some(3_000),
            ..Budget::default()
        });
    let report = fanfare.run(request).await.unwrap();
    // Each branch reserves ~2,008 tokens: one fits in 3,000, two do not.
    assert_eq!((report.totals.ok, report.totals.refused), (1, 2));
    let BranchOutcome::Refused {
        reason: RefusalReason::TokenBudget { needed, .. },
    } = report.branches[1].outcome
    else {
        panic!("{:?}", report.branches[1].outcome)
    };
    assert!(needed > 2_000, "{needed}");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_cost_cap_on_a_model_without_a_price_refuses_instead_of_spending_blind() {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let mut agent = AgentSpec::new("a", "Be brief.");
    agent.model = Some("mystery-model".into());
    let fanfare = Fanfare::builder(provider)
        .agent(agent)
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("t", ["a"]).budget(Budget {
            max_cost_usd: Some(1.0),
            ..Budget::default()
        }))
        .await
        .unwrap();
    assert_eq!(
        report.branches[0].outcome,
        BranchOutcome::Refused {
            reason: RefusalReason::Unpriced {
                model: "mystery-model".into()
            }
        }
    );
    let err = fanfare
        .run(RunRequest::fan_out("t", ["a"]).budget(Budget {
            max_cost_usd: Some(f64::NAN),
            ..Budget::default()
        }))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cost cap must be a finite"),
        "{err}"
    );
    fanfare.shutdown().await;
}

/// A model that reports 3,000 input tokens for every call, whatever it was sent.
fn greedy() -> fanfare::provider::Scripted {
    fanfare::provider::Scripted::answering(|request| fanfare::provider::Completion {
        text: format!("{} answered", request.agent),
        model: "scripted-1".into(),
        usage: fanfare::provider::Usage {
            input_tokens: 3_000,
            output_tokens: 5,
            ..Default::default()
        },
        attempts: 1,
        ..Default::default()
    })
}

#[tokio::test]
async fn regression_an_llm_merge_is_not_sent_when_the_branches_spent_the_budget() {
    // The seventh probe: branches settled at 6,010 tokens against a cap of 2,000, and
    // the merge call still went out and the run ended `succeeded`.
    let script = greedy();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agent(AgentSpec::new("a", "A."))
        .agent(AgentSpec::new("b", "B."))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("short", ["a", "b"])
        .budget(Budget {
            max_tokens: Some(2_000),
            branch_tokens: 10,
            ..Budget::default()
        })
        .merge(fanfare::MergeStrategy::llm());
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    assert!(!report.status.is_success(), "{}", report.render());
    let synthesis = report.synthesis.as_ref().unwrap();
    let error = synthesis.error.clone().unwrap_or_default();
    assert!(
        error.contains("merge call was not sent"),
        "{}",
        report.render()
    );
    assert!(error.contains("token budget"), "{error}");
    assert_eq!(
        script.requests().len(),
        2,
        "the two branches, no merge call"
    );
}

#[tokio::test(start_paused = true)]
async fn regression_a_steps_retries_are_bounded_wait_between_them_and_run_the_budget_down() {
    // The seventh probe: `retries = 50` sent 51 empty-answer calls in 1.4 s against a
    // 5,000-token budget, and `retries = 1000` was accepted.
    let script = fanfare::provider::Scripted::answering(|_| fanfare::provider::Completion {
        text: String::new(),
        model: "scripted-1".into(),
        attempts: 1,
        ..Default::default()
    });
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agent(AgentSpec::new("a", "A."))
        .start()
        .await
        .unwrap();
    let mut too_many = RunRequest::fan_out("x", ["a"]);
    too_many.steps[0].retries = 11;
    let e = fanfare.run(too_many).await.unwrap_err().to_string();
    assert!(e.contains("retries must be at most 10"), "{e}");

    let mut request = RunRequest::fan_out("x", ["a"]).budget(Budget {
        max_tokens: Some(1_600),
        ..Budget::default()
    });
    request.steps[0].retries = 10;
    let started = tokio::time::Instant::now();
    let report = fanfare.run(request).await.unwrap();
    let took = started.elapsed();
    fanfare.shutdown().await;
    // Each empty answer kept its ~516-token reservation: three fit under 1,600.
    assert_eq!(script.requests().len(), 3, "{}", report.render());
    assert!(matches!(
        report.branches[0].outcome,
        BranchOutcome::Refused { .. }
    ));
    // The two retries waited 250 ms and 500 ms first.
    assert!(took >= Duration::from_millis(750), "{took:?}");
}
