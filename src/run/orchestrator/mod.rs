//! The orchestrator actor admits runs, and [`Admitted::execute`] runs one: it
//! schedules the branches, asks the synthesiser to merge, and returns the run's
//! [`RunRecord`].
//!
//! A run executes in its caller's own task, as a branch does through an agent's
//! intake: the orchestrator decides whether it may start (not while draining), keeps
//! its abort handle (aborted at the drain deadline, or when the orchestrator stops)
//! and is told when it ends, so its mailbox never waits on a run and many runs
//! proceed at once. A caller that stops waiting drops its run, which cancels the
//! branches. (Each run used to get a task of its own, which woke its caller at the
//! end: a task and two wake-ups per run, for work its caller only waited on.)

mod merge;
mod nested;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{AbortHandle, AbortRegistration, Abortable};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::code::CodeRegistry;
use super::event::RunEvent;
use super::execute::{self, Defer, Schedule};
use super::launch::Nested;
use super::outcome::RunFailure;
use super::placement::Router;
use super::policy::Policy;
use super::record::{Branches, RunRecord, SynthesisRecord};
use super::request::{Known, RunError, RunRequest};
use super::step::SubWorkflow;
use super::synthesis::{MergeBranch, SynthesiserMsg};
use crate::agent::tools::delegate::Delegate;
use crate::agent::RunId;
use crate::provider::PriceTable;
use crate::supervision::Roster;
use crate::tasks::{LiveCount, LiveGuard};
use merge::Merge;
use nested::NestedRuns;

/// Messages to the [`Orchestrator`].
#[derive(Debug)]
pub(crate) enum OrchestratorMsg {
    /// May a run start? Answered with the run to execute, or why not.
    Admit {
        reply: oneshot::Sender<Result<Admitted, RunError>>,
    },
    /// Stop accepting runs; answer when the runs in flight have ended, or abort
    /// them (cancelling their branches) once `deadline` has passed. Answers how many
    /// runs had to be aborted.
    Drain {
        deadline: Duration,
        reply: RpcReplyPort<usize>,
    },
    /// A run ended, however (sent when its [`Admitted`] is dropped).
    Done(RunId),
    /// The drain deadline passed (sent by the drain timer).
    DrainDeadline,
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for OrchestratorMsg {}

/// The orchestrator actor; see the module docs.
pub(crate) struct Orchestrator;

/// Startup arguments of the [`Orchestrator`]. Cheap to clone, so that a restarted
/// orchestrator starts with the same ones.
#[derive(Clone)]
pub(crate) struct OrchestratorArgs {
    /// Routing table of specialists.
    pub roster: Roster,
    /// The synthesiser to merge with, as it is now (`None` while it restarts).
    pub synthesiser: watch::Receiver<Option<ActorRef<SynthesiserMsg>>>,
    /// Name of the provider, for records.
    pub provider: String,
    /// Whether the provider is simulated, for records.
    pub simulated: bool,
    /// Prices for the budget ledger.
    pub prices: Arc<PriceTable>,
    /// The provider's default model, to price branches whose agent names none.
    pub default_model: Option<String>,
    /// The code functions code steps may run.
    pub code: Arc<CodeRegistry>,
    /// Where this actor counts itself.
    pub live: LiveCount,
    /// Where branches run, in a cluster (`None`: all here).
    pub router: Option<Arc<dyn Router>>,
    /// The workflows `run_workflow` may start, by name.
    pub workflows: Arc<std::collections::BTreeMap<String, Arc<SubWorkflow>>>,
}

/// Whether the orchestrator takes new runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intake {
    Open,
    Draining,
}

/// The orchestrator's state: its arguments and the runs in flight.
pub(crate) struct OrchestratorState {
    args: Arc<OrchestratorArgs>,
    runs: Runs,
    draining: Vec<RpcReplyPort<usize>>,
    intake: Intake,
    drain_timer: Option<tokio::task::JoinHandle<()>>,
    _live: LiveGuard,
}

impl Drop for OrchestratorState {
    fn drop(&mut self) {
        if let Some(t) = self.drain_timer.take() {
            t.abort();
        }
    }
}

