//! Workflows end to end through the runtime: chains beside chains, maps, code steps
//! and conflicts at fan-in. Paused time, so the timings are exact.

use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::{Map, MapSource, Reused, Template};
use fanfare::{
    Agent, AgentContext, AgentOutput, AgentReply, BranchOutcome, Fanfare, Policy, RunRequest, Step,
    Task,
};
use serde_json::json;

/// Answers after `ms`: with `text` if given, else with what it was asked.
struct Fixed {
    name: &'static str,
    ms: u64,
    text: Option<&'static str>,
}

impl Fixed {
    fn echo(name: &'static str, ms: u64) -> Self {
        Self {
            name,
            ms,
            text: None,
        }
    }

    fn says(name: &'static str, ms: u64, text: &'static str) -> Self {
        Self {
            name,
            ms,
            text: Some(text),
        }
    }
}

impl Agent for Fixed {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        Ok(AgentOutput::text(match self.text {
            Some(t) => t.to_owned(),
            None => format!("{}: {}", self.name, task.prompt()),
        }))
    }
}

async fn start(agents: Vec<Fixed>) -> Fanfare {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let mut builder = Fanfare::builder(provider);
    for a in agents {
        builder = builder.agent(a);
    }
    builder.start().await.unwrap()
}

fn request(steps: Vec<Step>) -> RunRequest {
    let mut r = RunRequest::fan_out("the task", Vec::<String>::new());
    r.steps = steps;
    r
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_fast_chain_never_waits_for_a_slow_one_and_the_join_starts_when_both_end() {
    let fanfare = start(vec![
        Fixed::echo("a", 100),
        Fixed::echo("b", 500),
        Fixed::echo("c", 100),
        Fixed::echo("d", 100),
        Fixed::echo("e", 50),
    ])
    .await;
    let report = fanfare
        .run(request(vec![
            Step::agent("a"),
            Step::agent("b").after([0]),
            Step::agent("c"),
            Step::agent("d").after([2]),
            Step::agent("e").after([1, 3]),
        ]))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let b = &report.branches[1];
    let d = &report.branches[3];
    let e = &report.branches[4];
    // D ends at latency(C) + latency(D), not after B (no supersteps).
    assert!(
        d.end >= ms(200) && d.end < ms(210),
        "d ended at {:?}",
        d.end
    );
    assert!(
        b.end >= ms(600) && b.end < ms(610),
        "b ended at {:?}",
        b.end
    );
    // E starts the moment its last input (B) is ready.
    let e_start = e.start.unwrap();
    assert!(e_start >= b.end && e_start < b.end + ms(10), "{e_start:?}");
    assert!(report.wall < ms(670), "{:?}", report.wall);
    // The critical path is the slow chain and the join.
    assert_eq!(report.critical_path, vec![0, 1, 4]);
    let timeline = report.timeline(40);
    let marked: Vec<&str> = timeline
        .lines()
        .filter(|l| l.ends_with("critical path"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(marked, ["a", "b", "e"], "{timeline}");
    // The join saw both chains' ends, each under its step name.
    let text = &e.outcome.output().unwrap().text;
    assert!(
        text.contains("[b said]") && text.contains("[d said]"),
        "{text}"
    );
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_map_of_20_items_at_concurrency_10_takes_two_rounds() {
    let fanfare = start(vec![Fixed::echo("summarise", 200)]).await;
    let items: Vec<String> = (0..20).map(|i| format!("doc {i}")).collect();
    let step = Step::agent("summarise")
        .input(Template::parse("Summarise: {{item}}").unwrap())
        .map(Map {
            over: MapSource::Items(items),
            concurrency: 10,
            policy: Policy::FailFast,
        });
    let report = fanfare.run(request(vec![step])).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    assert!(
        report.wall >= ms(400) && report.wall < ms(420),
        "{:?}",
        report.wall
    );
    let b = &report.branches[0];
    assert_eq!(b.items.len(), 20);
    // Results in item order, each from its own item.
    for (i, item) in b.items.iter().enumerate() {
        assert_eq!(item.item, i);
        let text = &item.outcome.output().unwrap().text;
        assert_eq!(text, &format!("summarise: Summarise: doc {i}"));
        // The report keeps what each item was (it kept only the answers).
        let asked = item.asked.as_ref().expect("the item's input");
        assert_eq!(asked.task.as_deref(), Some(&*format!("doc {i}")));
        assert!(asked.is(&format!("doc {i}")));
    }
    // Never more than ten at once: the second ten start when the first ten end.
    let second_round = b
        .items
        .iter()
        .filter(|i| i.start.unwrap() >= ms(200))
        .count();
    assert_eq!(second_round, 10);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_map_over_an_upstream_json_list_hands_each_item_on_and_the_join_gets_them_all() {
    let fanfare = start(vec![
        Fixed::says("lister", 10, r#"["alpha", "beta", "gamma"]"#),
        Fixed::echo("each", 100),
        Fixed::echo("join", 10),
    ])
    .await;
    let report = fanfare
        .run(request(vec![
            Step::agent("lister"),
            Step::agent("each")
                .after([0])
                .input(Template::parse("item={{item}}").unwrap())
                .map(Map {
                    over: MapSource::Step(0),
                    concurrency: 2,
                    policy: Policy::FailFast,
                }),
            Step::agent("join").after([1]),
        ]))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let each = &report.branches[1];
    let texts: Vec<&str> = each
        .items
        .iter()
        .map(|i| i.outcome.output().unwrap().text.as_str())
        .collect();
    assert_eq!(
        texts,
        ["each: item=alpha", "each: item=beta", "each: item=gamma"]
    );
    let join = report.branches[2].outcome.output().unwrap().text.clone();
    for t in texts {
        assert!(join.contains(t), "{join}");
    }
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_map_takes_the_list_at_its_path_and_an_object_without_one_fails_the_step_naming_it() {
    let fanfare = start(vec![
        Fixed::says("lister", 10, r#"{"items": ["alpha", "beta"], "note": "x"}"#),
        Fixed::echo("each", 10),
    ])
    .await;
    let map = |over| Map {
        over,
        concurrency: 2,
        policy: Policy::FailFast,
    };
    let steps = |over| {
        vec![
            Step::agent("lister"),
            Step::agent("each")
                .after([0])
                .input(Template::parse("item={{item}}").unwrap())
                .map(map(over)),
        ]
    };
    let within = MapSource::Within {
        step: 0,
        path: "/items".to_owned(),
    };
    let report = fanfare.run(request(steps(within))).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let texts: Vec<&str> = report.branches[1]
        .items
        .iter()
        .map(|i| i.outcome.output().unwrap().text.as_str())
        .collect();
    assert_eq!(texts, ["each: item=alpha", "each: item=beta"]);
    // Regression: without a path the object was mapped over line by line.
    let report = fanfare
        .run(request(steps(MapSource::Step(0))))
        .await
        .unwrap();
    assert!(!report.status.is_success());
    let problem = report.branches[1].outcome.problem().unwrap();
    assert!(
        problem.contains("no items to map over: the output of `lister` is a JSON object"),
        "{problem}"
    );
    assert!(report.branches[1].items.is_empty(), "nothing was called");
    fanfare.shutdown().await;
}

#[tokio::test]
async fn regression_a_code_step_doubling_its_input_fails_at_the_limit_instead_of_taking_the_memory()
{
    // 60 `concat` steps, each of the two before, took a process to 23 GB.
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agent(Fixed::says("seed", 1, "one megabyte follows"))
        .code("grow", |input| {
            let text: String = input.upstream.iter().map(|u| u.text.as_str()).collect();
            Ok(fanfare::run::CodeOutput {
                text: text.repeat(if text.len() < 1000 { 1 << 20 } else { 2 }),
                conflicts: Vec::new(),
            })
        })
        .start()
        .await
        .unwrap();
    let mut steps = vec![Step::agent("seed")];
    for i in 1..40 {
        steps.push(
            Step::code("grow", serde_json::Value::Null)
                .named(format!("g{i}"))
                .after([i - 1]),
        );
    }
    let report = fanfare.run(request(steps)).await.unwrap();
    assert!(!report.status.is_success());
    let failed = report
        .branches
        .iter()
        .find_map(|b| b.outcome.problem())
        .unwrap();
    assert!(
        failed.contains("came to") && failed.contains("more than the limit of 16777216"),
        "{failed}"
    );
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_a_map_wider_than_the_runs_limit_fails_before_any_item_is_called() {
    // A map over a model's answer was as wide as the answer: a server's
    // --max-branches did not apply, and one POST bought 100,000 calls.
    let fanfare = start(vec![
        Fixed::says("lister", 10, r#"["a", "b", "c"]"#),
        Fixed::echo("each", 10),
    ])
    .await;
    let steps = vec![
        Step::agent("lister"),
        Step::agent("each").after([0]).map(Map {
            over: MapSource::Step(0),
            concurrency: 2,
            policy: Policy::FailFast,
        }),
    ];
    let report = fanfare
        .run(request(steps.clone()).max_items(2))
        .await
        .unwrap();
    let problem = report.branches[1].outcome.problem().unwrap();
    assert!(
        problem.contains("lists 3 items, more than the 2 one map may fan out to"),
        "{problem}"
    );
    assert!(report.branches[1].items.is_empty(), "nothing was called");
    let report = fanfare.run(request(steps).max_items(3)).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn two_branches_disagreeing_on_a_key_is_a_conflict_named_with_both_sides() {
    let legal = r#"{"risk": "high", "findings": ["retention"]}"#;
    let security = "```json\n{\"risk\": \"medium\", \"findings\": [\"tls\"]}\n```";
    let fanfare = start(vec![
        Fixed::says("legal", 10, legal),
        Fixed::says("security", 20, security),
    ])
    .await;
    let steps = |options| {
        vec![
            Step::agent("legal"),
            Step::agent("security"),
            Step::code("json-merge", options).after([0, 1]),
        ]
    };

    // No rule declared: the merge step fails and its error names both sides.
    let report = fanfare
        .run(
            request(steps(json!({"reduce": {"findings": "append"}})))
                .policy(Policy::TolerantPartial { quorum: 2 }),
        )
        .await
        .unwrap();
    let merge = &report.branches[2];
    assert!(
        matches!(merge.outcome, BranchOutcome::Failed { .. }),
        "{:?}",
        merge.outcome
    );
    let error = merge.error.as_deref().unwrap();
    assert!(error.contains("risk"), "{error}");
    assert!(
        error.contains("legal says \"high\"") && error.contains("security says \"medium\""),
        "{error}"
    );

    // A declared rule resolves it; the report still lists the conflict and how.
    let report = fanfare
        .run(request(steps(json!({
            "reduce": {"findings": "append"},
            "on_conflict": "prefer:legal"
        }))))
        .await
        .unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    let merge = &report.branches[2];
    let merged: serde_json::Value =
        serde_json::from_str(&merge.outcome.output().unwrap().text).unwrap();
    assert_eq!(
        merged,
        json!({"risk": "high", "findings": ["retention", "tls"]})
    );
    assert_eq!(merge.conflicts.len(), 1);
    let c = &merge.conflicts[0];
    assert_eq!(c.key, "risk");
    assert_eq!(
        c.values,
        vec![
            ("legal".to_owned(), json!("high")),
            ("security".to_owned(), json!("medium"))
        ]
    );
    assert_eq!(c.resolved.as_deref(), Some("preferred `legal`"));
    // And the JSON report carries it, with the edges.
    let j = serde_json::to_value(&report).unwrap();
    assert_eq!(j["branches"][2]["conflicts"][0]["key"], "risk");
    assert_eq!(j["branches"][2]["depends_on"], json!([0, 1]));
    let text = report.render();
    assert!(
        text.contains(
            r#"conflict `risk`: legal says "high"; security says "medium" → preferred `legal`"#
        ),
        "{text}"
    );
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_resumed_run_takes_reused_outputs_without_calling_and_runs_the_rest() {
    let fanfare = start(vec![
        Fixed::says("lister", 1000, r#"["alpha", "beta"]"#),
        Fixed::echo("each", 100),
        Fixed::echo("join", 10),
    ])
    .await;
    // This run's own answers from before it resumed, 100 tokens each.
    let earlier = |index, item, text: &str| fanfare::run::Reuse {
        index,
        item,
        output: AgentOutput {
            usage: fanfare::provider::Usage {
                input_tokens: 60,
                output_tokens: 40,
                ..Default::default()
            },
            ..AgentOutput::text(text)
        },
        from: Reused::BeforeResume,
    };
    let started = tokio::time::Instant::now();
    let report = fanfare
        .run(
            request(vec![
                Step::agent("lister"),
                Step::agent("each")
                    .after([0])
                    .input(Template::parse("item={{item}}").unwrap())
                    .map(Map {
                        over: MapSource::Step(0),
                        concurrency: 2,
                        policy: Policy::FailFast,
                    }),
                Step::agent("join").after([1]),
            ])
            .reuse([
                earlier(0, None, r#"["one", "two"]"#),
                earlier(1, Some(1), "each: item=two (from before)"),
            ]),
        )
        .await
        .unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    // The lister was not called (it would have taken 1 s and listed alpha, beta).
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(report.branches[0].reused, Some(Reused::BeforeResume));
    let each = &report.branches[1];
    let texts: Vec<&str> = each
        .items
        .iter()
        .map(|i| i.outcome.output().unwrap().text.as_str())
        .collect();
    assert_eq!(texts, ["each: item=one", "each: item=two (from before)"]);
    assert_eq!(
        each.items.iter().map(|i| i.reused).collect::<Vec<_>>(),
        [None, Some(Reused::BeforeResume)]
    );
    assert_eq!(report.branches[2].reused, None);
    // The run paid for what it answered before it resumed: its totals count it (the
    // seventh probe: a resumed run's totals showed a quarter of its spend).
    let called = report.totals.usage.total();
    assert!(called >= 200, "{called}: {:?}", report.totals);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["branches"][0]["reused"], "before_resume");
    assert!(json["branches"][2].get("reused").is_none());
    // A report written before `reused` said where from (`true`) still reads.
    let mut old = json.clone();
    old["branches"][0]["reused"] = serde_json::json!(true);
    let back: fanfare::RunReport = serde_json::from_value(old).unwrap();
    assert_eq!(back.branches[0].reused, Some(Reused::BeforeResume));
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reused_output_naming_a_step_the_run_lacks_is_refused() {
    let fanfare = start(vec![Fixed::echo("a", 10)]).await;
    let reuse = fanfare::run::Reuse {
        index: 3,
        item: None,
        output: AgentOutput::text("x"),
        from: Reused::EarlierRun,
    };
    let e = fanfare
        .run(request(vec![Step::agent("a")]).reuse([reuse]))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("step 3"), "{e}");
    fanfare.shutdown().await;
}
