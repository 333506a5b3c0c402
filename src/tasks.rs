//! [`TaskTable`]: the tokio tasks an actor has spawned, keyed, aborted on drop.
//!
//! Actors never await long work inside `handle`; they spawn it and keep its abort
//! handle here. Because `post_stop` does not run after a panic or a kill, cleanup
//! lives in `Drop`: whenever the actor's state goes away, so does its work.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::task::AbortHandle;

/// Spawned tasks keyed by `K`; dropping the table aborts every one of them. A task
/// that ends need not be removed: finished ones are pruned as the table grows (the
/// agent actor's tasks for raw `Run` messages never tell it they ended).
pub(crate) struct TaskTable<K: Eq + Hash> {
    tasks: HashMap<K, AbortHandle>,
    /// The size at which the next insert first drops the finished tasks.
    prune_at: usize,
}

/// The smallest size at which a table prunes.
const PRUNE_FROM: usize = 64;

impl<K: Eq + Hash> Default for TaskTable<K> {
    fn default() -> Self {
        Self {
            tasks: HashMap::new(),
            prune_at: PRUNE_FROM,
        }
    }
}

impl<K: Eq + Hash> TaskTable<K> {
    /// Records a running task. Amortised O(1): a prune, which visits every entry,
    /// comes only after the table has doubled since the last one.
    pub fn insert(&mut self, key: K, handle: AbortHandle) {
        if self.tasks.len() >= self.prune_at {
            self.tasks.retain(|_, h| !h.is_finished());
            self.prune_at = (self.tasks.len() * 2).max(PRUNE_FROM);
        }
        if let Some(old) = self.tasks.insert(key, handle) {
            old.abort();
        }
    }

    /// Forgets a finished task.
    pub fn remove(&mut self, key: &K) {
        self.tasks.remove(key);
    }

    /// Aborts and forgets a task; true if there was one still running.
    pub fn abort(&mut self, key: &K) -> bool {
        match self.tasks.remove(key) {
            Some(handle) => {
                let running = !handle.is_finished();
                handle.abort();
                running
            }
            None => false,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finished_tasks_left_in_the_table_are_pruned_as_it_grows() {
        let mut table = TaskTable::default();
        for key in 0..1_000u32 {
            let handle = tokio::spawn(async {});
            let abort = handle.abort_handle();
            handle.await.unwrap();
            table.insert(key, abort);
        }
        let kept = table.tasks.len();
        assert!(kept <= PRUNE_FROM, "{kept} entries kept");
        // A running task is kept through prunes, and aborting it says so once.
        let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(async move {
            let _ = rx.await;
        });
        table.insert(5_000, running.abort_handle());
        for key in 0..1_000u32 {
            let handle = tokio::spawn(async {});
            let abort = handle.abort_handle();
            handle.await.unwrap();
            table.insert(key, abort);
        }
        assert!(table.abort(&5_000));
        assert!(!table.abort(&5_000));
        assert!(running.await.unwrap_err().is_cancelled());
        // A finished task is no longer running: aborting it reports nothing.
        let done = tokio::spawn(async {});
        let abort = done.abort_handle();
        done.await.unwrap();
        table.insert(7_000, abort);
        assert!(!table.abort(&7_000));
    }
}
