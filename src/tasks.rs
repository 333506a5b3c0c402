//! [`TaskTable`]: the tokio tasks an actor has spawned, keyed, aborted on drop.
//!
//! Actors never await long work inside `handle`; they spawn it and keep its abort
//! handle here. Because `post_stop` does not run after a panic or a kill, cleanup
//! lives in `Drop`: whenever the actor's state goes away, so does its work.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::task::AbortHandle;

/// Spawned tasks keyed by `K`; dropping the table aborts every one of them.
pub(crate) struct TaskTable<K: Eq + Hash> {
    tasks: HashMap<K, AbortHandle>,
}

impl<K: Eq + Hash> Default for TaskTable<K> {
    fn default() -> Self {
        Self {
            tasks: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash> TaskTable<K> {
    /// Records a running task.
    pub fn insert(&mut self, key: K, handle: AbortHandle) {
        if let Some(old) = self.tasks.insert(key, handle) {
            old.abort();
        }
    }

    /// Forgets a finished task.
    pub fn remove(&mut self, key: &K) {
        self.tasks.remove(key);
    }

    /// Aborts and forgets a task; true if there was one.
    pub fn abort(&mut self, key: &K) -> bool {
        match self.tasks.remove(key) {
            Some(handle) => {
                handle.abort();
                true
            }
            None => false,
        }
    }

    /// How many tasks are recorded.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<K: Eq + Hash> Drop for TaskTable<K> {
    fn drop(&mut self) {
        for (_, handle) in self.tasks.drain() {
            handle.abort();
        }
    }
}

/// Counts the live actors of one runtime. Cheap to clone; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct LiveCount(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl LiveCount {
    /// Actors alive now.
    pub fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts one more live actor until the guard is dropped.
    pub(crate) fn guard(&self) -> LiveGuard {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        LiveGuard(self.clone())
    }
}

/// Counts one live actor while it exists. Every fanfare actor keeps one in its
/// state, so the count drops however the actor ends (stop, kill, panic).
#[derive(Debug)]
pub(crate) struct LiveGuard(LiveCount);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}
