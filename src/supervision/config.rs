//! How the supervisor treats exits: restart types, strategies, restart intensity and
//! backoff. Plain data; the decision that uses it is in `decision`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// When a specialist that exited is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartType {
    /// Always, whether it crashed or stopped.
    #[default]
    Permanent,
    /// Only after a crash.
    Transient,
    /// Never.
    Temporary,
}

/// Which specialists restart when one crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Only the crashed one.
    #[default]
    OneForOne,
    /// All of them.
    OneForAll,
    /// The crashed one and every specialist registered after it.
    RestForOne,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::OneForOne => "one-for-one",
            Strategy::OneForAll => "one-for-all",
            Strategy::RestForOne => "rest-for-one",
        })
    }
}

/// A strategy name that is not one of `one-for-one`, `one-for-all`, `rest-for-one`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}`: expected one-for-one, one-for-all or rest-for-one")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for Strategy {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, UnknownStrategy> {
        match s {
            "one-for-one" => Ok(Strategy::OneForOne),
            "one-for-all" => Ok(Strategy::OneForAll),
            "rest-for-one" => Ok(Strategy::RestForOne),
            _ => Err(UnknownStrategy(s.to_owned())),
        }
    }
}

/// At most `max_restarts` restarts within `window` per specialist; one more crash
/// opens its circuit for `cool_down`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartIntensity {
    /// Restarts allowed within the window.
    pub max_restarts: u32,
    /// The sliding window.
    pub window: Duration,
    /// How long the circuit stays open before the specialist is started afresh.
    pub cool_down: Duration,
}

impl Default for RestartIntensity {
    fn default() -> Self {
        Self {
            max_restarts: 10,
            window: Duration::from_secs(10),
            cool_down: Duration::from_secs(30),
        }
    }
}

/// Delay before restart number *k* within the window: `min(base × 2^(k-1), cap)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backoff {
    /// Delay before the first restart.
    pub base: Duration,
    /// Upper bound.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(10),
            cap: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The delay before restart number `k` (1-based).
    pub fn delay(&self, k: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << k.saturating_sub(1).min(20))
            .min(self.cap)
    }
}

/// How the supervisor treats crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionConfig {
    /// Which specialists restart together.
    pub strategy: Strategy,
    /// Restart limit and circuit cool-down.
    pub intensity: RestartIntensity,
    /// Delay before restarts.
    pub backoff: Backoff,
}

impl std::fmt::Display for RestartType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RestartType::Permanent => "permanent",
            RestartType::Transient => "transient",
            RestartType::Temporary => "temporary",
        })
    }
}
