//! A step that runs a whole workflow: per item of a map, a run of its own (what
//! `fanfare batch` is), with its own report, its failure kept to its item, its
//! report streamed as the item ends. Paused time, so the timings are exact.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::{BranchError, Map, MapSource, RequestError, StepProblem, SubWorkflow, Template};
use fanfare::{
    Agent, AgentContext, AgentError, AgentOutput, AgentReply, BranchOutcome, Fanfare,
    MergeStrategy, Policy, RunEvent, RunRequest, Step, Task,
};

/// Answers `NAME saw INPUT` after `ms` (15 tokens), or — `legal` only — fails when the
/// input says "broken". Counts the calls in flight.
struct Reader {
    name: &'static str,
    ms: u64,
    in_flight: Arc<AtomicUsize>,
}

impl Agent for Reader {
    fn name(&self) -> &str {
        self.name
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        struct Leaving(Arc<AtomicUsize>);
        impl Drop for Leaving {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _leaving = Leaving(self.in_flight.clone());
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        if self.name == "legal" && task.input.contains("broken") {
            return Err(AgentError::Rejected {
                reason: format!("{} cannot read it", self.name),
            });
        }
        let mut out = AgentOutput::text(format!("{} saw {}", self.name, task.input));
        out.usage.input_tokens = 10;
        out.usage.output_tokens = 5;
        Ok(out)
    }
}

async fn start(in_flight: &Arc<AtomicUsize>) -> Fanfare {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let reader = |name, ms| Reader {
        name,
        ms,
        in_flight: in_flight.clone(),
    };
    Fanfare::builder(provider)
        .agent(reader("legal", 100))
        .agent(reader("tech", 60))
        .start()
        .await
        .unwrap()
}

/// Each document through `legal` and `tech`, merged by code, one run per document.
fn per_document(docs: &[&str], concurrency: usize) -> RunRequest {
    let mut flow = SubWorkflow::new("review", vec![Step::agent("legal"), Step::agent("tech")]);
    flow.merge = Some(MergeStrategy::Code);
    let step = Step::workflow(flow)
        .input(Template::parse("{{item}}").unwrap())
        .map(Map {
            over: MapSource::Items(docs.iter().map(|d| (*d).to_owned()).collect()),
            concurrency,
            policy: Policy::TolerantPartial { quorum: 1 },
        });
    let mut request = RunRequest::fan_out("", Vec::<String>::new());
    request.steps = vec![step];
    request
}

#[tokio::test(start_paused = true)]
async fn a_map_over_a_workflow_runs_it_per_item_and_keeps_each_items_report() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fanfare = start(&in_flight).await;
    let docs = ["doc a", "doc b", "broken doc", "doc d", "doc e", "doc f"];
    let report = fanfare.run(per_document(&docs, 2)).await.unwrap();
    assert!(report.status.is_success(), "{:?}", report.status);
    // Six runs of 100 ms (both agents at once), two at a time: three rounds.
    assert!(
        report.wall >= Duration::from_millis(300) && report.wall < Duration::from_millis(320),
        "{:?}",
        report.wall
    );
    let items = &report.branches[0].items;
    assert_eq!(items.len(), 6);
    assert_eq!(report.branches[0].agent, "workflow:review");
    for (k, item) in items.iter().enumerate() {
        let run = item.run.as_ref().expect("each item keeps its run's report");
        assert_eq!(run.branches.len(), 2, "item {k}");
        if docs[k] == "broken doc" {
            match &item.outcome {
                BranchOutcome::Failed {
                    error: BranchError::Workflow { workflow, reason },
                } => {
                    assert_eq!(workflow, "review");
                    assert!(reason.contains("cannot read it"), "{reason}");
                }
                other => panic!("item {k}: {other:?}"),
            }
            assert!(!run.status.is_success());
            continue;
        }
        // The item's answer is its run's merge: both agents on its own document.
        let text = &item.outcome.output().unwrap().text;
        assert!(text.contains(&format!("legal saw {}", docs[k])), "{text}");
        assert!(text.contains(&format!("tech saw {}", docs[k])), "{text}");
        assert_eq!(
            run.synthesis.as_ref().and_then(|s| s.text.as_deref()),
            Some(text.as_str())
        );
        assert_ne!(run.run_id, report.run_id);
    }
    // What the runs spent counts, the failed one's too (its `tech` answered): five
    // runs of 2 × 15 tokens and one of 15.
    assert_eq!(items[2].usage.total(), 15);
    assert_eq!(items[0].usage.total(), 30);
    assert_eq!(report.totals.usage.total(), 5 * 30 + 15);
    assert_eq!(in_flight.load(Ordering::SeqCst), 0);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn each_items_run_is_in_its_finished_event_in_completion_order() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fanfare = start(&in_flight).await;
    let docs = ["one", "two", "three"];
    let mut handle = fanfare.start_run(per_document(&docs, 3));
    let mut ended = Vec::new();
    while let Some(event) = handle.events.recv().await {
        if let RunEvent::BranchFinished {
            item: Some(k),
            sub_run,
            outcome,
            ..
        } = event
        {
            let sub = sub_run.expect("the item's run comes with its event");
            let report = sub.report();
            assert_eq!(report.run_id, sub.run_id());
            assert!(sub.succeeded() && outcome.is_ok());
            assert_eq!(report.branches.len(), 2);
            ended.push(k);
        }
    }
    ended.sort_unstable();
    assert_eq!(ended, vec![0, 1, 2]);
    assert!(handle.report().await.unwrap().status.is_success());
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn dropping_the_run_stops_the_items_calls() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fanfare = start(&in_flight).await;
    let handle = fanfare.start_run(per_document(&["a", "b", "c", "d"], 4));
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(
        in_flight.load(Ordering::SeqCst),
        8,
        "four runs of two calls"
    );
    drop(handle);
    for _ in 0..50 {
        if in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        in_flight.load(Ordering::SeqCst),
        0,
        "nested calls cancelled"
    );
    fanfare.shutdown().await;
}

