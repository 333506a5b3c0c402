//! Which submitted runs run now, which wait, and which are refused: a pure state
//! machine (no I/O, no clock) with table-driven tests. The run manager
//! (`runs`) is its thin shell.
//!
//! Runs in progress are capped (`max_running`); over the cap a run waits in a FIFO
//! queue of at most `max_waiting`; over that the server sheds load (429 with
//! `Retry-After`) instead of falling over. Runs found unfinished in the journal at
//! start-up are *resumed*: they were accepted once, so they are never refused, only
//! queued. Once the server is closing, nothing new is accepted.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

/// What happens to a submitted run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Start it now.
    Start,
    /// It waits; `ahead` runs are before it in the queue.
    Wait {
        /// Runs queued before it.
        ahead: usize,
    },
    /// Refused: too many runs are in progress and queued.
    Full,
    /// Refused: the server is shutting down.
    Closing,
}

/// Whether new runs are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Open,
    Closing,
}

/// The queue of runs; `K` identifies a run.
#[derive(Debug)]
pub struct RunQueue<K> {
    max_running: usize,
    max_waiting: usize,
    running: HashSet<K>,
    waiting: VecDeque<K>,
    phase: Phase,
}

impl<K: Copy + Eq + Hash> RunQueue<K> {
    /// A queue that runs at most `max_running` (at least 1) at once and keeps at most
    /// `max_waiting` waiting.
    pub fn new(max_running: usize, max_waiting: usize) -> Self {
        Self {
            max_running: max_running.max(1),
            max_waiting,
            running: HashSet::new(),
            waiting: VecDeque::new(),
            phase: Phase::Open,
        }
    }

    /// A new run asks to be admitted.
    pub fn submit(&mut self, run: K) -> Admit {
        if self.phase == Phase::Closing {
            return Admit::Closing;
        }
        if self.running.len() < self.max_running && self.waiting.is_empty() {
            self.running.insert(run);
            return Admit::Start;
        }
        if self.waiting.len() >= self.max_waiting {
            return Admit::Full;
        }
        self.waiting.push_back(run);
        Admit::Wait {
            ahead: self.waiting.len() - 1,
        }
    }

    /// Whether [`RunQueue::submit`] would admit a run now (start it or queue it).
    pub fn has_room(&self) -> bool {
        self.phase == Phase::Open
            && (self.running.len() < self.max_running || self.waiting.len() < self.max_waiting)
    }

    /// A run accepted by an earlier process comes back: it starts or waits, never
    /// refused (it was acknowledged once).
    pub fn resume(&mut self, run: K) -> Admit {
        if self.running.len() < self.max_running && self.waiting.is_empty() {
            self.running.insert(run);
            return Admit::Start;
        }
        self.waiting.push_back(run);
        Admit::Wait {
            ahead: self.waiting.len() - 1,
        }
    }

    /// A running run ended (or was cancelled or interrupted). Returns the waiting
    /// runs to start now, oldest first. While closing, nothing more starts.
    pub fn finished(&mut self, run: K) -> Vec<K> {
        self.running.remove(&run);
        let mut start = Vec::new();
        while self.phase == Phase::Open && self.running.len() < self.max_running {
            let Some(next) = self.waiting.pop_front() else {
                break;
            };
            self.running.insert(next);
            start.push(next);
        }
        start
    }

    /// Takes a waiting run out of the queue (it was cancelled). False if it was not
    /// waiting.
    pub fn withdraw(&mut self, run: K) -> bool {
        match self.waiting.iter().position(|&k| k == run) {
            Some(at) => {
                self.waiting.remove(at);
                true
            }
            None => false,
        }
    }

    /// Stops accepting and starting runs; the ones waiting stay waiting (the
    /// journal keeps them for the next start).
    pub fn close(&mut self) {
        self.phase = Phase::Closing;
    }

