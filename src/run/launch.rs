//! Launching branches: what one run's branches need ([`Schedule`]), the task each
//! branch gets (its input from its template, or the run's input and upstream
//! outputs), its budget estimate, and spawning its call — an agent's, a code
//! function on the blocking pool, or a run of a whole workflow ([`Nested`]) — into
//! the driver's `JoinSet`, or taking an earlier output instead.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use super::branch::{call_branch, BranchCall};
use super::budget::{Budget, Estimate};
use super::code::{CodeInput, CodeRegistry, Conflict};
use super::event::RunEvent;
use super::outcome::{BranchError, BranchOutcome, DeadlineKind};
use super::placement::Router;
use super::policy::Policy;
use super::record::SubRun;
use super::request::Reuse;
use super::step::{Action, Step, SubWorkflow};
use super::stream;
use crate::agent::tools::{Approvals, ToolKeeper, ToolTurn};
use crate::agent::{AgentOutput, BranchId, CallEstimate, Meter, RunId, Task, UpstreamOutput};
use crate::provider::{estimate_shared_tokens, DeltaSink, PriceTable};
use crate::supervision::Roster;

/// Everything one run's branches need.
pub(crate) struct Schedule<'a> {
    pub run: RunId,
    /// The run's input: one copy, which every untemplated branch's task shares.
    pub input: &'a Arc<str>,
    pub steps: &'a [Step],
    pub policy: Policy,
    pub started: Instant,
    pub deadline: Instant,
    pub branch_timeout: Duration,
    pub roster: &'a Roster,
    pub code: &'a CodeRegistry,
    pub events: Option<&'a mpsc::UnboundedSender<RunEvent>>,
    pub crash_retries: u32,
    pub budget: Option<Budget>,
    pub prices: &'a PriceTable,
    /// The provider's default model, for steps whose agent names none.
    pub default_model: Option<&'a str>,
    /// Outputs from an earlier attempt at this run, taken instead of calling.
    pub reuse: &'a [Reuse],
    /// Send the first agent branch alone until its answer starts (see `warm`).
    pub cache_warm: bool,
    /// Where branches run, in a cluster (`None`: all here).
    pub router: Option<&'a Arc<dyn Router>>,
    /// What runs a step's workflow whole (`None`: such steps fail).
    pub nested: Option<&'a Arc<dyn Nested>>,
    /// Says `true` when the caller stops the run (see `RunHandle::stop`).
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The most items a map may fan out to.
    pub max_items: Option<usize>,
    /// Where tool loops keep their turns.
    pub tool_journal: Option<&'a ToolKeeper>,
    /// Tool turns kept by an earlier attempt at this run, by branch (a map built
    /// once: a resume of thousands of tool branches searched a list for each).
    pub replay: &'a HashMap<(usize, Option<usize>), Kept>,
    /// Who decides tool calls that need approval.
    pub approver: Option<&'a Approvals>,
    /// How deep the run is nested.
    pub depth: u32,
    /// What starts its branches' sub-runs (when the runtime has workflows).
    pub delegator: Option<&'a crate::agent::tools::Delegator>,
}

/// A branch's tool turns kept by an earlier attempt at the run.
pub(crate) struct Kept {
    /// Its turns, first to last.
    pub turns: Arc<[ToolTurn]>,
    /// What turns a later attempt replaced had used (model calls, tokens).
    pub earlier: (u32, crate::provider::Usage),
}

/// Runs a workflow whole for one branch (the orchestrator does, as a run of its own).
pub(crate) trait Nested: Send + Sync {
    /// Runs `flow` on `input` until `deadline`, its crashed branches retried up to
    /// `crash_retries` times, its maps at most `max_items` wide (the parent's).
    fn run(
        &self,
        flow: Arc<SubWorkflow>,
        input: String,
        deadline: Instant,
        crash_retries: u32,
        max_items: Option<usize>,
    ) -> futures::future::BoxFuture<'static, SubRun>;
}

