//! The actor that runs an [`Agent`], and the protocol every specialist speaks.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::FutureExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};

use super::{Agent, AgentContext, AgentError, AgentReply, BranchId, Task};
use crate::provider::Provider;
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// The message protocol every specialist speaks.
#[derive(Debug)]
#[non_exhaustive]
pub enum AgentMsg {
    /// Do `task` and answer on `reply`.
    Run {
        /// The task.
        task: Task,
        /// Where to answer.
        reply: RpcReplyPort<AgentReply>,
    },
    /// Stop working on this branch (its caller has given up or the run is over).
    Cancel(BranchId),
    /// Runtime bookkeeping between the runtime's agent actor and its own tasks. Raw actor
    /// implementations never receive it and may ignore it.
    #[doc(hidden)]
    Internal(Internal),
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for AgentMsg {}

/// Opaque runtime bookkeeping; see [`AgentMsg::Internal`].
#[doc(hidden)]
#[derive(Debug)]
pub struct Internal(InternalKind);

#[derive(Debug)]
enum InternalKind {
    Finished(BranchId),
    Crashed(BranchId, String),
}

/// What an agent-backed specialist tells its supervisor about itself. The supervisor
/// hands each specialist a derived reference that accepts only these, so this module
/// needs nothing from the supervisor's.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A task panicked: the actor takes no new work and finishes what it holds.
    Retiring {
        /// The retiring actor.
        actor: ActorId,
        /// The panic, attributed to the agent.
        panic: String,
    },
    /// The retiring actor holds no task any more; the supervisor may drain it.
    Retired {
        /// The retired actor.
        actor: ActorId,
    },
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for Notice {}

/// Where an [`AgentActor`] stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Taking tasks.
    Serving,
    /// A task panicked: finishing the tasks it holds, taking no new ones.
    Retiring,
    /// Idle after retiring; the supervisor has been told and will drain it.
    Draining,
}

/// The ractor actor that runs an [`Agent`]. Its startup argument is where to send
/// [`Notice`]s (`None`: unsupervised, a panic is only logged).
pub(crate) struct AgentActor<A: Agent> {
    agent: Arc<A>,
    ctx: AgentContext,
    live: LiveCount,
}

impl<A: Agent> AgentActor<A> {
    /// Wraps `agent`, giving it `provider` to call; counts itself in `live`.
    pub(crate) fn new(agent: Arc<A>, provider: Arc<dyn Provider>, live: LiveCount) -> Self {
        Self {
            agent,
            ctx: AgentContext { provider },
            live,
        }
    }
}

/// An [`AgentActor`]'s state: its tasks, keyed by branch (aborted when the state is
/// dropped; a finished one is pruned lazily), how many are in flight, its phase, and
/// where notices go.
pub(crate) struct AgentState {
    tasks: TaskTable<BranchId>,
    in_flight: Arc<InFlight>,
    phase: Phase,
    notices: Option<DerivedActorRef<Notice>>,
    _live: LiveGuard,
}

/// The tasks an actor has in flight, counted by the tasks themselves, and whether the
/// actor is retiring. While it serves, a task that ends tells it nothing (a message
/// per branch through the actor's mailbox did no work); once it retires, each task
/// that ends sends `Finished`, so the actor learns when it is idle. No end is missed:
/// the flag and the count are one atomic, so a task's decrement is ordered either
/// before the actor sets the flag (and the actor's count already excludes it) or
/// after (and the task sees the flag and tells it).
#[derive(Debug, Default)]
struct InFlight(AtomicUsize);

/// The flag bit of [`InFlight`]; the other bits count tasks.
const RETIRING: usize = 1 << (usize::BITS - 1);

impl InFlight {
    /// A task starts (only the actor calls this, and only while serving).
    fn start(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }

    /// A task ends; true if the actor is retiring and must hear of it.
    fn end(&self) -> bool {
        self.0.fetch_sub(1, Ordering::AcqRel) & RETIRING != 0
    }

