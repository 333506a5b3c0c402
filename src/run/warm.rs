//! Cache warm-up (`RunRequest::cache_warm`): the first agent branch goes alone; the
//! others wait until its answer starts to stream (the provider has then written the
//! shared prompt prefix to its cache) or it ends, and then all go, reading the
//! prefix from the cache. A pure state machine; the driver (`execute`) holds the
//! branches it says to hold and releases them when told.

use crate::agent::UpstreamOutput;

/// A branch held back.
#[derive(Debug, PartialEq)]
pub(crate) struct Held {
    pub index: usize,
    pub item: Option<usize>,
    pub upstream: std::sync::Arc<[UpstreamOutput]>,
}

/// What to do with an agent branch about to be dispatched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Go {
    /// Dispatch it.
    Now,
    /// Dispatch it, and say when its answer starts (it warms the cache).
    First,
    /// Hold it until the cache is warm.
    Held,
}

/// Where the warm-up is.
#[derive(Debug, Default, PartialEq)]
pub(crate) enum Warm {
    /// No warm-up asked, or it is over.
    #[default]
    Off,
    /// Asked; no agent branch dispatched yet.
    Ready,
    /// The first branch runs; the others wait.
    Warming {
        first: (usize, Option<usize>),
        held: Vec<Held>,
    },
}

impl Warm {
    /// A warm-up if `on`.
    pub fn new(on: bool) -> Self {
        if on {
            Warm::Ready
        } else {
            Warm::Off
        }
    }

    /// An agent branch is to be dispatched.
    pub fn dispatch(
        &mut self,
        index: usize,
        item: Option<usize>,
        upstream: &std::sync::Arc<[UpstreamOutput]>,
    ) -> Go {
        match self {
            Warm::Off => Go::Now,
            Warm::Ready => {
                *self = Warm::Warming {
                    first: (index, item),
                    held: Vec::new(),
                };
                Go::First
            }
            Warm::Warming { held, .. } => {
                held.push(Held {
                    index,
                    item,
                    upstream: upstream.clone(),
                });
                Go::Held
            }
        }
    }

    /// The first branch's answer started: release what was held.
    pub fn warmed(&mut self) -> Vec<Held> {
        match std::mem::take(self) {
            Warm::Warming { held, .. } => held,
            other => {
                *self = other;
                Vec::new()
            }
        }
    }

    /// A branch ended: if it was the first (it answered without streaming, or
    /// failed), release what was held.
    pub fn ended(&mut self, index: usize, item: Option<usize>) -> Vec<Held> {
        match self {
            Warm::Warming { first, .. } if *first == (index, item) => self.warmed(),
            _ => Vec::new(),
        }
    }

    /// The scheduler no longer needs a branch: drop it if held. True if it was.
    pub fn abort(&mut self, index: usize, item: Option<usize>) -> bool {
        match self {
            Warm::Warming { held, .. } => {
                let before = held.len();
                held.retain(|h| (h.index, h.item) != (index, item));
                held.len() != before
            }
            _ => false,
        }
    }

    /// Whether the driver waits for the first branch's answer to start.
    pub fn warming(&self) -> bool {
        matches!(self, Warm::Warming { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Op {
        Dispatch(usize, Go),
        Warmed(&'static [usize]),
        Ended(usize, &'static [usize]),
        Abort(usize, bool),
    }
    use Op::*;

    fn play(on: bool, ops: &[Op]) -> Warm {
        let mut w = Warm::new(on);
        for (i, op) in ops.iter().enumerate() {
            let indices = |h: Vec<Held>| h.into_iter().map(|h| h.index).collect::<Vec<_>>();
            match op {
                Dispatch(k, want) => {
                    assert_eq!(w.dispatch(*k, None, &Vec::new().into()), *want, "step {i}")
                }
                Warmed(want) => assert_eq!(indices(w.warmed()), *want, "step {i}"),
                Ended(k, want) => assert_eq!(indices(w.ended(*k, None)), *want, "step {i}"),
                Abort(k, want) => assert_eq!(w.abort(*k, None), *want, "step {i}"),
            }
        }
        w
    }

    #[test]
    fn without_warm_up_every_branch_goes_now() {
        play(
            false,
            &[Dispatch(0, Go::Now), Dispatch(1, Go::Now), Warmed(&[])],
        );
    }

    #[test]
    fn the_first_goes_alone_and_the_rest_go_when_its_answer_starts() {
        let w = play(
            true,
            &[
                Dispatch(0, Go::First),
                Dispatch(1, Go::Held),
                Dispatch(2, Go::Held),
                Warmed(&[1, 2]),
                Dispatch(3, Go::Now),
                Ended(0, &[]),
            ],
        );
        assert!(!w.warming());
    }

    #[test]
    fn the_first_ending_without_streaming_releases_the_rest() {
        play(
            true,
            &[
                Dispatch(4, Go::First),
                Dispatch(1, Go::Held),
                Ended(1, &[]),
                Ended(4, &[1]),
                Warmed(&[]),
            ],
        );
    }

    #[test]
    fn a_held_branch_the_run_no_longer_needs_is_dropped() {
        play(
            true,
            &[
                Dispatch(0, Go::First),
                Dispatch(1, Go::Held),
                Dispatch(2, Go::Held),
                Abort(1, true),
                Abort(0, false),
                Warmed(&[2]),
            ],
        );
    }
}
