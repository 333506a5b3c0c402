//! When a call that has to wait could start, as a pure function: the gate's state in,
//! a lower bound on the wait out. A call whose deadline comes before that is not
//! queued behind the others (where it would hold its place only to be cut at the
//! deadline, and, once demand outruns the cap, make every call behind it late too):
//! it ends at once, saying why.
//!
//! The bound is deliberately low, so a call is refused only when it surely cannot
//! start in time: a server's hold must run out first; and with `ahead` calls
//! queued before it and too few slots free, whole rounds of calls have to end before
//! a slot comes to it, each taking about the typical call's time. The cap may grow
//! while they do — by one per round while the window probes, doubling per round in
//! slow start, never past the maximum — so each round is counted at the most it
//! could carry. (Counted at today's cap, a cap that a few random 429s had cut to 2
//! refused calls the window would have served in time, as it grew: the chaos soak
//! met quorum in 69% of its runs instead of 99.7%.)

use std::time::Duration;

use crate::provider::Wait;

/// What the gate knows when a call arrives that cannot go at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Outlook {
    /// What is left of a hold the server asked for.
    pub hold: Option<Duration>,
    /// Calls queued before this one.
    pub ahead: usize,
    /// Slots free now.
    pub free: usize,
    /// The concurrency cap.
    pub cap: usize,
    /// How fast the cap may grow, round by round.
    pub growth: Growth,
    /// The most the cap may grow to.
    pub max: usize,
    /// How long a call typically takes (`None`: no call has ended yet).
    pub typical: Option<Duration>,
}

/// How fast the cap may grow while calls wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Growth {
    /// It does not (a fixed cap).
    Fixed,
    /// By one per round (probing).
    OnePerRound,
    /// Doubling per round (slow start).
    Doubling,
}

/// Whole rounds of calls that must end before `need` more calls than the free slots
/// have gone, each round at most the cap it could have then.
fn rounds_before(need: usize, cap: usize, growth: Growth, max: usize) -> u32 {
    let (mut cap, mut served, mut rounds) = (cap.max(1), 0usize, 0u32);
    // The call's turn comes in the round that takes the `need`-th slot.
    while served + cap <= need && rounds < u32::MAX {
        served += cap;
        rounds += 1;
        cap = match growth {
            Growth::Fixed => cap,
            Growth::OnePerRound => cap + 1,
            Growth::Doubling => cap.saturating_mul(2),
        }
        .min(max.max(1));
    }
    rounds
}

/// The least the call will wait, and what for; `None` when it may start at any
/// moment as far as the gate can tell.
pub(super) fn earliest_start(o: &Outlook) -> Option<(Duration, Wait)> {
    let hold = o.hold.unwrap_or_default();
    let queue = match o.typical {
        Some(typical) if o.ahead >= o.free => {
            let rounds = rounds_before(o.ahead - o.free, o.cap, o.growth, o.max);
            typical.saturating_mul(rounds)
        }
        _ => Duration::ZERO,
    };
    if hold.is_zero() && queue.is_zero() {
        None
    } else if hold >= queue {
        Some((hold, Wait::ServerHold))
    } else {
        Some((queue, Wait::Concurrency))
    }
}