#[tokio::test]
async fn a_workflow_naming_an_unknown_agent_is_refused_naming_it() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fanfare = start(&in_flight).await;
    let flow = SubWorkflow::new("review", vec![Step::agent("legal"), Step::agent("nobody")]);
    let mut request = RunRequest::fan_out("x", Vec::<String>::new());
    request.steps = vec![Step::workflow(flow)];
    match fanfare.validate(&request) {
        Err(RequestError::BadStep {
            problem: StepProblem::Workflow { workflow, problem },
            ..
        }) => {
            assert_eq!(workflow, "review");
            assert!(
                matches!(*problem, RequestError::UnknownAgent { ref agent, .. } if agent == "nobody"),
                "{problem:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn regression_a_nested_workflows_map_is_held_to_the_parents_width() {
    // A nested run's maps had no limit: the parent's max_items did not reach them.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let fanfare = start(&in_flight).await;
    let inner = SubWorkflow::new(
        "inner",
        vec![
            Step::agent("legal"),
            Step::agent("tech").after([0]).map(Map {
                // `legal saw a\nb\nc` is three lines: three items.
                over: MapSource::Step(0),
                concurrency: 4,
                policy: Policy::FailFast,
            }),
        ],
    );
    let mut request = RunRequest::fan_out("a\nb\nc", Vec::<String>::new()).max_items(2);
    request.steps = vec![Step::workflow(inner)];
    let report = fanfare.run(request).await.unwrap();
    assert!(!report.status.is_success());
    let problem = report.branches[0].outcome.problem().unwrap();
    assert!(problem.contains("inner"), "{problem}");
    let run = report.branches[0].run.as_ref().unwrap();
    let inner_problem = run.branches[1].outcome.problem().unwrap();
    assert!(
        inner_problem.contains("lists 3 items, more than the 2"),
        "{inner_problem}"
    );
    fanfare.shutdown().await;
}
