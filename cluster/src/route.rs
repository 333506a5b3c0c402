//! Where the next branch of a specialist goes: a pure decision over the loads the
//! orchestrator counts itself (branches it sent and that have not ended), so it
//! needs no message to decide.
//!
//! The rule: this node's own specialist while it has room; otherwise the least
//! filled worker with room (running ÷ capacity, then fewer running, then the
//! first); when every place is full, the least filled of all, so that work queues
//! where it will drain soonest rather than fail.

/// A place's load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Branches running there now (sent by this orchestrator).
    pub running: usize,
    /// Branches it takes at once before others are preferred (0: only when nothing
    /// else can).
    pub capacity: usize,
}

impl Load {
    fn has_room(self) -> bool {
        self.running < self.capacity
    }

    fn fill(self) -> f64 {
        if self.capacity == 0 {
            f64::INFINITY
        } else {
            self.running as f64 / self.capacity as f64
        }
    }
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// This node's own specialist.
    Here,
    /// The worker at this index of the candidates.
    Remote(usize),
}

/// Chooses a place; `here` is `None` when this node has no such specialist.
pub fn choose(here: Option<Load>, remotes: &[Load]) -> Choice {
    if here.is_some_and(Load::has_room) {
        return Choice::Here;
    }
    let least = |roomy: bool| {
        remotes
            .iter()
            .enumerate()
            .filter(|(_, l)| !roomy || l.has_room())
            .min_by(|(i, a), (j, b)| {
                a.fill()
                    .total_cmp(&b.fill())
                    .then(a.running.cmp(&b.running))
                    .then(i.cmp(j))
            })
            .map(|(i, l)| (i, *l))
    };
    if let Some((i, _)) = least(true) {
        return Choice::Remote(i);
    }
    match (here, least(false)) {
        (Some(h), Some((i, r))) if r.fill() < h.fill() => Choice::Remote(i),
        (None, Some((i, _))) => Choice::Remote(i),
        _ => Choice::Here,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(running: usize, capacity: usize) -> Load {
        Load { running, capacity }
    }

    #[test]
    fn the_table() {
        use Choice::{Here, Remote};
        let cases: &[(&str, Option<Load>, &[Load], Choice)] = &[
            ("here has room", Some(l(3, 4)), &[l(0, 4)], Here),
            (
                "here full, one worker",
                Some(l(4, 4)),
                &[l(0, 4)],
                Remote(0),
            ),
            (
                "least filled worker",
                Some(l(4, 4)),
                &[l(3, 4), l(1, 4)],
                Remote(1),
            ),
            ("fill, not count", None, &[l(5, 10), l(3, 4)], Remote(0)),
            ("tie: fewer running", None, &[l(2, 4), l(1, 2)], Remote(1)),
            ("tie: the first", None, &[l(1, 4), l(1, 4)], Remote(0)),
            ("full worker skipped", None, &[l(4, 4), l(3, 8)], Remote(1)),
            ("no specialist here", None, &[l(0, 1)], Remote(0)),
            (
                "workers only (capacity 0 here)",
                Some(l(0, 0)),
                &[l(9, 10)],
                Remote(0),
            ),
            (
                "all full: least filled",
                Some(l(8, 4)),
                &[l(5, 4), l(6, 4)],
                Remote(0),
            ),
            (
                "all full: here least filled",
                Some(l(4, 4)),
                &[l(5, 4)],
                Here,
            ),
            ("nowhere else", Some(l(9, 4)), &[], Here),
            ("nowhere at all", None, &[], Here),
        ];
        for (name, here, remotes, want) in cases {
            assert_eq!(choose(*here, remotes), *want, "{name}");
        }
    }
}
