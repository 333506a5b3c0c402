//! [`RunReport`]: what every branch of a run did, with the numbers derived from it
//! (attempts, tokens, costs, totals), as JSON and as a human view with a text timeline
//! (one bar per branch) that shows the straggler at a glance (`render`).
//!
//! A report is built from a run's record (the facts the orchestrator collected) and
//! the price table; nothing in the run layer depends on this module.

mod render;

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::agent::RunId;
use crate::provider::{PriceTable, Usage};
use crate::run::{
    opt_secs, secs, BranchOutcome, BranchRecord, Conflict, ItemRecord, MergeTree, Policy,
    RunFailure, RunRecord, SubRun, SynthesisError, SynthesisRecord,
};

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
    /// Its output was taken from an earlier attempt at this run (a resumed run):
    /// no call was made for it this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The cluster node it ended on (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The report of the run it made, if its step runs a workflow whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<RunReport>>,
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
    /// Taken from an earlier attempt at this run; not called this time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The cluster node it ended on (absent outside a cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The report of the run it made, if its step runs a workflow whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Box<RunReport>>,
}

impl RunReport {
    /// Provider attempts, tokens and wasted calls over the whole run.
    fn spent(&self) -> (u32, Usage, u32) {
        let t = &self.totals;
        let small = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        (small(t.attempts), t.usage, small(t.wasted_calls))
    }
}

impl SubRun {
    /// The nested run's own report.
    pub fn report(&self) -> RunReport {
        RunReport::new((*self.record).clone(), &self.prices)
    }
}

/// What a branch that ran a workflow whole cost: its run's, if that is known.
fn nested_cost(run: &Option<Box<RunReport>>) -> Option<Option<f64>> {
    run.as_ref().map(|r| r.totals.cost_usd)
}

fn cost_of(outcome: &BranchOutcome, usage: &Usage, prices: &PriceTable) -> Option<f64> {
    outcome
        .output()
        .and_then(|o| o.model.as_deref())
        .and_then(|m| prices.cost(m, usage))
}

impl ItemReport {
    fn new(item: usize, r: ItemRecord, prices: &PriceTable) -> Self {
        let run = r.sub_run.map(|s| Box::new(s.report()));
        let (attempts, usage, wasted_calls) = match &run {
            Some(run) => run.spent(),
            None => {
                let (attempts, usage) = r.outcome.spent();
                (attempts, usage, r.outcome.waste().0)
            }
        };
        Self {
            item,
            wasted_calls,
            cost_usd: nested_cost(&run).unwrap_or_else(|| cost_of(&r.outcome, &usage, prices)),
            run,
            error: r.outcome.problem(),
            outcome: r.outcome,
            start: r.started,
            end: r.ended,
            attempts,
            retries: r.retries,
            late: r.late,
            reused: r.reused,
            node: r.node,
            usage,
        }
    }
}

impl BranchReport {
    /// When its model call was let out, since the run started: its dispatch plus its
    /// wait for admission (`None`: never dispatched). Branches dispatched together
    /// race for the gate, so under a cap this, not `start`, is the order their calls
    /// reached the provider.
    pub fn called_at(&self) -> Option<Duration> {
        self.start.map(|start| start + self.permit_wait)
    }