static NEXT_RUN: AtomicU64 = AtomicU64::new(1);

impl Actor for Orchestrator {
    type Msg = OrchestratorMsg;
    type State = OrchestratorState;
    type Arguments = OrchestratorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<OrchestratorMsg>,
        args: OrchestratorArgs,
    ) -> Result<OrchestratorState, ActorProcessingErr> {
        let live = args.live.guard();
        Ok(OrchestratorState {
            args: Arc::new(args),
            runs: Runs::default(),
            draining: Vec::new(),
            intake: Intake::Open,
            drain_timer: None,
            _live: live,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<OrchestratorMsg>,
        message: OrchestratorMsg,
        state: &mut OrchestratorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            OrchestratorMsg::Admit { reply } => {
                if state.intake == Intake::Draining {
                    let _ = reply.send(Err(RunError::ShuttingDown));
                    return Ok(());
                }
                let run = RunId(NEXT_RUN.fetch_add(1, Ordering::Relaxed));
                let (handle, registration) = AbortHandle::new_pair();
                let admitted = Admitted {
                    run,
                    args: state.args.clone(),
                    registration,
                    _done: DoneOnDrop {
                        orchestrator: myself.clone(),
                        run,
                    },
                };
                // Not taken (the caller is gone): dropping it says `Done` at once.
                if reply.send(Ok(admitted)).is_ok() {
                    state.runs.0.insert(run, handle);
                }
            }
            OrchestratorMsg::Done(run) => {
                state.runs.0.remove(&run);
                if state.runs.0.is_empty() {
                    for reply in state.draining.drain(..) {
                        let _ = reply.send(0);
                    }
                }
            }
            OrchestratorMsg::Drain { deadline, reply } => {
                state.intake = Intake::Draining;
                if state.runs.0.is_empty() {
                    let _ = reply.send(0);
                    return Ok(());
                }
                tracing::info!(
                    runs = state.runs.0.len(),
                    ?deadline,
                    "draining runs in flight"
                );
                state.draining.push(reply);
                // A second drain keeps the earlier (sooner or equal) deadline timer.
                if state.drain_timer.is_none() {
                    let me = myself.clone();
                    state.drain_timer = Some(tokio::spawn(async move {
                        tokio::time::sleep(deadline).await;
                        let _ = me.cast(OrchestratorMsg::DrainDeadline);
                    }));
                }
            }
            OrchestratorMsg::DrainDeadline => {
                let aborted = state.runs.0.len();
                if aborted > 0 {
                    tracing::warn!(
                        aborted,
                        "drain deadline passed; aborting runs still in flight"
                    );
                }
                state.runs = Runs::default();
                state.drain_timer = None;
                for reply in state.draining.drain(..) {
                    let _ = reply.send(aborted);
                }
            }
        }
        Ok(())
    }
}

/// The runs in flight, by id: each one's abort handle. Dropping the table (the
/// orchestrator stopped, or the drain deadline passed) aborts every run in it.
#[derive(Default)]
struct Runs(HashMap<RunId, AbortHandle>);

impl Drop for Runs {
    fn drop(&mut self) {
        for (_, handle) in self.0.drain() {
            handle.abort();
        }
    }
}

/// Tells the orchestrator that a run is over, however it ended.
struct DoneOnDrop {
    orchestrator: ActorRef<OrchestratorMsg>,
    run: RunId,
}

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        let _ = self.orchestrator.cast(OrchestratorMsg::Done(self.run));
    }
}

/// Says that a run's caller stopped waiting, if dropped before the run ends.
struct CallerGone(RunId);

impl Drop for CallerGone {
    fn drop(&mut self) {
        tracing::info!(run_id = self.0 .0, "caller gone; run cancelled");
    }
}

/// A run the orchestrator let start; [`Admitted::execute`] runs it in the caller's
/// task. Dropping it (or the future of `execute`) ends the run.
pub(crate) struct Admitted {
    run: RunId,
    args: Arc<OrchestratorArgs>,
    registration: AbortRegistration,
    _done: DoneOnDrop,
}

