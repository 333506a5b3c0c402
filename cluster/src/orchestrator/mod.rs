//! The orchestrator's side of a cluster: [`Cluster`] listens for workers, keeps the
//! table of nodes (`members`), answers their lease requests (the gate), watches each
//! with a heartbeat, and routes branches (`remote`).

mod members;
mod remote;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanfare::run::Router;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeId, NodeServerMessage};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::ClusterError;
use crate::gate::{Gate, GateArgs, GateHost, Leases};
use crate::node::{self, NodeConfig, NodeEvent};
use crate::status::{ClusterStatus, NodeState, NodeStatus};
use crate::wire::{Frame, GateMsg, WorkerMsg, WORKER_GROUP};
use members::Members;
use remote::ClusterRouter;

/// How the orchestrator runs its side of the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Its node: name, listen address, cookie.
    pub node: NodeConfig,
    /// The specialists this process hosts itself.
    pub local_agents: Vec<String>,
    /// Branches its own specialists take at once before workers are preferred
    /// (0: workers take everything they host).
    pub local_capacity: usize,
    /// How often each worker is asked for its status.
    pub heartbeat: Duration,
    /// A worker unheard of this long is lost (its connection is closed).
    pub heartbeat_timeout: Duration,
    /// This node's spec-defined specialists' fingerprints (`AgentSpec::fingerprint`):
    /// a worker gets a branch of such a specialist only when its fingerprint is the
    /// same. Empty: workers are not checked.
    pub fingerprints: std::collections::BTreeMap<String, String>,
    /// This node's provider is simulated (a worker whose provider is simulated is
    /// sent nothing by an orchestrator whose provider is not).
    pub simulated: bool,
}

impl ClusterConfig {
    /// Defaults: 64 branches here at once, a heartbeat every second, lost after 3 s.
    pub fn new(node: NodeConfig) -> Self {
        Self {
            node,
            local_agents: Vec::new(),
            local_capacity: 64,
            heartbeat: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(3),
            fingerprints: Default::default(),
            simulated: false,
        }
    }
}

pub(crate) struct Inner {
    name: String,
    addr: SocketAddr,
    server: ActorRef<NodeServerMessage>,
    gate_host: ActorRef<GateMsg>,
    members: Arc<Members>,
    leases: Arc<Leases>,
    local_agents: HashSet<String>,
    local_capacity: usize,
    heartbeat: Duration,
    heartbeat_timeout: Duration,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn node_lost(&self, id: NodeId, reason: &str) {
        if let Some(name) = self.members.lost(id, reason) {
            let leases = self.leases.drop_node(&name);
            tracing::warn!(node = %name, %reason, leases, "worker lost: its branches end NodeDown and its leases are returned");
        }
    }

