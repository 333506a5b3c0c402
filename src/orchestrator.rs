//! The orchestrator actor: accepts runs, schedules their branches, asks the
//! synthesiser to merge, and replies with a [`RunReport`].
//!
//! Each run executes on its own tokio task, so a slow run never blocks the
//! orchestrator's mailbox and many runs proceed at once. The orchestrator keeps each
//! run's abort handle (aborted if the orchestrator stops). A run whose caller stops
//! waiting (its reply port closes) is cancelled, which cancels its branches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::outcome::BranchOutcome;
use crate::outcome::RunEvent;
use crate::report::{BranchReport, RunReport, RunStatus, SynthesisReport};
use crate::schedule::{self, Defer, Schedule};
use crate::supervisor::Roster;
use crate::synthesiser::{MergeBranch, MergeRequest, MergeStrategy, SynthesiserMsg};
use crate::task::RunId;
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

/// How the run treats a branch that does not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Policy {
    /// The first branch that fails, times out or is unavailable ends the run; its
    /// siblings are cancelled and their model calls aborted (OTP one-for-all).
    FailFast,
    /// Keep collecting until every branch ends or the deadline passes; the run
    /// succeeds if at least `quorum` branches succeeded. It ends early, cancelling the
    /// rest, as soon as the quorum can no longer be met (OTP one-for-one).
    TolerantPartial {
        /// Successful branches needed (≥ 1).
        quorum: usize,
    },
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::FailFast => f.write_str("fail-fast"),
            Policy::TolerantPartial { quorum } => write!(f, "partial:{quorum}"),
        }
    }
}

impl std::str::FromStr for Policy {
    type Err = String;

    /// Parses `fail-fast`, `partial` (quorum 1) or `partial:K`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fail-fast" | "failfast" => Ok(Policy::FailFast),
            "partial" => Ok(Policy::TolerantPartial { quorum: 1 }),
            other => match other.strip_prefix("partial:") {
                Some(k) => match k.parse::<usize>() {
                    Ok(quorum) if quorum >= 1 => Ok(Policy::TolerantPartial { quorum }),
                    _ => Err(format!(
                        "bad quorum `{k}` in `{s}`: expected a whole number ≥ 1"
                    )),
                },
                None => Err(format!(
                    "unknown policy `{s}`: expected fail-fast, partial or partial:K"
                )),
            },
        }
    }
}

/// One step of a run: an agent, and the steps whose outputs it needs first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The specialist's routing name.
    pub agent: String,
    /// Indices of earlier steps this one waits for (empty in a fan-out).
    #[serde(default)]
    pub depends_on: Vec<usize>,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The task text every step receives.
    pub input: String,
    /// The steps, in input order.
    pub steps: Vec<Step>,
    /// Policy for failed branches.
    pub policy: Policy,
    /// Overall deadline, covering branches and synthesis.
    pub deadline: Duration,
    /// Per-branch timeout (capped by what is left of the overall deadline).
    pub branch_timeout: Duration,
    /// How to merge; `None` skips synthesis.
    pub merge: Option<MergeStrategy>,
    /// How many times a branch whose specialist crashed under it (panicked, or was
    /// taken down with a crashing sibling) is retried on the restarted specialist.
    /// 0 (the default) records the crash as the branch's failure.
    pub crash_retries: u32,
    /// Caps on the run's tokens and cost; branches the cap cannot cover are refused.
    pub budget: Option<Budget>,
    /// Under tolerate-partial with a merge: once this much time has passed and the
    /// quorum is met, merge without the stragglers. They keep running; their results
    /// arrive as events and appear in the report marked `late`.
    pub soft_deadline: Option<Duration>,
}

/// Per-run caps. Before dispatch each branch reserves an estimate (its prompt's
/// tokens plus `branch_tokens`); a branch the remaining budget cannot cover ends
/// `Refused` and is never sent. After it ends, the reservation is replaced by what
/// it used. So a run overspends by at most what its calls in flight use beyond
/// their estimates.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Most tokens (input + output) the run may use.
    pub max_tokens: Option<u64>,
    /// Most the run may cost, USD (priced with the runtime's price table).
    pub max_cost_usd: Option<f64>,
    /// Output tokens to reserve per branch, on top of its prompt.
    pub branch_tokens: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_tokens: None,
            max_cost_usd: None,
            branch_tokens: 512,
        }
    }
}

impl RunRequest {
    /// Default overall deadline.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);
    /// Default per-branch timeout.
    pub const DEFAULT_BRANCH_TIMEOUT: Duration = Duration::from_secs(60);
    /// The longest deadline or timeout accepted (30 days).
    pub const LONGEST: Duration = Duration::from_secs(30 * 86_400);

