//! The actor that runs an [`Agent`], and the protocol every specialist speaks.

use std::panic::AssertUnwindSafe;
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

/// An [`AgentActor`]'s state: its tasks in flight, keyed by branch (aborted when the
/// state is dropped), its phase, and where notices go.
pub(crate) struct AgentState {
    tasks: TaskTable<BranchId>,
    phase: Phase,
    notices: Option<DerivedActorRef<Notice>>,
    _live: LiveGuard,
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
                let me = myself.clone();
                let work = async move {
                    let outcome = AssertUnwindSafe(agent.run(&ctx, task)).catch_unwind().await;
                    let done = match outcome {
                        Ok(result) => {
                            let _ = reply.send(result);
                            InternalKind::Finished(branch)
                        }
                        Err(payload) => {
                            let message = panic_message(payload.as_ref());
                            let _ = reply.send(Err(AgentError::Panicked {
                                message: message.clone(),
                            }));
                            InternalKind::Crashed(branch, message)
                        }
                    };
                    let _ = me.cast(AgentMsg::Internal(Internal(done)));
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
        if state.phase == Phase::Retiring && state.tasks.is_empty() {
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
