//! [`Specialist`]: a name, a way to (re)spawn the actor behind it (an [`Agent`]
//! wrapped in the runtime's actor, or a raw actor speaking [`AgentMsg`]), and its
//! restart type.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorRef, DerivedActorRef, SpawnErr};

use super::config::RestartType;
use crate::agent::{Agent, AgentActor, AgentMsg, CallEstimate, Intake, Notice, Task};
use crate::provider::BoxFuture;
use crate::tasks::LiveCount;

/// A specialist to put under supervision: a name, a way to (re)spawn it, and its
/// restart type.
#[derive(Clone)]
pub struct Specialist {
    name: String,
    factory: Arc<dyn SpawnSpecialist>,
    restart: RestartType,
    estimate: Option<Arc<EstimateFn>>,
}

/// An agent's [`Agent::call_estimate`], kept where the runtime can reach it.
pub(crate) type EstimateFn = dyn Fn(&Task) -> Option<CallEstimate> + Send + Sync;

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
        let agent = Arc::new(agent);
        let estimating = agent.clone();
        Self {
            name: agent.name().to_owned(),
            factory: Arc::new(AgentFactory(agent)),
            restart: RestartType::Permanent,
            estimate: Some(Arc::new(move |task: &Task| estimating.call_estimate(task))),
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
            estimate: None,
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

    /// Its restart type.
    pub fn restart_type(&self) -> RestartType {
        self.restart
    }

    /// Its agent's call estimate, if it is an agent.
    pub(crate) fn estimator(&self) -> Option<Arc<EstimateFn>> {
        self.estimate.clone()
    }

    /// Spawns it, linked under the supervisor described by `under`.
    pub(crate) fn spawn(&self, under: Under) -> BoxFuture<'static, Result<Spawned, SpawnErr>> {
        self.factory.spawn(under)
    }
}

/// A spawned specialist: its actor, and (for an agent) the intake through which
/// callers run its tasks in their own task.
pub(crate) struct Spawned {
    pub actor: ActorRef<AgentMsg>,
    pub intake: Option<Arc<Intake>>,
}

/// Knows how to (re)spawn one specialist linked under a supervisor.
trait SpawnSpecialist: Send + Sync + 'static {
    fn spawn(&self, under: Under) -> BoxFuture<'static, Result<Spawned, SpawnErr>>;
}

/// What a spawn needs from its supervisor.
pub(crate) struct Under {
    /// What agent-backed specialists call: the provider and the tools.
    pub context: crate::agent::AgentContext,
    /// The supervisor to link to.
    pub supervisor: ActorCell,
    /// Where agent-backed specialists send their notices.
    pub notices: DerivedActorRef<Notice>,
    /// Where agent-backed specialists count themselves.
    pub live: LiveCount,
}

struct AgentFactory<A: Agent>(Arc<A>);

impl<A: Agent> SpawnSpecialist for AgentFactory<A> {
    fn spawn(&self, under: Under) -> BoxFuture<'static, Result<Spawned, SpawnErr>> {
        let (actor, intake) = AgentActor::new(
            self.0.clone(),
            under.context,
            under.live,
            Some(under.notices),
        );
        Box::pin(async move {
            let (actor, _) = Actor::spawn_linked(None, actor, (), under.supervisor).await?;
            Ok(Spawned {
                actor,
                intake: Some(intake),
            })
        })
    }
}

struct ActorFactory<F>(F);

impl<T, F> SpawnSpecialist for ActorFactory<F>
where
    T: Actor<Msg = AgentMsg>,
    F: Fn() -> (T, T::Arguments) + Send + Sync + 'static,
{
    fn spawn(&self, under: Under) -> BoxFuture<'static, Result<Spawned, SpawnErr>> {
        // `make` is user code, run inside the supervisor's handler: a panic in it must
        // fail this spawn, not the supervisor.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.0)()));
        Box::pin(async move {
            let (actor, args) = made
                .map_err(|_| SpawnErr::StartupFailed("the specialist's factory panicked".into()))?;
            let (actor, _) = Actor::spawn_linked(None, actor, args, under.supervisor).await?;
            Ok(Spawned {
                actor,
                intake: None,
            })
        })
    }
}