/// The typical call time after one more observation: an exponentially weighted
/// mean that gives the newest call an eighth of the weight (microseconds, so it
/// fits one atomic word; 0 is "none yet").
pub(super) fn typical_after(typical_us: u64, call: Duration) -> u64 {
    let call_us = u64::try_from(call.as_micros()).unwrap_or(u64::MAX).max(1);
    if typical_us == 0 {
        call_us
    } else {
        (typical_us.saturating_mul(7).saturating_add(call_us) / 8).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_table_of_waits() {
        let o = |hold: Option<u64>, ahead, free, cap, typical: Option<u64>| Outlook {
            hold: hold.map(Duration::from_millis),
            ahead,
            free,
            cap,
            growth: Growth::Fixed,
            max: cap,
            typical: typical.map(Duration::from_millis),
        };
        // (outlook, the least wait and what for)
        let table = [
            // No call has ended yet: nothing is known of the queue's pace.
            (o(None, 500, 0, 10, None), None),
            // Fewer queued ahead than a round: a slot may free at any moment.
            (o(None, 9, 0, 10, Some(1000)), None),
            (o(None, 0, 0, 1, Some(1000)), None),
            // Slots free for everyone ahead.
            (o(None, 3, 5, 10, Some(1000)), None),
            // Whole rounds ahead, rounded down.
            (o(None, 10, 0, 10, Some(1000)), Some((S, Wait::Concurrency))),
            (
                o(None, 29, 0, 10, Some(1000)),
                Some((2 * S, Wait::Concurrency)),
            ),
            (
                o(None, 30, 10, 10, Some(1000)),
                Some((2 * S, Wait::Concurrency)),
            ),
            (
                o(None, 3, 0, 1, Some(500)),
                Some((3 * S / 2, Wait::Concurrency)),
            ),
            // A hold is waited out first; the longer of the two is the bound.
            (
                o(Some(4000), 0, 5, 10, None),
                Some((4 * S, Wait::ServerHold)),
            ),
            (
                o(Some(500), 20, 0, 10, Some(1000)),
                Some((2 * S, Wait::Concurrency)),
            ),
            (
                o(Some(3000), 20, 0, 10, Some(1000)),
                Some((3 * S, Wait::ServerHold)),
            ),
            // A cap of 0 cannot happen; it is read as 1, never a division by zero.
            (
                o(None, 2, 0, 0, Some(1000)),
                Some((2 * S, Wait::Concurrency)),
            ),
        ];
        for (outlook, want) in table {
            assert_eq!(earliest_start(&outlook), want, "{outlook:?}");
        }
    }

    #[test]
    fn a_cap_that_grows_serves_the_queue_in_fewer_rounds() {
        // (calls that must go first, cap, growth, max) → whole rounds before its turn
        let table = [
            (200, 2, Growth::Fixed, 2, 100),
            // Probing: 2 + 3 + … + 19 = 189 ≤ 200 < 209, so 18 whole rounds.
            (200, 2, Growth::OnePerRound, 10_000, 18),
            // … but never past the maximum: 2 + 3 + 4 + 5, then 5 a round.
            (200, 2, Growth::OnePerRound, 5, 41),
            // Slow start: 2 + 4 + 8 + 16 + 32 + 64 = 126 ≤ 200 < 254.
            (200, 2, Growth::Doubling, 10_000, 6),
            (0, 1, Growth::Fixed, 1, 0),
            (9, 10, Growth::OnePerRound, 10, 0),
            (10, 10, Growth::OnePerRound, 100, 1),
        ];
        for (need, cap, growth, max, want) in table {
            assert_eq!(
                rounds_before(need, cap, growth, max),
                want,
                "{need} {cap} {growth:?} {max}"
            );
        }
        // Regression: a cap cut to 2 by random 429s, 200 calls queued, calls of
        // 50 ms, 2.4 s left: queued (the window grows), not refused at 5 s.
        let outlook = Outlook {
            hold: None,
            ahead: 200,
            free: 0,
            cap: 2,
            growth: Growth::OnePerRound,
            max: 10_000,
            typical: Some(Duration::from_millis(50)),
        };
        assert_eq!(
            earliest_start(&outlook),
            Some((Duration::from_millis(900), Wait::Concurrency))
        );
    }

    #[test]
    fn the_typical_call_follows_recent_calls_and_starts_at_the_first() {
        let mut t = typical_after(0, Duration::from_millis(200));
        assert_eq!(t, 200_000);
        for _ in 0..40 {
            t = typical_after(t, Duration::from_secs(2));
        }
        assert!((1_950_000..=2_000_000).contains(&t), "{t}");
        // One slow call moves it by an eighth of the difference.
        assert_eq!(typical_after(800, Duration::from_micros(1_600)), 900);
        assert_eq!(typical_after(0, Duration::ZERO), 1, "0 stays 'none yet'");
    }
}