impl std::fmt::Debug for Admitted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admitted").field("run", &self.run).finish()
    }
}

impl Admitted {
    /// Checks `request` and runs it here to its record, its branch events going to
    /// `events` (if given) in completion order. A run the orchestrator aborts (the
    /// drain deadline passed, or it stopped) ends `OrchestratorGone`.
    ///
    /// `settle` gets the branches the moment they have all ended, before the merge
    /// is asked for: what it makes of them is the record's `branches`.
    pub(crate) async fn execute<B>(
        self,
        request: RunRequest,
        events: Option<&mpsc::UnboundedSender<RunEvent>>,
        stop: Option<watch::Receiver<bool>>,
        settle: impl FnOnce(Branches) -> B + Send,
    ) -> Result<RunRecord<B>, RunError> {
        let agents = self.args.roster.names();
        let code = self.args.code.names();
        let known = Known {
            agents: &agents,
            code: &code,
        };
        request.validate(&known)?;
        let Admitted {
            run,
            args,
            registration,
            _done,
        } = self;
        let span = tracing::info_span!("run", run_id = run.0, steps = request.steps.len());
        let work = execute_run(&args, run, request, events, stop, settle);
        let gone = CallerGone(run);
        let ended = Abortable::new(tracing::Instrument::instrument(work, span), registration).await;
        std::mem::forget(gone);
        let record = ended.map_err(|_aborted| RunError::OrchestratorGone)?;
        if let Some(events) = events {
            let _ = events.send(RunEvent::RunFinished {
                run,
                succeeded: record.failure.is_none(),
            });
        }
        Ok(record)
    }
}

