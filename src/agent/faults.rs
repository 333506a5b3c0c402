//! Fault injection: wrap any [`Agent`] in [`Faulty`] to make it panic, hang, run
//! slow, or fail like a provider (500, 429, garbage) — each with a probability or on
//! every Nth task. Faults come from code, from a spec's `[faults]` table, or from the
//! CLI (`--fault AGENT:KIND:RATE`), so supervision experiments need no special agents.
//!
//! ```toml
//! [faults]
//! panic = { every = 5 }                  # every 5th task panics
//! hang = { probability = 0.01 }          # never answers (hits the branch timeout)
//! slow = { probability = 0.1, extra_ms = 2000 }
//! provider_500 = { probability = 0.05 }
//! provider_429 = { probability = 0.02 }
//! garbage = { probability = 0.01 }       # the "provider" answers something undecodable
//! ```
//!
//! Rolls are a seeded hash of the agent's name and its task counter, so a run of
//! experiments is repeatable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Agent, AgentContext, AgentError, AgentReply, Task};
use crate::provider::{ProviderError, ProviderErrorKind};

/// What is wrong with a [`Trigger`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// The probability is outside `[0, 1]`.
    #[error("probability {0} is not between 0 and 1")]
    Probability(f64),
    /// `every = 0`.
    #[error("every must be at least 1")]
    EveryZero,
    /// Neither or both of `probability` and `every`.
    #[error("give exactly one of `probability` and `every`")]
    NotExactlyOne,
}

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Panic inside the agent.
    Panic,
    /// Never answer.
    Hang,
    /// Answer late.
    Slow,
    /// Fail as if the provider answered HTTP 500.
    Provider500,
    /// Fail as if the provider answered HTTP 429.
    Provider429,
    /// Fail as if the provider answered something undecodable.
    Garbage,
}

impl FaultKind {
    /// Every kind, in the order specs list them.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::Panic,
        FaultKind::Hang,
        FaultKind::Slow,
        FaultKind::Provider500,
        FaultKind::Provider429,
        FaultKind::Garbage,
    ];
}

impl std::fmt::Display for FaultKind {
    /// The name in a spec's `[faults]` table (`provider_500`, …).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultKind::Panic => "panic",
            FaultKind::Hang => "hang",
            FaultKind::Slow => "slow",
            FaultKind::Provider500 => "provider_500",
            FaultKind::Provider429 => "provider_429",
            FaultKind::Garbage => "garbage",
        })
    }
}

impl std::str::FromStr for FaultKind {
    type Err = FaultError;

    /// Accepts the spec names and their `-` spellings (`provider-500`).
    fn from_str(s: &str) -> Result<Self, FaultError> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s.replace('-', "_"))
            .ok_or_else(|| FaultError::UnknownKind(s.to_owned()))
    }
}

/// Why a fault could not be set or parsed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FaultError {
    /// Not one of the [`FaultKind`]s.
    #[error("unknown fault `{0}`: expected one of panic, hang, slow, provider-500, provider-429, garbage")]
    UnknownKind(String),
    /// The trigger of `kind` is invalid.
    #[error("faults.{kind}: {error}")]
    Trigger {
        /// The fault.
        kind: FaultKind,
        /// What is wrong.
        error: TriggerError,
    },
    /// A command-line fault that does not parse.
    #[error("`{flag}`: {problem}")]
    Flag {
        /// The whole flag value.
        flag: String,
        /// What is wrong with it.
        problem: FlagProblem,
    },
}

/// What is wrong with a command-line fault (see [`parse_flag`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FlagProblem {
    /// Not `AGENT:KIND:RATE[:EXTRA_MS]` or `AGENT:KIND:every=N[:EXTRA_MS]`.
    #[error("expected AGENT:KIND:RATE or AGENT:KIND:every=N")]
    Shape,
    /// `every=` not followed by a whole number.
    #[error("`{0}` is not a whole number")]
    Every(String),
    /// The rate is not a number.
    #[error("`{0}` is not a probability")]
    Rate(String),
    /// The extra delay is not a number of milliseconds.
    #[error("bad extra delay `{0}`")]
    Extra(String),
    /// The fault kind.
    #[error("{0}")]
    Kind(Box<FaultError>),
    /// The trigger.
    #[error("{0}")]
    Trigger(TriggerError),
}

/// A parsed command-line fault: which agent, which fault, when.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultFlag {
    /// The agent's name.
    pub agent: String,
    /// The fault.
    pub kind: FaultKind,
    /// When it fires.
    pub trigger: Trigger,
}

/// When a fault fires: with a probability, or on every Nth task (1-based).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Probability in `[0, 1]` per task.
    #[serde(default)]
    pub probability: Option<f64>,
    /// Fire on tasks N, 2N, 3N, …
    #[serde(default)]
    pub every: Option<u64>,
    /// For `slow`: the extra delay in milliseconds (default 2000).
    #[serde(default)]
    pub extra_ms: Option<u64>,
}

