//! One map step's items while they run: which to dispatch next (within the step's
//! concurrency), and whether the items have decided the step under its policy.

use std::sync::Arc;

use crate::agent::UpstreamOutput;
use crate::run::policy::Policy;

/// Where an item stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item {
    Pending,
    Running,
    Ok,
    NotOk,
}

/// What a map step's items decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Enough items succeeded (all of them under fail-fast).
    Succeeded,
    /// Too many did not; `first_failed` is the item that ended it under fail-fast.
    Failed {
        first_failed: Option<usize>,
        ok: usize,
        of: usize,
        quorum: usize,
    },
}

/// One map step's items; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct MapRun {
    items: Vec<Item>,
    concurrency: usize,
    policy: Policy,
    upstream: Arc<[UpstreamOutput]>,
    first_failed: Option<usize>,
}

impl MapRun {
    pub(super) fn new(
        count: usize,
        concurrency: usize,
        policy: Policy,
        upstream: Arc<[UpstreamOutput]>,
    ) -> Self {
        Self {
            items: vec![Item::Pending; count],
            concurrency: concurrency.max(1),
            policy,
            upstream,
            first_failed: None,
        }
    }

    /// What every item's task gets from upstream (one list, shared by the items).
    pub(super) fn upstream(&self) -> &Arc<[UpstreamOutput]> {
        &self.upstream
    }

    /// True if item `k` is in flight.
    pub(super) fn is_running(&self, k: usize) -> bool {
        self.items.get(k) == Some(&Item::Running)
    }

    /// The next item to dispatch, marked running, if the concurrency allows one and
    /// the step is not decided.
    pub(super) fn next_item(&mut self) -> Option<usize> {
        if self.verdict().is_some() {
            return None;
        }
        let running = self.items.iter().filter(|i| **i == Item::Running).count();
        if running >= self.concurrency {
            return None;
        }
        let k = self.items.iter().position(|i| *i == Item::Pending)?;
        self.items[k] = Item::Running;
        Some(k)
    }

    /// Item `k` ended.
    pub(super) fn ended(&mut self, k: usize, ok: bool) {
        if let Some(item) = self.items.get_mut(k) {
            *item = if ok { Item::Ok } else { Item::NotOk };
        }
        if !ok && self.first_failed.is_none() {
            self.first_failed = Some(k);
        }
    }

    /// Items still running, and not yet started.
    pub(super) fn unfinished(&self) -> (Vec<usize>, Vec<usize>) {
        let by = |want: Item| {
            self.items
                .iter()
                .enumerate()
                .filter(|(_, i)| **i == want)
                .map(|(k, _)| k)
                .collect()
        };
        (by(Item::Running), by(Item::Pending))
    }

    /// The step's outcome, once the items have decided it.
    pub(super) fn verdict(&self) -> Option<Verdict> {
        let of = self.items.len();
        let ok = self.items.iter().filter(|i| **i == Item::Ok).count();
        let not_ok = self.items.iter().filter(|i| **i == Item::NotOk).count();
        let quorum = match self.policy {
            Policy::FailFast => of,
            Policy::TolerantPartial { quorum } => quorum.min(of),
        };
        if of - not_ok < quorum {
            let first_failed = match self.policy {
                Policy::FailFast => self.first_failed,
                Policy::TolerantPartial { .. } => None,
            };
            return Some(Verdict::Failed {
                first_failed,
                ok,
                of,
                quorum,
            });
        }
        (ok + not_ok == of).then_some(Verdict::Succeeded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_go_out_within_the_concurrency_and_decide_by_the_policy() {
        let mut m = MapRun::new(
            5,
            2,
            Policy::TolerantPartial { quorum: 3 },
            Vec::new().into(),
        );
        assert_eq!(
            (m.next_item(), m.next_item(), m.next_item()),
            (Some(0), Some(1), None)
        );
        m.ended(0, true);
        assert_eq!(m.next_item(), Some(2));
        m.ended(1, false);
        m.ended(2, false);
        assert_eq!(m.verdict(), None, "3 of 5 can still succeed");
        assert_eq!(m.next_item(), Some(3));
        m.ended(3, false);
        assert_eq!(
            m.verdict(),
            Some(Verdict::Failed {
                first_failed: None,
                ok: 1,
                of: 5,
                quorum: 3
            })
        );
        assert_eq!(m.next_item(), None, "nothing more once decided");
        assert_eq!(m.unfinished(), (vec![], vec![4]));
        // Fail-fast: the first failure decides, naming it.
        let mut m = MapRun::new(3, 3, Policy::FailFast, Vec::new().into());
        for _ in 0..3 {
            m.next_item();
        }
        m.ended(1, false);
        assert!(matches!(
            m.verdict(),
            Some(Verdict::Failed {
                first_failed: Some(1),
                ..
            })
        ));
        assert_eq!(m.unfinished(), (vec![0, 2], vec![]));
        // An empty map succeeds at once.
        assert_eq!(
            MapRun::new(0, 1, Policy::FailFast, Vec::new().into()).verdict(),
            Some(Verdict::Succeeded)
        );
    }
}
