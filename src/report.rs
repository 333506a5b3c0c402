//! [`RunReport`]: what every branch of a run did, as JSON and as a human view with a
//! text timeline (one bar per branch) that shows the straggler at a glance.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::agent::AgentError;
use crate::orchestrator::Policy;
use crate::outcome::{BranchError, BranchOutcome};
use crate::provider::Usage;
use crate::synthesiser::Synthesis;
use crate::task::RunId;

/// Serialises a `Duration` as fractional seconds.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|v| Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Whether a run succeeded under its policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// The branches met the policy and the merge (if any) succeeded.
    Succeeded,
    /// The run did not succeed, and why.
    Failed {
        /// One line naming the culprit.
        reason: String,
    },
}

impl RunStatus {
    /// True for `Succeeded`.
    pub fn is_success(&self) -> bool {
        matches!(self, RunStatus::Succeeded)
    }
}

/// One branch of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchReport {
    /// Position in the request.
    pub index: usize,
    /// The agent.
    pub agent: String,
    /// How it ended (with the output when it succeeded).
    pub outcome: BranchOutcome,
    /// Dispatch time since the run started (`None`: never dispatched).
    #[serde(with = "opt_secs", rename = "start_s")]
    pub start: Option<Duration>,
    /// End time since the run started.
    #[serde(with = "secs", rename = "end_s")]
    pub end: Duration,
    /// Provider attempts (0 when the branch made no model call it could report).
    pub attempts: u32,
    /// Times the branch was retried because its specialist crashed under it.
    pub retries: u32,
    /// It ended after the run had merged without it (a deferred straggler).
    pub late: bool,
    /// Time its model call waited for admission (concurrency and rate limits).
    #[serde(with = "secs", rename = "permit_wait_s")]
    pub permit_wait: Duration,
    /// Tokens spent.
    pub usage: Usage,
    /// What the tokens cost in US dollars (`None`: the model's price is unknown).
    pub cost_usd: Option<f64>,
    /// Why it did not succeed, in one line.
    pub error: Option<String>,
}

impl BranchReport {
    pub(crate) fn new(
        index: usize,
        agent: String,
        outcome: BranchOutcome,
        start: Option<Duration>,
        end: Duration,
    ) -> Self {
        let (attempts, usage) = match &outcome {
            BranchOutcome::Ok(o) => (o.attempts, o.usage),
            BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Provider(e)),
            } => (e.attempts, Usage::default()),
            _ => (0, Usage::default()),
        };
        let error = outcome.problem();
        let permit_wait =
            Duration::from_millis(outcome.output().map(|o| o.permit_wait_ms).unwrap_or(0));
        Self {
            index,
            agent,
            outcome,
            start,
            end,
            attempts,
            retries: 0,
            late: false,
            permit_wait,
            usage,
            cost_usd: None,
            error,
        }
    }

    /// How long the branch ran.
    pub fn duration(&self) -> Duration {
        self.start
            .map(|s| self.end.saturating_sub(s))
            .unwrap_or_default()
    }
}

/// The merge step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthesisReport {
    /// `llm`, `code` or `best`.
    pub strategy: String,
    /// The merged text (`None` if the merge failed).
    pub text: Option<String>,
    /// Why the merge failed.
    pub error: Option<String>,
    /// Tokens spent on the merge.
    pub usage: Usage,
    /// What the merge cost in US dollars, if known.
    pub cost_usd: Option<f64>,
    /// The model that merged.
    pub model: Option<String>,
    /// The chosen agent (select-best).
    pub chosen: Option<String>,
    /// Start since the run started.
    #[serde(with = "secs", rename = "start_s")]
    pub start: Duration,
    /// End since the run started.
    #[serde(with = "secs", rename = "end_s")]
    pub end: Duration,
}

impl SynthesisReport {
    pub(crate) fn new(strategy: &str, s: Synthesis, start: Duration, end: Duration) -> Self {
        Self {
            strategy: strategy.to_owned(),
            text: Some(s.text),
            error: None,
            usage: s.usage,
            cost_usd: None,
            model: s.model,
            chosen: s.chosen,
            start,
            end,
        }
    }

