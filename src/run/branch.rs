//! One branch: place it (here, or on a cluster's node), call the specialist under
//! the branch deadline, and map what happens to a [`BranchOutcome`]. An agent's task
//! runs right here, through its actor's intake; dropping the call (policy, deadline,
//! caller gone) drops the model call with it. A raw actor gets the task as a message;
//! dropping that call sends it `Cancel`.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;
use tokio::time::{timeout_at, Instant};

use super::outcome::{BranchError, BranchOutcome, DeadlineKind, Unavailable};
use super::placement::{Place, Placement, RemoteCall, Router};
use crate::agent::{AgentError, AgentMsg, AgentReply, BranchId, Intake, Ran, Task};
use crate::provider::GaveUp;
use crate::supervision::Slot;

/// Sends `Cancel` to the specialist unless disarmed: dropping an unfinished call
/// (deadline, policy, caller gone) must stop the work behind it.
struct CancelOnDrop {
    actor: Option<ActorRef<AgentMsg>>,
    branch: BranchId,
}

impl CancelOnDrop {
    fn disarm(&mut self) {
        self.actor = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(actor) = self.actor.take() {
            let _ = actor.cast(AgentMsg::Cancel(self.branch));
        }
    }
}

/// What one branch calls and under which terms. The branch's task owns it and the
/// steps below borrow it: an async fn keeps its arguments in its future, so passing
/// these by value down three calls kept three copies of the task in every branch's
/// future (1.9 KB, copied whole each time the runtime moved it).
pub(crate) struct BranchCall {
    /// The specialist's name.
    pub agent: String,
    /// Where the specialist's current actor is published (`None`: no such agent).
    pub slot: Option<watch::Receiver<Slot>>,
    /// What it is asked.
    pub task: Task,
    /// When the branch gives up, and which deadline that is (the branch's or the run's).
    pub deadline: Instant,
    pub deadline_kind: DeadlineKind,
    /// Times a branch whose specialist crashed under it is tried again.
    pub crash_retries: u32,
}

/// How one branch ended, with the crash retries it took and the node it ended on
/// (`None` outside a cluster).
pub(crate) struct Called {
    pub outcome: BranchOutcome,
    pub retries: u32,
    pub node: Option<String>,
}

/// Runs one branch where `router` places it (here without one). A remote attempt
/// whose node is lost ends `NodeDown`; with crash retries left it is placed again.
pub(crate) async fn call_branch(call: &mut BranchCall, router: Option<Arc<dyn Router>>) -> Called {
    let Some(router) = router else {
        let (outcome, retries) = call_here(call, 0).await;
        return Called {
            outcome,
            retries,
            node: None,
        };
    };
    let mut retried = 0;
    loop {
        let Placement { place, hold } = router.route(&call.agent);
        let remote = match place {
            Place::Here => {
                let (outcome, retries) = call_here(call, retried).await;
                drop(hold);
                return Called {
                    outcome,
                    retries,
                    node: router.local_node(),
                };
            }
            Place::There(remote) => remote,
        };
        let node = remote.node().to_owned();
        let remote_call = RemoteCall {
            task: call.task.clone(),
            deadline: call.deadline,
            deadline_kind: call.deadline_kind,
            crash_retries: call.crash_retries,
        };
        let result = timeout_at(call.deadline, remote.run(remote_call)).await;
        drop(hold);
        let outcome = match result {
            Err(_elapsed) => BranchOutcome::TimedOut {
                deadline: call.deadline_kind,
                last_error: None,
                partial: None,
            },
            Ok(Ok(outcome)) => outcome,
            Ok(Err(lost)) => {
                let error = BranchError::NodeDown {
                    agent: call.agent.clone(),
                    node: lost.node,
                    reason: lost.reason,
                };
                if retried < call.crash_retries {
                    retried += 1;
                    continue;
                }
                BranchOutcome::Failed { error }
            }
        };
        return Called {
            outcome,
            retries: retried,
            node: Some(node),
        };
    }
}

/// Runs one branch here: resolve the agent, call it with the branch deadline, map the
/// result to an outcome. If the actor it finds has just died (or is restarting),
/// waits for the supervisor to publish its replacement (within the deadline) and
/// tries that one. With `crash_retries`, a branch whose specialist crashed under it
/// (a panic, or killed with a crashing sibling) is retried on the restarted actor.
/// Returns the outcome and how many such retries it took (counting `retried`, those
/// taken before it came here).
pub(crate) async fn call_here(call: &mut BranchCall, retried: u32) -> (BranchOutcome, u32) {
    let BranchCall {
        agent,
        slot,
        task,
        deadline,
        deadline_kind,
        crash_retries,
    } = call;
    let (deadline, deadline_kind, crash_retries) = (*deadline, *deadline_kind, *crash_retries);
    let Some(slot) = slot else {
        let error = BranchError::SpecialistUnavailable {
            agent: agent.clone(),
            reason: Unavailable::UnknownName,
        };
        return (BranchOutcome::Failed { error }, retried);
    };
    let mut retried = retried;
    loop {
        // Only what the attempt needs is taken from the slot (a copy of the whole slot
        // would be kept in this future while the attempt runs).
        let found = match &*slot.borrow_and_update() {
            Slot::Down { reason } => Err(reason.clone()),
            Slot::Restarting => Ok(None),
            Slot::Up {
                intake: Some(intake),
                ..
            } => Ok(Some(Door::Intake(intake.clone()))),
            Slot::Up {
                actor,
                intake: None,
            } => Ok(Some(Door::Actor(actor.clone()))),
        };
        let attempt = match found {
            Err(reason) => {
                let error = BranchError::SpecialistUnavailable {
                    agent: agent.clone(),
                    reason: Unavailable::Down(reason),
                };
                return (BranchOutcome::Failed { error }, retried);
            }
            Ok(None) => Attempt::Wait,
            Ok(Some(Door::Intake(intake))) => {
                run_through(&intake, task, deadline, deadline_kind, agent).await
            }
            // Rare (raw actors only) and its future is large: boxed, so that every
            // branch's task does not carry room for it.
            Ok(Some(Door::Actor(actor))) => {
                Box::pin(call_actor(actor, task, deadline, deadline_kind, agent)).await
            }
        };
        match attempt {
            Attempt::Ended(outcome) => return (outcome, retried),
            Attempt::Crashed(outcome) => {
                if retried >= crash_retries {
                    return (outcome, retried);
                }
                retried += 1;
            }
            Attempt::Wait => {}
        }
        // Wait for the supervisor's next word on this specialist.
        match timeout_at(deadline, slot.changed()).await {
            Err(_elapsed) => return (timed_out(deadline_kind), retried),
            Ok(Err(_closed)) => {
                let error = BranchError::SpecialistUnavailable {
                    agent: agent.clone(),
                    reason: Unavailable::SupervisorGone,
                };
                return (BranchOutcome::Failed { error }, retried);
            }
            Ok(Ok(())) => {}
        }
    }
}

