//! The root actor: it spawns the runtime's three top-level actors — the supervisor of
//! the specialists, the synthesiser and the orchestrator — linked to itself, and
//! restarts any of them that dies, under the same restart decision (and intensity)
//! the supervisor applies to specialists.
//!
//! The current `ActorRef` of each is published on a `watch` channel, so handles and
//! the orchestrator never hold a stale one; while one is down its channel holds
//! `None` and callers get a clear error at once instead of waiting.
//!
//! What a restart costs: an orchestrator that dies takes its runs in flight with it
//! (their callers get `RunError::OrchestratorGone`, their branches are cancelled); a
//! synthesiser that dies fails the merges in flight; a supervisor that dies takes its
//! specialists with it (ractor kills linked children) — the new one starts every
//! registered specialist again, with a fresh restart history.

use std::collections::HashMap;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::sync::watch;

use crate::provider::Provider;
use crate::run::{
    Learned, Orchestrator, OrchestratorArgs, OrchestratorMsg, Synthesiser, SynthesiserMsg,
};
use crate::supervision::{
    AddError, Backoff, Decision, ExitReason, RestartIntensity, RestartType, Restarts, Specialist,
    Strategy, SupervisionConfig, Supervisor, SupervisorArgs, SupervisorMsg, START_TIMEOUT,
};
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// One of the root's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Child {
    Supervisor,
    Synthesiser,
    Orchestrator,
}

impl Child {
    const ALL: [Child; 3] = [Child::Supervisor, Child::Synthesiser, Child::Orchestrator];

    fn name(self) -> &'static str {
        match self {
            Child::Supervisor => "supervisor",
            Child::Synthesiser => "synthesiser",
            Child::Orchestrator => "orchestrator",
        }
    }
}

/// A top-level actor's current reference (`None` while it is down).
pub(crate) type Current<M> = watch::Receiver<Option<ActorRef<M>>>;

/// Where the root publishes its children's current references.
pub(crate) struct Refs {
    pub supervisor: watch::Sender<Option<ActorRef<SupervisorMsg>>>,
    pub synthesiser: watch::Sender<Option<ActorRef<SynthesiserMsg>>>,
    pub orchestrator: watch::Sender<Option<ActorRef<OrchestratorMsg>>>,
}

/// Messages to the [`Root`].
#[derive(Debug)]
pub(crate) enum RootMsg {
    /// Register a specialist (kept, so a new supervisor can start it again).
    Add(Specialist, RpcReplyPort<Result<(), AddError>>),
    /// Shutdown has begun: children that exit from now on stay down. Answered once
    /// taken in, so that no child is stopped before the root knows (its exit would
    /// be taken for a crash: logged as an error, and restarted).
    Stopping(RpcReplyPort<()>),
    /// A restart timer fired.
    Respawn(Child),
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for RootMsg {}

/// The root actor; see the module docs.
pub(crate) struct Root;

/// Startup arguments of the [`Root`].
pub(crate) struct RootArgs {
    pub supervisor: SupervisorArgs,
    pub provider: std::sync::Arc<dyn Provider>,
    pub orchestrator: OrchestratorArgs,
    pub refs: Refs,
    pub live: LiveCount,
    /// What the synthesiser learned about context windows: outlives its restarts.
    pub learned: Learned,
}

/// The root's state.
pub(crate) struct RootState {
    args: RootArgs,
    children: HashMap<ActorId, Child>,
    specialists: Vec<Specialist>,
    restarts: Restarts,
    timers: TaskTable<Child>,
    stopping: bool,
    _live: LiveGuard,
}

/// How often a top-level actor may be restarted before the root waits for a
/// cool-down: these hold no user code in their handlers, so a crash loop is a bug.
fn root_policy() -> SupervisionConfig {
    SupervisionConfig {
        strategy: Strategy::OneForOne,
        intensity: RestartIntensity {
            max_restarts: 5,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(5),
        },
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        },
    }
}

impl RootState {
    async fn spawn(&mut self, child: Child, myself: &ActorRef<RootMsg>) -> Result<(), SpawnErr> {
        let link = myself.get_cell();
        let cell: ActorCell = match child {
            Child::Supervisor => {
                let (actor, _) =
                    Actor::spawn_linked(None, Supervisor, self.args.supervisor.clone(), link)
                        .await?;
                self.args.refs.supervisor.send_replace(Some(actor.clone()));
                self.add_all(&actor).await;
                actor.get_cell()
            }
            Child::Synthesiser => {
                let synthesiser = Synthesiser::new(
                    self.args.provider.clone(),
                    self.args.live.clone(),
                    self.args.learned.clone(),
                );
                let (actor, _) = Actor::spawn_linked(None, synthesiser, (), link).await?;
                self.args.refs.synthesiser.send_replace(Some(actor.clone()));
                actor.get_cell()
            }
            Child::Orchestrator => {
                let args = self.args.orchestrator.clone();
                let (actor, _) = Actor::spawn_linked(None, Orchestrator, args, link).await?;
                self.args
                    .refs
                    .orchestrator
                    .send_replace(Some(actor.clone()));
                actor.get_cell()
            }
        };
        self.children.insert(cell.get_id(), child);
        self.restarts.started(child.name());
        Ok(())
    }

