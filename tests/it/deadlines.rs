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
            deadline: DeadlineKind::Branch,
            last_error: None,
            partial: None,
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
                deadline: DeadlineKind::Run,
                last_error: None,
                partial: None,
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

/// One spec agent through the full stack (timeout, admission, retries) against the
/// mock, with a one-second branch timeout.
async fn one_branch_against(mock: fanfare_mock::MockConfig) -> fanfare::RunReport {
    use fanfare::agent::spec::AgentSpec;
    use fanfare::provider::{
        AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, ExponentialBackoff, Stack,
    };
    let mock = fanfare_mock::MockServer::start(mock).await.unwrap();
    let mut config = AnthropicConfig::new(ApiKey::new("k"));
    config.base_url = mock.url();
    let (provider, _) = Stack::new()
        .timeout(Duration::from_secs(60))
        .admission(AdmissionConfig::default())
        .retry(ExponentialBackoff::default())
        .build(AnthropicProvider::new(config).unwrap());
    let fanfare = fanfare::Fanfare::builder(provider)
        .agent(AgentSpec::new("a", "Be brief."))
        .start()
        .await
        .unwrap();
    let request = RunRequest::fan_out("t", ["a"]).branch_timeout(Duration::from_secs(1));
    let report = fanfare.run(request).await.unwrap();
    fanfare.shutdown().await;
    report
}

#[tokio::test]
async fn regression_a_retry_storm_cut_by_the_branch_timeout_keeps_its_history() {
    // Once: 8 calls answered 429/529, and the report said `attempts: 0`, "timed out
    // (branch timeout)", with no status in sight.
    let report = one_branch_against(fanfare_mock::MockConfig {
        latency: Duration::from_millis(5),
        rate_429: 1.0,
        retry_after: Duration::from_millis(300),
        ..fanfare_mock::MockConfig::default()
    })
    .await;
    let b = &report.branches[0];
    let error = b.error.clone().unwrap_or_default();
    assert!(b.attempts >= 3, "{} attempts: {error}", b.attempts);
    assert!(error.contains("HTTP 429"), "{error}");
    assert!(error.contains("before the deadline"), "{error}");
    assert!(
        b.end < Duration::from_secs(1),
        "failed at once, not at the deadline"
    );
}

#[tokio::test]
async fn regression_a_call_hanging_at_the_branch_timeout_says_what_it_was_doing() {
    let report = one_branch_against(fanfare_mock::MockConfig {
        hang_rate: 1.0,
        ..fanfare_mock::MockConfig::default()
    })
    .await;
    let b = &report.branches[0];
    let BranchOutcome::TimedOut {
        deadline: DeadlineKind::Branch,
        last_error: Some(e),
        ..
    } = &b.outcome
    else {
        panic!("{:?}", b.outcome)
    };
    assert_eq!(e.attempts, 1);
    assert!(b.attempts == 1, "the report counts the attempt");
    assert!(b
        .error
        .as_deref()
        .unwrap()
        .contains("stopped at the branch deadline"));
}

#[tokio::test(start_paused = true)]
async fn regression_a_map_past_the_run_deadline_stops_dispatching_and_keeps_its_report() {
    // One POST of 200,000 items: past the run's deadline the map still dispatched
    // every item (176,000 events written), and at deadline + 5 s the run was given
    // up with "the orchestrator is not running" and no report, losing the items that
    // had answered.
    use fanfare::run::{Map, MapSource, Step};
    let profiles = [("reader", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let items: Vec<String> = (0..20_000).map(|i| format!("item {i}")).collect();
    let mut request = RunRequest::fan_out("t", Vec::<String>::new())
        .policy(Policy::TolerantPartial { quorum: 1 })
        .deadline(Duration::from_secs(1));
    request.steps = vec![Step::agent("reader").map(Map {
        over: MapSource::Items(items),
        concurrency: 10,
        policy: Policy::TolerantPartial { quorum: 1 },
    })];
    let mut handle = fanfare.start_run(request);
    let mut item_events = 0;
    while let Some(event) = handle.events.recv().await {
        if let fanfare::RunEvent::BranchFinished { item: Some(_), .. } = event {
            item_events += 1;
        }
    }
    let report = handle.report().await.expect("a report, not a run given up");
    assert!(
        report.wall <= Duration::from_millis(1_100),
        "{:?}",
        report.wall
    );
    let map = &report.branches[0].items;
    assert_eq!(map.len(), 20_000);
    let ok = map.iter().filter(|i| i.outcome.is_ok()).count();
    assert!(
        (90..=100).contains(&ok),
        "{ok} items answered in 1 s at 10 × 100 ms"
    );
    let timed_out = map
        .iter()
        .filter(|i| {
            matches!(
                i.outcome,
                BranchOutcome::TimedOut {
                    deadline: DeadlineKind::Run,
                    ..
                }
            )
        })
        .count();
    assert_eq!(ok + timed_out, 20_000);
    assert!(
        item_events <= 120,
        "{item_events} events: one per item dispatched"
    );
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_a_template_that_would_build_a_huge_prompt_fails_its_branch_uncalled() {
    // One template named a large task many times: a prompt of a gigabyte was built
    // and sent. Now the branch fails before any call, naming the step and the limit.
    use fanfare::run::{BranchError, Step, Template};
    let profiles = [("reader", 10, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let task = "x".repeat(1024 * 1024);
    let mut request = RunRequest::fan_out(task, Vec::<String>::new());
    request.steps =
        vec![Step::agent("reader").input(Template::parse(&"{{task}}\n".repeat(20)).unwrap())];
    let report = fanfare.run(request).await.unwrap();
    let BranchOutcome::Failed {
        error: BranchError::InputTooLarge { step, limit, .. },
    } = &report.branches[0].outcome
    else {
        panic!("{:?}", report.branches[0].outcome)
    };
    assert_eq!((step.as_str(), *limit), ("reader", 16 * 1024 * 1024));
    assert_eq!(provider.stats().started, 0, "no call was made");
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_a_branch_timed_out_mid_stream_keeps_the_text_it_had_streamed() {
    // The text a timed-out branch had streamed (and was paid for) was thrown away.
    let profiles = [("slow", 10_000, 0.0), ("fast", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("Should we log user queries?", ["slow", "fast"])
        .policy(Policy::TolerantPartial { quorum: 1 })
        .branch_timeout(Duration::from_secs(5));
    // Watched: the answers stream (a caller that reads no events gets no partial).
    let mut handle = fanfare.start_run(request);
    while handle.events.recv().await.is_some() {}
    let report = handle.report().await.unwrap();
    let BranchOutcome::TimedOut {
        partial: Some(text),
        ..
    } = &report.branches[0].outcome
    else {
        panic!("{:?}", report.branches[0].outcome);
    };
    assert!(text.starts_with("[simulated slow]"), "{text}");
    assert!(
        report.branches[0]
            .error
            .as_deref()
            .unwrap()
            .contains("partial answer"),
        "{:?}",
        report.branches[0].error
    );
    assert!(report
        .render()
        .contains("partial, cut by the deadline:\n[simulated slow]"));
    fanfare.shutdown().await;
}
