//! Runs of the same runtime started from inside a run: a step's workflow run whole
//! ([`Nested`]), and a tool call's `run_workflow` ([`Delegate`]). Each is a run of
//! its own (its events are not streamed); its record goes back to the branch that
//! made it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{execute_run, OrchestratorArgs, NEXT_RUN};
use crate::agent::tools::delegate::Delegate;
use crate::agent::tools::{Delegated, Delegation};
use crate::agent::{BranchId, RunId};
use crate::run::launch::Nested;
use crate::run::record::SubRun;
use crate::run::request::RunRequest;
use crate::run::step::SubWorkflow;
use crate::run::BranchOutcome;

/// How long a sub-run asked for without a deadline may take (a branch's task always
/// has one; a tool called outside a run may not).
const NO_DEADLINE: Duration = Duration::from_secs(600);

/// One run's nested runs: what starts them, and the records of those its tool
/// calls started, by the step that started them.
pub(super) struct NestedRuns {
    args: Arc<OrchestratorArgs>,
    delegated: Arc<Mutex<Vec<(usize, SubRun)>>>,
}

impl NestedRuns {
    pub(super) fn new(args: Arc<OrchestratorArgs>) -> Self {
        Self {
            args,
            delegated: Arc::default(),
        }
    }

    /// The runs its tool calls started, by step, in the order they ended.
    pub(super) fn take_delegated(&self) -> Vec<(usize, SubRun)> {
        std::mem::take(&mut *self.delegated.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Nested for NestedRuns {
    fn run(
        &self,
        flow: Arc<SubWorkflow>,
        input: String,
        deadline: Instant,
        crash_retries: u32,
        max_items: Option<usize>,
    ) -> futures::future::BoxFuture<'static, SubRun> {
        let args = self.args.clone();
        Box::pin(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut request = RunRequest::for_branch(&flow, input, left);
            request.crash_retries = crash_retries;
            request.max_items = max_items;
            let run = RunId(NEXT_RUN.fetch_add(1, Ordering::Relaxed));
            let record = execute_run(&args, run, request, None, None, |ended| ended).await;
            SubRun {
                record: Arc::new(record),
                prices: args.prices.clone(),
            }
        })
    }
}

impl Delegate for NestedRuns {
    fn delegate(
        &self,
        branch: BranchId,
        ask: Delegation,
    ) -> futures::future::BoxFuture<'static, Delegated> {
        let (args, delegated) = (self.args.clone(), self.delegated.clone());
        Box::pin(async move {
            let refused = |why: String| Delegated {
                answer: Err(why),
                usage: Default::default(),
                attempts: 0,
            };
            let Some(flow) = args.workflows.get(&ask.workflow).cloned() else {
                return refused(format!("this runtime has no workflow `{}`", ask.workflow));
            };
            if ask.tokens == Some(0) {
                return refused("the run's budget has no tokens left for it".to_owned());
            }
            let left = ask
                .deadline
                .map_or(NO_DEADLINE, |d| d.saturating_duration_since(Instant::now()));
            let mut request = RunRequest::for_branch(&flow, ask.input, left);
            request.depth = ask.depth;
            if let Some(tokens) = ask.tokens {
                // What the branch may still spend bounds the whole sub-run.
                let mut budget = request.budget.unwrap_or_default();
                budget.max_tokens = Some(budget.max_tokens.map_or(tokens, |t| t.min(tokens)));
                request.budget = Some(budget);
            }
            let run = RunId(NEXT_RUN.fetch_add(1, Ordering::Relaxed));
            let record = execute_run(&args, run, request, None, None, |ended| ended).await;
            let sub = SubRun {
                record: Arc::new(record),
                prices: args.prices.clone(),
            };
            let (attempts, usage, ..) = sub.spent();
            let answer = match sub.outcome(&flow.name) {
                BranchOutcome::Ok(out) => Ok(out.text),
                other => Err(other.problem().unwrap_or_else(|| "it failed".to_owned())),
            };
            delegated
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((branch.index as usize, sub));
            Delegated {
                answer,
                usage,
                attempts,
            }
        })
    }
}
