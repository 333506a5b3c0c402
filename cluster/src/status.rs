//! What `GET /v1/cluster` and `fanfare cluster status` show.

use serde::{Deserialize, Serialize};

/// The cluster as the orchestrator sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The orchestrator's node name.
    pub node: String,
    /// Where it listens for workers.
    pub address: String,
    /// Every node: the orchestrator first, then workers as they joined (a lost worker
    /// stays listed, `down`, until it rejoins or others push it out).
    pub nodes: Vec<NodeStatus>,
    /// Admission permits leased to workers' model calls now.
    pub leases_held: usize,
}

/// One node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its address, as this node sees it.
    pub address: String,
    /// Up or down (and why).
    pub state: NodeState,
    /// The specialists it hosts.
    pub specialists: Vec<String>,
    /// Those it is sent no branch of: their spec differs from the orchestrator's,
    /// or its provider is simulated and the orchestrator's is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
    /// Branches the orchestrator has running there now.
    pub running: usize,
    /// Branches it takes at once before another node is preferred.
    pub capacity: usize,
    /// Milliseconds since it last answered the heartbeat (`None`: the orchestrator
    /// itself, or never).
    pub last_seen_ms: Option<u64>,
    /// Admission permits its calls hold now.
    pub leases: usize,
}

/// A node's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeState {
    /// Connected and answering.
    Up,
    /// Lost; its branches ended `NodeDown`.
    Down {
        /// How it was noticed.
        reason: String,
    },
}

impl std::fmt::Display for ClusterStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "orchestrator {} on {}; {} admission lease(s) held by workers",
            self.node, self.address, self.leases_held
        )?;
        writeln!(
            f,
            "{:<20} {:<22} {:<8} {:>9} {:>7} {:>9}  specialists",
            "node", "address", "state", "running", "leases", "seen"
        )?;
        for n in &self.nodes {
            let state = match &n.state {
                NodeState::Up => "up".to_owned(),
                NodeState::Down { .. } => "down".to_owned(),
            };
            let seen = n
                .last_seen_ms
                .map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
            writeln!(
                f,
                "{:<20} {:<22} {:<8} {:>4}/{:<4} {:>7} {:>9}  {}",
                n.name,
                n.address,
                state,
                n.running,
                n.capacity,
                n.leases,
                seen,
                n.specialists.join(", ")
            )?;
            if let NodeState::Down { reason } = &n.state {
                writeln!(f, "{:<20} down: {reason}", "")?;
            }
            if !n.refused.is_empty() {
                writeln!(
                    f,
                    "{:<20} not sent (spec or provider differs from the orchestrator's): {}",
                    "",
                    n.refused.join(", ")
                )?;
            }
        }
        Ok(())
    }
}
