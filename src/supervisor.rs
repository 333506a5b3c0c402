//! Supervision of specialists, OTP style, and the roster that routes to them.
//!
//! The [`Supervisor`] spawns every specialist *linked* to itself, so a specialist's
//! crash reaches it as `SupervisionEvent::ActorFailed`. It overrides
//! `handle_supervisor_evt` (ractor's default would stop the supervisor, and with it
//! every sibling) and writes each decision out:
//!
//! 1. **Restart type** ([`RestartType`]): `Permanent` specialists are restarted
//!    whatever the exit, `Transient` ones only after a crash, `Temporary` ones never.
//! 2. **Restart intensity** ([`RestartIntensity`], per specialist): more than
//!    `max_restarts` restarts within `window` *escalates*: the specialist's circuit
//!    opens (its roster slot goes `Down` with the reason, so branches waiting for it
//!    and new runs fail at once with `SpecialistUnavailable`), a
//!    [`SupervisorEvent::Escalated`] is published, and after `cool_down` the
//!    specialist is started afresh (`CircuitClosed`).
//! 3. **Strategy** ([`Strategy`]): which specialists restart with the crashed one —
//!    itself (one-for-one), all (one-for-all), or itself and those started after it
//!    (rest-for-one). Siblings taken down this way lose their in-flight tasks.
//! 4. **Backoff** ([`Backoff`]): restart number *k* within the window waits
//!    `min(base × 2^(k-1), cap)`; meanwhile the slot is `Restarting` and branches wait.
//!
//! A restart gives a new `ActorRef`, so nobody holds specialists' refs for long: the
//! [`Roster`] maps each name to a `watch` slot that only the supervisor writes.
//!
//! Invariants: every specialist the supervisor spawned is linked to it; a slot is `Up`
//! only while its actor is alive or its exit is not yet processed; every timer the
//! supervisor starts lives in its state and dies with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::agent::{Agent, AgentActor, AgentMsg};
use crate::provider::{BoxFuture, Provider};
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

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
    /// Being restarted (after a backoff); branches wait for it.
    Restarting {
        /// Why.
        reason: String,
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

    /// True if `name` is known (whatever its state).
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
        live: LiveCount,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>>;
}

struct AgentFactory<A: Agent>(Arc<A>);

impl<A: Agent> SpawnSpecialist for AgentFactory<A> {
    fn spawn(
        &self,
        provider: Arc<dyn Provider>,
        supervisor: ActorCell,
        live: LiveCount,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>> {
        let actor = AgentActor::new(self.0.clone(), provider).counted_in(live);
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
        _live: LiveCount,
    ) -> BoxFuture<'static, Result<ActorRef<AgentMsg>, SpawnErr>> {
        let (actor, args) = (self.0)();
        Box::pin(async move { Ok(Actor::spawn_linked(None, actor, args, supervisor).await?.0) })
    }
}

/// When a specialist that exited is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always, whether it crashed or stopped.
    #[default]
    Permanent,
    /// Only after a crash.
    Transient,
    /// Never.
    Temporary,
}

/// Which specialists restart when one crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the crashed one.
    #[default]
    OneForOne,
    /// All of them.
    OneForAll,
    /// The crashed one and every specialist registered after it.
    RestForOne,
}

impl std::str::FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "one-for-one" => Ok(Strategy::OneForOne),
            "one-for-all" => Ok(Strategy::OneForAll),
            "rest-for-one" => Ok(Strategy::RestForOne),
            _ => Err(format!(
                "unknown strategy `{s}`: expected one-for-one, one-for-all or rest-for-one"
            )),
        }
    }
}

/// A specialist to put under supervision: a name, a way to (re)spawn it, and its
/// restart type.
#[derive(Clone)]
pub struct Specialist {
    name: String,
    factory: Arc<dyn SpawnSpecialist>,
    restart: RestartType,
}

impl std::fmt::Debug for Specialist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Specialist")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish()
    }
}

