//! A worker node: hosts every specialist of a local runtime for an orchestrator. One
//! host actor per specialist joins that specialist's process group; a control actor
//! answers the heartbeat. A branch runs through the runtime's own supervision
//! ([`Fanfare::call_specialist`]); its model calls lease their admission from the
//! orchestrator (build the runtime's provider stack with [`LeasedGate`]).
//!
//! When the orchestrator is lost, the worker stops every branch it runs (nobody waits
//! for them, and their leases are already returned) and rejoins.
//!
//! [`LeasedGate`]: crate::gate::LeasedGate

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fanfare::agent::BranchId;
use fanfare::Fanfare;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::NodeServerMessage;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::error::ClusterError;
use crate::node::{self, NodeConfig, NodeEvent};
use crate::wire::{
    agent_group, Frame, HostMsg, Job, WorkerMsg, WorkerStatus, PROTOCOL, WORKER_GROUP,
};

/// How a worker joins.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its node: name, listen address, cookie.
    pub node: NodeConfig,
    /// The orchestrator's cluster address, `HOST:PORT`.
    pub join: String,
    /// Branches it takes at once before the orchestrator prefers another node.
    pub capacity: usize,
    /// How long the first join may take (the orchestrator may start later).
    pub join_timeout: Duration,
    /// The pause between attempts to (re)join.
    pub rejoin_every: Duration,
    /// Its spec-defined specialists' fingerprints (`AgentSpec::fingerprint`), which
    /// the orchestrator checks against its own; empty: none to check.
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// Its provider is simulated.
    pub simulated: bool,
}

impl WorkerConfig {
    /// Defaults: 256 branches at once, 30 s to join, a new attempt every second.
    pub fn new(node: NodeConfig, join: impl Into<String>) -> Self {
        Self {
            node,
            join: join.into(),
            capacity: 256,
            join_timeout: Duration::from_secs(30),
            rejoin_every: Duration::from_secs(1),
            fingerprints: Default::default(),
            simulated: false,
        }
    }
}

struct Shared {
    name: String,
    fanfare: Fanfare,
    agents: Vec<String>,
    capacity: usize,
    fingerprints: std::collections::BTreeMap<String, String>,
    simulated: bool,
    next: AtomicU64,
    jobs: Mutex<HashMap<u64, (BranchId, AbortHandle)>>,
}

impl Shared {
    fn jobs(&self) -> MutexGuard<'_, HashMap<u64, (BranchId, AbortHandle)>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancel(&self, branch: BranchId) {
        self.jobs().retain(|_, (b, handle)| {
            let keep = *b != branch;
            if !keep {
                handle.abort();
            }
            keep
        });
    }

    fn abort_all(&self) -> usize {
        let jobs = std::mem::take(&mut *self.jobs());
        for (_, handle) in jobs.values() {
            handle.abort();
        }
        jobs.len()
    }
}

/// Where the worker stands with its orchestrator.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Joining {
    Trying { last_error: Option<String> },
    Joined,
}

/// A running worker node.
pub struct Worker {
    shared: Arc<Shared>,
    /// The task accepting peers on this node's listener.
    door: JoinHandle<()>,
    server: ActorRef<NodeServerMessage>,
    actors: Vec<ractor::ActorCell>,
    state: watch::Receiver<Joining>,
    rejoin: JoinHandle<()>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.name)
            .field("agents", &self.shared.agents)
            .finish()
    }
}

