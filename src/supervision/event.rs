//! What the supervisor reports: [`SupervisorEvent`]s as they happen, each
//! specialist's [`SpecialistStatus`], and the typed reasons behind both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::RestartType;

/// How a specialist's actor ended, as its supervisor saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExitReason {
    /// It stopped normally (it was asked to, or its handler ended it).
    Stopped {
        /// The stop reason ractor reported (`stopped` when none was given).
        message: String,
    },
    /// It failed: a panic or an error in its message handler, or it was killed.
    Crashed {
        /// The error ractor reported.
        message: String,
    },
    /// One of its tasks panicked. The actor is retiring: it finishes its other
    /// tasks, takes no new ones, and is replaced at once.
    Panicked {
        /// The panic, attributed to the agent.
        message: String,
    },
}

impl ExitReason {
    /// True unless it stopped normally.
    pub fn is_crash(&self) -> bool {
        !matches!(self, ExitReason::Stopped { .. })
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Stopped { message } => write!(f, "stopped: {message}"),
            ExitReason::Crashed { message } => write!(f, "crashed: {message}"),
            ExitReason::Panicked { message } => write!(f, "{message}"),
        }
    }
}

/// Why a specialist was (re)started: which specialist's exit triggered it, and how
/// that one ended (under one-for-all or rest-for-one it may be a sibling).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartCause {
    /// The specialist whose exit triggered the restart.
    pub exited: String,
    /// How it ended.
    pub exit: ExitReason,
}

impl std::fmt::Display for RestartCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` exited: {}", self.exited, self.exit)
    }
}

/// Why a specialist is not routable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DownReason {
    /// It exited and its restart type says not to restart it after that exit.
    NotRestarted {
        /// Its restart type.
        restart: RestartType,
        /// How it ended.
        exit: ExitReason,
    },
    /// It exceeded its restart intensity: the circuit is open until the cool-down
    /// passes, then it is started afresh.
    CircuitOpen {
        /// Restarts counted within the window.
        restarts: u32,
        /// The window.
        window: Duration,
        /// How long the circuit stays open.
        cool_down: Duration,
        /// The exit that tripped it.
        last_exit: ExitReason,
    },
    /// A restart could not spawn the actor.
    RestartFailed {
        /// ractor's spawn error.
        error: String,
    },
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::NotRestarted { restart, exit } => {
                write!(f, "{restart} specialist exited: {exit}")
            }
            DownReason::CircuitOpen {
                restarts,
                window,
                cool_down,
                last_exit,
            } => write!(
                f,
                "circuit open: {restarts} restarts within {window:?} exceeded the restart \
                 intensity; retried after {cool_down:?}; last exit: {last_exit}"
            ),
            DownReason::RestartFailed { error } => write!(f, "restart failed: {error}"),
        }
    }
}

/// What the supervisor did, published as it happens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SupervisorEvent {
    /// A specialist was (re)started; `generation` counts restarts.
    Restarted {
        /// Its name.
        agent: String,
        /// New generation.
        generation: u32,
        /// Why it restarted.
        cause: RestartCause,
    },
    /// Restart intensity exceeded: the circuit is open until the cool-down passes.
    Escalated {
        /// Its name.
        agent: String,
        /// Why ([`DownReason::CircuitOpen`]).
        reason: DownReason,
    },
    /// The cool-down passed and the specialist was started afresh.
    CircuitClosed {
        /// Its name.
        agent: String,
    },
    /// A specialist exited and will not be restarted (its restart type says so), or
    /// could not be restarted.
    Stopped {
        /// Its name.
        agent: String,
        /// Why.
        reason: DownReason,
    },
}

/// One specialist's supervision record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialistStatus {
    /// Its name.
    pub name: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Times its circuit opened.
    pub escalations: u32,
    /// Why it is not routable (`None`: it is).
    pub down: Option<DownReason>,
}

impl SpecialistStatus {
    /// True when it is routable (not down).
    pub fn is_up(&self) -> bool {
        self.down.is_none()
    }
}