/// What one branch task returns.
pub(super) struct Ended {
    pub(super) index: usize,
    pub(super) item: Option<usize>,
    pub(super) outcome: BranchOutcome,
    pub(super) at: Instant,
    pub(super) retries: u32,
    pub(super) conflicts: Vec<Conflict>,
    /// The cluster node it ended on, if it ran in one.
    pub(super) node: Option<String>,
    /// The run it made, if its step runs a workflow whole.
    pub(super) sub_run: Option<SubRun>,
}

/// A branch task whose future panicked (it returns this instead of unwinding, so
/// the driver knows which branch it was without a table of task ids).
pub(super) struct Panicked {
    pub(super) index: usize,
    pub(super) item: Option<usize>,
}

/// What a branch task returns: how it ended, or that it panicked.
pub(super) type TaskEnd = Result<Ended, Panicked>;

/// `branch` as a task that answers its panic as [`Panicked`].
fn guarded(
    index: usize,
    item: Option<usize>,
    branch: impl Future<Output = Ended>,
) -> impl Future<Output = TaskEnd> {
    crate::agent::caught(AssertUnwindSafe(branch).catch_unwind())
        .map(move |ended| ended.map_err(|_panic| Panicked { index, item }))
}

impl Ended {
    /// Branch (`index`, `item`) ended now with `outcome`, nothing else to say.
    fn new(index: usize, item: Option<usize>, outcome: BranchOutcome) -> Self {
        Self {
            index,
            item,
            outcome,
            at: Instant::now(),
            retries: 0,
            conflicts: Vec::new(),
            node: None,
            sub_run: None,
        }
    }
}

/// How much earlier than the branch deadline the task's own deadline is: enough for
/// the specialist's answer to arrive first, a small share of a short branch.
fn handover(branch_time: Duration) -> Duration {
    (branch_time / 50).min(Duration::from_millis(25))
}

/// Which attempt at a branch a dispatch is, as the scheduler says.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Attempt {
    /// Times it was run again after failing (a retry waits longer each time).
    pub(super) rerun: u32,
    /// What it may use in all under the run's budget (`None`: no budget).
    pub(super) allowance: Option<u64>,
}

/// The driver's view of one run; see the module docs.
pub(super) struct Driver<'s, 'a> {
    pub(super) s: &'s Schedule<'a>,
    /// Each map step's items, once found (shared: the budget's estimator keeps a
    /// snapshot of this map, which must not copy every item for every estimate).
    pub(super) items: HashMap<usize, Arc<[String]>>,
}

/// The most bytes a step's input template may render to (a template that names a
/// large task or output many times built a prompt of a gigabyte).
pub(crate) const MAX_INPUT_BYTES: usize = 16 * 1024 * 1024;

impl Driver<'_, '_> {
    /// The task a branch of step `index` (item `item`) gets; a failed branch when its
    /// input template renders past [`MAX_INPUT_BYTES`].
    fn task(
        &self,
        index: usize,
        item: Option<usize>,
        upstream: &Arc<[UpstreamOutput]>,
    ) -> Result<Task, BranchError> {
        let step = &self.s.steps[index];
        let item_text = item.and_then(|k| self.items.get(&index)?.get(k));
        let (input, templated): (Arc<str>, bool) = match (&step.input, item_text) {
            (Some(t), _) => {
                let rendered = t
                    .render_within(
                        self.s.input,
                        item.zip(item_text.map(String::as_str)),
                        |name| {
                            upstream
                                .iter()
                                .find(|u| u.agent == name)
                                .map(|u| u.text.clone())
                        },
                        MAX_INPUT_BYTES,
                    )
                    .map_err(|bytes| BranchError::InputTooLarge {
                        step: step.name.clone(),
                        bytes,
                        limit: MAX_INPUT_BYTES,
                    })?;
                (rendered.into(), true)
            }
            (None, Some(text)) => (text.as_str().into(), true),
            (None, None) => (self.s.input.clone(), false),
        };
        Ok(Task {
            branch: BranchId {
                run: self.s.run,
                index: index as u32,
                item: item.map(|k| k as u32),
            },
            input,
            upstream: upstream.clone(),
            model: step.model.clone(),
            templated,
            schema: step.schema.clone(),
            allowance: None,
            tool_journal: None,
            approvals: None,
            replay: crate::agent::task::no_turns(),
            tools_governed: false,
            depth: 0,
            delegator: None,
            meter: None,
            deadline: None,
            deltas: None,
        })
    }

