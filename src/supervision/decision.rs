//! The restart decision as a pure state machine: an exit goes in, a [`Decision`]
//! comes out. No actors, no timers, no clock of its own (the caller passes `now`), so
//! every strategy, restart type and intensity case is a table-driven unit test.
//!
//! For one exit, in order:
//! 1. **restart type**: `Permanent` restarts after any exit, `Transient` only after a
//!    crash (or a panicked task), `Temporary` never → [`Decision::Stop`];
//! 2. **intensity**: if `max_restarts` restarts already happened within `window`, the
//!    circuit opens → [`Decision::Escalate`] (reopen after `cool_down`);
//! 3. **strategy**: which specialists restart with it — itself (one-for-one), every
//!    routable one (one-for-all), itself and the routable ones started after it
//!    (rest-for-one) → [`Decision::Restart`];
//! 4. **backoff**: restart number *k* within the window waits
//!    `min(base × 2^(k-1), cap)`; a retiring specialist (a task panicked, the actor is
//!    still serving) is replaced at once, since there is no crash loop to slow down.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::config::{RestartType, Strategy, SupervisionConfig};
use super::event::{DownReason, ExitReason, RestartCause, SpecialistStatus};

/// What to do after an exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not a specialist this book knows: nothing to do.
    Ignore,
    /// Do not restart; the specialist is down for good.
    Stop {
        /// Why.
        reason: DownReason,
    },
    /// Restart intensity exceeded: the circuit opens; start it afresh after the
    /// cool-down (then call [`Restarts::reopen`]).
    Escalate {
        /// Why.
        reason: DownReason,
        /// The cool-down.
        reopen_after: Duration,
    },
    /// Stop the other members of `group` (they are up), then start every member of
    /// `group` after `delay`. `group` is in start order and holds the exited one.
    Restart {
        /// Who restarts, in start order.
        group: Vec<String>,
        /// How long to wait first.
        delay: Duration,
        /// Why, for the events.
        cause: RestartCause,
    },
}

/// One specialist's supervision record.
#[derive(Debug)]
struct Entry {
    restart: RestartType,
    /// When its recent restarts happened (within the window).
    recent: VecDeque<Instant>,
    restarts: u32,
    escalations: u32,
    generation: u32,
    down: Option<DownReason>,
}

/// Every specialist's restart record, and the decision over them.
#[derive(Debug)]
pub(crate) struct Restarts {
    config: SupervisionConfig,
    /// Start (registration) order.
    order: Vec<String>,
    entries: HashMap<String, Entry>,
}

impl Restarts {
    pub(crate) fn new(config: SupervisionConfig) -> Self {
        Self {
            config,
            order: Vec::new(),
            entries: HashMap::new(),
        }
    }

    /// Registers a specialist at the end of the start order; false if the name is taken.
    pub(crate) fn add(&mut self, name: &str, restart: RestartType) -> bool {
        if self.entries.contains_key(name) {
            return false;
        }
        self.entries.insert(
            name.to_owned(),
            Entry {
                restart,
                recent: VecDeque::new(),
                restarts: 0,
                escalations: 0,
                generation: 0,
                down: None,
            },
        );
        self.order.push(name.to_owned());
        true
    }

    /// Forgets a specialist (its first spawn failed).
    pub(crate) fn remove(&mut self, name: &str) {
        self.entries.remove(name);
        self.order.retain(|n| n != name);
    }

    /// Start order.
    pub(crate) fn order(&self) -> &[String] {
        &self.order
    }

    /// Restarts of `name` so far (0 for the first spawn).
    pub(crate) fn generation(&self, name: &str) -> u32 {
        self.entries.get(name).map_or(0, |e| e.generation)
    }

