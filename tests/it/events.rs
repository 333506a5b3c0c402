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