    /// What a branch may use: its agent's own estimate of its call, or (for agents that
    /// give none) the task's prompt plus the budget's `branch_tokens`; priced on the
    /// model it names, else the provider's default. A code step uses nothing.
    pub(super) fn estimate(
        &self,
        budget: Budget,
        index: usize,
        item: Option<usize>,
        upstream: &Arc<[UpstreamOutput]>,
    ) -> Estimate {
        let step = &self.s.steps[index];
        let Some(agent) = step.agent_name() else {
            return Estimate {
                tokens: 0,
                model: None,
                cost_usd: Some(0.0),
            };
        };
        let Ok(task) = self.task(index, item, upstream) else {
            // It fails before any call: nothing to reserve.
            return Estimate {
                tokens: 0,
                model: None,
                cost_usd: Some(0.0),
            };
        };
        let call = self
            .s
            .roster
            .estimate(agent, &task)
            .unwrap_or_else(|| CallEstimate {
                model: task.model.clone(),
                input_tokens: estimate_shared_tokens(&task.prompt()),
                max_output_tokens: budget.branch_tokens,
            });
        let usage = call.usage();
        let model = call
            .model
            .or_else(|| self.s.default_model.map(str::to_owned));
        Estimate {
            tokens: usage.total(),
            cost_usd: model.as_deref().and_then(|m| self.s.prices.cost(m, &usage)),
            model,
        }
    }
}

/// The branches the driver has launched, and how to reach them.
#[derive(Default)]
pub(super) struct Launched {
    pub(super) set: JoinSet<TaskEnd>,
    /// Map items by (step, item), to abort one the scheduler cancels (the only
    /// branches it stops one by one; the rest go when the set is dropped).
    pub(super) items: HashMap<(usize, usize), AbortHandle>,
    /// Branches whose output came from an earlier attempt at the run.
    pub(super) reused: Vec<((usize, Option<usize>), super::Reused)>,
    /// Each agent branch's meter (one for all its attempts): what its model calls
    /// used that no outcome reports (a branch timed out or aborted in a tool loop).
    pub(super) meters: HashMap<(usize, Option<usize>), Meter>,
}

impl Launched {
    /// Whether branch (`index`, `item`) takes an earlier output instead of a call.
    pub(super) fn reuses(&self, s: &Schedule<'_>, index: usize, item: Option<usize>) -> bool {
        earlier(s, index, item).is_some()
    }

    /// Launches a branch the scheduler dispatched: its started event, then its
    /// earlier output if the run reuses one, else its call (with `extra` receiving
    /// its streamed text too).
    pub(super) fn launch(
        &mut self,
        driver: &Driver<'_, '_>,
        index: usize,
        item: Option<usize>,
        upstream: &Arc<[UpstreamOutput]>,
        extra: Option<DeltaSink>,
        attempt: Attempt,
    ) {
        let s = driver.s;
        if let Some(events) = s.events {
            let _ = events.send(RunEvent::BranchStarted {
                run: s.run,
                index: index as u32,
                item: item.map(|k| k as u32),
                agent: s.steps[index].name.clone(),
                at: Instant::now().saturating_duration_since(s.started),
            });
        }
        let handle = match earlier(s, index, item) {
            Some(r) => {
                self.reused.push(((index, item), r.from));
                self.set.spawn(std::future::ready(Ok(Ended::new(
                    index,
                    item,
                    BranchOutcome::Ok(r.output.clone()),
                ))))
            }
            None => {
                let meter = self.meters.entry((index, item)).or_default().clone();
                dispatch(
                    driver,
                    &mut self.set,
                    (index, item),
                    upstream,
                    extra,
                    attempt,
                    meter,
                )
            }
        };
        if let Some(item) = item {
            self.items.insert((index, item), handle);
        }
    }
}

/// How long a step's retry number `rerun` waits before its call: none for the first
/// run, then 250 ms doubling up to 8 s.
fn retry_wait(rerun: u32) -> Option<Duration> {
    (rerun > 0).then(|| {
        Duration::from_millis(250)
            .saturating_mul(1 << (rerun - 1).min(5))
            .min(Duration::from_secs(8))
    })
}

