//! How a report is derived from a run's record: each branch's attempts, tokens and
//! cost, the critical path, the totals.

use std::time::{Duration, SystemTime};

use super::{BranchReport, ItemReport, RunReport, RunStatus, SynthesisReport, Totals};
use crate::provider::{PriceTable, Usage};
use crate::run::Reused;
use crate::run::{
    BranchOutcome, BranchRecord, Branches, ItemRecord, RunRecord, SubRun, SynthesisError,
    SynthesisRecord,
};

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
    outcome.model().and_then(|m| prices.cost(m, usage))
}

impl ItemReport {
    fn new(item: usize, r: ItemRecord, prices: &PriceTable) -> Self {
        let run = r.sub_run.map(|s| Box::new(s.report()));
        let (attempts, usage, wasted_calls) = match &run {
            Some(run) => run.spent(),
            None => {
                let (attempts, mut usage) = r.outcome.spent();
                usage += r.earlier.1;
                // Earlier attempts (retried, or cut in a tool loop) answered nothing.
                (
                    attempts.saturating_add(r.earlier.0),
                    usage,
                    r.outcome.waste().0.saturating_add(r.earlier.0),
                )
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
            asked: r.asked,
        }
    }
}

impl BranchReport {
    fn new(index: usize, r: BranchRecord, depends_on: Vec<usize>, prices: &PriceTable) -> Self {
        let BranchRecord {
            step,
            agent,
            outcome,
            started: start,
            ended: end,
            retries,
            earlier,
            late,
            items,
            conflicts,
            reused,
            node,
            sub_run,
            delegated,
        } = r;
        let run = sub_run.map(|s| Box::new(s.report()));
        let delegated = delegated.iter().map(SubRun::report).collect();
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
                let (attempts, mut usage) = outcome.spent();
                usage += earlier.1;
                // Earlier attempts (retried, or cut in a tool loop) answered nothing.
                (
                    attempts.saturating_add(earlier.0),
                    usage,
                    outcome.waste().0.saturating_add(earlier.0),
                )
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
            delegated,
        }
    }
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

/// The branches' part of a run's report: built as soon as the branches have ended,
/// before the merge answers (see the orchestrator's `Admitted::execute`). After
/// a merge call of a few hundred milliseconds the records' memory has gone cold, and
/// building this then cost a 1,000-branch run milliseconds its caller waited for.
#[derive(Debug)]
pub(crate) struct BranchesPart {
    branches: Vec<BranchReport>,
    critical_path: Vec<usize>,
    /// Everything but the merge's share.
    totals: Totals,
}

impl BranchesPart {
    /// The branches' reports, the critical path and the branches' totals.
    pub(crate) fn new(ended: Branches, prices: &PriceTable) -> Self {
        let Branches { records, edges } = ended;
        let mut branches: Vec<BranchReport> = records
            .into_iter()
            .zip(edges)
            .enumerate()
            .map(|(i, (b, deps))| BranchReport::new(i, b, deps, prices))
            .collect();
        let critical_path = critical_path(&branches);
        for &i in &critical_path {
            branches[i].critical = true;
        }
        let mut totals = Totals::default();
        for b in &branches {
            match b.outcome {
                BranchOutcome::Ok(_) => totals.ok += 1,
                BranchOutcome::Failed { .. } => totals.failed += 1,
                BranchOutcome::TimedOut { .. } => totals.timed_out += 1,
                BranchOutcome::Cancelled { .. } => totals.cancelled += 1,
                BranchOutcome::Refused { .. } => totals.refused += 1,
            }
            // What this run spent: an answer a repair took from an earlier run was
            // that run's spend (counted here too, its cost showed twice over a run and
            // its repair); this run's own answers from before it resumed are its own
            // (left out, a resumed run's totals showed a quarter of its spend).
            let earlier = |r: Option<Reused>| r == Some(Reused::EarlierRun);
            if earlier(b.reused) {
                continue;
            }
            if b.items.iter().any(|i| earlier(i.reused)) {
                for i in b.items.iter().filter(|i| !earlier(i.reused)) {
                    totals.attempts = totals.attempts.saturating_add(u64::from(i.attempts));
                    totals.usage += i.usage;
                    totals.wasted_calls += u64::from(i.wasted_calls);
                    add_cost(&mut totals, i.cost_usd, i.usage);
                }
                continue;
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
            if b.usage.cache_read_input_tokens > 0 {
                let model = b.outcome.output().and_then(|o| o.model.as_deref());
                if let Some(saved) = model.and_then(|m| prices.cache_savings(m, &b.usage)) {
                    *totals.cache_saved_usd.get_or_insert(0.0) += saved;
                }
            }
            add_cost(&mut totals, b.cost_usd, b.usage);
        }
        Self {
            branches,
            critical_path,
            totals,
        }
    }
}

/// Adds one call's cost to the totals, or counts it unpriced if it used tokens.
fn add_cost(totals: &mut Totals, cost: Option<f64>, usage: Usage) {
    match cost {
        Some(c) => *totals.cost_usd.get_or_insert(0.0) += c,
        None if usage.total() > 0 => totals.unpriced_calls += 1,
        None => {}
    }
}

impl RunReport {
    /// The report of a run's record, with costs from `prices`.
    pub(crate) fn new(record: RunRecord, prices: &PriceTable) -> Self {
        Self::assemble(record.settle(|b| BranchesPart::new(b, prices)), prices)
    }

