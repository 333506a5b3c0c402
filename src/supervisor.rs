//! Supervision of specialists and the roster that routes to them.
//!
//! The [`Supervisor`] actor spawns every specialist *linked* to itself, so a
//! specialist's crash reaches it as `SupervisionEvent::ActorFailed`. It overrides
//! `handle_supervisor_evt` (ractor's default would stop the supervisor, and with it
//! every sibling) and writes the decision out: restart the crashed specialist
//! (one-for-one) unless it has crashed `max_restarts` times within `window`, in which
//! case it is marked down and routing to it fails fast with a clear reason.
//!
//! A restart gives a new `ActorRef`, so nobody holds specialists' refs for long: the
//! [`Roster`] maps each name to a `watch` slot that the supervisor updates. The
//! orchestrator resolves a name at dispatch time and, if the actor it found has just
//! died, waits on the slot for the replacement (bounded by the branch deadline)
//! instead of failing the branch or waiting on a dead actor.
//!
//! Invariants: a roster slot is `Up` only while its actor is alive or its failure is
//! not yet processed; every specialist that the supervisor spawned is linked to it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::agent::{Agent, AgentActor, AgentMsg};
use crate::provider::{BoxFuture, Provider};

/// Where a specialist's name currently routes.
#[derive(Clone, Debug)]
pub enum Slot {
    /// Alive at this ref; `generation` counts restarts.
    Up {
        /// The current actor.
        actor: ActorRef<AgentMsg>,
        /// 0 for the first spawn, +1 per restart.
        generation: u32,
    },
    /// Not routable, and why.
    Down {
        /// Why it is down.
        reason: String,
    },
}

/// Shared name → specialist routing table. Cheap to clone.
#[derive(Clone, Default)]
pub struct Roster {
    slots: Arc<DashMap<String, watch::Sender<Slot>>>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster")
            .field("names", &self.names())
            .finish()
    }
}

impl Roster {
    /// A watch on `name`'s slot, or `None` if no specialist has that name.
    pub fn watch(&self, name: &str) -> Option<watch::Receiver<Slot>> {
        self.slots.get(name).map(|s| s.subscribe())
    }

    /// The names known to the roster, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.slots.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// True if `name` is known (up or down).
    pub fn contains(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    fn set(&self, name: &str, slot: Slot) {
        match self.slots.get(name) {
            Some(sender) => {
                sender.send_replace(slot);
            }
            None => {
                self.slots.insert(name.to_owned(), watch::Sender::new(slot));
            }
        }
    }
}

/// Knows how to (re)spawn one specialist linked under a supervisor.
trait SpawnSpecialist: Send + Sync + 'static {
    fn spawn(
        &self,
        provider: Arc<dyn Provider>,
        supervisor: ActorCell,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>>;
}

struct AgentFactory<A: Agent>(Arc<A>);

impl<A: Agent> SpawnSpecialist for AgentFactory<A> {
    fn spawn(
        &self,
        provider: Arc<dyn Provider>,
        supervisor: ActorCell,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>> {
        let actor = AgentActor::new(self.0.clone(), provider);
        Box::pin(async move { Ok(Actor::spawn_linked(None, actor, (), supervisor).await?.0) })
    }
}

struct ActorFactory<F>(F);

impl<T, F> SpawnSpecialist for ActorFactory<F>
where
    T: Actor<Msg = AgentMsg>,
    F: Fn() -> (T, T::Arguments) + Send + Sync + 'static,
{
    fn spawn(
        &self,
        _provider: Arc<dyn Provider>,
        supervisor: ActorCell,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>> {
        let (actor, args) = (self.0)();
        Box::pin(async move { Ok(Actor::spawn_linked(None, actor, args, supervisor).await?.0) })
    }
}

/// A specialist to put under supervision: a name and a way to (re)spawn it.
#[derive(Clone)]
pub struct Specialist {
    name: String,
    factory: Arc<dyn SpawnSpecialist>,
}

impl std::fmt::Debug for Specialist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Specialist")
            .field("name", &self.name)
            .finish()
    }
}

impl Specialist {
    /// A specialist defined by an [`Agent`] implementation.
    pub fn agent<A: Agent>(agent: A) -> Self {
        Self {
            name: agent.name().to_owned(),
            factory: Arc::new(AgentFactory(Arc::new(agent))),
        }
    }

    /// A specialist written as a raw `ractor::Actor` speaking [`AgentMsg`]. `make` is
    /// called for the first spawn and again for every restart.
    pub fn actor<T, F>(name: impl Into<String>, make: F) -> Self
    where
        T: Actor<Msg = AgentMsg>,
        F: Fn() -> (T, T::Arguments) + Send + Sync + 'static,
    {
        Self {
            name: name.into(),
            factory: Arc::new(ActorFactory(make)),
        }
    }

