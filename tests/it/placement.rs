//! Routing branches to another node through the library's `Router` hook, with a
//! fake remote: what a cluster layer plugs in.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fanfare::provider::BoxFuture;
use fanfare::run::{BranchError, NodeLost, Place, Placement, RemoteCall, RemoteSpecialist, Router};
use fanfare::{AgentOutput, BranchOutcome, Policy, RunRequest, RunStatus};

use crate::common::{builder, sim};

/// A remote node that is lost under its first `lose` branches, then answers.
struct FakeNode {
    name: &'static str,
    lose: u32,
    calls: AtomicU32,
}

impl RemoteSpecialist for FakeNode {
    fn node(&self) -> &str {
        self.name
    }

    fn run(&self, call: RemoteCall) -> BoxFuture<'static, Result<BranchOutcome, NodeLost>> {
        let task = call.task;
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let lost = n < self.lose;
        let node = self.name.to_owned();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if lost {
                return Err(NodeLost {
                    node,
                    reason: "connection closed".into(),
                });
            }
            Ok(BranchOutcome::Ok(AgentOutput::text(format!(
                "remote answer to {}",
                task.input
            ))))
        })
    }
}

/// Sends `alpha` to the fake node and keeps everything else here.
struct ToNode(Arc<FakeNode>);

impl Router for ToNode {
    fn route(&self, agent: &str) -> Placement {
        if agent == "alpha" {
            Placement {
                place: Place::There(self.0.clone()),
                hold: None,
            }
        } else {
            Placement::here()
        }
    }

    fn local_node(&self) -> Option<String> {
        Some("orchestrator".into())
    }
}

fn node(lose: u32) -> Arc<FakeNode> {
    Arc::new(FakeNode {
        name: "worker-1",
        lose,
        calls: AtomicU32::new(0),
    })
}

/// A runtime with agents `alpha` (routed to a node lost under its first `lose`
/// branches) and `beta` (here).
async fn routed(lose: u32) -> fanfare::Fanfare {
    let profiles = [("alpha", 10, 0.0), ("beta", 10, 0.0)];
    builder(&sim(&profiles), &profiles)
        .router(Arc::new(ToNode(node(lose))))
        .start()
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_routed_branch_runs_there_and_the_report_names_each_branchs_node() {
    let fanfare = routed(0).await;
    let report = fanfare
        .run(RunRequest::fan_out("q", ["alpha", "beta"]))
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded);
    let alpha = &report.branches[0];
    assert_eq!(alpha.node.as_deref(), Some("worker-1"));
    assert_eq!(
        alpha.outcome.output().map(|o| o.text.as_str()),
        Some("remote answer to q")
    );
    assert_eq!(report.branches[1].node.as_deref(), Some("orchestrator"));
    fanfare.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_node_is_node_down_and_with_crash_retries_the_branch_is_placed_again() {
    let fanfare = routed(1).await;
    let report = fanfare
        .run(
            RunRequest::fan_out("q", ["alpha", "beta"])
                .policy(Policy::TolerantPartial { quorum: 1 })
                .crash_retries(1),
        )
        .await
        .unwrap();
    let alpha = &report.branches[0];
    assert!(alpha.outcome.is_ok(), "{:?}", alpha.outcome);
    assert_eq!(alpha.retries, 1);
    fanfare.shutdown().await;

    // Without crash retries, fail-fast ends the run naming the lost node.
    let fanfare = routed(1).await;
    let report = fanfare
        .run(RunRequest::fan_out("q", ["alpha", "beta"]).policy(Policy::FailFast))
        .await
        .unwrap();
    assert!(!report.status.is_success());
    match &report.branches[0].outcome {
        BranchOutcome::Failed {
            error: BranchError::NodeDown { node, agent, .. },
        } => {
            assert_eq!(node, "worker-1");
            assert_eq!(agent, "alpha");
        }
        other => panic!("expected NodeDown, got {other:?}"),
    }
    fanfare.shutdown().await;
}