    fn new(index: usize, r: BranchRecord, depends_on: Vec<usize>, prices: &PriceTable) -> Self {
        let BranchRecord {
            step,
            agent,
            outcome,
            started: start,
            ended: end,
            retries,
            late,
            items,
            conflicts,
            reused,
            node,
            sub_run,
        } = r;
        let run = sub_run.map(|s| Box::new(s.report()));
        let items: Vec<ItemReport> = items
            .into_iter()
            .enumerate()
            .map(|(k, i)| ItemReport::new(k, i, prices))
            .collect();
        // A map step spent what its items did (those that failed too); a step that
        // ran a workflow, what its run did (even when that run failed).
        let (attempts, usage, wasted_calls) = match &run {
            Some(run) => run.spent(),
            None if !items.is_empty() => items.iter().fold(
                (0u32, Usage::default(), 0u32),
                |(attempts, mut usage, wasted), i| {
                    usage += i.usage;
                    (
                        attempts.saturating_add(i.attempts),
                        usage,
                        wasted.saturating_add(i.wasted_calls),
                    )
                },
            ),
            None => {
                let (attempts, usage) = outcome.spent();
                (attempts, usage, outcome.waste().0)
            }
        };
        let error = outcome.problem();
        let permit_wait =
            Duration::from_millis(outcome.output().map(|o| o.permit_wait_ms).unwrap_or(0));
        let cost_usd = if items.is_empty() {
            nested_cost(&run).unwrap_or_else(|| cost_of(&outcome, &usage, prices))
        } else {
            items.iter().filter_map(|i| i.cost_usd).reduce(|a, b| a + b)
        };
        Self {
            index,
            step,
            wasted_calls,
            agent,
            depends_on,
            critical: false,
            outcome,
            start,
            end,
            attempts,
            retries,
            late,
            permit_wait,
            usage,
            cost_usd,
            error,
            items,
            conflicts,
            reused,
            node,
            run,
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

impl SynthesisReport {
    fn new(r: SynthesisRecord, prices: &PriceTable) -> Self {
        let strategy = r.strategy.to_owned();
        match r.result {
            Ok(s) => Self {
                cost_usd: s.model.as_deref().and_then(|m| prices.cost(m, &s.usage)),
                strategy,
                text: Some(s.text),
                error: None,
                usage: s.usage,
                model: s.model,
                chosen: s.chosen,
                tree: s.tree,
                start: r.start,
                end: r.end,
            },
            Err(e) => Self {
                strategy,
                text: None,
                tree: match &e {
                    SynthesisError::DoesNotFit { tree } => Some((**tree).clone()),
                    _ => None,
                },
                error: Some(e.to_string()),
                usage: Usage::default(),
                cost_usd: None,
                model: None,
                chosen: None,
                start: r.start,
                end: r.end,
            },
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

impl RunReport {
    /// The report of a run's record, with costs from `prices`.
    pub(crate) fn new(record: RunRecord, prices: &PriceTable) -> Self {
        let RunRecord {
            run: run_id,
            policy,
            failure,
            provider,
            simulated,
            started_at,
            wall,
            branches,
            synthesis,
            edges,
        } = record;
        let status = match failure {
            None => RunStatus::Succeeded,
            Some(reason) => RunStatus::Failed { reason },
        };
        let mut branches: Vec<BranchReport> = branches
            .into_iter()
            .zip(edges)
            .enumerate()
            .map(|(i, (b, deps))| BranchReport::new(i, b, deps, prices))
            .collect();
        let critical_path = critical_path(&branches);
        for &i in &critical_path {
            branches[i].critical = true;
        }
        let synthesis = synthesis.map(|s| SynthesisReport::new(s, prices));
        let mut totals = Totals::default();
        for b in &branches {
            match b.outcome {
                BranchOutcome::Ok(_) => totals.ok += 1,
                BranchOutcome::Failed { .. } => totals.failed += 1,
                BranchOutcome::TimedOut { .. } => totals.timed_out += 1,
                BranchOutcome::Cancelled { .. } => totals.cancelled += 1,
                BranchOutcome::Refused { .. } => totals.refused += 1,
            }
            totals.attempts = totals.attempts.saturating_add(u64::from(b.attempts));
            totals.usage += b.usage;
            // Refusals for load: a nested run's own count, else the outcome's.
            let refused = |outcome: &BranchOutcome, run: &Option<Box<RunReport>>| match run {
                Some(run) => u32::try_from(run.totals.rate_limited).unwrap_or(u32::MAX),
                None => outcome.waste().1,
            };
            let (wasted, refused) = if b.items.is_empty() {
                (b.wasted_calls, refused(&b.outcome, &b.run))
            } else {
                b.items
                    .iter()
                    .map(|i| (i.wasted_calls, refused(&i.outcome, &i.run)))
                    .fold((0, 0), |(w, r), (a, b)| (w + a, r + b))
            };
            totals.wasted_calls += u64::from(wasted);
            totals.rate_limited += u64::from(refused);
        }
        if let Some(s) = &synthesis {
            totals.usage += s.usage;
        }
        for b in &branches {
            let model = b.outcome.output().and_then(|o| o.model.as_deref());
            if b.usage.cache_read_input_tokens > 0 {
                if let Some(saved) = model.and_then(|m| prices.cache_savings(m, &b.usage)) {
                    *totals.cache_saved_usd.get_or_insert(0.0) += saved;
                }
            }
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
            critical_path,
            synthesis,
            totals,
        }
    }
}

/// The chain of steps that decided the wall time: from the step that ended last, back
/// through the dependency that ended last, to a step that waited for nothing.
fn critical_path(branches: &[BranchReport]) -> Vec<usize> {
    let Some(mut at) = branches
        .iter()
        .filter(|b| b.start.is_some())
        .max_by_key(|b| b.end)
        .map(|b| b.index)
    else {
        return Vec::new();
    };
    let mut path = vec![at];
    while let Some(&before) = branches[at]
        .depends_on
        .iter()
        .filter(|&&d| d < branches.len())
        .max_by_key(|&&d| branches[d].end)
    {
        path.push(before);
        at = before;
    }
    path.reverse();
    path
}
