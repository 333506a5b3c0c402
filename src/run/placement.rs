//! Where a branch runs: on this process's specialist, or on another node's. The
//! runtime asks a [`Router`] once per attempt at a branch; without one, every branch
//! runs here. A cluster layer (`fanfare-cluster`) supplies the router and the
//! [`RemoteSpecialist`]s; nothing changes for an agent's author.
//!
//! A remote branch that loses its node ends [`NodeDown`](super::BranchError::NodeDown)
//! and then follows the run's policy like a crashed specialist: with crash retries
//! left it is placed again (the lost node is no longer offered), otherwise it fails.

use std::any::Any;
use std::sync::Arc;

use tokio::time::Instant;

use super::outcome::{BranchOutcome, DeadlineKind};
use crate::agent::Task;
use crate::provider::BoxFuture;

/// Chooses where each branch runs.
pub trait Router: Send + Sync + 'static {
    /// Where the next attempt at a branch of `agent` runs.
    fn route(&self, agent: &str) -> Placement;

    /// This process's node name, for branches that run here (`None`: not in a
    /// cluster).
    fn local_node(&self) -> Option<String> {
        None
    }
}

/// A [`Router`]'s choice for one attempt at a branch.
pub struct Placement {
    /// Here or there.
    pub place: Place,
    /// Held while the attempt runs and dropped when it ends, however it ends (a
    /// router's load count, say).
    pub hold: Option<Box<dyn Any + Send>>,
}

impl std::fmt::Debug for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.place {
            Place::Here => "here".to_owned(),
            Place::There(remote) => remote.node().to_owned(),
        };
        f.debug_struct("Placement").field("place", &place).finish()
    }
}

impl Placement {
    /// On this process's specialist.
    pub fn here() -> Self {
        Self {
            place: Place::Here,
            hold: None,
        }
    }
}

/// Where one attempt runs.
pub enum Place {
    /// On this process's specialist of that name.
    Here,
    /// On another node's.
    There(Arc<dyn RemoteSpecialist>),
}

/// A specialist on another node, as the orchestrator sees it.
pub trait RemoteSpecialist: Send + Sync {
    /// The node's name.
    fn node(&self) -> &str;

    /// Runs `call` there and answers how it ended (the remote node applies its own
    /// supervision and crash retries). Dropping the future cancels the work there.
    /// `Err` when the node was lost before it answered.
    fn run(&self, call: RemoteCall) -> BoxFuture<'static, Result<BranchOutcome, NodeLost>>;
}

/// One attempt at a branch, for a [`RemoteSpecialist`].
#[derive(Clone, Debug)]
pub struct RemoteCall {
    /// The task.
    pub task: Task,
    /// When the branch must have ended.
    pub deadline: Instant,
    /// Which deadline that is, for a timed-out outcome.
    pub deadline_kind: DeadlineKind,
    /// Retries there when the specialist crashes under the task.
    pub crash_retries: u32,
}

/// A node lost while it held a branch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node `{node}` was lost: {reason}")]
pub struct NodeLost {
    /// The node.
    pub node: String,
    /// How it was noticed (connection closed, heartbeat missed, …).
    pub reason: String,
}
