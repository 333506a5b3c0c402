//! [`RunReport`]: what every branch of a run did, with the numbers derived from it
//! (attempts, tokens, costs, totals), as JSON and as a human view with a text timeline
//! (one bar per branch) that shows the straggler at a glance (`render`).
//!
//! A report is built from a run's record (the facts the orchestrator collected) and
//! the price table (`build`); nothing in the run layer depends on this module. Its
//! branches' part is built as soon as they have ended, before the merge answers.

mod build;
mod render;

pub(crate) use build::BranchesPart;
pub use render::{one_line, printable};

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent::RunId;
use crate::provider::Usage;
use crate::run::{opt_secs, secs, BranchOutcome, Conflict, MergeTree, Policy, Reused, RunFailure};

/// Whether a run succeeded under its policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    /// The branches met the policy and the merge (if any) succeeded.
    Succeeded,
    /// The run did not succeed, and why (its `Display` is one line naming the culprit).
    Failed {
        /// Why.
        reason: RunFailure,
    },
}

impl RunStatus {
    /// True for `Succeeded`.
    pub fn is_success(&self) -> bool {
        matches!(self, RunStatus::Succeeded)
    }
}

/// One branch of a run (one step; a map step's items are in `items`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BranchReport {
    /// Position in the request.
    pub index: usize,
    /// The step's name (in a fan-out, its agent).
    pub step: String,
    /// The agent, or `code:FUNCTION`.
    pub agent: String,
    /// The steps it waited for.
    #[serde(default)]
    pub depends_on: Vec<usize>,
    /// On the critical path: the chain of steps that decided the run's wall time.
    #[serde(default)]
    pub critical: bool,
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
    /// Calls made for it whose answer was not used (failed attempts, a hedge's
    /// loser, a shaped answer asked again); for a map step, over its items.
    #[serde(default)]
    pub wasted_calls: u32,
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
    /// A map step's items, in item order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemReport>,
    /// What a code step found upstream steps disagreeing on (with each side's step),
    /// and how each was resolved, if it was.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    /// Its output was taken from an earlier answer, not called this time: this
    /// run's own before it resumed (counted in the totals), or an earlier run's (a
    /// repair; not counted again).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "reused_or_old"
    )]
    pub reused: Option<Reused>,
    /// The cluster node it ended on (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The report of the run it made, if its step runs a workflow whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<RunReport>>,
    /// The reports of the runs its tool calls started (`run_workflow`), in the
    /// order they ended. What they spent is in the branch's own usage already.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegated: Vec<RunReport>,
}

/// One item of a map step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemReport {
    /// Its position (from 0).
    pub item: usize,
    /// How it ended.
    pub outcome: BranchOutcome,
    /// Dispatch time since the run started (`None`: never dispatched).
    #[serde(with = "opt_secs", rename = "start_s")]
    pub start: Option<Duration>,
    /// End time since the run started.
    #[serde(with = "secs", rename = "end_s")]
    pub end: Duration,
    /// Provider attempts.
    pub attempts: u32,
    /// Times it was run again.
    pub retries: u32,
    /// Calls made for it whose answer was not used.
    #[serde(default)]
    pub wasted_calls: u32,
    /// It ended after the run had merged without it.
    pub late: bool,
    /// Tokens spent.
    pub usage: Usage,
    /// What they cost, if the price is known.
    pub cost_usd: Option<f64>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// Taken from an earlier answer, not called this time (see
    /// [`BranchReport::reused`]).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "reused_or_old"
    )]
    pub reused: Option<Reused>,
    /// The cluster node it ended on (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The report of the run it made, if its step runs a workflow whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<RunReport>>,
    /// Its input (the item): its SHA-256, and its text when that is at most
    /// [`Asked::KEPT`](crate::run::Asked::KEPT) bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<crate::run::Asked>,
}

impl BranchReport {
    /// When its model call was let out, since the run started: its dispatch plus its
    /// wait for admission (`None`: never dispatched). Branches dispatched together
    /// race for the gate, so under a cap this, not `start`, is the order their calls
    /// reached the provider.
    pub fn called_at(&self) -> Option<Duration> {
        self.start.map(|start| start + self.permit_wait)
    }

    /// How long the branch ran.
    pub fn duration(&self) -> Duration {
        self.start
            .map(|s| self.end.saturating_sub(s))
            .unwrap_or_default()
    }
}

impl RunReport {
    /// The run's answer: the merged text; without a merge, the output of its one
    /// final step (the step no other waits for), when there is exactly one and it
    /// succeeded. `None` otherwise (a plain fan-out without a merge has one answer
    /// per branch, not one for the run).
    pub fn answer(&self) -> Option<&str> {
        if let Some(s) = &self.synthesis {
            return s.text.as_deref();
        }
        let mut finals = self.branches.iter().filter(|b| {
            !self
                .branches
                .iter()
                .any(|o| o.depends_on.contains(&b.index))
        });
        match (finals.next(), finals.next()) {
            (Some(last), None) => last.outcome.output().map(|o| o.text.as_str()),
            _ => None,
        }
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
    /// How an LLM merge fitted its model's context window: the window, the levels
    /// of partial merges when one call could not take every output, what was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<MergeTree>,
    /// Start since the run started.
    #[serde(with = "secs", rename = "start_s")]
    pub start: Duration,
    /// End since the run started.
    #[serde(with = "secs", rename = "end_s")]
    pub end: Duration,
}

/// Counts over a run. The outcomes count every branch; what was spent (attempts,
/// calls, tokens, cost) counts what this run called, before a resume too, but not
/// the answers a repair took from an earlier run, whose branches still show their
/// own.
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
    /// Calls over all branches whose answer was not used: failed attempts that were
    /// retried or gave up, hedges' losers, shaped answers asked again. What the
    /// provider billed or counted against the rate limit for nothing.
    #[serde(default)]
    pub wasted_calls: u64,
    /// Attempts over all branches the provider refused for load (429 / 529).
    #[serde(default)]
    pub rate_limited: u64,
    /// Tokens over all branches and the merge.
    pub usage: Usage,
    /// Cost in US dollars of the calls whose model price is known.
    pub cost_usd: Option<f64>,
    /// Calls that used tokens on a model with no known price (not in `cost_usd`).
    pub unpriced_calls: usize,
    /// What prompt-cache reads saved against paying for them as plain input, over
    /// the branches whose model price is known (`usage.cache_read_input_tokens` says
    /// how many tokens were read from the cache).
    #[serde(default)]
    pub cache_saved_usd: Option<f64>,
}

/// Everything a run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// What it was asked (`None` in reports written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked: Option<crate::run::Asked>,
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
    /// The steps of the critical path, first to last: each waited for the one before,
    /// and the last ended last.
    #[serde(default)]
    pub critical_path: Vec<usize>,
    /// The merge, if one was asked for and the branches allowed it.
    pub synthesis: Option<SynthesisReport>,
    /// Counts.
    pub totals: Totals,
}

/// A report's `reused`: what this version writes, or `true`/`false` as reports
/// (and journals) written before it did, when it meant an answer from before the
/// run resumed.
fn reused_or_old<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Reused>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Old(bool),
        New(Reused),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        None | Some(Either::Old(false)) => None,
        Some(Either::Old(true)) => Some(Reused::BeforeResume),
        Some(Either::New(r)) => Some(r),
    })
}