impl Trigger {
    /// Fires with probability `p`.
    pub fn probability(p: f64) -> Self {
        Self {
            probability: Some(p),
            ..Self::default()
        }
    }

    /// Fires on every `n`th task.
    pub fn every(n: u64) -> Self {
        Self {
            every: Some(n),
            ..Self::default()
        }
    }

    /// Checks that exactly one of `probability` (in `[0, 1]`) and `every` (≥ 1) is set.
    pub fn check(&self) -> Result<(), TriggerError> {
        match (self.probability, self.every) {
            (Some(p), None) if (0.0..=1.0).contains(&p) => Ok(()),
            (Some(p), None) => Err(TriggerError::Probability(p)),
            (None, Some(0)) => Err(TriggerError::EveryZero),
            (None, Some(_)) => Ok(()),
            _ => Err(TriggerError::NotExactlyOne),
        }
    }

    fn fires(&self, task: u64, roll: f64) -> bool {
        match (self.every, self.probability) {
            (Some(n), _) => n > 0 && task.is_multiple_of(n),
            (None, Some(p)) => roll < p,
            (None, None) => false,
        }
    }
}

/// The faults of one agent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Panic inside the agent (crashes the specialist).
    #[serde(default)]
    pub panic: Option<Trigger>,
    /// Never answer.
    #[serde(default)]
    pub hang: Option<Trigger>,
    /// Answer late by `extra_ms`.
    #[serde(default)]
    pub slow: Option<Trigger>,
    /// Fail as if the provider answered HTTP 500.
    #[serde(default)]
    pub provider_500: Option<Trigger>,
    /// Fail as if the provider answered HTTP 429.
    #[serde(default)]
    pub provider_429: Option<Trigger>,
    /// Fail as if the provider answered something undecodable.
    #[serde(default)]
    pub garbage: Option<Trigger>,
    /// Seed of the probability rolls.
    #[serde(default)]
    pub seed: u64,
}

impl Faults {
    /// Checks every trigger; the error names the fault.
    pub fn validate(&self) -> Result<(), FaultError> {
        for (kind, t) in self.triggers() {
            if let Some(t) = t {
                t.check()
                    .map_err(|error| FaultError::Trigger { kind, error })?;
            }
        }
        Ok(())
    }

    /// True when no fault is configured.
    pub fn is_empty(&self) -> bool {
        self.triggers().iter().all(|(_, t)| t.is_none())
    }

    fn triggers(&self) -> [(FaultKind, Option<Trigger>); 6] {
        [
            (FaultKind::Panic, self.panic),
            (FaultKind::Hang, self.hang),
            (FaultKind::Slow, self.slow),
            (FaultKind::Provider500, self.provider_500),
            (FaultKind::Provider429, self.provider_429),
            (FaultKind::Garbage, self.garbage),
        ]
    }

    /// Sets fault `kind` to `trigger`.
    pub fn set(&mut self, kind: FaultKind, trigger: Trigger) -> Result<(), FaultError> {
        trigger
            .check()
            .map_err(|error| FaultError::Trigger { kind, error })?;
        let slot = match kind {
            FaultKind::Panic => &mut self.panic,
            FaultKind::Hang => &mut self.hang,
            FaultKind::Slow => &mut self.slow,
            FaultKind::Provider500 => &mut self.provider_500,
            FaultKind::Provider429 => &mut self.provider_429,
            FaultKind::Garbage => &mut self.garbage,
        };
        *slot = Some(trigger);
        Ok(())
    }
}

/// Makes injected panics quiet: they are the experiment, not news. Installs a
/// process-wide panic hook that drops panics whose message starts with "injected
/// panic" and hands every other panic to the previous hook. For binaries, examples and
/// tests; a library should not call it.
pub fn silence_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload_as_str()
                .is_some_and(|m| m.starts_with("injected panic"));
            if !injected {
                previous(info);
            }
        }));
    });
}