    pub(crate) fn failed(strategy: &str, error: String, start: Duration, end: Duration) -> Self {
        Self {
            strategy: strategy.to_owned(),
            text: None,
            error: Some(error),
            usage: Usage::default(),
            cost_usd: None,
            model: None,
            chosen: None,
            start,
            end,
        }
    }
}

/// Counts over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Branches that succeeded.
    pub ok: usize,
    /// Branches that failed.
    pub failed: usize,
    /// Branches that timed out.
    pub timed_out: usize,
    /// Branches cancelled.
    pub cancelled: usize,
    /// Branches refused by the run's budget.
    pub refused: usize,
    /// Provider attempts over all branches.
    pub attempts: u64,
    /// Tokens over all branches and the merge.
    pub usage: Usage,
    /// Cost in US dollars of the calls whose model price is known.
    pub cost_usd: Option<f64>,
    /// Calls that used tokens on a model with no known price (not in `cost_usd`).
    pub unpriced_calls: usize,
}

/// Everything a run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// Its policy.
    pub policy: Policy,
    /// Whether it succeeded.
    #[serde(flatten)]
    pub status: RunStatus,
    /// The provider used.
    pub provider: String,
    /// True when the provider's output is simulated.
    pub simulated: bool,
    /// Wall-clock start, as Unix seconds.
    pub started_at_unix_s: f64,
    /// Wall time of the whole run, merge included.
    #[serde(with = "secs", rename = "wall_s")]
    pub wall: Duration,
    /// Branches in input order.
    pub branches: Vec<BranchReport>,
    /// The merge, if one was asked for and the branches allowed it.
    pub synthesis: Option<SynthesisReport>,
    /// Counts.
    pub totals: Totals,
}

