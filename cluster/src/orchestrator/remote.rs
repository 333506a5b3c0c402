//! The orchestrator's [`Router`]: places each branch with [`route::choose`] over the
//! loads it counts itself, and a [`RemoteHost`] that runs one on a worker and ends
//! it `NodeLost` the moment that worker is lost.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::BranchId;
use fanfare::provider::BoxFuture;
use fanfare::run::{NodeLost, Place, Placement, RemoteCall, RemoteSpecialist, Router};
use fanfare::BranchOutcome;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use ractor_cluster::NodeId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;
use crate::route::{self, Choice, Load};
use crate::wire::{agent_group, Frame, HostMsg, Job};

/// The cluster's router, handed to the orchestrator's runtime.
pub(crate) struct ClusterRouter(pub(crate) Arc<Inner>);

/// Counts a branch where it runs until the attempt ends.
struct Held {
    inner: Arc<Inner>,
    at: Option<NodeId>,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut t = self.inner.members.lock();
        match self.at {
            None => t.local_running = t.local_running.saturating_sub(1),
            Some(id) => {
                if let Some(m) = t.by_id.get_mut(&id) {
                    m.running = m.running.saturating_sub(1);
                }
            }
        }
    }
}

impl Router for ClusterRouter {
    fn route(&self, agent: &str) -> Placement {
        let inner = &self.0;
        let hosts = ractor::pg::get_members(&agent_group(agent));
        let mut t = inner.members.lock();
        let mut candidates: Vec<(NodeId, ActorRef<HostMsg>)> = Vec::new();
        for cell in hosts {
            let id = cell.get_id();
            if id.is_local() || candidates.iter().any(|(n, _)| *n == id.node()) {
                continue;
            }
            if t.by_id.get(&id.node()).is_some_and(|m| m.usable()) {
                candidates.push((id.node(), ActorRef::from(cell)));
            }
        }
        let loads: Vec<Load> = candidates
            .iter()
            .filter_map(|(id, _)| t.by_id.get(id))
            .map(|m| Load {
                running: m.running,
                capacity: m.capacity(),
            })
            .collect();
        let here = inner.local_agents.contains(agent).then_some(Load {
            running: t.local_running,
            capacity: inner.local_capacity,
        });
        match route::choose(here, &loads) {
            Choice::Remote(i) => {
                let (id, actor) = candidates.swap_remove(i);
                let Some(m) = t.by_id.get_mut(&id) else {
                    return Placement::here();
                };
                m.running += 1;
                let host = RemoteHost {
                    node: m.name.clone(),
                    actor,
                    lost: m.lost.subscribe(),
                };
                drop(t);
                Placement {
                    place: Place::There(Arc::new(host)),
                    hold: Some(Box::new(Held {
                        inner: inner.clone(),
                        at: Some(id),
                    })),
                }
            }
            Choice::Here => {
                t.local_running += 1;
                drop(t);
                Placement {
                    place: Place::Here,
                    hold: Some(Box::new(Held {
                        inner: inner.clone(),
                        at: None,
                    })),
                }
            }
        }
    }

    fn local_node(&self) -> Option<String> {
        Some(self.0.name.clone())
    }
}

/// A worker's host of one specialist.
pub(crate) struct RemoteHost {
    node: String,
    actor: ActorRef<HostMsg>,
    lost: watch::Receiver<Option<String>>,
}

/// Tells the worker to stop a branch this side no longer waits for.
struct CancelOnDrop {
    actor: Option<ActorRef<HostMsg>>,
    branch: BranchId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(actor) = self.actor.take() {
            let _ = actor.cast(HostMsg::Cancel(Frame::new(self.branch)));
        }
    }
}

/// Resolves with the reason once the node is lost.
async fn lost(mut rx: watch::Receiver<Option<String>>) -> String {
    loop {
        if let Some(reason) = rx.borrow_and_update().clone() {
            return reason;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl RemoteSpecialist for RemoteHost {
    fn node(&self) -> &str {
        &self.node
    }

    fn run(&self, call: RemoteCall) -> BoxFuture<'static, Result<BranchOutcome, NodeLost>> {
        let actor = self.actor.clone();
        let node = self.node.clone();
        let lost_rx = self.lost.clone();
        Box::pin(async move {
            let left = call.deadline.saturating_duration_since(Instant::now());
            let mut cancel = CancelOnDrop {
                actor: Some(actor.clone()),
                branch: call.task.branch,
            };
            let job = Job {
                task: call.task,
                time_left_ms: left.as_millis() as u64,
                deadline_kind: call.deadline_kind,
                crash_retries: call.crash_retries,
            };
            let gone = |reason: String| NodeLost {
                node: node.clone(),
                reason,
            };
            let rpc = actor.call(
                |reply| HostMsg::Run(Frame::new(job), reply),
                Some(left + Duration::from_millis(500)),
            );
            tokio::select! {
                reason = lost(lost_rx) => Err(gone(reason)),
                answer = rpc => match answer {
                    Ok(CallResult::Success(Frame(Ok(outcome)))) => {
                        cancel.actor = None;
                        Ok(outcome)
                    }
                    Ok(CallResult::Success(Frame(Err(reason)))) => {
                        Err(gone(format!("its answer could not be read: {reason}")))
                    }
                    Ok(CallResult::Timeout) => Ok(BranchOutcome::TimedOut {
                        deadline: call.deadline_kind,
                        last_error: None,
                    }),
                    Ok(CallResult::SenderError) => Err(gone(
                        "it dropped the branch without answering (its connection or its host went away)"
                            .into(),
                    )),
                    Err(e) => Err(gone(format!("the branch could not be sent: {e}"))),
                },
            }
        })
    }
}
