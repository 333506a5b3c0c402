//! The actor that runs an [`Agent`], and the protocol every specialist speaks.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};

use super::intake::{Intake, Notice, Ran};
use super::{Agent, AgentContext, AgentError, AgentReply, BranchId, Task};
use crate::provider::BoxFuture;
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// The message protocol every specialist speaks.
#[derive(Debug)]
#[non_exhaustive]
#[expect(
    clippy::large_enum_variant,
    reason = "`Run` is the message, sent once per branch and moved on at once; boxing its task would add an allocation per branch for the rare small variants' sake"
)]
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
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for AgentMsg {}

/// The ractor actor that runs an [`Agent`]. Its tasks run through its [`Intake`]
/// (shared with the roster, so callers run them in their own task); the actor owns
/// the intake's life: when the actor's state goes (stopped, killed), the intake closes
/// and every task it admitted is aborted.
pub(crate) struct AgentActor {
    intake: Arc<Intake>,
    live: LiveCount,
}

impl AgentActor {
    /// Wraps `agent`, giving it `ctx` (the provider to call, the tools); counts itself in `live`. A panic
    /// in one of its tasks is told to `notices` (`None`: unsupervised, only logged).
    /// Returns the actor and its intake.
    pub(crate) fn new<A: Agent>(
        agent: Arc<A>,
        ctx: AgentContext,
        live: LiveCount,
        notices: Option<DerivedActorRef<Notice>>,
    ) -> (Self, Arc<Intake>) {
        let name = agent.name().to_owned();
        let run = Box::new(move |task: Task| -> BoxFuture<'static, AgentReply> {
            let (agent, ctx) = (agent.clone(), ctx.clone());
            Box::pin(async move { agent.run(&ctx, task).await })
        });
        let intake = Arc::new(Intake::new(name, run, notices));
        (
            Self {
                intake: intake.clone(),
                live,
            },
            intake,
        )
    }
}

/// An [`AgentActor`]'s state: the tasks it spawned for callers that sent it
/// [`AgentMsg::Run`] (keyed by branch, aborted when the state is dropped), and its
/// intake, closed when the state is dropped.
pub(crate) struct AgentState {
    tasks: TaskTable<BranchId>,
    intake: CloseOnDrop,
    _live: LiveGuard,
}

/// Closes the intake (aborting the work it admitted) however the actor ends:
/// `post_stop` does not run after a kill.
struct CloseOnDrop(Arc<Intake>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = ();

    async fn pre_start(
        &self,
        myself: ActorRef<AgentMsg>,
        (): (),
    ) -> Result<Self::State, ActorProcessingErr> {
        self.intake.bind(myself.get_id());
        Ok(AgentState {
            tasks: TaskTable::default(),
            intake: CloseOnDrop(self.intake.clone()),
            _live: self.live.guard(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            // A caller that speaks the message protocol (the runtime's own branches
            // use the intake directly): run the task on a task of its own, answer
            // on the port.
            AgentMsg::Run { task, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                let Some(ticket) = state.intake.0.enter() else {
                    let _ = reply.send(Err(AgentError::Retiring));
                    return Ok(());
                };
                let branch = task.branch;
                let handle = tokio::spawn(async move {
                    // Aborted: the port is dropped unanswered, as when a task dies.
                    if let Ran::Replied(answer) = ticket.run(task).await {
                        let _ = reply.send(answer);
                    }
                });
                state.tasks.insert(branch, handle.abort_handle());
            }
            AgentMsg::Cancel(branch) => {
                if state.tasks.abort(&branch) {
                    tracing::debug!(%branch, "cancelled branch");
                }
            }
        }
        Ok(())
    }
}
