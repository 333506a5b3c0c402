//! The orchestrator's table of worker nodes: who is up, what each hosts, how many
//! branches it runs, and the signal that tells their branches the node is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::ActorRef;
use ractor_cluster::{NodeId, NodeSessionMessage};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::status::{NodeState, NodeStatus};
use crate::wire::{WorkerStatus, PROTOCOL};

/// Branches a worker takes before its first heartbeat says its capacity.
const DEFAULT_CAPACITY: usize = 64;

/// Bytes of tasks this orchestrator has out at one worker at once (see
/// [`Member::sending`]).
pub(crate) const SENDING_BUDGET: usize = 32 << 20;

/// Lost workers kept listed in the status.
const KEEP_DOWN: usize = 32;

pub(crate) struct Member {
    pub name: String,
    pub addr: String,
    pub state: NodeState,
    pub status: Option<WorkerStatus>,
    /// Branches this orchestrator has running there.
    pub running: usize,
    pub joined: Instant,
    pub last_seen: Option<Instant>,
    /// Specialists it hosts that are not routed to it (see [`Ours::refused`]).
    pub refused: Vec<String>,
    /// Carries the reason once the node is lost; its branches wait on it.
    pub lost: watch::Sender<Option<String>>,
    pub session: ActorRef<NodeSessionMessage>,
    /// The worker's share of [`SENDING_BUDGET`], in KiB: a branch sent there holds
    /// its task's size until it answers. Each task crosses the wire whole (a run's
    /// input once per branch), so without it a wide run of a long input queued
    /// gigabytes for one session and starved its heartbeat.
    pub sending: Arc<Semaphore>,
}

impl Member {
    pub(crate) fn capacity(&self) -> usize {
        self.status
            .as_ref()
            .map(|s| s.capacity)
            .unwrap_or(DEFAULT_CAPACITY)
    }

    /// Up, and speaking this protocol (or not yet heard from).
    pub(crate) fn usable(&self) -> bool {
        self.state == NodeState::Up && self.status.as_ref().is_none_or(|s| s.protocol == PROTOCOL)
    }
}

#[derive(Default)]
pub(crate) struct Members {
    table: Mutex<Table>,
    /// What a worker's specialists must match: this node's own.
    ours: Ours,
}

/// This node's spec fingerprints and whether its provider is simulated.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ours {
    pub fingerprints: std::collections::BTreeMap<String, String>,
    pub simulated: bool,
}

impl Ours {
    /// The specialists of a worker reporting `status` that must not be routed to it,
    /// and why: those whose spec differs from this node's (all of them when it
    /// answers with a simulated model and this node does not).
    pub(crate) fn refused(&self, status: &WorkerStatus) -> (Vec<String>, Option<&'static str>) {
        if status.simulated && !self.simulated {
            return (
                status.specialists.clone(),
                Some("its model provider is simulated and this node's is not"),
            );
        }
        let differ: Vec<String> = status
            .fingerprints
            .iter()
            .filter(|(name, theirs)| {
                self.fingerprints
                    .get(*name)
                    .is_some_and(|ours| ours != *theirs)
            })
            .map(|(name, _)| name.clone())
            .collect();
        let why = (!differ.is_empty()).then_some("their spec differs from this node's");
        (differ, why)
    }

    /// Whether `agent` is checked: a worker gets it only once its status says
    /// its spec is this node's.
    pub(crate) fn checks(&self, agent: &str) -> bool {
        self.fingerprints.contains_key(agent)
    }
}

#[derive(Default)]
pub(crate) struct Table {
    pub by_id: HashMap<NodeId, Member>,
    /// Ids in the order they joined.
    pub order: Vec<NodeId>,
    /// Branches running on the orchestrator's own specialists.
    pub local_running: usize,
}

impl Members {
    /// A table that checks workers against `ours`.
    pub(crate) fn new(ours: Ours) -> Self {
        Self {
            table: Mutex::default(),
            ours,
        }
    }

