//! This process's ractor_cluster node: starting its server, connecting to a peer,
//! and hearing when a peer's session is ready or gone.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeId, NodeServer, NodeServerMessage};
use tokio::sync::mpsc;

/// How this process takes part in a cluster.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Its node name, unique in the cluster.
    pub name: String,
    /// Where it listens for other nodes (port 0: any free port).
    pub listen: SocketAddr,
    /// The shared secret every node must present (ractor_cluster's cookie).
    pub cookie: String,
}

/// Why a cluster node could not start or join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cookie file could not be read.
    #[error("cannot read the cluster cookie file {path}: {source}")]
    CookieFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The cookie is empty.
    #[error("the cluster cookie is empty: put a shared secret in the cookie file")]
    EmptyCookie,
    /// The listen address cannot be bound.
    #[error("cannot listen for cluster nodes on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An actor of the node could not start.
    #[error("cannot start the cluster node: {0}")]
    Spawn(String),
    /// The orchestrator could not be joined.
    #[error("cannot join the orchestrator at {addr}: {reason}")]
    Join {
        /// Its address.
        addr: String,
        /// Why.
        reason: String,
    },
}

/// Reads a cookie file: its content without surrounding whitespace, never empty.
pub fn read_cookie(path: &Path) -> Result<String, ClusterError> {
    let text = std::fs::read_to_string(path).map_err(|source| ClusterError::CookieFile {
        path: path.display().to_string(),
        source,
    })?;
    let cookie = text.trim().to_owned();
    if cookie.is_empty() {
        return Err(ClusterError::EmptyCookie);
    }
    Ok(cookie)
}

/// What the node server says about a peer.
#[derive(Debug)]
pub(crate) enum NodeEvent {
    /// A session opened: one this node started (`outbound`), or a peer's.
    Opened { id: NodeId, outbound: bool },
    /// Its session is authenticated and has exchanged state (groups).
    Ready {
        id: NodeId,
        name: String,
        addr: String,
        session: ActorRef<ractor_cluster::NodeSessionMessage>,
    },
    /// Its session ended.
    Gone { id: NodeId },
}

struct Events(mpsc::UnboundedSender<NodeEvent>);

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(NodeEvent::Opened {
            id: ses.node_id,
            outbound: !ses.is_server,
        });
    }

    fn node_session_authenticated(&self, _: NodeServerSessionInformation) {}

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        // ractor_cluster names a peer `NAME@HOST`; the cluster knows it as NAME.
        let name = ses
            .peer_name
            .as_ref()
            .map(|p| p.name.split('@').next().unwrap_or_default().to_owned())
            .unwrap_or_else(|| format!("node-{}", ses.node_id));
        let _ = self.0.send(NodeEvent::Ready {
            id: ses.node_id,
            name,
            addr: ses.peer_addr.clone(),
            session: ses.actor.clone(),
        });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.0.send(NodeEvent::Gone { id: ses.node_id });
    }
}

/// A started node.
pub(crate) struct Node {
    pub server: ActorRef<NodeServerMessage>,
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<NodeEvent>,
}

/// Starts this process's node server on `config.listen`.
pub(crate) async fn start(config: &NodeConfig) -> Result<Node, ClusterError> {
    if config.cookie.trim().is_empty() {
        return Err(ClusterError::EmptyCookie);
    }
    // Bind once here, so that a taken port is an error now (ractor_cluster's
    // listener would only log it), and so that port 0 becomes a known port.
    let probe = TcpListener::bind(config.listen).map_err(|source| ClusterError::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = probe.local_addr().map_err(|source| ClusterError::Listen {
        addr: config.listen,
        source,
    })?;
    drop(probe);
    let server = NodeServer::new(
        addr.port(),
        config.cookie.clone(),
        config.name.clone(),
        addr.ip().to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(addr.ip());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Spawn(e.to_string()))?;
    let (tx, events) = mpsc::unbounded_channel();
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "fanfare".into(),
            subscription: Box::new(Events(tx)),
        })
        .map_err(|e| ClusterError::Spawn(e.to_string()))?;
    // Until the listener is bound, a peer's connection would be refused. Binding
    // the address again fails once it is (a connection would open a session).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpListener::bind(addr).is_ok() {
        if tokio::time::Instant::now() > deadline {
            server.stop(None);
            return Err(ClusterError::Listen {
                addr,
                source: std::io::Error::other("the node's listener did not start"),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Node {
        server,
        addr,
        events,
    })
}
