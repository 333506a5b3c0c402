//! The supervisor actor: a thin shell around the restart decision.
//!
//! It spawns every specialist *linked* to itself, so a crash reaches it as
//! `SupervisionEvent::ActorFailed`. It overrides `handle_supervisor_evt` (ractor's
//! default would stop the supervisor, and with it every sibling), turns each exit into
//! an [`ExitReason`], asks [`Restarts`] what to do, and does it: marks the roster slot,
//! stops siblings, starts timers, spawns, publishes [`SupervisorEvent`]s.
//!
//! Invariants: every specialist it spawned is linked to it; a slot is `Up` only while
//! its actor is alive or its exit is not yet processed; every timer it starts lives in
//! its state and dies with it.

use std::collections::HashMap;
use std::time::Duration;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use tokio::sync::broadcast;

use super::config::SupervisionConfig;
use super::decision::{Decision, Restarts};
use super::event::{DownReason, ExitReason, RestartCause, SpecialistStatus, SupervisorEvent};
use super::roster::{Roster, Slot};
use super::specialist::{Spawned, Specialist, Under};
use crate::agent::Notice;
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// Why a specialist could not be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddError {
    /// Another specialist has the name.
    #[error("a specialist named `{name}` is already registered")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// Its actor did not start.
    #[error("could not start specialist `{name}`")]
    Spawn {
        /// The name.
        name: String,
        /// ractor's error.
        source: SpawnErr,
    },
    /// The supervisor is not running (the runtime is shutting down or gone).
    #[error("the supervisor is not running")]
    SupervisorGone,
    /// The specialist did not start within [`START_TIMEOUT`].
    #[error("specialist `{name}` did not start within {START_TIMEOUT:?}")]
    StartTimedOut {
        /// The name.
        name: String,
    },
}

/// The longest a specialist may take to start (an MCP server's handshake and tool
/// list are bounded by its own, shorter, timeout; a call waiting for a start must
/// not give up before the start does).
pub const START_TIMEOUT: Duration = Duration::from_secs(600);

/// Messages to the [`Supervisor`].
#[derive(Debug)]
pub(crate) enum SupervisorMsg {
    /// Spawn and register a specialist.
    Add(Specialist, RpcReplyPort<Result<(), AddError>>),
    /// Report every specialist's status, in registration order.
    Status(RpcReplyPort<Vec<SpecialistStatus>>),
    /// Stop restarting anything, and hand over the live specialists in start order
    /// so the caller can stop them (in reverse).
    ShutDown(RpcReplyPort<Vec<(String, ActorCell)>>),
    /// A specialist's notice about itself (retiring after a panic, retired).
    Notice(Notice),
    /// A backoff timer fired: start `name` again.
    Respawn(String, RestartCause),
    /// A cool-down timer fired: close `name`'s circuit.
    Reopen(String),
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for SupervisorMsg {}

impl From<Notice> for SupervisorMsg {
    fn from(notice: Notice) -> Self {
        SupervisorMsg::Notice(notice)
    }
}

impl TryFrom<SupervisorMsg> for Notice {
    type Error = SupervisorMsg;

    fn try_from(msg: SupervisorMsg) -> Result<Self, SupervisorMsg> {
        match msg {
            SupervisorMsg::Notice(n) => Ok(n),
            other => Err(other),
        }
    }
}

/// The supervisor actor; see the module docs.
pub(crate) struct Supervisor;

/// Startup arguments of the [`Supervisor`]. Cheap to clone, so that a restarted
/// supervisor starts with the same ones.
#[derive(Clone)]
pub(crate) struct SupervisorArgs {
    /// The roster to keep current.
    pub roster: Roster,
    /// What agent-backed specialists call: the provider and the tools.
    pub context: crate::agent::AgentContext,
    /// Strategy, intensity, backoff.
    pub config: SupervisionConfig,
    /// Where to publish what it does.
    pub events: broadcast::Sender<SupervisorEvent>,
    /// Where it and its agent-backed specialists count themselves.
    pub live: LiveCount,
}

/// The timers the supervisor owns, by what they will do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Timer {
    Respawn(String),
    Reopen(String),
}