/// Parses a CLI fault: `AGENT:KIND:RATE` or `AGENT:KIND:every=N`, with an optional
/// `:EXTRA_MS` for `slow`.
pub fn parse_flag(s: &str) -> Result<FaultFlag, FaultError> {
    let bad = |problem| FaultError::Flag {
        flag: s.to_owned(),
        problem,
    };
    let parts: Vec<&str> = s.split(':').collect();
    let (agent, kind, when, extra) = match parts.as_slice() {
        [a, k, w] => (*a, *k, *w, None),
        [a, k, w, e] => (*a, *k, *w, Some(*e)),
        _ => return Err(bad(FlagProblem::Shape)),
    };
    let kind: FaultKind = kind
        .parse()
        .map_err(|e| bad(FlagProblem::Kind(Box::new(e))))?;
    let mut trigger = match when.strip_prefix("every=") {
        Some(n) => Trigger::every(
            n.parse()
                .map_err(|_| bad(FlagProblem::Every(n.to_owned())))?,
        ),
        None => Trigger::probability(
            when.parse()
                .map_err(|_| bad(FlagProblem::Rate(when.to_owned())))?,
        ),
    };
    if let Some(e) = extra {
        trigger.extra_ms = Some(
            e.trim_end_matches("ms")
                .parse()
                .map_err(|_| bad(FlagProblem::Extra(e.to_owned())))?,
        );
    }
    trigger.check().map_err(|e| bad(FlagProblem::Trigger(e)))?;
    Ok(FaultFlag {
        agent: agent.to_owned(),
        kind,
        trigger,
    })
}

/// An agent with injected faults; see the module docs.
pub struct Faulty<A> {
    inner: A,
    faults: Faults,
    tasks: AtomicU64,
}

impl<A: Agent> Faulty<A> {
    /// Wraps `inner` with `faults`.
    pub fn new(inner: A, faults: Faults) -> Self {
        Self {
            inner,
            faults,
            tasks: AtomicU64::new(0),
        }
    }
}

fn roll(seed: u64, name: &str, task: u64, kind: u64) -> f64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let mut z = seed
        ^ h
        ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ kind.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

impl<A: Agent> Agent for Faulty<A> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn call_estimate(&self, task: &Task) -> Option<super::CallEstimate> {
        self.inner.call_estimate(task)
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let n = self.tasks.fetch_add(1, Ordering::SeqCst) + 1;
        let name = self.inner.name();
        let f = &self.faults;
        let fires = |t: &Option<Trigger>, kind: u64| {
            t.is_some_and(|t| t.fires(n, roll(f.seed, name, n, kind)))
        };
        let fail = |kind: ProviderErrorKind| {
            AgentError::Provider(Box::new(ProviderError {
                provider: "fault-injection".to_owned(),
                model: "-".to_owned(),
                agent: name.to_owned(),
                attempts: 1,
                kind,
                earlier: Vec::new(),
                gave_up: None,
            }))
        };
        if fires(&f.panic, 1) {
            panic!("injected panic in `{name}` on task {n}");
        }
        if fires(&f.hang, 2) {
            std::future::pending::<()>().await;
        }
        if fires(&f.provider_500, 3) {
            return Err(fail(ProviderErrorKind::Status {
                status: 500,
                retry_after_ms: None,
                excerpt: "injected server error".to_owned(),
            }));
        }
        if fires(&f.provider_429, 4) {
            return Err(fail(ProviderErrorKind::RateLimited {
                retry_after_ms: Some(1000),
                excerpt: "injected rate limit".to_owned(),
            }));
        }
        if fires(&f.garbage, 5) {
            return Err(fail(ProviderErrorKind::Decode {
                message: "injected garbage: <html>not json".to_owned(),
            }));
        }
        if fires(&f.slow, 6) {
            let extra = f.slow.and_then(|t| t.extra_ms).unwrap_or(2000);
            tokio::time::sleep(Duration::from_millis(extra)).await;
        }
        self.inner.run(ctx, task).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_name_their_mistakes() {
        assert_eq!(
            parse_flag("legal:panic:every=3").unwrap().trigger,
            Trigger::every(3)
        );
        let flag = parse_flag("legal:slow:0.5:1500ms").unwrap();
        assert_eq!(
            (flag.kind, flag.trigger.probability, flag.trigger.extra_ms),
            (FaultKind::Slow, Some(0.5), Some(1500))
        );
        assert!(parse_flag("legal:panic:2.0")
            .unwrap_err()
            .to_string()
            .contains("not between 0 and 1"));
        assert!(parse_flag("legal:panic")
            .unwrap_err()
            .to_string()
            .contains("expected AGENT:KIND"));
        assert!(parse_flag("legal:explode:every=1")
            .unwrap_err()
            .to_string()
            .contains("unknown fault `explode`"));
        assert_eq!("provider-500".parse(), Ok(FaultKind::Provider500));
        let mut f = Faults::default();
        assert!(f.set(FaultKind::Hang, Trigger::every(0)).is_err());
    }

    #[test]
    fn probability_rolls_are_repeatable_and_roughly_right() {
        let t = Trigger::probability(0.1);
        let hits = (1..=10_000)
            .filter(|&n| t.fires(n, roll(7, "legal", n, 1)))
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
        let again = (1..=10_000)
            .filter(|&n| t.fires(n, roll(7, "legal", n, 1)))
            .count();
        assert_eq!(hits, again);
    }
}
