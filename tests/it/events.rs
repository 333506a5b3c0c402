use fanfare::{RunEvent, RunRequest};

use crate::common::{runtime, sim};

#[tokio::test(start_paused = true)]
async fn events_arrive_in_completion_order_and_the_report_in_input_order() {
    let profiles = [("x", 300, 0.0), ("y", 100, 0.0), ("z", 200, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let mut handle = fanfare.start_run(RunRequest::fan_out("t", ["x", "y", "z"]));
    let mut finished = Vec::new();
    let mut run_finished = false;
    while let Some(event) = handle.events.recv().await {
        match event {
            RunEvent::BranchFinished {
                index,
                agent,
                outcome,
                ..
            } => {
                assert!(outcome.is_ok());
                finished.push((index, agent));
            }
            RunEvent::RunFinished { succeeded, .. } => {
                assert!(succeeded);
                run_finished = true;
            }
            _ => {}
        }
    }
    assert!(run_finished);
    let order: Vec<&str> = finished.iter().map(|(_, a)| a.as_str()).collect();
    assert_eq!(order, ["y", "z", "x"]);
    let report = handle.report().await.unwrap();
    let agents: Vec<&str> = report.branches.iter().map(|b| b.agent.as_str()).collect();
    assert_eq!(agents, ["x", "y", "z"]);
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_watched_run_streams_each_branch_and_the_merge_and_the_pieces_make_the_answers() {
    use std::collections::HashMap;
    let profiles = [("x", 300, 0.0), ("y", 100, 0.0)];
    let provider = sim(&profiles);
    let fanfare = runtime(&provider, &profiles).await;
    let request = RunRequest::fan_out("the task", ["x", "y"]).merge(fanfare::MergeStrategy::llm());
    let mut handle = fanfare.start_run(request);
    let mut started = Vec::new();
    let mut text: HashMap<u32, String> = HashMap::new();
    let mut merged = String::new();
    let mut finished: HashMap<u32, String> = HashMap::new();
    let mut synthesis = None;
    while let Some(event) = handle.events.recv().await {
        match event {
            RunEvent::BranchStarted { index, .. } => started.push(index),
            RunEvent::BranchDelta {
                index,
                attempt,
                text: t,
                ..
            } => {
                assert!(started.contains(&index), "a delta before its start");
                assert!(!finished.contains_key(&index), "a delta after its end");
                assert_eq!(attempt, 1);
                text.entry(index).or_default().push_str(&t);
            }
            RunEvent::BranchFinished { index, outcome, .. } => {
                finished.insert(index, outcome.output().unwrap().text.clone());
            }
            RunEvent::SynthesisDelta { text: t, .. } => merged.push_str(&t),
            RunEvent::SynthesisFinished { result, .. } => synthesis = Some(result.unwrap()),
            _ => {}
        }
    }
    started.sort();
    assert_eq!(started, [0, 1]);
    assert_eq!(text, finished, "the streamed pieces are the answers");
    assert!(!merged.is_empty());
    assert_eq!(Some(merged), synthesis);
    handle.report().await.unwrap();
    fanfare.shutdown().await;
}