    fn keep(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// The orchestrator's side of a running cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Cluster {
    /// Starts listening for workers. `gate` is the admission gate of this process's
    /// provider stack, which workers' calls then lease from (`None`: not limited).
    pub async fn start(
        config: ClusterConfig,
        gate: Option<Arc<Gate>>,
    ) -> Result<Self, ClusterError> {
        let members = Arc::new(Members::new(members::Ours {
            fingerprints: config.fingerprints.clone(),
            simulated: config.simulated,
        }));
        let screening = members.clone();
        let screen: node::Screen = Arc::new(move |name: &str| !screening.is_up(name));
        let node = node::start(&config.node, Some(screen)).await?;
        let leases = Arc::new(Leases::default());
        let up = members.clone();
        let spawned = Actor::spawn(
            None,
            GateHost,
            GateArgs {
                gate,
                leases: leases.clone(),
                is_up: Arc::new(move |name: &str| up.is_up(name)),
            },
        )
        .await;
        let gate_host = match spawned {
            Ok((gate_host, _)) => gate_host,
            Err(e) => {
                node.door.abort();
                node.server.stop(None);
                return Err(ClusterError::Spawn(e.to_string()));
            }
        };
        let inner = Arc::new(Inner {
            name: config.node.name.clone(),
            addr: node.addr,
            server: node.server,
            gate_host,
            members,
            leases,
            local_agents: config.local_agents.into_iter().collect(),
            local_capacity: config.local_capacity,
            heartbeat: config.heartbeat,
            heartbeat_timeout: config.heartbeat_timeout,
            tasks: Mutex::new(Vec::new()),
        });
        let mut events = node.events;
        let weak = Arc::downgrade(&inner);
        let listen = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let Some(inner) = weak.upgrade() else { return };
                match event {
                    NodeEvent::Ready {
                        id,
                        name,
                        addr,
                        session,
                    } => {
                        if name == inner.name {
                            tracing::warn!(node = %name, %addr, "a worker took the orchestrator's own name: refused");
                            session.stop(Some(format!(
                                "`{name}` is the orchestrator's own name; give the worker another --name"
                            )));
                            continue;
                        }
                        if !inner
                            .members
                            .joined(id, name.clone(), addr.clone(), session.clone())
                        {
                            tracing::warn!(node = %name, %addr, "a worker of this name is already joined: the newcomer is refused");
                            session
                                .stop(Some(format!("a worker named `{name}` is already joined")));
                            continue;
                        }
                        tracing::info!(node = %name, %addr, "worker joined");
                        let beat = tokio::spawn(heartbeat(Arc::downgrade(&inner), id));
                        inner.keep(beat);
                    }
                    NodeEvent::Gone { id } => inner.node_lost(id, "its connection closed"),
                    NodeEvent::Opened { .. } => {}
                }
            }
        });
        inner.keep(listen);
        inner.keep(node.door);
        Ok(Self { inner })
    }

    /// The router to give the orchestrator's runtime
    /// ([`FanfareBuilder::router`](fanfare::FanfareBuilder::router)).
    pub fn router(&self) -> Arc<dyn Router> {
        Arc::new(ClusterRouter(self.inner.clone()))
    }

    /// Where it listens for workers.
    pub fn address(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The nodes, their state and load.
    pub fn status(&self) -> ClusterStatus {
        let inner = &self.inner;
        let mut agents: Vec<String> = inner.local_agents.iter().cloned().collect();
        agents.sort();
        let here = NodeStatus {
            name: inner.name.clone(),
            address: inner.addr.to_string(),
            state: NodeState::Up,
            specialists: agents,
            refused: Vec::new(),
            running: inner.members.lock().local_running,
            capacity: inner.local_capacity,
            last_seen_ms: None,
            leases: 0,
        };
        let mut nodes = vec![here];
        nodes.extend(inner.members.statuses(|name| inner.leases.held_by(name)));
        ClusterStatus {
            node: inner.name.clone(),
            address: inner.addr.to_string(),
            nodes,
            leases_held: inner.leases.held(),
        }
    }

    /// Stops listening, closes every worker's session and ends the heartbeats.
    pub fn shutdown(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for task in tasks {
            task.abort();
        }
        self.inner.gate_host.stop(None);
        self.inner.server.stop(None);
    }
}

/// Asks worker `id` for its status every `heartbeat`; when it has not answered for
/// `heartbeat_timeout`, it is lost and its session closed (so that the worker, if
/// it still runs, stops its branches and rejoins).
async fn heartbeat(inner: std::sync::Weak<Inner>, id: NodeId) {
    // The first beat at once: it brings the worker's capacity for routing.
    let mut first = true;
    loop {
        let Some(period) = inner.upgrade().map(|i| i.heartbeat) else {
            return;
        };
        if !first {
            tokio::time::sleep(period).await;
        }
        first = false;
        let Some(inner) = inner.upgrade() else { return };
        let (since, session) = {
            let t = inner.members.lock();
            match t.by_id.get(&id) {
                Some(m) if m.state == NodeState::Up => {
                    (m.last_seen.unwrap_or(m.joined), m.session.clone())
                }
                _ => return,
            }
        };
        let control = ractor::pg::get_members(&WORKER_GROUP.to_owned())
            .into_iter()
            .find(|c| !c.get_id().is_local() && c.get_id().node() == id)
            .map(ActorRef::<WorkerMsg>::from);
        let status = match control {
            Some(control) => match control
                .call(WorkerMsg::Status, Some(inner.heartbeat_timeout))
                .await
            {
                Ok(CallResult::Success(Frame(Ok(status)))) => Some(status),
                _ => None,
            },
            None => None,
        };
        match status {
            Some(status) => inner.members.heard(id, status),
            None if since.elapsed() >= inner.heartbeat_timeout => {
                let reason = format!(
                    "no heartbeat answer for {} ms",
                    Instant::now().duration_since(since).as_millis()
                );
                inner.node_lost(id, &reason);
                session.stop(Some(reason));
                return;
            }
            None => {}
        }
    }
}