    /// A fan-out of `input` to each agent, fail-fast, default deadlines, no synthesis.
    pub fn fan_out<S: Into<String>>(
        input: impl Into<String>,
        agents: impl IntoIterator<Item = S>,
    ) -> Self {
        Self {
            input: input.into(),
            steps: agents
                .into_iter()
                .map(|a| Step {
                    agent: a.into(),
                    depends_on: Vec::new(),
                })
                .collect(),
            policy: Policy::FailFast,
            deadline: Self::DEFAULT_DEADLINE,
            branch_timeout: Self::DEFAULT_BRANCH_TIMEOUT,
            merge: None,
            crash_retries: 0,
            budget: None,
            soft_deadline: None,
        }
    }

    /// Sets the policy.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the overall deadline.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the per-branch timeout.
    pub fn branch_timeout(mut self, timeout: Duration) -> Self {
        self.branch_timeout = timeout;
        self
    }

    /// Retries a branch up to `n` times on the restarted specialist when the
    /// specialist crashed under it.
    pub fn crash_retries(mut self, n: u32) -> Self {
        self.crash_retries = n;
        self
    }

    /// Merges without stragglers after `soft` if the quorum is met (see the field).
    pub fn soft_deadline(mut self, soft: Duration) -> Self {
        self.soft_deadline = Some(soft);
        self
    }

    /// Caps the run's tokens and cost.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Sets the merge strategy.
    pub fn merge(mut self, merge: MergeStrategy) -> Self {
        self.merge = Some(merge);
        self
    }

    fn validate(&self, roster: &Roster) -> Result<(), RunError> {
        let bad = |reason: String| Err(RunError::InvalidRequest { reason });
        if self.steps.is_empty() {
            return bad("the run has no steps".to_owned());
        }
        for (i, step) in self.steps.iter().enumerate() {
            if !roster.contains(&step.agent) {
                return bad(format!(
                    "step {i} names unknown agent `{}` (known: {})",
                    step.agent,
                    roster.names().join(", ")
                ));
            }
            if let Some(&d) = step.depends_on.iter().find(|&&d| d >= i) {
                return bad(format!(
                    "step {i} depends on step {d}, which does not come before it"
                ));
            }
        }
        if let Policy::TolerantPartial { quorum } = self.policy {
            if quorum == 0 || quorum > self.steps.len() {
                return bad(format!(
                    "quorum {quorum} must be between 1 and the {} steps",
                    self.steps.len()
                ));
            }
        }
        if self.deadline.is_zero() {
            return bad("the deadline must be greater than zero".to_owned());
        }
        let longest = Self::LONGEST;
        for (what, d) in [
            ("deadline", Some(self.deadline)),
            ("branch timeout", Some(self.branch_timeout)),
            ("soft deadline", self.soft_deadline),
        ] {
            if d.is_some_and(|d| d > longest) {
                return bad(format!(
                    "the {what} must be at most {} days",
                    longest.as_secs() / 86_400
                ));
            }
        }
        Ok(())
    }
}

/// Why a run produced no report at all. (A run that ran but did not succeed still
/// produces a report, with [`RunStatus::Failed`].)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The request is malformed.
    #[error("invalid run request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The orchestrator is not running.
    #[error("the orchestrator is not running")]
    OrchestratorGone,
    /// The runtime is shutting down and accepts no new runs.
    #[error("the runtime is shutting down; no new runs are accepted")]
    ShuttingDown,
}

/// Messages to the [`Orchestrator`].
#[derive(Debug)]
#[non_exhaustive]
pub enum OrchestratorMsg {
    /// Start a run; its branch events go to `events` (if given) in completion order,
    /// and its report to `reply`.
    Run {
        /// The run.
        request: RunRequestEnvelope,
        /// Completion-order events.
        events: Option<mpsc::UnboundedSender<RunEvent>>,
        /// Where the report goes.
        reply: RpcReplyPort<Result<RunReport, RunError>>,
    },
    /// Stop accepting runs; answer when the runs in flight have ended, or abort
    /// them (cancelling their branches) once `deadline` has passed. Answers how many
    /// runs had to be aborted.
    Drain {
        /// How long to wait for runs in flight.
        deadline: Duration,
        /// Where to answer.
        reply: RpcReplyPort<usize>,
    },
    #[doc(hidden)]
    Done(RunId),
    #[doc(hidden)]
    DrainDeadline,
}

/// A [`RunRequest`] on its way to the orchestrator (wrapper so `Debug` stays short).
pub struct RunRequestEnvelope(pub RunRequest);

