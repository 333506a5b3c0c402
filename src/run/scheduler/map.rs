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

/// One map step's items; see the module docs. The counts and the cursor are kept as
/// items move, so dispatching an item or deciding the step is O(1) amortised, not a
/// scan of every item (quadratic in a map over 10,000 items).
#[derive(Clone, Debug)]
pub(crate) struct MapRun {
    items: Vec<Item>,
    concurrency: usize,
    policy: Policy,
    upstream: Arc<[UpstreamOutput]>,
    first_failed: Option<usize>,
    running: usize,
    ok: usize,
    not_ok: usize,
    /// Items before this index are not pending (items start in index order, and an
    /// item never becomes pending again).
    next_pending: usize,
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
            running: 0,
            ok: 0,
            not_ok: 0,
            next_pending: 0,
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
        if self.running >= self.concurrency {
            return None;
        }
        while self
            .items
            .get(self.next_pending)
            .is_some_and(|i| *i != Item::Pending)
        {
            self.next_pending += 1;
        }
        let k = self.next_pending;
        let item = self.items.get_mut(k)?;
        *item = Item::Running;
        self.running += 1;
        self.next_pending += 1;
        Some(k)
    }

    /// Item `k` ended.
    pub(super) fn ended(&mut self, k: usize, ok: bool) {
        if let Some(item) = self.items.get_mut(k) {
            match *item {
                Item::Running => self.running -= 1,
                Item::Ok => self.ok -= 1,
                Item::NotOk => self.not_ok -= 1,
                Item::Pending => {}
            }
            *item = if ok { Item::Ok } else { Item::NotOk };
            if ok {
                self.ok += 1;
            } else {
                self.not_ok += 1;
            }
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
        let (of, ok, not_ok) = (self.items.len(), self.ok, self.not_ok);
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

    #[test]
    fn regression_the_kept_counts_agree_with_the_items_over_a_long_map() {
        // Dispatch and verdict once scanned every item, quadratic in a long map; the
        // counts that replace the scans must say what a scan would.
        let n = 50;
        let mut m = MapRun::new(
            n,
            7,
            Policy::TolerantPartial { quorum: 30 },
            Vec::new().into(),
        );
        let mut started = Vec::new();
        let mut step = 0usize;
        loop {
            while let Some(k) = m.next_item() {
                assert_eq!(Some(&k), (0..n).find(|j| !started.contains(j)).as_ref());
                started.push(k);
            }
            let running: Vec<usize> = (0..n).filter(|&k| m.is_running(k)).collect();
            assert_eq!(running.len(), m.running);
            assert!(m.running <= 7);
            let Some(&k) = running.get(step % running.len().max(1)) else {
                break;
            };
            step += 3;
            m.ended(k, k % 3 != 0);
            let ok = m.items.iter().filter(|i| **i == Item::Ok).count();
            let not_ok = m.items.iter().filter(|i| **i == Item::NotOk).count();
            assert_eq!((m.ok, m.not_ok), (ok, not_ok));
            if m.verdict().is_some() {
                break;
            }
        }
        assert_eq!(
            m.verdict(),
            Some(Verdict::Succeeded),
            "33 of 50 ok, 30 needed"
        );
    }
}