async fn execute_run<B>(
    args: &Arc<OrchestratorArgs>,
    run: RunId,
    mut request: RunRequest,
    events: Option<&mpsc::UnboundedSender<RunEvent>>,
    stop: Option<watch::Receiver<bool>>,
    settle: impl FnOnce(Branches) -> B,
) -> RunRecord<B> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let deadline = started + request.deadline;
    let (defer, merge_rx) = match (request.soft_deadline, &request.merge, request.policy) {
        (Some(soft), Some(_), Policy::TolerantPartial { .. }) => {
            let (merge_now, merge_rx) = oneshot::channel();
            let at = started + soft;
            (Some(Defer { at, merge_now }), Some(merge_rx))
        }
        _ => (None, None),
    };
    let runs = Arc::new(NestedRuns::new(args.clone()));
    let nested: Arc<dyn Nested> = runs.clone();
    let delegator = (!args.workflows.is_empty())
        .then(|| crate::agent::tools::Delegator(runs.clone() as Arc<dyn Delegate>));
    let replay: HashMap<(usize, Option<usize>), crate::run::launch::Kept> = request
        .replay
        .iter()
        .map(|r| {
            let key = (r.index as usize, r.item.map(|k| k as usize));
            (
                key,
                crate::run::launch::Kept {
                    turns: r.turns.clone().into(),
                    earlier: r.earlier,
                },
            )
        })
        .collect();
    let input: Arc<str> = request.input.as_str().into();
    let branches = execute::execute(
        Schedule {
            run,
            input: &input,
            steps: &request.steps,
            policy: request.policy,
            started,
            deadline,
            branch_timeout: request.branch_timeout,
            roster: &args.roster,
            events,
            crash_retries: request.crash_retries,
            budget: request.budget,
            prices: &args.prices,
            default_model: args.default_model.as_deref(),
            code: &args.code,
            reuse: &request.reuse,
            cache_warm: request.cache_warm,
            router: args.router.as_ref(),
            nested: Some(&nested),
            stop: stop.clone(),
            max_items: request.max_items,
            tool_journal: request.tool_journal.as_ref(),
            replay: &replay,
            approver: request.approver.as_ref(),
            depth: request.depth,
            delegator: delegator.as_ref(),
        },
        defer,
    );
    let merge = Merge {
        synthesiser: &args.synthesiser,
        run,
        input: &request.input,
        started,
        deadline,
        events,
        budget: request.budget,
        prices: &args.prices,
        default_model: args.default_model.as_deref(),
    };
    // The merge takes the ends of the graph: the steps no other step waits for (in a
    // flat fan-out, all of them); a chain's earlier steps reach it through its end.
    let mut sink = vec![true; request.steps.len()];
    for step in &request.steps {
        for &d in &step.depends_on {
            if let Some(s) = sink.get_mut(d) {
                *s = false;
            }
        }
    }
    // With a soft deadline the merge may start while stragglers still run.
    let early_merge = async {
        let snapshot = match merge_rx {
            Some(rx) => rx.await,
            None => return None,
        };
        match (snapshot, &request.merge) {
            (Ok(snapshot), Some(strategy)) => {
                let spent = match merge.budget {
                    Some(_) => merge::spent(
                        snapshot.iter().filter_map(|(_, o)| o.as_ref()),
                        merge.prices,
                        merge.default_model,
                    ),
                    None => (0, 0.0),
                };
                let inputs = snapshot
                    .into_iter()
                    .zip(&sink)
                    .filter(|(_, &sink)| sink)
                    .map(|((agent, outcome), _)| MergeBranch::new(agent, outcome.as_ref()))
                    .collect();
                Some(merge.synthesise(strategy.clone(), inputs, spent).await)
            }
            _ => None,
        }
    };
    let ((mut records, mut failure), early) = tokio::join!(branches, early_merge);
    // The runs its branches' tool calls started, under the branch that started them.
    drop(delegator);
    for (index, sub) in runs.take_delegated() {
        if let Some(r) = records.get_mut(index) {
            r.delegated.push(sub);
        }
    }
    if let (None, None, Some(_)) = (&early, &failure, &request.merge) {
        // The policy was met by other steps, but the merge has nothing to read: say
        // which steps gave no answer (a merge would only say "nothing to merge").
        let finals = records.iter().zip(&sink).filter(|(_, &sink)| sink);
        failure = RunFailure::no_answer(finals.map(|(b, _)| (b.step.as_str(), &b.outcome)));
    }
    let late_merge = match (&early, &failure, &request.merge) {
        (None, None, Some(strategy)) => {
            let inputs = records
                .iter()
                .zip(&sink)
                .filter(|(_, &sink)| sink)
                .map(|(b, _)| {
                    MergeBranch::new(b.step.clone(), Some(&b.outcome))
                        .with_conflicts(b.conflicts.clone())
                })
                .collect();
            Some((strategy.clone(), inputs))
        }
        _ => None,
    };
    // Settle the branches and drop the steps now, while their memory is still warm
    // from the run: after a merge call it has gone cold, and at 1,000 branches doing
    // this then took milliseconds the caller waited for (BENCHMARKS.md).
    let edges = request
        .steps
        .iter_mut()
        .map(|s| std::mem::take(&mut s.depends_on))
        .collect();
    drop(std::mem::take(&mut request.steps));
    // Only a budget asks what the branches spent (priced branch by branch).
    let spent = match merge.budget {
        Some(_) => merge::spent(
            records.iter().map(|b| &b.outcome),
            merge.prices,
            merge.default_model,
        ),
        None => (0, 0.0),
    };
    let branches = settle(Branches { records, edges });
    let synthesis = match late_merge {
        Some((strategy, inputs)) => {
            // A stop during the merge drops the merge call: the branches stand.
            let mut stop = stop;
            tokio::select! {
                merged = merge.synthesise(strategy, inputs, spent) => Some(merged),
                () = execute::stopped(&mut stop) => {
                    failure = Some(RunFailure::Stopped);
                    None
                }
            }
        }
        None => early,
    };
    if let (Some(SynthesisRecord { result: Err(e), .. }), None) = (&synthesis, &failure) {
        failure = Some(RunFailure::Synthesis(e.clone()));
    }
    RunRecord {
        run,
        asked: crate::run::Asked::of(&request.input),
        policy: request.policy,
        failure,
        provider: args.provider.clone(),
        simulated: args.simulated,
        started_at,
        wall: started.elapsed(),
        branches,
        synthesis,
    }
}