    /// Runs in progress.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Runs waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Whether `run` is in progress.
    #[cfg(test)]
    pub fn is_running(&self, run: K) -> bool {
        self.running.contains(&run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of a table: what happens, and what must come of it.
    enum Op {
        Submit(u32, Admit),
        Resume(u32, Admit),
        Finished(u32, &'static [u32]),
        Withdraw(u32, bool),
        Close,
    }
    use Op::*;

    fn play(max_running: usize, max_waiting: usize, ops: &[Op]) -> RunQueue<u32> {
        let mut q = RunQueue::new(max_running, max_waiting);
        for (i, op) in ops.iter().enumerate() {
            match op {
                Submit(k, want) => assert_eq!(q.submit(*k), *want, "step {i}: submit {k}"),
                Resume(k, want) => assert_eq!(q.resume(*k), *want, "step {i}: resume {k}"),
                Finished(k, want) => {
                    assert_eq!(q.finished(*k), want.to_vec(), "step {i}: finished {k}")
                }
                Withdraw(k, want) => assert_eq!(q.withdraw(*k), *want, "step {i}: withdraw {k}"),
                Close => q.close(),
            }
        }
        q
    }

    #[test]
    fn runs_start_up_to_the_cap_then_wait_then_are_refused() {
        let q = play(
            2,
            1,
            &[
                Submit(1, Admit::Start),
                Submit(2, Admit::Start),
                Submit(3, Admit::Wait { ahead: 0 }),
                Submit(4, Admit::Full),
            ],
        );
        assert_eq!((q.running(), q.waiting()), (2, 1));
        assert!(!q.has_room());
    }

    #[test]
    fn a_finished_run_starts_the_oldest_waiting_one() {
        play(
            1,
            5,
            &[
                Submit(1, Admit::Start),
                Submit(2, Admit::Wait { ahead: 0 }),
                Submit(3, Admit::Wait { ahead: 1 }),
                Finished(1, &[2]),
                Finished(2, &[3]),
                Finished(3, &[]),
                Submit(4, Admit::Start),
            ],
        );
    }

    #[test]
    fn a_new_run_does_not_overtake_the_queue() {
        // A slot frees while runs wait: the waiting run gets it, not a newcomer.
        let q = play(
            1,
            5,
            &[
                Submit(1, Admit::Start),
                Submit(2, Admit::Wait { ahead: 0 }),
                Finished(1, &[2]),
                Submit(3, Admit::Wait { ahead: 0 }),
            ],
        );
        assert!(q.is_running(2));
    }

    #[test]
    fn a_withdrawn_run_leaves_the_queue_and_is_not_started() {
        play(
            1,
            5,
            &[
                Submit(1, Admit::Start),
                Submit(2, Admit::Wait { ahead: 0 }),
                Submit(3, Admit::Wait { ahead: 1 }),
                Withdraw(2, true),
                Withdraw(2, false),
                Withdraw(1, false),
                Finished(1, &[3]),
            ],
        );
    }

    #[test]
    fn resumed_runs_are_never_refused() {
        let q = play(
            1,
            0,
            &[
                Resume(1, Admit::Start),
                Resume(2, Admit::Wait { ahead: 0 }),
                Resume(3, Admit::Wait { ahead: 1 }),
                Submit(4, Admit::Full),
            ],
        );
        assert_eq!(q.waiting(), 2);
    }

    #[test]
    fn closing_refuses_new_runs_and_starts_no_waiting_one() {
        let q = play(
            1,
            5,
            &[
                Submit(1, Admit::Start),
                Submit(2, Admit::Wait { ahead: 0 }),
                Close,
                Submit(3, Admit::Closing),
                Finished(1, &[]),
            ],
        );
        assert_eq!((q.running(), q.waiting()), (0, 1));
    }

    #[test]
    fn a_zero_cap_still_runs_one() {
        play(0, 0, &[Submit(1, Admit::Start), Submit(2, Admit::Full)]);
    }
}
