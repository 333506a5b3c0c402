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

    fn check(&self) -> Result<(), String> {
        match (self.probability, self.every) {
            (Some(p), None) if (0.0..=1.0).contains(&p) => Ok(()),
            (Some(p), None) => Err(format!("probability {p} is not between 0 and 1")),
            (None, Some(0)) => Err("every must be at least 1".to_owned()),
            (None, Some(_)) => Ok(()),
            _ => Err("give exactly one of `probability` and `every`".to_owned()),
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

/// The fault kinds, as named in specs and on the command line.
pub const KINDS: &[&str] = &[
    "panic",
    "hang",
    "slow",
    "provider_500",
    "provider_429",
    "garbage",
];

impl Faults {
    /// Checks every trigger; the error names the fault.
    pub fn validate(&self) -> Result<(), String> {
        for (name, t) in self.triggers() {
            if let Some(t) = t {
                t.check().map_err(|e| format!("faults.{name}: {e}"))?;
            }
        }
        Ok(())
    }

    /// True when no fault is configured.
    pub fn is_empty(&self) -> bool {
        self.triggers().iter().all(|(_, t)| t.is_none())
    }

    fn triggers(&self) -> [(&'static str, Option<Trigger>); 6] {
        [
            ("panic", self.panic),
            ("hang", self.hang),
            ("slow", self.slow),
            ("provider_500", self.provider_500),
            ("provider_429", self.provider_429),
            ("garbage", self.garbage),
        ]
    }

    /// Sets fault `kind` (one of [`KINDS`], `-` or `_` separated) to `trigger`.
    pub fn set(&mut self, kind: &str, trigger: Trigger) -> Result<(), String> {
        let slot = match kind.replace('-', "_").as_str() {
            "panic" => &mut self.panic,
            "hang" => &mut self.hang,
            "slow" => &mut self.slow,
            "provider_500" => &mut self.provider_500,
            "provider_429" => &mut self.provider_429,
            "garbage" => &mut self.garbage,
            other => {
                return Err(format!(
                    "unknown fault `{other}`: expected one of {}",
                    KINDS.join(", ")
                ))
            }
        };
        trigger
            .check()
            .map_err(|e| format!("fault `{kind}`: {e}"))?;
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
/// `:EXTRA_MS` for `slow`. Returns the agent, the kind and the trigger.
pub fn parse_flag(s: &str) -> Result<(String, String, Trigger), String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (agent, kind, when, extra) = match parts.as_slice() {
        [a, k, w] => (*a, *k, *w, None),
        [a, k, w, e] => (*a, *k, *w, Some(*e)),
        _ => {
            return Err(format!(
                "`{s}`: expected AGENT:KIND:RATE or AGENT:KIND:every=N"
            ))
        }
    };
    let mut trigger = match when.strip_prefix("every=") {
        Some(n) => Trigger::every(
            n.parse()
                .map_err(|_| format!("`{s}`: `{n}` is not a whole number"))?,
        ),
        None => Trigger::probability(
            when.parse()
                .map_err(|_| format!("`{s}`: `{when}` is not a probability"))?,
        ),
    };
    if let Some(e) = extra {
        trigger.extra_ms = Some(
            e.trim_end_matches("ms")
                .parse()
                .map_err(|_| format!("`{s}`: bad extra delay `{e}`"))?,
        );
    }
    trigger.check().map_err(|e| format!("`{s}`: {e}"))?;
    Ok((agent.to_owned(), kind.to_owned(), trigger))
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

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let n = self.tasks.fetch_add(1, Ordering::SeqCst) + 1;
        let name = self.inner.name();
        let f = &self.faults;
        let fires = |t: &Option<Trigger>, kind: u64| {
            t.is_some_and(|t| t.fires(n, roll(f.seed, name, n, kind)))
        };
        let fail = |kind: ProviderErrorKind| {
            AgentError::Provider(ProviderError {
                provider: "fault-injection".to_owned(),
                model: "-".to_owned(),
                agent: name.to_owned(),
                attempts: 1,
                kind,
            })
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
            parse_flag("legal:panic:every=3").unwrap().2,
            Trigger::every(3)
        );
        let (_, kind, t) = parse_flag("legal:slow:0.5:1500ms").unwrap();
        assert_eq!(
            (kind.as_str(), t.probability, t.extra_ms),
            ("slow", Some(0.5), Some(1500))
        );
        assert!(parse_flag("legal:panic:2.0")
            .unwrap_err()
            .contains("not between 0 and 1"));
        assert!(parse_flag("legal:panic")
            .unwrap_err()
            .contains("expected AGENT:KIND"));
        let mut f = Faults::default();
        assert!(f
            .set("explode", Trigger::every(1))
            .unwrap_err()
            .contains("unknown fault `explode`"));
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