impl Specialist {
    /// A specialist defined by an [`Agent`] implementation (permanent).
    pub fn agent<A: Agent>(agent: A) -> Self {
        Self {
            name: agent.name().to_owned(),
            factory: Arc::new(AgentFactory(Arc::new(agent))),
            restart: RestartType::Permanent,
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
            restart: RestartType::Permanent,
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// The routing name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// At most `max_restarts` restarts within `window` per specialist; one more crash
/// opens its circuit for `cool_down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartIntensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long the circuit stays open before the specialist is started afresh.
    pub cool_down: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// Delay before restart number *k* within the window: `min(base × 2^(k-1), cap)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first restart.
    pub base: Duration,
    /// Upper bound.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay before restart number `k` (1-based).
    pub fn delay(&self, k: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << k.saturating_sub(1).min(20))
            .min(self.cap)
    }
}

/// How the supervisor treats crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionConfig {
    /// Which specialists restart together.
    pub strategy: Strategy,
    /// Restart limit and circuit cool-down.
    pub intensity: RestartIntensity,
    /// Delay before restarts.
    pub backoff: Backoff,
}

/// What the supervisor did, published as it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A specialist was (re)started; `generation` counts restarts.
    Restarted {
        /// Its name.
        agent: String,
        /// New generation.
        generation: u32,
        /// Why it restarted.
        reason: String,
    },
    /// Restart intensity exceeded: the circuit is open until the cool-down passes.
    Escalated {
        /// Its name.
        agent: String,
        /// Why.
        reason: String,
    },
    /// The cool-down passed and the specialist was started afresh.
    CircuitClosed {
        /// Its name.
        agent: String,
    },
    /// A specialist exited and will not be restarted (its restart type says so).
    Stopped {
        /// Its name.
        agent: String,
        /// Why.
        reason: String,
    },
}

/// One specialist's supervision record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialistStatus {
    /// Its name.
    pub name: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Times its circuit opened.
    pub escalations: u32,
    /// Whether it is routable.
    pub up: bool,
    /// Why it is not, if it is not.
    pub down_reason: Option<String>,
}

/// Messages to the [`Supervisor`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SupervisorMsg {
    /// Spawn and register a specialist.
    Add(Specialist, RpcReplyPort<Result<(), String>>),
    /// Report every specialist's status, in registration order.
    Status(RpcReplyPort<Vec<SpecialistStatus>>),
    /// Stop restarting anything, and hand over the live specialists in start order
    /// so the caller can stop them (in reverse).
    ShutDown(RpcReplyPort<Vec<(String, ActorCell)>>),
    /// An agent-backed specialist panicked in a task and is retiring: it takes no
    /// new work and finishes its other tasks. Counted as a crash; a replacement is
    /// started per the strategy.
    Retiring {
        /// The retiring actor.
        actor: ActorId,
        /// The panic.
        reason: String,
    },
    /// A retiring specialist has finished its tasks; the supervisor drains it (its
    /// queued messages are answered, then it stops). The supervisor, not the actor,
    /// ends it, so its exit can never be mistaken for a normal stop.
    Retired {
        /// The retired actor.
        actor: ActorId,
    },
    #[doc(hidden)]
    Respawn(String),
    #[doc(hidden)]
    Reopen(String),
}

/// The supervisor actor; see the module docs.
pub struct Supervisor;

/// Startup arguments of the [`Supervisor`].
pub struct SupervisorArgs {
    /// The roster to keep current.
    pub roster: Roster,
    /// The provider handed to agent-backed specialists.
    pub provider: Arc<dyn Provider>,
    /// Strategy, intensity, backoff.
    pub config: SupervisionConfig,
    /// Where to publish what it does.
    pub events: broadcast::Sender<SupervisorEvent>,
    /// Where it and its agent-backed specialists count themselves.
    pub live: LiveCount,
}

struct Entry {
    specialist: Specialist,
    restarts: u32,
    escalations: u32,
    recent: VecDeque<Instant>,
    generation: u32,
    actor: Option<ActorCell>,
    down: Option<String>,
}

/// The supervisor's state.
pub struct SupervisorState {
    args: SupervisorArgs,
    children: HashMap<ActorId, String>,
    entries: HashMap<String, Entry>,
    order: Vec<String>,
    timers: TaskTable<String>,
    /// Specialists retiring after a panic, until they report `Retired`.
    retiring: HashMap<ActorId, ActorCell>,
    shutting_down: bool,
    _live: LiveGuard,
}