impl std::fmt::Debug for RunRequestEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RunRequest({} steps, {})",
            self.0.steps.len(),
            self.0.policy
        )
    }
}

/// The orchestrator actor; see the module docs.
pub struct Orchestrator;

/// Startup arguments of the [`Orchestrator`].
pub struct OrchestratorArgs {
    /// Routing table of specialists.
    pub roster: Roster,
    /// The synthesiser to merge with.
    pub synthesiser: ActorRef<SynthesiserMsg>,
    /// Name of the provider, for reports.
    pub provider: String,
    /// Whether the provider is simulated, for reports.
    pub simulated: bool,
    /// Prices for the report's costs.
    pub prices: crate::pricing::PriceTable,
    /// Where this actor counts itself.
    pub live: LiveCount,
}

/// The orchestrator's state: its arguments and the runs in flight.
pub struct OrchestratorState {
    args: std::sync::Arc<OrchestratorArgs>,
    runs: TaskTable<RunId>,
    draining: Vec<RpcReplyPort<usize>>,
    refuse_new: bool,
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
            args: std::sync::Arc::new(args),
            runs: TaskTable::default(),
            draining: Vec::new(),
            refuse_new: false,
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
            OrchestratorMsg::Run {
                request: RunRequestEnvelope(request),
                events,
                reply,
            } => {
                if state.refuse_new {
                    let _ = reply.send(Err(RunError::ShuttingDown));
                    return Ok(());
                }
                if let Err(e) = request.validate(&state.args.roster) {
                    let _ = reply.send(Err(e));
                    return Ok(());
                }
                let run = RunId(NEXT_RUN.fetch_add(1, Ordering::Relaxed));
                let args = state.args.clone();
                let span = tracing::info_span!("run", run_id = run.0, steps = request.steps.len());
                let work = async move {
                    let report = {
                        let drive = execute_run(&args, run, request, events.as_ref());
                        tokio::pin!(drive);
                        // Stop the run (and so its branches) if the caller stops waiting.
                        loop {
                            tokio::select! {
                                report = &mut drive => break Some(report),
                                () = tokio::time::sleep(Duration::from_millis(50)) => {
                                    if reply.is_closed() {
                                        tracing::info!("caller gone; cancelling run");
                                        break None;
                                    }
                                }
                            }
                        }
                    };
                    if let Some(report) = report {
                        if let Some(events) = &events {
                            let _ = events.send(RunEvent::RunFinished {
                                run,
                                succeeded: report.status.is_success(),
                            });
                        }
                        let _ = reply.send(Ok(report));
                    }
                    let _ = myself.cast(OrchestratorMsg::Done(run));
                };
                let handle = tokio::spawn(tracing::Instrument::instrument(work, span));
                state.runs.insert(run, handle.abort_handle());
            }
            OrchestratorMsg::Done(run) => {
                state.runs.remove(&run);
                if state.runs.is_empty() {
                    for reply in state.draining.drain(..) {
                        let _ = reply.send(0);
                    }
                }
            }
            OrchestratorMsg::Drain { deadline, reply } => {
                state.refuse_new = true;
                if state.runs.is_empty() {
                    let _ = reply.send(0);
                    return Ok(());
                }
                tracing::info!(
                    runs = state.runs.len(),
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
                let aborted = state.runs.len();
                if aborted > 0 {
                    tracing::warn!(
                        aborted,
                        "drain deadline passed; aborting runs still in flight"
                    );
                }
                state.runs = TaskTable::default();
                state.drain_timer = None;
                for reply in state.draining.drain(..) {
                    let _ = reply.send(aborted);
                }
            }
        }
        Ok(())
    }
}