    /// Whether `m` may be sent `agent`: it is usable, and (when this node knows
    /// the agent's fingerprint) has said its spec is the same.
    pub(crate) fn takes(&self, m: &Member, agent: &str) -> bool {
        m.usable()
            && !m.refused.iter().any(|a| a == agent)
            && (!self.ours.checks(agent) || m.status.is_some())
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a node that joined; `false` (and nothing added) when a node of that
    /// name is up already: the newcomer is refused, the working one keeps its work.
    pub(crate) fn joined(
        &self,
        id: NodeId,
        name: String,
        addr: String,
        session: ActorRef<NodeSessionMessage>,
    ) -> bool {
        let mut t = self.lock();
        if t.by_id
            .values()
            .any(|m| m.name == name && m.state == NodeState::Up)
        {
            return false;
        }
        // A worker back under its name replaces its lost entry (once its branches
        // there have all ended).
        let stale: Vec<NodeId> = t
            .by_id
            .iter()
            .filter(|(_, m)| m.name == name && m.running == 0)
            .map(|(i, _)| *i)
            .collect();
        for old in stale {
            t.by_id.remove(&old);
            t.order.retain(|i| *i != old);
        }
        let (lost, _) = watch::channel(None);
        t.by_id.insert(
            id,
            Member {
                name,
                addr,
                state: NodeState::Up,
                status: None,
                running: 0,
                joined: Instant::now(),
                last_seen: None,
                lost,
                session,
                sending: Arc::new(Semaphore::new(SENDING_BUDGET >> 10)),
                refused: Vec::new(),
            },
        );
        t.order.retain(|i| *i != id);
        t.order.push(id);
        // Forget the oldest lost nodes beyond the few kept for the status.
        let down: Vec<NodeId> = t
            .order
            .iter()
            .copied()
            .filter(|i| t.by_id.get(i).is_some_and(|m| m.state != NodeState::Up))
            .collect();
        for old in down.iter().take(down.len().saturating_sub(KEEP_DOWN)) {
            if t.by_id.get(old).is_some_and(|m| m.running == 0) {
                t.by_id.remove(old);
                t.order.retain(|i| i != old);
            }
        }
        true
    }

    /// Marks `id` lost for `reason`; returns its name if it was up.
    pub(crate) fn lost(&self, id: NodeId, reason: &str) -> Option<String> {
        let mut t = self.lock();
        let m = t.by_id.get_mut(&id)?;
        if m.state != NodeState::Up {
            return None;
        }
        m.state = NodeState::Down {
            reason: reason.to_owned(),
        };
        m.lost.send_replace(Some(reason.to_owned()));
        Some(m.name.clone())
    }

    pub(crate) fn heard(&self, id: NodeId, status: WorkerStatus) {
        if let Some(m) = self.lock().by_id.get_mut(&id) {
            m.last_seen = Some(Instant::now());
            if status.protocol != PROTOCOL && m.status.is_none() {
                tracing::warn!(
                    node = %m.name,
                    theirs = status.protocol,
                    ours = PROTOCOL,
                    "a worker speaks another protocol version: it is given no work"
                );
            }
            let (refused, why) = self.ours.refused(&status);
            if refused != m.refused {
                if let Some(why) = why {
                    tracing::warn!(
                        node = %m.name,
                        specialists = %refused.join(", "),
                        "a worker's specialists are not used: {why} (start it with the same specs and provider)"
                    );
                }
                m.refused = refused;
            }
            m.status = Some(status);
        }
    }

    /// Whether a node of this name is up now.
    pub(crate) fn is_up(&self, name: &str) -> bool {
        self.lock()
            .by_id
            .values()
            .any(|m| m.name == name && m.state == NodeState::Up)
    }

    pub(crate) fn statuses(&self, leases: impl Fn(&str) -> usize) -> Vec<NodeStatus> {
        let t = self.lock();
        t.order
            .iter()
            .filter_map(|id| t.by_id.get(id))
            .map(|m| NodeStatus {
                name: m.name.clone(),
                address: m.addr.clone(),
                state: m.state.clone(),
                specialists: m
                    .status
                    .as_ref()
                    .map(|s| s.specialists.clone())
                    .unwrap_or_default(),
                refused: m.refused.clone(),
                running: m.running,
                capacity: m.capacity(),
                last_seen_ms: m.last_seen.map(|t| t.elapsed().as_millis() as u64),
                leases: leases(&m.name),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_whose_spec_or_provider_differs_is_not_sent_those_specialists() {
        // The sixth probe: a worker whose `legal` asked for 9,999 tokens (the
        // orchestrator's budget reserved 600), and one answering with the simulator
        // under a real orchestrator, were used without a word.
        let fp = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let ours = Ours {
            fingerprints: fp(&[("legal", "L"), ("security", "S")]),
            simulated: false,
        };
        let status = |fingerprints, simulated| WorkerStatus {
            node: "w".into(),
            protocol: PROTOCOL,
            specialists: vec!["legal".into(), "security".into(), "custom".into()],
            running: 0,
            capacity: 4,
            fingerprints,
            simulated,
        };
        let table: [(WorkerStatus, &[&str]); 4] = [
            (status(fp(&[("legal", "L"), ("security", "S")]), false), &[]),
            (
                status(fp(&[("legal", "X"), ("security", "S")]), false),
                &["legal"],
            ),
            // A Rust agent has no fingerprint: it is not checked.
            (status(fp(&[("custom", "C")]), false), &[]),
            (
                status(fp(&[("legal", "L"), ("security", "S")]), true),
                &["legal", "security", "custom"],
            ),
        ];
        for (status, refused) in table {
            assert_eq!(ours.refused(&status).0, refused, "{status:?}");
        }
        assert!(ours.checks("legal") && !ours.checks("custom"));
    }

    #[tokio::test]
    async fn a_name_already_up_is_refused_and_one_that_went_down_may_join_again() {
        // A session to stand for the node's (its messages are never sent here).
        let (session, _) = ractor::Actor::spawn(None, Idle, ()).await.unwrap();
        let members = Members::default();
        let join = |id: u64| members.joined(id, "w1".into(), "a".into(), session.clone());
        assert!(join(1));
        assert!(!join(2), "a second w1 while the first is up");
        assert_eq!(members.lock().by_id.len(), 1);
        members.lost(1, "gone");
        assert!(join(3), "w1 again once the first is down");
        assert_eq!(
            members.lock().by_id.keys().collect::<Vec<_>>(),
            [&3],
            "the rejoined w1 replaces its lost entry"
        );
        session.stop(None);
    }

    /// An actor that accepts the session's messages and does nothing.
    struct Idle;

    impl ractor::Actor for Idle {
        type Msg = NodeSessionMessage;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ActorRef<NodeSessionMessage>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }
}