impl SupervisorState {
    async fn spawn(
        &mut self,
        name: &str,
        myself: &ActorRef<SupervisorMsg>,
    ) -> Result<(), SpawnErr> {
        let Some(entry) = self.entries.get_mut(name) else {
            return Ok(());
        };
        let actor = entry
            .specialist
            .factory
            .spawn(
                self.args.provider.clone(),
                myself.get_cell(),
                self.args.live.clone(),
            )
            .await?;
        self.children.insert(actor.get_id(), name.to_owned());
        entry.actor = Some(actor.get_cell());
        entry.down = None;
        let generation = entry.generation;
        self.args.roster.set(name, Slot::Up { actor, generation });
        Ok(())
    }

    fn publish(&self, event: SupervisorEvent) {
        let _ = self.args.events.send(event);
    }

    fn mark_down(&mut self, name: &str, reason: String) {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.down = Some(reason.clone());
            entry.actor = None;
        }
        self.args.roster.set(name, Slot::Down { reason });
    }

    /// Sends `msg` to ourselves after `delay`, on a timer owned by this state.
    fn later(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: String,
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

    /// Restarts `names` (after `delay`), announcing why.
    async fn restart(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        names: Vec<String>,
        delay: Duration,
        reason: &str,
    ) {
        for name in names {
            if let Some(entry) = self.entries.get_mut(&name) {
                entry.generation += 1;
            }
            if delay.is_zero() {
                self.respawn(myself, &name, reason).await;
            } else {
                self.args.roster.set(
                    &name,
                    Slot::Restarting {
                        reason: reason.to_owned(),
                    },
                );
                self.later(
                    myself,
                    format!("respawn:{name}"),
                    delay,
                    SupervisorMsg::Respawn(name),
                );
            }
        }
    }

    async fn respawn(&mut self, myself: &ActorRef<SupervisorMsg>, name: &str, reason: &str) {
        match self.spawn(name, myself).await {
            Ok(()) => {
                let generation = self.entries.get(name).map(|e| e.generation).unwrap_or(0);
                tracing::info!(agent = name, generation, "specialist restarted");
                self.publish(SupervisorEvent::Restarted {
                    agent: name.to_owned(),
                    generation,
                    reason: reason.to_owned(),
                });
            }
            Err(e) => {
                tracing::error!(agent = name, error = %e, "restart failed; specialist is down");
                self.mark_down(name, format!("restart failed: {e}"));
            }
        }
    }

    /// Decides what to do after specialist `name` exited.
    /// `retiring`: the old actor is still alive and serving (a task panicked), so
    /// there is no crash loop to back off from: the replacement starts at once.
    async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        name: String,
        crashed: bool,
        retiring: bool,
        reason: String,
    ) {
        if self.shutting_down {
            return;
        }
        let Some(entry) = self.entries.get_mut(&name) else {
            return;
        };
        entry.actor = None;
        let restart = match entry.specialist.restart {
            RestartType::Permanent => true,
            RestartType::Transient => crashed,
            RestartType::Temporary => false,
        };
        if !restart {
            let why = format!("{:?} specialist exited: {reason}", entry.specialist.restart)
                .to_lowercase();
            self.mark_down(&name, why.clone());
            self.publish(SupervisorEvent::Stopped {
                agent: name,
                reason: why,
            });
            return;
        }
        let intensity = self.args.config.intensity;
        let now = Instant::now();
        while entry
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > intensity.window)
        {
            entry.recent.pop_front();
        }
        if entry.recent.len() as u32 >= intensity.max_restarts {
            entry.escalations += 1;
            let why = format!(
                "circuit open: {} restarts within {:?} exceeded the restart intensity; retried after {:?}; last exit: {reason}",
                entry.recent.len(),
                intensity.window,
                intensity.cool_down
            );
            entry.recent.clear();
            tracing::error!(agent = %name, reason = %why, "escalating: specialist circuit open");
            self.mark_down(&name, why.clone());
            self.publish(SupervisorEvent::Escalated {
                agent: name.clone(),
                reason: why,
            });
            self.later(
                myself,
                format!("reopen:{name}"),
                intensity.cool_down,
                SupervisorMsg::Reopen(name),
            );
            return;
        }
        entry.recent.push_back(now);
        entry.restarts += 1;
        let delay = if retiring {
            Duration::ZERO
        } else {
            self.args.config.backoff.delay(entry.recent.len() as u32)
        };
        let position = self.order.iter().position(|n| n == &name).unwrap_or(0);
        let group: Vec<String> = match self.args.config.strategy {
            Strategy::OneForOne => vec![name.clone()],
            Strategy::OneForAll => self.order.clone(),
            Strategy::RestForOne => self.order[position..].to_vec(),
        };
        // Siblings in the group are stopped first; their exits are ours, not crashes.
        let why = format!("`{name}` exited: {reason}");
        let mut to_restart = Vec::new();
        for other in group {
            if other != name {
                let Some(e) = self.entries.get_mut(&other) else {
                    continue;
                };
                if e.down.is_some() {
                    continue;
                }
                if let Some(cell) = e.actor.take() {
                    self.children.remove(&cell.get_id());
                    cell.stop(Some(format!(
                        "restarted with `{name}` ({:?})",
                        self.args.config.strategy
                    )));
                }
            }
            to_restart.push(other);
        }
        self.restart(myself, to_restart, delay, &why).await;
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
            args,
            children: HashMap::new(),
            entries: HashMap::new(),
            order: Vec::new(),
            timers: TaskTable::default(),
            retiring: HashMap::new(),
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
                        escalations: 0,
                        recent: VecDeque::new(),
                        generation: 0,
                        actor: None,
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
                        escalations: e.escalations,
                        up: e.down.is_none(),
                        down_reason: e.down.clone(),
                    })
                    .collect();
                let _ = reply.send(status);
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
                live.extend(state.order.iter().filter_map(|n| {
                    state
                        .entries
                        .get(n)
                        .and_then(|e| e.actor.clone())
                        .map(|c| (n.clone(), c))
                }));
                let _ = reply.send(live);
            }
            SupervisorMsg::Retiring { actor, reason } => {
                // Its own exit, later, is expected: stop tracking it as a child now.
                if let Some(name) = state.children.remove(&actor) {
                    let cell = state
                        .entries
                        .get(&name)
                        .and_then(|e| e.actor.clone())
                        .filter(|c| c.get_id() == actor);
                    if let Some(cell) = cell {
                        state.retiring.insert(actor, cell);
                    }
                    state.on_exit(&myself, name, true, true, reason).await;
                }
            }
            SupervisorMsg::Retired { actor } => {
                if let Some(cell) = state.retiring.remove(&actor) {
                    let _ = cell.drain();
                }
            }
            SupervisorMsg::Respawn(name) => {
                state.timers.remove(&format!("respawn:{name}"));
                let still_wanted = state
                    .entries
                    .get(&name)
                    .is_some_and(|e| e.down.is_none() && e.actor.is_none());
                if still_wanted && !state.shutting_down {
                    state.respawn(&myself, &name, "restart after backoff").await;
                }
            }
            SupervisorMsg::Reopen(name) => {
                state.timers.remove(&format!("reopen:{name}"));
                if state.shutting_down {
                    return Ok(());
                }
                if let Some(entry) = state.entries.get_mut(&name) {
                    entry.generation += 1;
                }
                match state.spawn(&name, &myself).await {
                    Ok(()) => {
                        tracing::info!(agent = %name, "cool-down over; circuit closed");
                        state.publish(SupervisorEvent::CircuitClosed { agent: name });
                    }
                    Err(e) => {
                        state.mark_down(&name, format!("restart after cool-down failed: {e}"))
                    }
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
                    state
                        .on_exit(&myself, name, true, false, error.to_string())
                        .await;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(name) = state.children.remove(&cell.get_id()) {
                    let reason = reason.unwrap_or_else(|| "stopped".to_owned());
                    tracing::debug!(agent = %name, %reason, "specialist stopped");
                    state.on_exit(&myself, name, false, false, reason).await;
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}