    /// The actor retires: from now on every task's end is told.
    fn retire(&self) {
        self.0.fetch_or(RETIRING, Ordering::AcqRel);
    }

    /// Tasks in flight now.
    fn count(&self) -> usize {
        self.0.load(Ordering::Acquire) & !RETIRING
    }
}

/// Held by a running task: ends it in [`InFlight`] however the task ends (answered,
/// panicked, aborted), telling a retiring actor.
struct EndGuard {
    in_flight: Arc<InFlight>,
    actor: ActorRef<AgentMsg>,
    branch: BranchId,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        if self.in_flight.end() {
            let done = InternalKind::Finished(self.branch);
            let _ = self.actor.cast(AgentMsg::Internal(Internal(done)));
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

impl<A: Agent> Actor for AgentActor<A> {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = Option<DerivedActorRef<Notice>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        notices: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AgentState {
            tasks: TaskTable::default(),
            in_flight: Arc::default(),
            phase: Phase::Serving,
            notices,
            _live: self.live.guard(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Run { task, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                if state.phase != Phase::Serving {
                    let _ = reply.send(Err(AgentError::Retiring));
                    return Ok(());
                }
                let branch = task.branch;
                let agent = self.agent.clone();
                let ctx = self.ctx.clone();
                let span = tracing::debug_span!("branch", %branch, agent = agent.name());
                state.in_flight.start();
                let guard = EndGuard {
                    in_flight: state.in_flight.clone(),
                    actor: myself.clone(),
                    branch,
                };
                let work = async move {
                    let outcome = AssertUnwindSafe(agent.run(&ctx, task)).catch_unwind().await;
                    match outcome {
                        Ok(result) => {
                            let _ = reply.send(result);
                        }
                        Err(payload) => {
                            let message = panic_message(payload.as_ref());
                            let _ = reply.send(Err(AgentError::Panicked {
                                message: message.clone(),
                            }));
                            let crashed = InternalKind::Crashed(branch, message);
                            let _ = guard.actor.cast(AgentMsg::Internal(Internal(crashed)));
                        }
                    }
                    drop(guard);
                };
                let handle = tokio::spawn(tracing::Instrument::instrument(work, span));
                state.tasks.insert(branch, handle.abort_handle());
            }
            AgentMsg::Cancel(branch) => {
                if state.tasks.abort(&branch) {
                    tracing::debug!(%branch, agent = self.agent.name(), "cancelled branch");
                }
            }
            AgentMsg::Internal(Internal(InternalKind::Finished(branch))) => {
                state.tasks.remove(&branch);
            }
            AgentMsg::Internal(Internal(InternalKind::Crashed(branch, message))) => {
                state.tasks.remove(&branch);
                let panic = format!("agent `{}` panicked: {message}", self.agent.name());
                if state.phase == Phase::Serving {
                    match &state.notices {
                        // Retire: the supervisor starts a replacement for new work at once;
                        // this actor finishes the tasks it holds (they did not panic), then
                        // stops. A panic costs one branch, not every branch in flight.
                        Some(notices) => {
                            state.phase = Phase::Retiring;
                            state.in_flight.retire();
                            tracing::warn!(agent = self.agent.name(), %panic, "retiring after a panic");
                            let _ = notices.send_message(Notice::Retiring {
                                actor: myself.get_id(),
                                panic,
                            });
                        }
                        None => {
                            tracing::warn!(agent = self.agent.name(), %panic, "unsupervised; carrying on")
                        }
                    }
                }
            }
        }
        if state.phase == Phase::Retiring && state.in_flight.count() == 0 {
            // Idle: tell the supervisor, which drains us (queued tasks are answered
            // `Retiring`, so their callers go to the replacement, then we stop).
            state.phase = Phase::Draining;
            if let Some(notices) = &state.notices {
                let _ = notices.send_message(Notice::Retired {
                    actor: myself.get_id(),
                });
            }
        }
        Ok(())
    }
}