/// The supervisor's state: the decision's book, and what the shell needs to act.
pub(crate) struct SupervisorState {
    args: SupervisorArgs,
    restarts: Restarts,
    specialists: HashMap<String, Specialist>,
    /// Each specialist's live actor, if it has one.
    actors: HashMap<String, ActorCell>,
    /// Live actors by id, to name an exit.
    children: HashMap<ActorId, String>,
    /// Specialists retiring after a panic, until they report `Retired`.
    retiring: HashMap<ActorId, ActorCell>,
    timers: TaskTable<Timer>,
    shutting_down: bool,
    _live: LiveGuard,
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        name: &str,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), SpawnErr> {
        let Some(specialist) = self.specialists.get(name) else {
            return Ok(());
        };
        let Spawned { actor, intake } = specialist
            .spawn(Under {
                context: self.args.context.clone(),
                supervisor: myself.get_cell(),
                notices: myself.get_derived(),
                live: self.args.live.clone(),
            })
            .await?;
        self.children.insert(actor.get_id(), name.to_owned());
        self.actors.insert(name.to_owned(), actor.get_cell());
        self.restarts.started(name);
        self.args.roster.set(name, Slot::Up { actor, intake });
        Ok(())
    }

    fn publish(&self, event: SupervisorEvent) {
        let _ = self.args.events.send(event);
    }

    fn mark_down(&mut self, name: &str, reason: DownReason) {
        self.restarts.down(name, reason.clone());
        self.actors.remove(name);
        self.args.roster.set(name, Slot::Down { reason });
    }

    /// Sends `msg` to ourselves after `delay`, on a timer owned by this state.
    fn later(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: Timer,
        delay: Duration,
        msg: SupervisorMsg,
    ) {
        let me = myself.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = me.cast(msg);
        });
        self.timers.insert(key, timer.abort_handle());
    }

    async fn respawn(&mut self, myself: &ActorRef<SupervisorMsg>, name: &str, cause: RestartCause) {
        match self.spawn(name, myself).await {
            Ok(()) => {
                let generation = self.restarts.generation(name);
                tracing::info!(agent = name, generation, "specialist restarted");
                self.publish(SupervisorEvent::Restarted {
                    agent: name.to_owned(),
                    generation,
                    cause,
                });
            }
            Err(e) => self.restart_failed(myself, name, e.to_string()),
        }
    }

    /// A restart of `name` failed to start it (an MCP server that does not answer
    /// yet, say): it counts as one more exit, so it is tried again after the
    /// backoff until the restart intensity opens its circuit, which reopens after
    /// the cool-down. (Once a failed restart left it down for good.)
    fn restart_failed(&mut self, myself: &ActorRef<SupervisorMsg>, name: &str, error: String) {
        tracing::error!(agent = name, error = %error, "restart failed; trying again");
        let exit = ExitReason::Crashed {
            message: format!("its restart failed: {error}"),
        };
        match self
            .restarts
            .on_exit(name, &exit, tokio::time::Instant::now())
        {
            Decision::Restart { delay, cause, .. } => {
                // A start that fails at once must not spin.
                let delay = delay.max(Duration::from_millis(100));
                self.args.roster.set(name, Slot::Restarting);
                self.later(
                    myself,
                    Timer::Respawn(name.to_owned()),
                    delay,
                    SupervisorMsg::Respawn(name.to_owned(), cause),
                );
            }
            Decision::Escalate {
                reason,
                reopen_after,
            } => {
                tracing::error!(agent = %name, %reason, "escalating: specialist circuit open");
                self.mark_down(name, reason.clone());
                self.publish(SupervisorEvent::Escalated {
                    agent: name.to_owned(),
                    reason,
                });
                self.later(
                    myself,
                    Timer::Reopen(name.to_owned()),
                    reopen_after,
                    SupervisorMsg::Reopen(name.to_owned()),
                );
            }
            Decision::Stop { .. } | Decision::Ignore => {
                let reason = DownReason::RestartFailed { error };
                self.mark_down(name, reason.clone());
                self.publish(SupervisorEvent::Stopped {
                    agent: name.to_owned(),
                    reason,
                });
            }
        }
    }

    /// Asks the decision what follows `name`'s exit, and does it.
    async fn on_exit(&mut self, myself: &ActorRef<SupervisorMsg>, name: String, exit: ExitReason) {
        if self.shutting_down {
            return;
        }
        self.actors.remove(&name);
        match self
            .restarts
            .on_exit(&name, &exit, tokio::time::Instant::now())
        {
            Decision::Ignore => {}
            Decision::Stop { reason } => {
                self.mark_down(&name, reason.clone());
                self.publish(SupervisorEvent::Stopped {
                    agent: name,
                    reason,
                });
            }
            Decision::Escalate {
                reason,
                reopen_after,
            } => {
                tracing::error!(agent = %name, %reason, "escalating: specialist circuit open");
                self.mark_down(&name, reason.clone());
                self.publish(SupervisorEvent::Escalated {
                    agent: name.clone(),
                    reason,
                });
                self.later(
                    myself,
                    Timer::Reopen(name.clone()),
                    reopen_after,
                    SupervisorMsg::Reopen(name),
                );
            }
            Decision::Restart {
                group,
                delay,
                cause,
            } => {
                // Siblings in the group are stopped first; their exits are ours, not crashes.
                for other in group.iter().filter(|n| **n != name) {
                    if let Some(cell) = self.actors.remove(other) {
                        self.children.remove(&cell.get_id());
                        cell.stop(Some(format!(
                            "restarted with `{name}` ({})",
                            self.args.config.strategy
                        )));
                    }
                }
                for member in group {
                    if delay.is_zero() {
                        self.respawn(myself, &member, cause.clone()).await;
                    } else {
                        self.args.roster.set(&member, Slot::Restarting);
                        self.later(
                            myself,
                            Timer::Respawn(member.clone()),
                            delay,
                            SupervisorMsg::Respawn(member, cause.clone()),
                        );
                    }
                }
            }
        }
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        let live = args.live.guard();
        Ok(SupervisorState {
            restarts: Restarts::new(args.config),
            args,
            specialists: HashMap::new(),
            actors: HashMap::new(),
            children: HashMap::new(),
            retiring: HashMap::new(),
            timers: TaskTable::default(),
            shutting_down: false,
            _live: live,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Add(specialist, reply) => {
                let name = specialist.name().to_owned();
                if !state.restarts.add(&name, specialist.restart_type()) {
                    let _ = reply.send(Err(AddError::Duplicate { name }));
                    return Ok(());
                }
                if let Some(estimate) = specialist.estimator() {
                    state.args.roster.set_estimate(&name, estimate);
                }
                state.specialists.insert(name.clone(), specialist);
                let result = state.spawn(&name, &myself).await;
                if result.is_err() {
                    state.restarts.remove(&name);
                    state.specialists.remove(&name);
                }
                let _ = reply.send(result.map_err(|source| AddError::Spawn { name, source }));
            }
            SupervisorMsg::Status(reply) => {
                let _ = reply.send(state.restarts.status());
            }
            SupervisorMsg::ShutDown(reply) => {
                state.shutting_down = true;
                state.timers = TaskTable::default();
                // Retiring specialists first (they are the oldest), then the rest in
                // start order; the caller stops them in reverse.
                let mut live: Vec<(String, ActorCell)> = state
                    .retiring
                    .drain()
                    .map(|(_, c)| ("(retiring)".to_owned(), c))
                    .collect();
                live.extend(
                    state
                        .restarts
                        .order()
                        .iter()
                        .filter_map(|n| state.actors.get(n).map(|c| (n.clone(), c.clone()))),
                );
                let _ = reply.send(live);
            }
            SupervisorMsg::Notice(Notice::Retiring { actor, panic }) => {
                // Its own exit, later, is expected: stop tracking it as a child now.
                if let Some(name) = state.children.remove(&actor) {
                    if let Some(cell) = state.actors.get(&name).filter(|c| c.get_id() == actor) {
                        state.retiring.insert(actor, cell.clone());
                    }
                    let exit = ExitReason::Panicked { message: panic };
                    state.on_exit(&myself, name, exit).await;
                }
            }
            SupervisorMsg::Notice(Notice::Retired { actor }) => {
                if let Some(cell) = state.retiring.remove(&actor) {
                    let _ = cell.drain();
                }
            }
            SupervisorMsg::Respawn(name, cause) => {
                state.timers.remove(&Timer::Respawn(name.clone()));
                let still_wanted =
                    !state.restarts.is_down(&name) && !state.actors.contains_key(&name);
                if still_wanted && !state.shutting_down {
                    state.respawn(&myself, &name, cause).await;
                }
            }
            SupervisorMsg::Reopen(name) => {
                state.timers.remove(&Timer::Reopen(name.clone()));
                if state.shutting_down || !state.restarts.reopen(&name) {
                    return Ok(());
                }
                match state.spawn(&name, &myself).await {
                    Ok(()) => {
                        tracing::info!(agent = %name, "cool-down over; circuit closed");
                        state.publish(SupervisorEvent::CircuitClosed { agent: name });
                    }
                    // Half-open and failed: tried again, as any failed restart.
                    Err(e) => state.restart_failed(&myself, &name, e.to_string()),
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(name) = state.children.remove(&cell.get_id()) {
                    tracing::warn!(agent = %name, %error, "specialist crashed");
                    let exit = ExitReason::Crashed {
                        message: error.to_string(),
                    };
                    state.on_exit(&myself, name, exit).await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(name) = state.children.remove(&cell.get_id()) {
                    let message = reason.unwrap_or_else(|| "stopped".to_owned());
                    tracing::debug!(agent = %name, %message, "specialist stopped");
                    state
                        .on_exit(&myself, name, ExitReason::Stopped { message })
                        .await;
                }
            }
            // Other events (group changes, cluster lifecycle) say nothing about a child.
            _ => {}
        }
        Ok(())
    }
}
