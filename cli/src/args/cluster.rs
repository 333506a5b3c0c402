//! The cluster's flags: a worker's, the orchestrator's (on `serve`), and the status
//! client's.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::client::ClientArgs;
use super::parse::{at_least_one, parse_duration};
use super::runtime::RuntimeArgs;

/// Mutual TLS for the cluster's sessions: all three, or none.
#[derive(clap::Args)]
pub struct ClusterTlsArgs {
    /// This node's certificate (PEM) for the cluster's sessions; with
    /// --cluster-tls-key and --cluster-tls-ca, sessions use mutual TLS.
    #[arg(long, value_name = "F", requires_all = ["cluster_tls_key", "cluster_tls_ca"])]
    pub cluster_tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "F", requires = "cluster_tls_cert")]
    pub cluster_tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): every peer's certificate must chain to it.
    #[arg(long, value_name = "F", requires = "cluster_tls_cert")]
    pub cluster_tls_ca: Option<PathBuf>,
}

impl ClusterTlsArgs {
    /// The files, when given.
    pub fn files(&self) -> Option<fanfare_cluster::TlsFiles> {
        match (
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        ) {
            (Some(cert), Some(key), Some(ca)) => Some(fanfare_cluster::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        }
    }
}

/// `serve`'s cluster flags.
#[derive(clap::Args)]
pub struct OrchestratorArgs {
    /// Accept worker nodes (`fanfare worker --join`) on this address. Without
    /// --cluster-tls-*, cluster traffic is authenticated by the cookie but not
    /// encrypted: keep it on loopback or a private network.
    #[arg(long, value_name = "ADDR", requires = "cookie_file")]
    pub cluster_listen: Option<SocketAddr>,
    /// File holding the cluster's shared secret; every node must have the same one.
    #[arg(long, value_name = "F")]
    pub cookie_file: Option<PathBuf>,
    /// This node's name in the cluster.
    #[arg(long, default_value = "orchestrator", value_name = "NAME")]
    pub node_name: String,
    /// Branches this node's own specialists take at once before workers are
    /// preferred (0: workers take every branch they can).
    #[arg(long, default_value_t = 64)]
    pub local_capacity: usize,
    /// A worker that has not answered the heartbeat (every second) for this long is
    /// lost: its branches end NodeDown and follow the run's policy.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,
    #[command(flatten)]
    pub tls: ClusterTlsArgs,
}

/// `fanfare worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The orchestrator's cluster address (its `serve --cluster-listen`).
    #[arg(long, value_name = "HOST:PORT")]
    pub join: String,
    /// File holding the cluster's shared secret (the orchestrator's).
    #[arg(long, value_name = "F")]
    pub cookie_file: PathBuf,
    /// This node's name, unique in the cluster [default: worker-PID].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Where this node listens for its cluster session.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Branches it takes at once before the orchestrator prefers another node.
    #[arg(long, default_value_t = 256, value_parser = at_least_one)]
    pub capacity: usize,
    /// How long to keep trying to join at start (the orchestrator may come later).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub join_timeout: Duration,
    #[command(flatten)]
    pub tls: ClusterTlsArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `fanfare cluster …`.
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// The nodes of a running `serve --cluster-listen`: state, specialists, load.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}
