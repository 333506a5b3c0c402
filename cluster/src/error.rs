//! Why a cluster node could not start or join.

use std::net::SocketAddr;

/// Why a cluster node could not start or join.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cookie file could not be read.
    #[error("cannot read the cluster cookie file {path}")]
    CookieFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A node name the cluster cannot use.
    #[error("node name `{0}` is not usable: 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
    /// The cookie is empty.
    #[error("the cluster cookie is empty: put a shared secret in the cookie file")]
    EmptyCookie,
    /// The cookie is too short to keep strangers out.
    #[error("the cluster cookie has {len} characters: it is the only thing keeping strangers off the cluster port, so use at least {min} (e.g. `head -c 24 /dev/urandom | base64`)")]
    WeakCookie {
        /// Its length.
        len: usize,
        /// The least accepted.
        min: usize,
    },
    /// The listen address cannot be bound.
    #[error("cannot listen for cluster nodes on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificates could not be used.
    #[error("cluster TLS: {0}")]
    Tls(String),
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
