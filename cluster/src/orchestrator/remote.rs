//! The orchestrator's [`Router`]: places each branch with [`route::choose`] over the
//! loads it counts itself, and a [`RemoteHost`] that runs one on a worker and ends
//! it `NodeLost` the moment that worker is lost.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::BranchId;
use fanfare::provider::BoxFuture;
use fanfare::run::{NodeLost, Place, Placement, RemoteCall, RemoteSpecialist, Router};
use fanfare::{BranchOutcome, Task};
use ractor::rpc::CallResult;
use ractor::ActorRef;
use ractor_cluster::NodeId;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use super::members::SENDING_BUDGET;
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
            if t.by_id
                .get(&id.node())
                .is_some_and(|m| inner.members.takes(m, agent))
            {
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
                    sending: m.sending.clone(),
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
    sending: Arc<Semaphore>,
}

/// The share of a worker's sending budget a task holds: its size in KiB (at least
/// one, at most the whole budget, so that any task can go alone).
fn share(task: &Task) -> u32 {
    let bytes = task.input.len()
        + task
            .upstream
            .iter()
            .map(|u| u.text.len() + u.items.iter().map(String::len).sum::<usize>())
            .sum::<usize>();
    (bytes >> 10).clamp(1, SENDING_BUDGET >> 10) as u32
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
        let sending = self.sending.clone();
        Box::pin(async move {
            let gone = |reason: String| NodeLost {
                node: node.clone(),
                reason,
            };
            // Wait for room in the worker's sending budget (the deadline runs).
            let room = tokio::time::timeout_at(
                call.deadline,
                sending.acquire_many_owned(share(&call.task)),
            );
            let _room = tokio::select! {
                reason = lost(lost_rx.clone()) => return Err(gone(reason)),
                room = room => match room {
                    Ok(Ok(room)) => room,
                    Ok(Err(_closed)) => return Err(gone("it was forgotten".into())),
                    Err(_elapsed) => {
                        return Ok(BranchOutcome::TimedOut {
                            deadline: call.deadline_kind,
                            last_error: None,
                            partial: None,
                        })
                    }
                },
            };
            let left = call.deadline.saturating_duration_since(Instant::now());
            let mut cancel = CancelOnDrop {
                actor: Some(actor.clone()),
                branch: call.task.branch,
            };
            let job = Job {
                task: Box::new(call.task),
                time_left_ms: left.as_millis() as u64,
                deadline_kind: call.deadline_kind,
                crash_retries: call.crash_retries,
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
                        partial: None,
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use fanfare::run::DeadlineKind;
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    fn task(kib: usize) -> Task {
        serde_json::from_value(serde_json::json!({
            "branch": {"run": 1, "index": 0},
            "input": "x".repeat(kib << 10),
            "upstream": [],
        }))
        .unwrap()
    }

    #[test]
    fn a_task_holds_its_size_in_kib_within_the_budget() {
        assert_eq!(share(&task(0)), 1, "at least one");
        assert_eq!(share(&task(800)), 800);
        assert_eq!(
            share(&task(40 << 10)) as usize,
            SENDING_BUDGET >> 10,
            "a task larger than the budget goes alone"
        );
    }

    /// A worker's host that answers each branch after 20 ms, counting how many it
    /// holds at once.
    struct Host {
        now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Actor for Host {
        type Msg = HostMsg;
        type State = ();
        type Arguments = ();

        async fn pre_start(&self, _: ActorRef<HostMsg>, (): ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _: ActorRef<HostMsg>,
            msg: HostMsg,
            (): &mut (),
        ) -> Result<(), ActorProcessingErr> {
            if let HostMsg::Run(_, reply) = msg {
                let held = self.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.peak.fetch_max(held, Ordering::SeqCst);
                let now = self.now.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let _ = reply.send(Frame::new(BranchOutcome::TimedOut {
                        deadline: DeadlineKind::Branch,
                        last_error: None,
                        partial: None,
                    }));
                });
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn regression_a_wide_run_of_a_long_input_sent_every_branch_to_a_worker_at_once() {
        // 2,000 branches of an 800 KB input went out at once: the orchestrator held
        // about a gigabyte for one session and the worker missed its heartbeat.
        let now = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let (actor, handle) = Actor::spawn(
            None,
            Host {
                now,
                peak: peak.clone(),
            },
            (),
        )
        .await
        .unwrap();
        let (_lost, lost_rx) = watch::channel(None);
        let host = RemoteHost {
            node: "w1".into(),
            actor: actor.clone(),
            lost: lost_rx,
            // Room for four 1 MiB tasks.
            sending: Arc::new(Semaphore::new(4 << 10)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            calls.spawn(host.run(RemoteCall {
                task: task(1 << 10),
                deadline,
                deadline_kind: DeadlineKind::Branch,
                crash_retries: 0,
            }));
        }
        let answers = calls.join_all().await;
        assert!(answers.iter().all(Result::is_ok), "every branch answered");
        assert_eq!(peak.load(Ordering::SeqCst), 4, "at most four out at once");
        actor.stop(None);
        handle.await.unwrap();
    }
}