    /// The report of a run whose branches' part was built as they ended: only the
    /// merge and the verdict are left to add.
    pub(crate) fn assemble(record: RunRecord<BranchesPart>, prices: &PriceTable) -> Self {
        let RunRecord {
            run: run_id,
            asked,
            policy,
            failure,
            provider,
            simulated,
            started_at,
            wall,
            branches:
                BranchesPart {
                    branches,
                    critical_path,
                    mut totals,
                },
            synthesis,
        } = record;
        let status = match failure {
            None => RunStatus::Succeeded,
            Some(reason) => RunStatus::Failed { reason },
        };
        let synthesis = synthesis.map(|s| SynthesisReport::new(s, prices));
        if let Some(s) = &synthesis {
            totals.usage += s.usage;
            add_cost(&mut totals, s.cost_usd, s.usage);
        }
        let started_at_unix_s = started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        Self {
            run_id,
            asked: Some(asked),
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::agent::{AgentOutput, RunId};
    use crate::run::{Policy, Synthesis};

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    fn answered(step: &str, model: &str, spent: Usage, ended_ms: u64) -> BranchRecord {
        let mut out = AgentOutput::text(format!("{step} answered"));
        out.model = Some(model.to_owned());
        out.usage = spent;
        out.attempts = 1;
        BranchRecord {
            step: step.to_owned(),
            agent: step.to_owned(),
            outcome: BranchOutcome::Ok(out),
            started: Some(Duration::ZERO),
            ended: Duration::from_millis(ended_ms),
            retries: 0,
            earlier: (0, Usage::default()),
            late: false,
            items: Vec::new(),
            conflicts: Vec::new(),
            reused: None,
            node: None,
            sub_run: None,
            delegated: Vec::new(),
        }
    }

    fn record(merge_model: &str) -> RunRecord {
        RunRecord {
            run: RunId(1),
            asked: crate::run::Asked::of("the task"),
            policy: Policy::TolerantPartial { quorum: 1 },
            failure: None,
            provider: "test".to_owned(),
            simulated: true,
            started_at: SystemTime::UNIX_EPOCH,
            wall: Duration::from_millis(30),
            branches: Branches {
                records: vec![
                    answered("priced", "gpt-4o-mini", usage(1_000_000, 0), 20),
                    answered("unpriced", "no-such-model", usage(10, 5), 10),
                ],
                edges: vec![Vec::new(), Vec::new()],
            },
            synthesis: Some(SynthesisRecord {
                strategy: "llm",
                result: Ok(Synthesis {
                    text: "merged".to_owned(),
                    usage: usage(100, 50),
                    model: Some(merge_model.to_owned()),
                    chosen: None,
                    tree: None,
                }),
                start: Duration::from_millis(20),
                end: Duration::from_millis(30),
            }),
        }
    }

    /// The branches' totals are built before the merge answers: the merge's tokens,
    /// cost and an unknown price must still be added once, after.
    #[test]
    fn the_merge_counts_in_the_totals_once_after_the_branches_settled() {
        let prices = PriceTable::default();
        let report = RunReport::new(record("no-such-model"), &prices);
        let t = &report.totals;
        assert_eq!(t.ok, 2);
        assert_eq!(t.attempts, 2);
        assert_eq!(t.usage, usage(1_000_110, 55));
        // gpt-4o-mini: $0.15 per million input tokens; the rest has no price.
        assert!(
            (t.cost_usd.unwrap() - 0.15).abs() < 1e-9,
            "{:?}",
            t.cost_usd
        );
        assert_eq!(t.unpriced_calls, 2, "one branch and the merge");
        assert_eq!(report.critical_path, vec![0], "the branch that ended last");
        assert!(report.branches[0].critical && !report.branches[1].critical);

        let priced_merge = RunReport::new(record("gpt-4o-mini"), &prices);
        let t = &priced_merge.totals;
        assert_eq!(t.unpriced_calls, 1);
        let merge_cost = 100.0 * 0.15 / 1e6 + 50.0 * 0.6 / 1e6;
        assert!((t.cost_usd.unwrap() - (0.15 + merge_cost)).abs() < 1e-9);
    }

    #[test]
    fn regression_a_failed_branch_on_a_priced_model_is_priced_and_its_calls_wasted() {
        // Its paid turns were reported with no cost, and counted as unpriced.
        let prices = PriceTable::default();
        let mut run = record("gpt-4o-mini");
        run.branches.records[1].outcome = BranchOutcome::Failed {
            error: crate::run::BranchError::Agent(crate::agent::AgentError::Spent {
                cause: Box::new(crate::agent::AgentError::Rejected {
                    reason: "still calling tools".into(),
                }),
                usage: usage(1_000_000, 0),
                attempts: 3,
                model: Some("gpt-4o-mini".into()),
            }),
        };
        run.branches.records[1].earlier = (4, usage(0, 0));
        let report = RunReport::new(run, &prices);
        let failed = &report.branches[1];
        assert!(
            (failed.cost_usd.unwrap() - 0.15).abs() < 1e-9,
            "{:?}",
            failed.cost_usd
        );
        assert_eq!(report.totals.unpriced_calls, 0);
        // Its calls and its earlier attempts' answered nothing: all wasted (the 40
        // calls of 10 failed attempts were counted as none).
        assert_eq!(failed.wasted_calls, 3 + 4);
        assert_eq!(report.totals.wasted_calls, 7);
    }

    #[test]
    fn a_runs_answer_is_its_merge_else_its_one_final_step() {
        let prices = PriceTable::default();
        let merged = RunReport::new(record("gpt-4o-mini"), &prices);
        assert_eq!(merged.answer(), Some("merged"));
        // No merge: two branches that nothing waits for are two answers, not one.
        let mut fan_out = record("gpt-4o-mini");
        fan_out.synthesis = None;
        assert_eq!(RunReport::new(fan_out, &prices).answer(), None);
        // A chain: the step that waits for the other is the answer.
        let mut chain = record("gpt-4o-mini");
        chain.synthesis = None;
        chain.branches.edges = vec![Vec::new(), vec![0]];
        assert_eq!(
            RunReport::new(chain, &prices).answer(),
            Some("unpriced answered")
        );
    }
}