impl RunReport {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        run_id: RunId,
        policy: Policy,
        status: RunStatus,
        provider: String,
        simulated: bool,
        started_at: SystemTime,
        wall: Duration,
        branches: Vec<BranchReport>,
        synthesis: Option<SynthesisReport>,
    ) -> Self {
        let mut totals = Totals::default();
        for b in &branches {
            match b.outcome {
                BranchOutcome::Ok(_) => totals.ok += 1,
                BranchOutcome::Failed { .. } => totals.failed += 1,
                BranchOutcome::TimedOut { .. } => totals.timed_out += 1,
                BranchOutcome::Cancelled { .. } => totals.cancelled += 1,
                BranchOutcome::Refused { .. } => totals.refused += 1,
            }
            totals.attempts += u64::from(b.attempts);
            totals.usage += b.usage;
        }
        if let Some(s) = &synthesis {
            totals.usage += s.usage;
        }
        let costs = branches
            .iter()
            .map(|b| (b.cost_usd, b.usage))
            .chain(synthesis.iter().map(|s| (s.cost_usd, s.usage)));
        for (cost, usage) in costs {
            match cost {
                Some(c) => *totals.cost_usd.get_or_insert(0.0) += c,
                None if usage.total() > 0 => totals.unpriced_calls += 1,
                None => {}
            }
        }
        let started_at_unix_s = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self {
            run_id,
            policy,
            status,
            provider,
            simulated,
            started_at_unix_s,
            wall,
            branches,
            synthesis,
            totals,
        }
    }

    /// The branch that finished last (the straggler), if any ran.
    pub fn slowest(&self) -> Option<&BranchReport> {
        self.branches
            .iter()
            .filter(|b| b.start.is_some())
            .max_by_key(|b| b.end)
    }

    /// A text timeline: one bar per branch (and one for the merge) on a common scale
    /// of `width` columns.
    pub fn timeline(&self, width: usize) -> String {
        let width = width.max(10);
        let total = self.wall.as_secs_f64().max(1e-9);
        let col = |d: Duration| ((d.as_secs_f64() / total) * width as f64).round() as usize;
        let name_w = self
            .branches
            .iter()
            .map(|b| b.agent.len())
            .chain([9])
            .max()
            .unwrap_or(9);
        let mut out = String::new();
        let mut bar = |label: &str, start: Option<Duration>, end: Duration, tail: String| {
            let (a, b) = match start {
                Some(s) => (col(s).min(width), col(end).min(width)),
                None => (width, width),
            };
            let b = b.max(a + usize::from(start.is_some() && a < width));
            let line: String = (0..width)
                .map(|i| if i >= a && i < b { '█' } else { '·' })
                .collect();
            let _ = writeln!(out, "  {label:<name_w$} |{line}| {tail}");
        };
        for br in &self.branches {
            let tail = format!(
                "{:<9} {:>7.2}s",
                br.outcome.label(),
                br.duration().as_secs_f64()
            );
            bar(&br.agent, br.start, br.end, tail);
        }
        if let Some(s) = &self.synthesis {
            let status = if s.error.is_some() { "failed" } else { "ok" };
            let tail = format!(
                "{:<9} {:>7.2}s",
                status,
                s.end.saturating_sub(s.start).as_secs_f64()
            );
            bar("synthesis", Some(s.start), s.end, tail);
        }
        out
    }

    /// The human view: each branch's answer or failure, the merge, and the timeline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.simulated {
            let _ = writeln!(
                out,
                "NOTE: provider `{}` is simulated; the text below is generated without a model.\n",
                self.provider
            );
        }
        for b in &self.branches {
            let _ = write!(out, "── {} · {}", b.agent, b.outcome.label());
            if b.start.is_some() {
                let _ = write!(out, " · {:.2}s", b.duration().as_secs_f64());
            }
            if b.usage.total() > 0 {
                let _ = write!(out, " · {} tokens", b.usage.total());
            }
            if b.late {
                let _ = write!(out, " · late (after the merge)");
            }
            let _ = writeln!(out, " ──");
            match (&b.outcome, &b.error) {
                (BranchOutcome::Ok(o), _) => {
                    let _ = writeln!(out, "{}\n", o.text.trim());
                }
                (_, Some(e)) => {
                    let _ = writeln!(out, "({e})\n");
                }
                _ => {}
            }
        }
        if let Some(s) = &self.synthesis {
            let _ = writeln!(out, "══ synthesis ({} merge) ══", s.strategy);
            if let Some(agent) = &s.chosen {
                let _ = writeln!(out, "(selected: {agent})");
            }
            match (&s.text, &s.error) {
                (Some(t), _) => {
                    let _ = writeln!(out, "{}\n", t.trim());
                }
                (None, Some(e)) => {
                    let _ = writeln!(out, "({e})\n");
                }
                _ => {}
            }
        }
        let _ = writeln!(
            out,
            "{} · {} · {} · wall {:.2}s",
            self.run_id,
            self.policy,
            match &self.status {
                RunStatus::Succeeded => "succeeded".to_owned(),
                RunStatus::Failed { reason } => format!("FAILED: {reason}"),
            },
            self.wall.as_secs_f64()
        );
        let t = &self.totals;
        let _ = writeln!(
            out,
            "branches: {} ok, {} failed, {} timed out, {} cancelled, {} refused · tokens: {} in / {} out",
            t.ok,
            t.failed,
            t.timed_out,
            t.cancelled,
            t.refused,
            t.usage.input_tokens,
            t.usage.output_tokens
        );
        match (t.cost_usd, t.unpriced_calls) {
            (Some(c), 0) => {
                let _ = writeln!(out, "cost: ${c:.4}");
            }
            (Some(c), n) => {
                let _ = writeln!(
                    out,
                    "cost: ${c:.4} + {n} calls on models with no known price"
                );
            }
            (None, n) if n > 0 => {
                let _ = writeln!(
                    out,
                    "cost: unknown ({n} calls on models with no known price)"
                );
            }
            _ => {}
        }
        out.push_str(&self.timeline(40));
        out
    }
}