    /// The routing name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// At most `max_restarts` restarts within `window`; one more crash marks the
/// specialist down.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartIntensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(10),
        }
    }
}

/// One specialist's supervision record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialistStatus {
    /// Its name.
    pub name: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Whether it is routable.
    pub up: bool,
    /// Why it is down, if it is.
    pub down_reason: Option<String>,
}

/// Messages to the [`Supervisor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Spawn and register a specialist.
    Add(Specialist, RpcReplyPort<Result<(), String>>),
    /// Report every specialist's status, in registration order.
    Status(RpcReplyPort<Vec<SpecialistStatus>>),
}

/// The supervisor actor; see the module docs.
pub struct Supervisor;

/// Startup arguments of the [`Supervisor`].
pub struct SupervisorArgs {
    /// The roster to keep current.
    pub roster: Roster,
    /// The provider handed to agent-backed specialists.
    pub provider: Arc<dyn Provider>,
    /// Restart limit.
    pub intensity: RestartIntensity,
}

struct Entry {
    specialist: Specialist,
    restarts: u32,
    recent: VecDeque<Instant>,
    generation: u32,
    down: Option<String>,
}

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, String>,
    entries: HashMap<String, Entry>,
    order: Vec<String>,
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        name: &str,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), SpawnErr> {
        let Some(entry) = self.entries.get(name) else {
            return Ok(());
        };
        let actor = entry
            .specialist
            .factory
            .spawn(self.args.provider.clone(), myself.get_cell())
            .await?;
        self.children.insert(actor.get_id(), name.to_owned());
        self.args.roster.set(
            name,
            Slot::Up {
                actor,
                generation: entry.generation,
            },
        );
        Ok(())
    }

    fn mark_down(&mut self, name: &str, reason: String) {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.down = Some(reason.clone());
        }
        self.args.roster.set(name, Slot::Down { reason });
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
        Ok(SupervisorState {
            args,
            children: HashMap::new(),
            entries: HashMap::new(),
            order: Vec::new(),
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
                let name = specialist.name.clone();
                if state.entries.contains_key(&name) {
                    let _ = reply.send(Err(format!(
                        "a specialist named `{name}` is already registered"
                    )));
                    return Ok(());
                }
                state.entries.insert(
                    name.clone(),
                    Entry {
                        specialist,
                        restarts: 0,
                        recent: VecDeque::new(),
                        generation: 0,
                        down: None,
                    },
                );
                let result = state.spawn(&name, &myself).await;
                if result.is_ok() {
                    state.order.push(name.clone());
                } else {
                    state.entries.remove(&name);
                }
                let _ = reply
                    .send(result.map_err(|e| format!("could not start specialist `{name}`: {e}")));
            }
            SupervisorMsg::Status(reply) => {
                let status = state
                    .order
                    .iter()
                    .filter_map(|name| state.entries.get(name).map(|e| (name, e)))
                    .map(|(name, e)| SpecialistStatus {
                        name: name.clone(),
                        restarts: e.restarts,
                        up: e.down.is_none(),
                        down_reason: e.down.clone(),
                    })
                    .collect();
                let _ = reply.send(status);
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
                let Some(name) = state.children.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::warn!(agent = %name, %error, "specialist crashed");
                let intensity = state.args.intensity;
                let now = Instant::now();
                let Some(entry) = state.entries.get_mut(&name) else {
                    return Ok(());
                };
                while entry
                    .recent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) > intensity.window)
                {
                    entry.recent.pop_front();
                }
                if entry.recent.len() as u32 >= intensity.max_restarts {
                    let reason = format!(
                        "restart intensity exceeded: {} restarts within {:?}; last crash: {error}",
                        entry.recent.len(),
                        intensity.window
                    );
                    tracing::error!(agent = %name, %reason, "specialist is down");
                    state.mark_down(&name, reason);
                    return Ok(());
                }
                entry.recent.push_back(now);
                entry.restarts += 1;
                entry.generation += 1;
                if let Err(e) = state.spawn(&name, &myself).await {
                    tracing::error!(agent = %name, error = %e, "restart failed; specialist is down");
                    state.mark_down(&name, format!("restart failed: {e}"));
                } else {
                    tracing::info!(agent = %name, "specialist restarted");
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                // A specialist that stops of its own accord is not restarted (it chose
                // to stop); routing to it fails with the reason it gave.
                if let Some(name) = state.children.remove(&cell.get_id()) {
                    let reason = reason.unwrap_or_else(|| "stopped".to_owned());
                    tracing::debug!(agent = %name, %reason, "specialist stopped");
                    state.mark_down(&name, format!("specialist stopped: {reason}"));
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}