/// A branch that fails before it is called, with `error`.
fn failed_at_once(
    set: &mut JoinSet<TaskEnd>,
    index: usize,
    item: Option<usize>,
    error: BranchError,
) -> AbortHandle {
    let outcome = BranchOutcome::Failed { error };
    set.spawn(std::future::ready(Ok(Ended::new(index, item, outcome))))
}

/// The earlier output the run reuses for branch (`index`, `item`), if any.
fn earlier<'a>(s: &Schedule<'a>, index: usize, item: Option<usize>) -> Option<&'a Reuse> {
    s.reuse
        .iter()
        .find(|r| r.index as usize == index && r.item.map(|k| k as usize) == item)
}

/// When a branch of `step` dispatched now must end, and which deadline that is.
fn branch_deadline(s: &Schedule<'_>, step: &Step) -> (Instant, DeadlineKind) {
    let timeout = step.timeout.unwrap_or(s.branch_timeout);
    match Instant::now().checked_add(timeout) {
        Some(d) if d < s.deadline => (d, DeadlineKind::Branch),
        _ => (s.deadline, DeadlineKind::Run),
    }
}

/// Spawns one branch: a code function on the blocking pool, a workflow run whole,
/// or an agent's call.
fn dispatch(
    driver: &Driver<'_, '_>,
    set: &mut JoinSet<TaskEnd>,
    (index, item): (usize, Option<usize>),
    upstream: &Arc<[UpstreamOutput]>,
    extra: Option<DeltaSink>,
    Attempt { rerun, allowance }: Attempt,
    meter: Meter,
) -> AbortHandle {
    let s = driver.s;
    let step = &s.steps[index];
    match &step.action {
        Action::Code { function, options } => {
            let code = s.code.get(function);
            let task = s.input.clone();
            let upstream = upstream.clone();
            let options = options.clone();
            let function = function.clone();
            set.spawn(guarded(index, item, async move {
                let run = move || {
                    let Some(f) = code else {
                        return Err(super::code::CodeError::BadOption {
                            option: "code".to_owned(),
                            problem: format!("no code function is named `{function}`"),
                        });
                    };
                    // Bounded like a model step's input: 60 `concat` steps each of
                    // the two before took a process to 23 GB.
                    let too_large = |what: &str, bytes| super::code::CodeError::TooLarge {
                        what: what.to_owned(),
                        bytes,
                        limit: MAX_INPUT_BYTES,
                    };
                    let inputs: usize = upstream.iter().map(|u| u.text.len()).sum();
                    if inputs > MAX_INPUT_BYTES {
                        return Err(too_large("its inputs", inputs));
                    }
                    let out = f(&CodeInput {
                        task: &task,
                        upstream: &upstream,
                        options: &options,
                    })?;
                    match out.text.len() {
                        n if n > MAX_INPUT_BYTES => Err(too_large("its output", n)),
                        _ => Ok(out),
                    }
                };
                let (outcome, conflicts) = match tokio::task::spawn_blocking(run).await {
                    Ok(Ok(out)) => (
                        BranchOutcome::Ok(AgentOutput::text(out.text)),
                        out.conflicts,
                    ),
                    Ok(Err(e)) => {
                        let conflicts = match &e {
                            super::code::CodeError::Conflicts(c) => c.clone(),
                            _ => Vec::new(),
                        };
                        let error = BranchError::Code(Box::new(e));
                        (BranchOutcome::Failed { error }, conflicts)
                    }
                    Err(join) => {
                        let message = if join.is_panic() {
                            "a panic"
                        } else {
                            "cancelled"
                        };
                        let error = BranchError::Code(Box::new(super::code::CodeError::Panicked(
                            message.to_owned(),
                        )));
                        (BranchOutcome::Failed { error }, Vec::new())
                    }
                };
                Ended {
                    conflicts,
                    ..Ended::new(index, item, outcome)
                }
            }))
        }
        Action::Workflow(flow) => {
            let (deadline, _) = branch_deadline(s, step);
            let input = match driver.task(index, item, upstream) {
                Ok(task) => task.prompt().to_string(),
                Err(error) => return failed_at_once(set, index, item, error),
            };
            let nested = s.nested.cloned();
            let flow = flow.clone();
            let (crash_retries, max_items) = (s.crash_retries, s.max_items);
            set.spawn(guarded(index, item, async move {
                let (outcome, sub_run) = match nested {
                    Some(nested) => {
                        let sub = nested
                            .run(flow.clone(), input, deadline, crash_retries, max_items)
                            .await;
                        (sub.outcome(&flow.name), Some(sub))
                    }
                    None => {
                        let error = BranchError::Workflow {
                            workflow: flow.name.clone(),
                            reason: "this runtime cannot run a workflow inside a step".to_owned(),
                        };
                        (BranchOutcome::Failed { error }, None)
                    }
                };
                Ended {
                    sub_run,
                    ..Ended::new(index, item, outcome)
                }
            }))
        }
        Action::Agent(agent) => {
            let now = Instant::now();
            let (deadline, kind) = branch_deadline(s, step);
            let mut task = match driver.task(index, item, upstream) {
                Ok(task) => task,
                Err(error) => return failed_at_once(set, index, item, error),
            };
            // A hair before the branch deadline, so that a model call cut by it
            // reports what it was doing before the branch gives up.
            task.deadline = Some(deadline - handover(deadline - now));
            task.tool_journal = s.tool_journal.cloned();
            task.tools_governed = s.tool_journal.is_some() || s.approver.is_some();
            task.meter = Some(meter);
            task.depth = s.depth;
            task.delegator = s.delegator.cloned();
            task.approvals = s.approver.cloned();
            // Kept turns stand for the first attempt after a restart only: a retry
            // of the step starts its conversation again (it replayed the turns the
            // failed attempt had answered, results included).
            if let (0, Some(kept)) = (rerun, s.replay.get(&(index, item))) {
                task.replay = kept.turns.clone();
            }
            // Under a budget, what the run has left (its own reservation included)
            // bounds its later calls.
            task.allowance = allowance;
            let watched = s.events.map(|events| {
                stream::branch(
                    events,
                    s.run,
                    index as u32,
                    item.map(|k| k as u32),
                    step.name.clone(),
                )
            });
            // Someone watches the answer stream: keep its text too, for a timeout.
            let partial = (watched.is_some() || extra.is_some()).then(stream::Partial::default);
            let kept = partial.as_ref().map(stream::Partial::sink);
            task.deltas = stream::both(stream::both(watched, extra), kept);
            let mut call = BranchCall {
                slot: s.roster.watch(agent),
                agent: agent.clone(),
                task,
                deadline,
                deadline_kind: kind,
                crash_retries: s.crash_retries,
            };
            let router = s.router.cloned();
            set.spawn(guarded(index, item, async move {
                // A step's retry waits first, longer each time (within the branch's
                // deadline): `retries` once re-sent 1,001 calls in 0.17 s.
                if let Some(wait) = retry_wait(rerun) {
                    tokio::time::sleep_until((Instant::now() + wait).min(deadline)).await;
                }
                let mut called = call_branch(&mut call, router).await;
                if let (BranchOutcome::TimedOut { partial: kept, .. }, Some(p)) =
                    (&mut called.outcome, &partial)
                {
                    *kept = p.take();
                }
                Ended {
                    retries: called.retries,
                    node: called.node,
                    ..Ended::new(index, item, called.outcome)
                }
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_branch_future_that_panics_answers_which_branch_it_was() {
        let mut set = JoinSet::new();
        set.spawn(guarded(3, Some(7), async {
            panic!("a bug in the runtime")
        }));
        set.spawn(guarded(
            4,
            None,
            std::future::ready(Ended::new(
                4,
                None,
                BranchOutcome::Ok(AgentOutput::text("ok")),
            )),
        ));
        let mut panicked = Vec::new();
        let mut ended = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined.expect("the task itself does not unwind") {
                Ok(e) => ended.push((e.index, e.item)),
                Err(p) => panicked.push((p.index, p.item)),
            }
        }
        assert_eq!(panicked, [(3, Some(7))]);
        assert_eq!(ended, [(4, None)]);
    }
}
