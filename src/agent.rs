//! Specialists: the [`Agent`] trait, the agent message protocol, and the actor that
//! runs an `Agent`.
//!
//! # Lifecycle of one task
//! The orchestrator `call`s a specialist with [`AgentMsg::Run`]. The actor does not
//! await the work inside `handle`: it spawns it as a task, keeps the task's abort
//! handle keyed by [`BranchId`], and returns, so the mailbox stays free for more
//! tasks and for [`AgentMsg::Cancel`]. The task replies on the port itself. `Cancel`
//! aborts the task, which drops the provider future (an HTTP request is cancelled).
//! The handles live in a state type whose `Drop` aborts them all, so a specialist
//! that is stopped, killed or crashes takes its in-flight work with it.
//!
//! A panic inside [`Agent::run`] is caught and reported on the reply port as
//! [`AgentError::Panicked`]; that branch fails. The actor then *retires*: it tells its
//! supervisor ([`SupervisorMsg::Retiring`]), which counts it as a crash (restart
//! intensity, strategy, backoff) and publishes a fresh actor for new work, while the
//! retiring actor finishes the other tasks it holds and then stops. Each task runs on
//! its own tokio task, so one panicking task says nothing about its siblings: killing
//! them would turn one failed branch into many. (A raw actor that panics in `handle`
//! fails outright, as ractor does; its in-flight callers record `SpecialistDied`.)
//!
//! # Writing a specialist as a raw actor
//! Any `ractor::Actor<Msg = AgentMsg>` can be a specialist: answer `Run` on its reply
//! port, honour `Cancel`, and ignore every other variant (`AgentMsg` is
//! `#[non_exhaustive]`; the runtime uses hidden variants for its own bookkeeping).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::provider::{Completion, Provider, ProviderError, Usage};
use crate::supervisor::SupervisorMsg;
use crate::task::{BranchId, Task};
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// What a specialist produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentOutput {
    /// The text of the answer.
    pub text: String,
    /// Tokens spent producing it.
    pub usage: Usage,
    /// Provider attempts it took (1 without retries; 0 when no model was called).
    pub attempts: u32,
    /// The model that answered, if one did.
    pub model: Option<String>,
    /// Time its model call waited for admission (concurrency and rate limits).
    #[serde(default)]
    pub permit_wait_ms: u64,
}

impl AgentOutput {
    /// An output that did not involve a model call.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            usage: Usage::default(),
            attempts: 0,
            model: None,
            permit_wait_ms: 0,
        }
    }
}

impl From<Completion> for AgentOutput {
    /// An agent's output is often just the model's answer.
    fn from(c: Completion) -> Self {
        Self {
            text: c.text,
            usage: c.usage,
            attempts: c.attempts,
            model: Some(c.model),
            permit_wait_ms: c.permit_wait_ms,
        }
    }
}

/// Why a specialist could not produce an output.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentError {
    /// The model call failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The agent declined the task, with its reason.
    #[error("rejected the task: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The agent's code panicked; the message is the panic payload.
    #[error("panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The specialist is retiring after a panic and took no new work; the caller
    /// should send the task to its replacement (the orchestrator does so).
    #[error("the specialist is retiring; retry on its replacement")]
    Retiring,
}

/// What a specialist answers on its reply port.
pub type AgentReply = Result<AgentOutput, AgentError>;

/// Everything an [`Agent`] may use while running a task.
#[derive(Clone)]
pub struct AgentContext {
    /// The model backend the runtime was built with.
    pub provider: Arc<dyn Provider>,
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("provider", &self.provider.name())
            .finish()
    }
}

/// A specialist: the one thing a user writes to add a perspective.
///
/// The runtime wraps it in an actor ([`AgentActor`]), runs each task on its own
/// tokio task, and supervises it. `run` may be cancelled at any `.await` (the task
/// is aborted), so keep no state that must be cleaned up by running to the end.
pub trait Agent: Send + Sync + 'static {
    /// The name the orchestrator routes by; unique within a runtime.
    fn name(&self) -> &str;

    /// Do the task. Called concurrently for different branches.
    fn run(&self, ctx: &AgentContext, task: Task) -> impl Future<Output = AgentReply> + Send;
}

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
    /// Runtime bookkeeping between an [`AgentActor`] and its own tasks. Raw actor
    /// implementations never receive it and may ignore it.
    #[doc(hidden)]
    Internal(Internal),
}

/// Opaque runtime bookkeeping; see [`AgentMsg::Internal`].
#[derive(Debug)]
pub struct Internal(InternalKind);

#[derive(Debug)]
enum InternalKind {
    Finished(BranchId),
    Crashed(BranchId, String),
}

/// The ractor actor that runs an [`Agent`].
pub struct AgentActor<A: Agent> {
    agent: Arc<A>,
    ctx: AgentContext,
    live: LiveCount,
}

impl<A: Agent> AgentActor<A> {
    /// Wraps `agent`, giving it `provider` to call.
    pub fn new(agent: Arc<A>, provider: Arc<dyn Provider>) -> Self {
        Self {
            agent,
            ctx: AgentContext { provider },
            live: LiveCount::default(),
        }
    }

    /// Counts this actor in `live` while it runs.
    pub fn counted_in(mut self, live: LiveCount) -> Self {
        self.live = live;
        self
    }
}

/// An [`AgentActor`]'s state: its tasks in flight, keyed by branch (aborted when the
/// state is dropped), and whether it is retiring after a panic.
pub struct AgentState {
    tasks: TaskTable<BranchId>,
    retiring: bool,
    draining: bool,
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
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        _args: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(AgentState {
            tasks: TaskTable::default(),
            retiring: false,
            draining: false,
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
                if state.retiring {
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
                let reason = format!("agent `{}` panicked: {message}", self.agent.name());
                if !state.retiring {
                    match myself.try_get_supervisor() {
                        // Retire: the supervisor starts a replacement for new work at once;
                        // this actor finishes the tasks it holds (they did not panic), then
                        // stops. A panic costs one branch, not every branch in flight.
                        Some(supervisor) => {
                            state.retiring = true;
                            tracing::warn!(agent = self.agent.name(), %reason, "retiring after a panic");
                            let _ = supervisor.send_message(SupervisorMsg::Retiring {
                                actor: myself.get_id(),
                                reason,
                            });
                        }
                        None => {
                            tracing::warn!(agent = self.agent.name(), %reason, "unsupervised; carrying on")
                        }
                    }
                }
            }
        }
        if state.retiring && state.tasks.is_empty() && !state.draining {
            // Idle: tell the supervisor, which drains us (queued tasks are answered
            // `Retiring`, so their callers go to the replacement, then we stop).
            state.draining = true;
            if let Some(supervisor) = myself.try_get_supervisor() {
                let _ = supervisor.send_message(SupervisorMsg::Retired {
                    actor: myself.get_id(),
                });
            }
        }
        Ok(())
    }
}