impl Worker {
    /// Starts the node, hosts every specialist of `fanfare`, and joins the
    /// orchestrator (trying again until `join_timeout`).
    pub async fn join(config: WorkerConfig, fanfare: Fanfare) -> Result<Worker, ClusterError> {
        let node = node::start(&config.node, None).await?;
        let shared = Arc::new(Shared {
            name: config.node.name.clone(),
            agents: fanfare.agents(),
            fanfare,
            capacity: config.capacity,
            fingerprints: config.fingerprints.clone(),
            simulated: config.simulated,
            next: AtomicU64::new(0),
            jobs: Mutex::new(HashMap::new()),
        });
        let mut actors = Vec::new();
        let spawn_err = |e: ractor::SpawnErr| ClusterError::Spawn(e.to_string());
        let (control, _) = Actor::spawn(None, Control, shared.clone())
            .await
            .map_err(spawn_err)?;
        actors.push(control.get_cell());
        for agent in &shared.agents {
            let (host, _) = Actor::spawn(None, Host, (agent.clone(), shared.clone()))
                .await
                .map_err(spawn_err)?;
            actors.push(host.get_cell());
        }
        let (tx, mut state) = watch::channel(Joining::Trying { last_error: None });
        let rejoin = tokio::spawn(stay_joined(
            shared.clone(),
            node.server.clone(),
            node.events,
            config.join.clone(),
            config.rejoin_every,
            config.node.tls.clone(),
            tx,
        ));
        let worker = Worker {
            shared,
            door: node.door,
            server: node.server,
            actors,
            state: state.clone(),
            rejoin,
        };
        let joined = tokio::time::timeout(
            config.join_timeout,
            state.wait_for(|s| *s == Joining::Joined),
        )
        .await;
        if !matches!(joined, Ok(Ok(_))) {
            let reason = match &*worker.state.borrow() {
                Joining::Trying {
                    last_error: Some(e),
                } => format!("{e} (tried for {} s)", config.join_timeout.as_secs()),
                _ => format!("no answer within {} s", config.join_timeout.as_secs()),
            };
            worker.shutdown();
            return Err(ClusterError::Join {
                addr: config.join,
                reason,
            });
        }
        Ok(worker)
    }

    /// Its node name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Branches it runs now.
    pub fn running(&self) -> usize {
        self.shared.jobs().len()
    }

    /// Whether it is joined to the orchestrator now.
    pub fn is_joined(&self) -> bool {
        *self.state.borrow() == Joining::Joined
    }

    /// Leaves the cluster: stops its branches, its actors and its node.
    pub fn shutdown(&self) {
        self.rejoin.abort();
        self.door.abort();
        self.shared.abort_all();
        for actor in &self.actors {
            actor.stop(None);
        }
        self.server.stop(None);
    }
}

/// Joins, and rejoins whenever the session ends.
async fn stay_joined(
    shared: Arc<Shared>,
    server: ActorRef<NodeServerMessage>,
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    join: String,
    every: Duration,
    tls: Option<crate::tls::TlsFiles>,
    state: watch::Sender<Joining>,
) {
    let mut attempts = Attempts::default();
    loop {
        if let Err(e) = node::connect(&server, &join, tls.as_ref()).await {
            attempts.failed(&state, &join, every, e);
            tokio::time::sleep(every).await;
            continue;
        }
        // The session is ready once authenticated and the groups exchanged. Only
        // the session this node opened counts (not, say, a probe of its listener).
        let handshake = Instant::now() + Duration::from_secs(5);
        let mut ours = None;
        let session = loop {
            match tokio::time::timeout_at(handshake, events.recv()).await {
                Ok(Some(NodeEvent::Opened { id, outbound: true })) => ours = Some(id),
                Ok(Some(NodeEvent::Ready { id, name, .. })) if ours == Some(id) => {
                    break Some((id, name))
                }
                Ok(Some(NodeEvent::Gone { id })) if ours == Some(id) => break None,
                Ok(Some(_)) => {}
                Err(_) => break None,
                Ok(None) => return,
            }
        };
        let Some((id, orchestrator)) = session else {
            attempts.failed(&state, &join, every, "the orchestrator closed the session during the handshake (a wrong cookie, or a node of the same name is already joined)".into());
            tokio::time::sleep(every).await;
            continue;
        };
        if orchestrator == shared.name {
            // The orchestrator refuses it (and closes the session): say why here.
            let why = format!(
                "this worker's name `{orchestrator}` is the orchestrator's own: give it another --name"
            );
            tracing::error!("{why}");
            attempts.failed(&state, &join, every, why);
            tokio::time::sleep(every).await;
            continue;
        }
        if attempts.failures > 0 && attempts.was_joined {
            tracing::warn!(%orchestrator, "rejoined the cluster");
        } else {
            tracing::info!(%orchestrator, "joined the cluster");
        }
        attempts = Attempts {
            failures: 0,
            was_joined: true,
        };
        state.send_replace(Joining::Joined);
        loop {
            match events.recv().await {
                Some(NodeEvent::Gone { id: gone }) if gone == id => break,
                Some(_) => {}
                None => return,
            }
        }
        let stopped = shared.abort_all();
        tracing::warn!(%orchestrator, stopped, "lost the orchestrator: its branches here were stopped; rejoining");
        attempts.failed(
            &state,
            &join,
            every,
            "the orchestrator's session ended".into(),
        );
        tokio::time::sleep(every).await;
    }
}

