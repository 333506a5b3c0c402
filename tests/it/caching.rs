//! Shared-prefix layout: a fan-out's branches all start their prompts with the same
//! task bytes (what servers cache), and the report counts what the cache saved.

use std::sync::Arc;

use fanfare::agent::spec::{AgentSpec, FAN_OUT_ASK};
use fanfare::provider::{Completion, Scripted, Usage};
use fanfare::run::Template;
use fanfare::{Fanfare, RunRequest, Step};

fn specs() -> Vec<AgentSpec> {
    ["legal", "technical", "security"]
        .into_iter()
        .map(|n| AgentSpec::new(n, format!("You are the {n} reviewer.")))
        .collect()
}

#[tokio::test]
async fn a_fan_outs_branches_share_one_copy_of_the_task_as_the_prefix_of_their_prompts() {
    let scripted = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(scripted.clone()))
        .agents_from(specs())
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out(
            "A long proposal every reviewer reads.",
            ["legal", "technical", "security"],
        ))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let requests = scripted.requests();
    assert_eq!(requests.len(), 3);
    for r in &requests {
        assert_eq!(
            r.shared_prefix.as_deref(),
            Some("A long proposal every reviewer reads.")
        );
        // The specialist's own instructions follow the shared part.
        assert_eq!(r.system, format!("You are the {} reviewer.", r.agent));
        assert_eq!(r.messages[0].content, FAN_OUT_ASK);
    }
    // One copy of the task for the whole run, not one per branch (a 20 KB document
    // read by 10,000 branches was copied into each of their prompts several times).
    let prefixes: Vec<_> = requests
        .iter()
        .map(|r| r.shared_prefix.clone().unwrap())
        .collect();
    assert!(
        prefixes.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])),
        "every branch's prefix is the run's one copy of the task"
    );

    // A step whose input a template builds for it alone keeps the plain layout.
    let mut request = RunRequest::fan_out("t", Vec::<String>::new());
    request.steps =
        vec![Step::agent("legal").input(Template::parse("Only for legal: {{task}}").unwrap())];
    fanfare.run(request).await.unwrap();
    let last = scripted.requests().pop().unwrap();
    assert_eq!(last.shared_prefix, None);
    assert_eq!(last.messages[0].content, "Only for legal: t");
    fanfare.shutdown().await;
}

#[tokio::test]
async fn the_report_counts_cache_reads_and_what_they_saved() {
    // Branches after the first read 1,000 prompt tokens from the cache, on a model
    // priced at $1 per million input tokens (cache reads at $0.10).
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scripted = Scripted::answering(move |_| {
        let cached = if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
            0
        } else {
            1_000
        };
        Completion {
            text: "ok".into(),
            model: "claude-haiku-4-5".into(),
            usage: Usage {
                input_tokens: 20,
                output_tokens: 5,
                cache_read_input_tokens: cached,
                ..Usage::default()
            },
            attempts: 1,
            ..Completion::default()
        }
    });
    let fanfare = Fanfare::builder(Arc::new(scripted))
        .agents_from(specs())
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out(
            "doc",
            ["legal", "technical", "security"],
        ))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert_eq!(report.totals.usage.cache_read_input_tokens, 2_000);
    let saved = report.totals.cache_saved_usd.unwrap();
    assert!((saved - 2_000.0 * 0.9 / 1e6).abs() < 1e-12, "{saved}");
    let text = report.render();
    assert!(
        text.contains("prompt cache: 2000 input tokens read from the cache (saved $0.0018)"),
        "{text}"
    );
}

/// Dispatch times of a 3-way fan-out on a streaming 100 ms model, with and without
/// the warm-up.
async fn starts(cache_warm: bool) -> Vec<std::time::Duration> {
    let profiles = [("a", 100, 0.0), ("b", 100, 0.0), ("c", 100, 0.0)];
    let provider = crate::common::sim(&profiles);
    let fanfare = crate::common::runtime(&provider, &profiles).await;
    let report = fanfare
        .run(RunRequest::fan_out("one long document", ["a", "b", "c"]).cache_warm(cache_warm))
        .await
        .unwrap();
    assert!(report.status.is_success());
    fanfare.shutdown().await;
    report.branches.iter().map(|b| b.start.unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn with_cache_warm_the_others_go_when_the_first_answer_starts_not_before() {
    use std::time::Duration;
    let cold = starts(false).await;
    assert!(
        cold.iter().all(|s| *s < Duration::from_millis(1)),
        "{cold:?}"
    );
    let warm = starts(true).await;
    assert!(warm[0] < Duration::from_millis(1), "{warm:?}");
    // The simulated model streams its answer in up to 8 pieces over its 100 ms: the
    // first at an eighth or so. The others go then — after the first text, long
    // before its end.
    for s in &warm[1..] {
        assert!(
            *s >= Duration::from_millis(10) && *s < Duration::from_millis(40),
            "{warm:?}"
        );
    }
}
