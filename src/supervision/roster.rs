//! The [`Roster`]: each specialist's name mapped to a `watch` slot that says where it
//! routes now. Only the supervisor writes it; branches read it, and wait on it while a
//! specialist restarts. A restart gives a new `ActorRef`, so nobody keeps refs.

use std::sync::Arc;

use dashmap::DashMap;
use ractor::ActorRef;
use tokio::sync::watch;

use super::event::DownReason;
use super::specialist::EstimateFn;
use crate::agent::{AgentMsg, CallEstimate, Intake, Task};

/// Where a specialist's name currently routes.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    /// Alive at this ref.
    Up {
        /// The current actor.
        actor: ActorRef<AgentMsg>,
        /// Its intake, if it runs an [`Agent`](crate::agent::Agent): callers run its
        /// tasks in their own task through it, instead of messaging the actor.
        intake: Option<Arc<Intake>>,
    },
    /// Being restarted (after a backoff); branches wait for it.
    Restarting,
    /// Not routable, and why.
    Down {
        /// Why it is down.
        reason: DownReason,
    },
}

/// Shared name → specialist routing table. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Roster {
    slots: Arc<DashMap<String, watch::Sender<Slot>>>,
    estimates: Arc<DashMap<String, Arc<EstimateFn>>>,
}

impl std::fmt::Debug for Roster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Roster")
            .field("names", &self.names())
            .finish()
    }
}

impl Roster {
    /// A watch on `name`'s slot, or `None` if no specialist has that name.
    pub(crate) fn watch(&self, name: &str) -> Option<watch::Receiver<Slot>> {
        self.slots.get(name).map(|s| s.subscribe())
    }

    /// The names known to the roster, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.slots.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }

    /// What specialist `name`'s agent says one call for `task` may use, if it says.
    pub(crate) fn estimate(&self, name: &str, task: &Task) -> Option<CallEstimate> {
        let f = self.estimates.get(name).map(|e| e.value().clone())?;
        f(task)
    }

    /// Keeps `name`'s estimate.
    pub(crate) fn set_estimate(&self, name: &str, estimate: Arc<EstimateFn>) {
        self.estimates.insert(name.to_owned(), estimate);
    }

    pub(crate) fn set(&self, name: &str, slot: Slot) {
        match self.slots.get(name) {
            Some(sender) => {
                sender.send_replace(slot);
            }
            None => {
                self.slots.insert(name.to_owned(), watch::Sender::new(slot));
            }
        }
    }
}
