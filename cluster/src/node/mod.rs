//! This process's ractor_cluster node: starting its server, connecting to a peer,
//! and hearing when a peer's session is ready or gone. Peers come in through this
//! node's own listener (`door`), which keeps strangers who do not know the cookie
//! from taking memory or holding it open (`watch`: the pure decisions).

mod door;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeId, NodeServer, NodeServerMessage,
};

use crate::error::ClusterError;
use crate::tls::{self, TlsFiles};
use tokio::sync::mpsc;

/// How this process takes part in a cluster.
#[derive(Clone)]
pub struct NodeConfig {
    /// Its node name, unique in the cluster.
    pub name: String,
    /// Where it listens for other nodes (port 0: any free port).
    pub listen: SocketAddr,
    /// The shared secret every node must present (ractor_cluster's cookie).
    pub cookie: String,
    /// Certificates for mutual TLS (`None`: the cookie only, in the clear).
    pub tls: Option<TlsFiles>,
    /// How long a peer's connection may take to authenticate (TLS and the cookie)
    /// before it is closed.
    pub handshake_timeout: Duration,
}

/// The default [`NodeConfig::handshake_timeout`].
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("cookie", &"(redacted)")
            .field("tls", &self.tls)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// The largest frame a node accepts from a peer. A branch's task (its input and
/// upstream outputs) and its answer travel in one frame each; a peer that sends more
/// is disconnected, so every node must accept the largest the others send.
pub const MAX_FRAME: u64 = 64 * 1024 * 1024;

/// Checks a node name: the cluster knows a node by it, and ractor_cluster appends
/// `@HOST` to it on the wire.
fn check_name(name: &str) -> Result<(), ClusterError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadName(name.to_owned()))
    }
}

/// The name ractor_cluster knows this process's node by: its cluster name and a
/// nonce of this process. Two processes started with one `--name` are then two
/// nodes to ractor_cluster, whose rule for a duplicate name closed one of them at
/// random (often the one already working: 10-20 of its 40 branches failed); the
/// orchestrator refuses the newcomer instead, by its cluster name.
fn wire_name(name: &str) -> String {
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default()
        ^ std::process::id().rotate_left(16);
    format!("{name}~{nonce:08x}")
}

/// The cluster name in a ractor_cluster node name (`NAME~NONCE@HOST`).
pub(crate) fn cluster_name(wire: &str) -> &str {
    let at = wire.split('@').next().unwrap_or_default();
    at.split('~').next().unwrap_or_default()
}

/// The fewest characters a cookie file may hold.
pub const MIN_COOKIE: usize = 16;

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
    // A one-byte cookie was accepted on 0.0.0.0: anyone could guess their way in.
    let len = cookie.chars().count();
    if len < MIN_COOKIE {
        return Err(ClusterError::WeakCookie {
            len,
            min: MIN_COOKIE,
        });
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

/// Whether a peer of this cluster name may join now (the orchestrator refuses a
/// second node of a name already up).
pub(crate) type Screen = Arc<dyn Fn(&str) -> bool + Send + Sync>;

struct Events {
    events: mpsc::UnboundedSender<NodeEvent>,
    watch: Arc<door::Watch>,
    screen: Option<Screen>,
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        let _ = self.events.send(NodeEvent::Opened {
            id: ses.node_id,
            outbound: !ses.is_server,
        });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        // The door stops watching the connection: its peer knows the cookie.
        self.watch.authenticated(&ses.peer_addr);
        // A name already up is refused here, before the session is ready, so the
        // newcomer's join fails saying why rather than joining and being dropped.
        let name = ses.peer_name.as_ref().map(|p| cluster_name(&p.name));
        if let (Some(screen), Some(name)) = (&self.screen, name) {
            if !screen(name) {
                tracing::warn!(node = %name, addr = %ses.peer_addr, "a node of this name is already joined: the newcomer is refused");
                ses.actor
                    .stop(Some(format!("a node named `{name}` is already joined")));
            }
        }
    }

    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        // ractor_cluster names a peer `NAME~NONCE@HOST`; the cluster knows it as NAME.
        let name = ses
            .peer_name
            .as_ref()
            .map(|p| cluster_name(&p.name).to_owned())
            .unwrap_or_else(|| format!("node-{}", ses.node_id));
        let _ = self.events.send(NodeEvent::Ready {
            id: ses.node_id,
            name,
            addr: ses.peer_addr.clone(),
            session: ses.actor.clone(),
        });
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let _ = self.events.send(NodeEvent::Gone { id: ses.node_id });
    }
}

/// A started node.
pub(crate) struct Node {
    pub server: ActorRef<NodeServerMessage>,
    pub addr: SocketAddr,
    pub events: mpsc::UnboundedReceiver<NodeEvent>,
    /// The task accepting peers; abort it with the server.
    pub door: tokio::task::JoinHandle<()>,
}

/// Connects this node to the peer at `addr` (`HOST:PORT`), over TLS with `tls`.
pub(crate) async fn connect(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&TlsFiles>,
) -> Result<(), String> {
    match tls {
        None => ractor_cluster::client_connect(server, addr)
            .await
            .map_err(|e| connect_error(&e)),
        Some(files) => {
            let host = addr
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
                .unwrap_or(addr);
            let (connector, name) = tls::connector(files, host).map_err(|e| e.to_string())?;
            ractor_cluster::client_connect_enc(server, addr, connector, name)
                .await
                .map_err(|e| {
                    format!(
                        "{} (over TLS, checking the certificate for `{host}`)",
                        connect_error(&e)
                    )
                })
        }
    }
}

/// ractor_cluster's connection error in words (its `Display` is its `Debug`).
fn connect_error(e: &ractor_cluster::ClientConnectErr) -> String {
    match e {
        ractor_cluster::ClientConnectErr::Socket(io) => format!("cannot connect: {io}"),
        ractor_cluster::ClientConnectErr::Encryption(io) => format!("TLS handshake failed: {io}"),
        ractor_cluster::ClientConnectErr::Messaging(m) => {
            format!("this node's server is gone: {m}")
        }
    }
}

/// Starts this process's node server, and its door on `config.listen`; `screen`
/// decides which peers may join by name.
pub(crate) async fn start(
    config: &NodeConfig,
    screen: Option<Screen>,
) -> Result<Node, ClusterError> {
    if config.cookie.trim().is_empty() {
        return Err(ClusterError::EmptyCookie);
    }
    check_name(&config.name)?;
    let listen = |source| ClusterError::Listen {
        addr: config.listen,
        source,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let acceptor = match &config.tls {
        Some(files) => Some(tls::acceptor(files)?),
        None => None,
    };
    // ractor_cluster's own listener: on a port of 127.0.0.1, refusing every TLS
    // handshake, so that every peer comes in through the door.
    let server = NodeServer::new(
        0,
        config.cookie.clone(),
        wire_name(&config.name),
        addr.ip().to_string(),
        Some(IncomingEncryptionMode::Tls(door::refuse_all()?)),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into())
    .with_max_inbound_frame_size(MAX_FRAME);
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| ClusterError::Spawn(e.to_string()))?;
    let watch = door::Watch::new(config.handshake_timeout);
    let (tx, events) = mpsc::unbounded_channel();
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "fanfare".into(),
            subscription: Box::new(Events {
                events: tx,
                watch: watch.clone(),
                screen,
            }),
        })
        .map_err(|e| ClusterError::Spawn(e.to_string()))?;
    let door = tokio::spawn(door::open(listener, server.clone(), acceptor, watch));
    Ok(Node {
        server,
        addr,
        events,
        door,
    })
}

#[cfg(test)]
mod tests;