    /// Starts every registered specialist under a new supervisor.
    async fn add_all(&self, supervisor: &ActorRef<SupervisorMsg>) {
        for s in &self.specialists {
            let added = supervisor
                .call(
                    |reply| SupervisorMsg::Add(s.clone(), reply),
                    Some(START_TIMEOUT),
                )
                .await;
            if !matches!(added, Ok(CallResult::Success(Ok(())))) {
                tracing::error!(agent = s.name(), "could not start the specialist again");
            }
        }
    }

    fn clear(&self, child: Child) {
        match child {
            Child::Supervisor => self.args.refs.supervisor.send_replace(None).map(|_| ()),
            Child::Synthesiser => self.args.refs.synthesiser.send_replace(None).map(|_| ()),
            Child::Orchestrator => self.args.refs.orchestrator.send_replace(None).map(|_| ()),
        };
    }

    fn later(&mut self, myself: &ActorRef<RootMsg>, child: Child, delay: Duration) {
        let me = myself.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(RootMsg::Respawn(child));
        });
        self.timers.insert(child, timer.abort_handle());
    }

    async fn respawn(&mut self, child: Child, myself: &ActorRef<RootMsg>) {
        match self.spawn(child, myself).await {
            Ok(()) => tracing::warn!(actor = child.name(), "top-level actor restarted"),
            Err(e) => {
                tracing::error!(actor = child.name(), error = %e, "could not restart; retrying");
                self.later(myself, child, root_policy().intensity.cool_down);
            }
        }
    }

    async fn on_exit(&mut self, child: Child, exit: ExitReason, myself: &ActorRef<RootMsg>) {
        self.clear(child);
        if self.stopping {
            return;
        }
        tracing::error!(actor = child.name(), %exit, "top-level actor exited");
        match self
            .restarts
            .on_exit(child.name(), &exit, tokio::time::Instant::now())
        {
            Decision::Restart { delay, .. } if delay.is_zero() => {
                self.respawn(child, myself).await;
            }
            Decision::Restart { delay, .. } => self.later(myself, child, delay),
            Decision::Escalate { reopen_after, .. } => {
                self.restarts.reopen(child.name());
                self.later(myself, child, reopen_after);
            }
            Decision::Stop { .. } | Decision::Ignore => {}
        }
    }
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RootMsg>,
        args: RootArgs,
    ) -> Result<RootState, ActorProcessingErr> {
        let mut restarts = Restarts::new(root_policy());
        for child in Child::ALL {
            restarts.add(child.name(), RestartType::Permanent);
        }
        let mut state = RootState {
            _live: args.live.guard(),
            args,
            children: HashMap::new(),
            specialists: Vec::new(),
            restarts,
            timers: TaskTable::default(),
            stopping: false,
        };
        for child in Child::ALL {
            state.spawn(child, &myself).await?;
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<RootMsg>,
        message: RootMsg,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            RootMsg::Add(specialist, reply) => {
                let supervisor = state.args.refs.supervisor.borrow().clone();
                let Some(supervisor) = supervisor else {
                    let _ = reply.send(Err(AddError::SupervisorGone));
                    return Ok(());
                };
                let added = supervisor
                    .call(
                        |r| SupervisorMsg::Add(specialist.clone(), r),
                        Some(START_TIMEOUT),
                    )
                    .await;
                let result = match added {
                    Ok(CallResult::Success(result)) => result,
                    Ok(CallResult::Timeout) => Err(AddError::StartTimedOut {
                        name: specialist.name().to_owned(),
                    }),
                    _ => Err(AddError::SupervisorGone),
                };
                if result.is_ok() {
                    state.specialists.push(specialist);
                }
                let _ = reply.send(result);
            }
            RootMsg::Stopping(reply) => {
                state.stopping = true;
                state.timers = TaskTable::default();
                let _ = reply.send(());
            }
            RootMsg::Respawn(child) => {
                state.timers.remove(&child);
                if !state.stopping {
                    state.respawn(child, &myself).await;
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RootMsg>,
        event: SupervisionEvent,
        state: &mut RootState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, exit) = match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let message = error.to_string();
                (cell, ExitReason::Crashed { message })
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let message = reason.unwrap_or_else(|| "stopped".to_owned());
                (cell, ExitReason::Stopped { message })
            }
            // Other events (group changes, cluster lifecycle) say nothing about a child.
            _ => return Ok(()),
        };
        if let Some(child) = state.children.remove(&cell.get_id()) {
            state.on_exit(child, exit, &myself).await;
        }
        Ok(())
    }
}
