//! fanfare across machines, on ractor's own cluster layer (`ractor_cluster`).
//!
//! An **orchestrator** node ([`Cluster`], started by `fanfare serve
//! --cluster-listen`) runs the runs; **worker** nodes ([`Worker`], `fanfare worker
//! --join`) host specialists — the same agent specs and Rust agents as locally — and
//! run branches the orchestrator sends them. Nothing changes for an agent's author:
//! the library asks the cluster's [`Router`](fanfare::run::Router) where each branch
//! runs.
//!
//! - **Discovery**: each worker's specialist hosts join a process group per agent;
//!   ractor_cluster carries the groups across nodes, and members leave when their
//!   node goes.
//! - **Routing** ([`route`]): this node's own specialist while it has room, else the
//!   least filled worker.
//! - **One admission gate**: provider limits are per account, so workers' model calls
//!   lease their permits from the orchestrator's gate ([`gate`]) and give them back
//!   with how the call ended (a 429 cuts the one window); a lost node's leases come
//!   back at once.
//! - **Node loss**: a closed connection, or a heartbeat unanswered for
//!   [`ClusterConfig::heartbeat_timeout`], ends the node's branches `NodeDown`; the
//!   run's policy decides what follows (fail-fast ends the run; crash retries place
//!   the branch again elsewhere). A worker that loses the orchestrator stops its
//!   branches and rejoins.
//!
//! The wire protocol is [`wire`]: typed messages with serde payloads, inside
//! ractor_cluster's authenticated (cookie) sessions.

mod error;
pub mod gate;
mod node;
mod orchestrator;
pub mod route;
pub mod status;
mod tls;
pub mod wire;
mod worker;

pub use error::ClusterError;
pub use node::{read_cookie, NodeConfig, HANDSHAKE_TIMEOUT, MAX_FRAME};
pub use orchestrator::{Cluster, ClusterConfig};
pub use status::{ClusterStatus, NodeState, NodeStatus};
pub use tls::TlsFiles;
pub use worker::{Worker, WorkerConfig};