fn timed_out(deadline_kind: DeadlineKind) -> BranchOutcome {
    BranchOutcome::TimedOut {
        deadline: deadline_kind,
        last_error: None,
        partial: None,
    }
}

fn died(agent: &str) -> BranchOutcome {
    BranchOutcome::Failed {
        error: BranchError::SpecialistDied {
            agent: agent.to_owned(),
        },
    }
}

/// Runs `task` in this branch's task, through an agent actor's intake.
async fn run_through(
    intake: &Arc<Intake>,
    task: &Task,
    deadline: Instant,
    deadline_kind: DeadlineKind,
    agent: &str,
) -> Attempt {
    // Not taken: the specialist is retiring (or gone). Wait for its replacement, as
    // if the task had not been delivered.
    let Some(ticket) = intake.enter() else {
        return Attempt::Wait;
    };
    match timeout_at(deadline, ticket.run(task.clone())).await {
        Err(_elapsed) => Attempt::Ended(timed_out(deadline_kind)),
        Ok(Ran::Replied(reply)) => answer(reply, deadline_kind),
        // Its actor was stopped or killed under it.
        Ok(Ran::Aborted) => Attempt::Crashed(died(agent)),
    }
}

/// Sends `task` to a raw actor and waits for its answer; dropping this sends it
/// `Cancel`.
async fn call_actor(
    actor: ActorRef<AgentMsg>,
    task: &Task,
    deadline: Instant,
    deadline_kind: DeadlineKind,
    agent: &str,
) -> Attempt {
    let mut guard = CancelOnDrop {
        actor: Some(actor.clone()),
        branch: task.branch,
    };
    let call = actor.call(
        |reply| AgentMsg::Run {
            task: task.clone(),
            reply,
        },
        None,
    );
    let result: Result<Result<CallResult<AgentReply>, _>, _> = timeout_at(deadline, call).await;
    match result {
        Err(_) | Ok(Ok(CallResult::Timeout)) => Attempt::Ended(timed_out(deadline_kind)),
        Ok(Ok(CallResult::Success(reply))) => {
            guard.disarm();
            answer(reply, deadline_kind)
        }
        Ok(Ok(CallResult::SenderError)) => {
            guard.disarm();
            Attempt::Crashed(died(agent))
        }
        // Not delivered: the actor is gone before it saw the task. Not a retry; the
        // supervisor will publish a replacement or mark it down.
        Ok(Err(_not_delivered)) => {
            guard.disarm();
            Attempt::Wait
        }
    }
}

/// How a branch reaches the specialist's current actor.
enum Door {
    /// An agent actor: the task runs here, through its intake.
    Intake(Arc<Intake>),
    /// A raw actor: the task is sent to it.
    Actor(ActorRef<AgentMsg>),
}

/// What one attempt on the specialist came to.
enum Attempt {
    /// The branch ends with this.
    Ended(BranchOutcome),
    /// The specialist crashed under it: retried if crash retries are left.
    Crashed(BranchOutcome),
    /// Not taken (retiring) or not delivered (gone): wait for the supervisor's next
    /// word on the slot.
    Wait,
}

/// What a specialist's answer means for its branch.
fn answer(reply: AgentReply, deadline_kind: DeadlineKind) -> Attempt {
    match reply {
        Ok(output) => Attempt::Ended(BranchOutcome::Ok(output)),
        Err(AgentError::Retiring) => Attempt::Wait,
        // The model call was cut by this branch's deadline: the branch timed out, and
        // the report shows what the call was doing (its attempts and their errors).
        Err(AgentError::Provider(e)) if e.gave_up == Some(GaveUp::DeadlineReached) => {
            Attempt::Ended(BranchOutcome::TimedOut {
                deadline: deadline_kind,
                last_error: Some(e),
                partial: None,
            })
        }
        Err(error @ AgentError::Panicked { .. }) => Attempt::Crashed(BranchOutcome::Failed {
            error: BranchError::Agent(error),
        }),
        Err(error) => Attempt::Ended(BranchOutcome::Failed {
            error: BranchError::Agent(error),
        }),
    }
}
