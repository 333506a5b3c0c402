//! What the server's rate-limit headers say is left, as a pure state machine: each
//! answer's `anthropic-ratelimit-requests-*` / `x-ratelimit-*-requests` headers
//! (the limit, what is left, when the count resets) in, whether the next call may go
//! out now out.
//!
//! - The headers count the calls the server has seen; calls already on their way are
//!   not in that count yet, so they are taken off what it says is left.
//! - When nothing is left, calls wait for the reset instead of drawing 429s.
//! - After the reset, with the limit known, up to the limit go out before the next
//!   answer says where the new count stands; with nothing left of that either, calls
//!   wait for that answer (the lane waits at most a moment when none is on its way).
//!   Without a known limit, nothing is assumed after the reset.

use std::time::Duration;

use tokio::time::Instant;

/// Whether a call may go now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// Go (one was taken from the allowance, if one is known).
    Go,
    /// Nothing is left: wait until then, and ask again.
    WaitUntil(Instant),
    /// Nothing is left of the limit since the reset: wait for an answer's headers.
    WaitForWord,
}

/// Where the count stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Count {
    /// No header has said anything (or the reset passed with no limit known).
    #[default]
    Unknown,
    /// An answer said this many are left until then.
    Left { left: u64, until: Instant },
    /// The reset passed; this many of the limit are left until an answer says more.
    Refilled { left: u64 },
}

/// The requests the server says are left; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Allowance {
    count: Count,
    limit: Option<u64>,
}

/// What one answer's headers said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Heard {
    /// Requests left.
    pub remaining: u64,
    /// Until the count resets.
    pub reset: Duration,
    /// The limit, if the headers named it.
    pub limit: Option<u64>,
}

impl Allowance {
    /// An answer said `heard`, with `others` calls still on their way.
    pub(super) fn heard(&mut self, heard: Heard, others: usize, now: Instant) {
        self.limit = heard.limit.or(self.limit);
        self.count = Count::Left {
            left: heard.remaining.saturating_sub(others as u64),
            until: now + heard.reset,
        };
    }

    /// Whether a call may go at `now`.
    pub(super) fn take(&mut self, now: Instant) -> Take {
        if let Count::Left { until, .. } = self.count {
            if now >= until {
                self.count = match self.limit {
                    Some(limit) => Count::Refilled { left: limit },
                    None => Count::Unknown,
                };
            }
        }
        match &mut self.count {
            Count::Unknown => Take::Go,
            Count::Left { left: 0, until } => Take::WaitUntil(*until),
            Count::Refilled { left: 0 } => Take::WaitForWord,
            Count::Left { left, .. } | Count::Refilled { left } => {
                *left -= 1;
                Take::Go
            }
        }
    }

    /// Forgets the count (not the limit): nobody is on the way to say more.
    pub(super) fn unknown(&mut self) {
        self.count = Count::Unknown;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(remaining: u64, limit: Option<u64>) -> Heard {
        Heard {
            remaining,
            reset: Duration::from_secs(1),
            limit,
        }
    }

    #[test]
    fn the_table_of_takes() {
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        // (remaining, calls on their way, takes at `now`) → what each take says
        let table: [(u64, usize, &[Take]); 4] = [
            (
                3,
                0,
                &[Take::Go, Take::Go, Take::Go, Take::WaitUntil(until)],
            ),
            // Calls already sent are not in the server's count yet.
            (3, 2, &[Take::Go, Take::WaitUntil(until)]),
            (1, 5, &[Take::WaitUntil(until)]),
            (0, 0, &[Take::WaitUntil(until), Take::WaitUntil(until)]),
        ];
        for (remaining, others, want) in table {
            let mut a = Allowance::default();
            a.heard(heard(remaining, None), others, now);
            let got: Vec<Take> = want.iter().map(|_| a.take(now)).collect();
            assert_eq!(got, want, "{remaining} left, {others} on their way");
        }
    }

    #[test]
    fn after_the_reset_a_known_limit_goes_out_and_then_waits_for_word() {
        let now = Instant::now();
        let reset = now + Duration::from_secs(1);
        // Unknown until a header speaks: every call goes.
        let mut a = Allowance::default();
        assert_eq!(a.take(now), Take::Go);
        // Without a limit, nothing is assumed after the reset.
        a.heard(heard(0, None), 0, now);
        assert_eq!(a.take(now), Take::WaitUntil(reset));
        assert_eq!(a.take(reset), Take::Go);
        assert_eq!(a.take(reset), Take::Go);
        // With one, the limit goes out after the reset, then calls wait for word.
        let mut a = Allowance::default();
        a.heard(heard(0, Some(2)), 0, now);
        assert_eq!(a.take(now), Take::WaitUntil(reset));
        let takes: Vec<Take> = (0..3).map(|_| a.take(reset)).collect();
        assert_eq!(takes, [Take::Go, Take::Go, Take::WaitForWord]);
        // The next answer's word replaces the count; the limit is kept.
        a.heard(heard(1, None), 0, reset);
        assert_eq!(a.take(reset), Take::Go);
        assert_eq!(
            a.take(reset),
            Take::WaitUntil(reset + Duration::from_secs(1))
        );
        a.unknown();
        assert_eq!(a.take(reset), Take::Go, "forgotten: calls go");
        assert_eq!(a.limit, Some(2));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Whatever the headers said and however the calls come, no more calls go
        /// out before the reset than the headers said were left (less those on
        /// their way), and after it no more than the limit they named before the
        /// next answer says more.
        #[test]
        fn no_more_go_out_than_the_headers_allow(
            remaining in 0u64..50,
            others in 0usize..10,
            limit in proptest::option::of(0u64..50),
            takes in proptest::collection::vec(0u64..3_000, 0..200),
        ) {
            let start = Instant::now();
            let reset = Duration::from_secs(1);
            let mut a = Allowance::default();
            a.heard(Heard { remaining, reset, limit }, others, start);
            let mut takes = takes;
            takes.sort_unstable();
            let (mut before, mut after) = (0u64, 0u64);
            for ms in takes {
                let now = start + Duration::from_millis(ms);
                if a.take(now) == Take::Go {
                    if now < start + reset { before += 1 } else { after += 1 }
                }
            }
            prop_assert!(before <= remaining.saturating_sub(others as u64));
            if let Some(limit) = limit {
                prop_assert!(after <= limit);
            }
        }
    }
}