async fn execute_run(
    args: &OrchestratorArgs,
    run: RunId,
    request: RunRequest,
    events: Option<&mpsc::UnboundedSender<RunEvent>>,
) -> RunReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let deadline = started + request.deadline;
    let (defer, merge_rx) = match (request.soft_deadline, &request.merge, request.policy) {
        (Some(soft), Some(_), Policy::TolerantPartial { .. }) => {
            let (merge_now, merge_rx) = tokio::sync::oneshot::channel();
            let at = started + soft;
            (Some(Defer { at, merge_now }), Some(merge_rx))
        }
        _ => (None, None),
    };
    let schedule = schedule::execute(
        Schedule {
            run,
            input: &request.input,
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
        },
        defer,
    );
    // With a soft deadline the merge may start while stragglers still run.
    let early_merge = async {
        let snapshot = match merge_rx {
            Some(rx) => rx.await,
            None => return None,
        };
        match (snapshot, &request.merge) {
            (Ok(snapshot), Some(strategy)) => {
                let inputs = snapshot
                    .into_iter()
                    .map(|(agent, outcome)| merge_input(agent, outcome.as_ref()))
                    .collect();
                Some(
                    synthesise(
                        args,
                        run,
                        &request.input,
                        strategy.clone(),
                        inputs,
                        started,
                        deadline,
                        events,
                    )
                    .await,
                )
            }
            _ => None,
        }
    };
    let (verdict, early) = tokio::join!(schedule, early_merge);
    let mut failure = verdict.failure;
    let branches: Vec<BranchReport> = verdict
        .records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let mut b = BranchReport::new(i, r.agent, r.outcome, r.started, r.ended);
            b.retries = r.retries;
            b.late = r.late;
            b.cost_usd = b
                .outcome
                .output()
                .and_then(|o| o.model.as_deref())
                .and_then(|m| args.prices.cost(m, &b.usage));
            b
        })
        .collect();

    let merged = match (early, &failure, &request.merge) {
        (Some(merged), _, _) => Some(merged),
        (None, None, Some(strategy)) => {
            let inputs = branches
                .iter()
                .map(|b| merge_input(b.agent.clone(), Some(&b.outcome)))
                .collect();
            Some(
                synthesise(
                    args,
                    run,
                    &request.input,
                    strategy.clone(),
                    inputs,
                    started,
                    deadline,
                    events,
                )
                .await,
            )
        }
        _ => None,
    };
    let synthesis = merged.map(|(report, error)| {
        if let (Some(e), None) = (error, &failure) {
            failure = Some(format!("synthesis failed: {e}"));
        }
        report
    });
    let status = match failure {
        None => RunStatus::Succeeded,
        Some(reason) => RunStatus::Failed { reason },
    };
    RunReport::new(
        run,
        request.policy,
        status,
        args.provider.clone(),
        args.simulated,
        started_at,
        started.elapsed(),
        branches,
        synthesis,
    )
}

/// What the synthesiser is told about one branch: its text, or why there is none
/// (`None`: still running when a soft deadline sent the merge ahead).
fn merge_input(agent: String, outcome: Option<&BranchOutcome>) -> MergeBranch {
    let result = match outcome {
        Some(BranchOutcome::Ok(out)) => Ok(out.text.clone()),
        Some(other) => Err(other.problem().unwrap_or_default()),
        None => Err("deferred: still running at the soft deadline".to_owned()),
    };
    MergeBranch { agent, result }
}

/// Asks the synthesiser to merge `inputs` within what is left of the run deadline.
/// Returns the merge's report, and the error if it failed.
#[allow(clippy::too_many_arguments)]
async fn synthesise(
    args: &OrchestratorArgs,
    run: RunId,
    input: &str,
    strategy: MergeStrategy,
    inputs: Vec<MergeBranch>,
    started: Instant,
    deadline: Instant,
    events: Option<&mpsc::UnboundedSender<RunEvent>>,
) -> (SynthesisReport, Option<String>) {
    if let Some(events) = events {
        let _ = events.send(RunEvent::SynthesisStarted {
            run,
            branches_ok: inputs.iter().filter(|b| b.result.is_ok()).count(),
        });
    }
    let merge_started = started.elapsed();
    let label = strategy.label();
    let remaining = deadline.saturating_duration_since(Instant::now());
    let request = MergeRequest {
        run,
        input: input.to_owned(),
        branches: inputs,
        strategy,
    };
    let result = args
        .synthesiser
        .call(
            |reply| SynthesiserMsg::Merge(Box::new(request), reply),
            Some(remaining),
        )
        .await;
    let merged = match result {
        Ok(CallResult::Success(Ok(s))) => Ok(s),
        Ok(CallResult::Success(Err(e))) => Err(e.to_string()),
        Ok(CallResult::Timeout) => {
            let _ = args.synthesiser.cast(SynthesiserMsg::Cancel(run));
            Err("synthesis timed out (run deadline)".to_owned())
        }
        Ok(CallResult::SenderError) | Err(_) => Err("the synthesiser is not running".to_owned()),
    };
    let ended = started.elapsed();
    let (report, error) = match merged {
        Ok(s) => {
            let mut report = SynthesisReport::new(label, s, merge_started, ended);
            report.cost_usd = report
                .model
                .as_deref()
                .and_then(|m| args.prices.cost(m, &report.usage));
            (report, None)
        }
        Err(e) => (
            SynthesisReport::failed(label, e.clone(), merge_started, ended),
            Some(e),
        ),
    };
    if let Some(events) = events {
        let _ = events.send(RunEvent::SynthesisFinished {
            run,
            text: report.text.clone(),
            error: error.clone(),
        });
    }
    (report, error)
}