    /// True if `name` is known and down (not to be started until reopened).
    pub(crate) fn is_down(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.down.is_some())
    }

    /// Records that `name` is up (spawned).
    pub(crate) fn started(&mut self, name: &str) {
        if let Some(e) = self.entries.get_mut(name) {
            e.down = None;
        }
    }

    /// Records that `name` is down, and why.
    pub(crate) fn down(&mut self, name: &str, reason: DownReason) {
        if let Some(e) = self.entries.get_mut(name) {
            e.down = Some(reason);
        }
    }

    /// The cool-down of `name` has passed: a new generation starts. False if `name`
    /// is unknown.
    pub(crate) fn reopen(&mut self, name: &str) -> bool {
        match self.entries.get_mut(name) {
            Some(e) => {
                e.generation += 1;
                true
            }
            None => false,
        }
    }

    /// Every specialist's record, in start order.
    pub(crate) fn status(&self) -> Vec<SpecialistStatus> {
        self.order
            .iter()
            .filter_map(|name| self.entries.get(name).map(|e| (name, e)))
            .map(|(name, e)| SpecialistStatus {
                name: name.clone(),
                restarts: e.restarts,
                escalations: e.escalations,
                down: e.down.clone(),
            })
            .collect()
    }

    /// Decides what follows `name`'s exit at `now`; see the module docs.
    pub(crate) fn on_exit(&mut self, name: &str, exit: &ExitReason, now: Instant) -> Decision {
        let config = self.config;
        let Some(entry) = self.entries.get_mut(name) else {
            return Decision::Ignore;
        };
        let restart = match entry.restart {
            RestartType::Permanent => true,
            RestartType::Transient => exit.is_crash(),
            RestartType::Temporary => false,
        };
        if !restart {
            let reason = DownReason::NotRestarted {
                restart: entry.restart,
                exit: exit.clone(),
            };
            entry.down = Some(reason.clone());
            return Decision::Stop { reason };
        }
        let intensity = config.intensity;
        while entry
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > intensity.window)
        {
            entry.recent.pop_front();
        }
        if entry.recent.len() as u32 >= intensity.max_restarts {
            entry.escalations += 1;
            let reason = DownReason::CircuitOpen {
                restarts: entry.recent.len() as u32,
                window: intensity.window,
                cool_down: intensity.cool_down,
                last_exit: exit.clone(),
            };
            entry.recent.clear();
            entry.down = Some(reason.clone());
            return Decision::Escalate {
                reason,
                reopen_after: intensity.cool_down,
            };
        }
        entry.recent.push_back(now);
        entry.restarts += 1;
        let delay = match exit {
            ExitReason::Panicked { .. } => Duration::ZERO,
            _ => config.backoff.delay(entry.recent.len() as u32),
        };
        let position = self.order.iter().position(|n| n == name).unwrap_or(0);
        let candidates: &[String] = match config.strategy {
            Strategy::OneForOne => &self.order[position..=position],
            Strategy::OneForAll => &self.order,
            Strategy::RestForOne => &self.order[position..],
        };
        // Siblings that are down stay down: their circuit or restart type rules them.
        let group: Vec<String> = candidates
            .iter()
            .filter(|n| *n == name || self.entries.get(*n).is_none_or(|e| e.down.is_none()))
            .cloned()
            .collect();
        for member in &group {
            if let Some(e) = self.entries.get_mut(member) {
                e.generation += 1;
            }
        }
        Decision::Restart {
            group,
            delay,
            cause: RestartCause {
                exited: name.to_owned(),
                exit: exit.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervision::config::{Backoff, RestartIntensity};

    fn crashed() -> ExitReason {
        ExitReason::Crashed {
            message: "boom".into(),
        }
    }

    fn stopped() -> ExitReason {
        ExitReason::Stopped {
            message: "asked to stop".into(),
        }
    }

    fn panicked() -> ExitReason {
        ExitReason::Panicked {
            message: "agent `b` panicked: x".into(),
        }
    }

    fn book(strategy: Strategy, types: &[(&str, RestartType)]) -> Restarts {
        let mut r = Restarts::new(SupervisionConfig {
            strategy,
            intensity: RestartIntensity {
                max_restarts: 3,
                window: Duration::from_secs(10),
                cool_down: Duration::from_secs(30),
            },
            backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(50),
            },
        });
        for (name, t) in types {
            assert!(r.add(name, *t));
        }
        r
    }

    fn abc(strategy: Strategy) -> Restarts {
        book(
            strategy,
            &[
                ("a", RestartType::Permanent),
                ("b", RestartType::Permanent),
                ("c", RestartType::Permanent),
            ],
        )
    }

    fn group(d: &Decision) -> Vec<&str> {
        match d {
            Decision::Restart { group, .. } => group.iter().map(String::as_str).collect(),
            other => panic!("expected a restart, got {other:?}"),
        }
    }

    #[test]
    fn each_strategy_restarts_its_group_in_start_order() {
        let now = Instant::now();
        let table: [(Strategy, &str, &[&str]); 6] = [
            (Strategy::OneForOne, "b", &["b"]),
            (Strategy::OneForAll, "b", &["a", "b", "c"]),
            (Strategy::RestForOne, "b", &["b", "c"]),
            (Strategy::RestForOne, "a", &["a", "b", "c"]),
            (Strategy::RestForOne, "c", &["c"]),
            (Strategy::OneForAll, "c", &["a", "b", "c"]),
        ];
        for (strategy, exited, expected) in table {
            let mut r = abc(strategy);
            let d = r.on_exit(exited, &crashed(), now);
            assert_eq!(group(&d), expected, "{strategy} after `{exited}`");
        }
    }

    #[test]
    fn restart_types_decide_whether_an_exit_restarts() {
        let now = Instant::now();
        let table = [
            (RestartType::Permanent, stopped(), true),
            (RestartType::Permanent, crashed(), true),
            (RestartType::Permanent, panicked(), true),
            (RestartType::Transient, stopped(), false),
            (RestartType::Transient, crashed(), true),
            (RestartType::Transient, panicked(), true),
            (RestartType::Temporary, stopped(), false),
            (RestartType::Temporary, crashed(), false),
            (RestartType::Temporary, panicked(), false),
        ];
        for (restart, exit, restarts) in table {
            let mut r = book(Strategy::OneForOne, &[("x", restart)]);
            let d = r.on_exit("x", &exit, now);
            match d {
                Decision::Restart { .. } => assert!(restarts, "{restart} after {exit}"),
                Decision::Stop { reason } => {
                    assert!(!restarts, "{restart} after {exit}");
                    assert_eq!(reason, DownReason::NotRestarted { restart, exit });
                    assert!(r.is_down("x"));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn intensity_escalates_on_the_restart_past_the_limit_and_forgets_old_ones() {
        let mut r = abc(Strategy::OneForOne);
        let t0 = Instant::now();
        for k in 0..3 {
            let d = r.on_exit("a", &crashed(), t0 + Duration::from_secs(k));
            assert!(matches!(d, Decision::Restart { .. }), "restart {k}");
        }
        let d = r.on_exit("a", &crashed(), t0 + Duration::from_secs(3));
        let Decision::Escalate {
            reason,
            reopen_after,
        } = d
        else {
            panic!("{d:?}")
        };
        assert_eq!(reopen_after, Duration::from_secs(30));
        assert!(reason.to_string().starts_with("circuit open: 3 restarts"));
        assert!(r.is_down("a"));
        assert_eq!(r.status()[0].escalations, 1);
        // After the cool-down the window starts empty.
        assert!(r.reopen("a"));
        r.started("a");
        let d = r.on_exit("a", &crashed(), t0 + Duration::from_secs(40));
        assert!(matches!(d, Decision::Restart { .. }));
        // Restarts older than the window do not count.
        let mut r = abc(Strategy::OneForOne);
        for k in 0..10 {
            let d = r.on_exit("a", &crashed(), t0 + Duration::from_secs(11 * k));
            assert!(matches!(d, Decision::Restart { .. }), "spaced restart {k}");
        }
    }

    #[test]
    fn backoff_grows_per_restart_in_the_window_and_a_retiring_specialist_waits_not() {
        let mut r = abc(Strategy::OneForOne);
        let t0 = Instant::now();
        let delays: Vec<Duration> = (0..3)
            .map(
                |k| match r.on_exit("a", &crashed(), t0 + Duration::from_millis(k)) {
                    Decision::Restart { delay, .. } => delay,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert_eq!(
            delays,
            [10, 20, 40].map(Duration::from_millis),
            "base × 2^(k-1)"
        );
        let mut r = abc(Strategy::OneForOne);
        match r.on_exit("b", &panicked(), t0) {
            Decision::Restart { delay, .. } => assert_eq!(delay, Duration::ZERO),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn siblings_that_are_down_are_left_down_and_generations_count_restarts() {
        let mut r = book(
            Strategy::OneForAll,
            &[("a", RestartType::Temporary), ("b", RestartType::Permanent)],
        );
        let now = Instant::now();
        assert!(matches!(
            r.on_exit("a", &stopped(), now),
            Decision::Stop { .. }
        ));
        assert_eq!(group(&r.on_exit("b", &crashed(), now)), ["b"]);
        assert_eq!((r.generation("a"), r.generation("b")), (0, 1));
        assert_eq!(r.status()[1].restarts, 1);
        assert_eq!(r.on_exit("nobody", &crashed(), now), Decision::Ignore);
        assert!(!r.add("b", RestartType::Permanent), "names are unique");
    }
}