/// A worker's attempts to (re)join in a row.
#[derive(Default)]
struct Attempts {
    failures: u32,
    /// It had joined once: a failure now is news (at the first, and every minute
    /// after), where a worker that lost its name to another retried forever, saying
    /// nothing of why.
    was_joined: bool,
}

impl Attempts {
    fn failed(
        &mut self,
        state: &watch::Sender<Joining>,
        join: &str,
        every: Duration,
        reason: String,
    ) {
        self.failures += 1;
        if self.was_joined && self.failures % 60 == 1 {
            tracing::warn!(
                attempts = self.failures,
                "cannot rejoin the cluster at {join}: {reason}; trying again every {every:?}"
            );
        }
        state.send_replace(Joining::Trying {
            last_error: Some(reason),
        });
    }
}

/// Takes a job out of the table when its task ends.
struct Done(Arc<Shared>, u64);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.jobs().remove(&self.1);
    }
}

/// Answers the heartbeat.
struct Control;

impl Actor for Control {
    type Msg = WorkerMsg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        ractor::pg::join(WORKER_GROUP.to_owned(), vec![myself.get_cell()]);
        Ok(shared)
    }

    async fn handle(
        &self,
        _myself: ActorRef<WorkerMsg>,
        message: WorkerMsg,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            WorkerMsg::Status(reply) => {
                let status = WorkerStatus {
                    node: shared.name.clone(),
                    protocol: PROTOCOL,
                    specialists: shared.agents.clone(),
                    running: shared.jobs().len(),
                    capacity: shared.capacity,
                    fingerprints: shared.fingerprints.clone(),
                    simulated: shared.simulated,
                };
                let _ = reply.send(Frame::new(status));
            }
        }
        Ok(())
    }
}

/// Hosts one specialist for the orchestrator.
struct Host;

impl Actor for Host {
    type Msg = HostMsg;
    type State = (String, Arc<Shared>);
    type Arguments = (String, Arc<Shared>);

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: (String, Arc<Shared>),
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(agent_group(&args.0), vec![myself.get_cell()]);
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<HostMsg>,
        message: HostMsg,
        (agent, shared): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            HostMsg::Run(Frame(Ok(job)), reply) => {
                let seq = shared.next.fetch_add(1, Ordering::Relaxed);
                let branch = job.task.branch;
                let (agent, runner) = (agent.clone(), shared.clone());
                // Spawned under the lock, so that it cannot finish (and remove
                // itself) before it is in the table.
                let mut jobs = shared.jobs();
                let task = tokio::spawn(async move {
                    // Out of the table however the task ends (a panic included).
                    let _done = Done(runner.clone(), seq);
                    let outcome = run_job(&runner, &agent, job).await;
                    let _ = reply.send(Frame::new(outcome));
                });
                jobs.insert(seq, (branch, task.abort_handle()));
            }
            HostMsg::Run(Frame(Err(reason)), _reply) => {
                // Dropping the port tells the orchestrator at once.
                tracing::warn!(%reason, "a branch from the orchestrator could not be read");
            }
            HostMsg::Cancel(Frame(Ok(branch))) => shared.cancel(branch),
            HostMsg::Cancel(Frame(Err(reason))) => {
                tracing::warn!(%reason, "a cancel from the orchestrator could not be read");
            }
        }
        Ok(())
    }
}

async fn run_job(shared: &Shared, agent: &str, job: Job) -> fanfare::BranchOutcome {
    let left = Duration::from_millis(job.time_left_ms);
    let deadline = Instant::now() + left;
    let mut task = *job.task;
    // A hair before the branch deadline, as on the orchestrator, so that a model
    // call cut by it reports what it was doing.
    task.deadline = Some(deadline - (left / 50).min(Duration::from_millis(25)));
    shared
        .fanfare
        .call_specialist(agent, task, deadline, job.deadline_kind, job.crash_retries)
        .await
}
