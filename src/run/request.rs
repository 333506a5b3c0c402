//! What to run: [`RunRequest`] (steps, [`Policy`], deadlines, [`Budget`], merge), and
//! why a request is refused ([`RequestError`]) or produces no report ([`RunError`]).
//! Plain data: the scheduler and the orchestrator read it, nothing here acts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::policy::Policy;
use super::step::{Action, MapSource, Step, SubWorkflow};
use super::synthesis::MergeStrategy;
use crate::agent::AgentOutput;

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
    /// How to merge the ends of the graph (the steps nothing depends on; in a flat
    /// fan-out, every step); `None` skips synthesis.
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
    /// Outputs of branches that already succeeded in an earlier attempt at this
    /// run (a run resumed after a crash or a restart): they are not called again,
    /// their output is taken as it was, and the report marks them `reused`.
    pub reuse: Vec<Reuse>,
    /// Warm the provider's prompt cache first: the first agent branch goes alone, the
    /// others when its answer starts to stream (or it ends), so that they read the
    /// shared prefix from the cache instead of each paying for it. Costs the first
    /// branch's time to first token; pays off on providers whose cache an answer
    /// fills for every later call (Anthropic, OpenAI).
    pub cache_warm: bool,
}

/// One branch's output from an earlier attempt at the same run (see
/// [`RunRequest::reuse`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reuse {
    /// The step's position in the request.
    pub index: u32,
    /// For a map step, the item (`None`: the step itself).
    pub item: Option<u32>,
    /// What it answered.
    pub output: AgentOutput,
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
            steps: agents.into_iter().map(Step::agent).collect(),
            policy: Policy::FailFast,
            deadline: Self::DEFAULT_DEADLINE,
            branch_timeout: Self::DEFAULT_BRANCH_TIMEOUT,
            merge: None,
            crash_retries: 0,
            budget: None,
            soft_deadline: None,
            reuse: Vec::new(),
            cache_warm: false,
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

    /// Takes these branches' outputs from an earlier attempt at this run instead of
    /// calling them again (see the field).
    pub fn reuse(mut self, outputs: impl IntoIterator<Item = Reuse>) -> Self {
        self.reuse = outputs.into_iter().collect();
        self
    }

    /// Warms the prompt cache with the first branch before the others (see the field).
    pub fn cache_warm(mut self, on: bool) -> Self {
        self.cache_warm = on;
        self
    }

    /// Sets the merge strategy.
    pub fn merge(mut self, merge: MergeStrategy) -> Self {
        self.merge = Some(merge);
        self
    }

    /// The run one branch of a step that runs `flow` whole makes: `flow` on
    /// `input`, within `deadline`.
    pub(crate) fn for_branch(flow: &SubWorkflow, input: String, deadline: Duration) -> Self {
        Self {
            input,
            steps: flow.steps.clone(),
            policy: flow.policy,
            deadline,
            branch_timeout: flow.branch_timeout.min(deadline),
            merge: flow.merge.clone(),
            crash_retries: 0,
            budget: flow.budget,
            soft_deadline: flow.soft_deadline,
            reuse: Vec::new(),
            cache_warm: flow.cache_warm,
        }
    }

    /// This request as a workflow a step runs whole ([`Step::workflow`]) under
    /// `name`: its steps, policy, branch timeout, merge, budget, soft deadline and
    /// cache warm-up. Its input, deadline and crash retries are the branch's (the
    /// step's input and timeout, the parent run's crash retries).
    pub fn into_workflow(self, name: impl Into<String>) -> SubWorkflow {
        SubWorkflow {
            name: name.into(),
            steps: self.steps,
            policy: self.policy,
            branch_timeout: self.branch_timeout,
            merge: self.merge,
            budget: self.budget,
            cache_warm: self.cache_warm,
            soft_deadline: self.soft_deadline,
        }
    }

    /// Checks the request against the agents known to the runtime, before anything
    /// is dispatched.
    pub(crate) fn validate(&self, known: &Known<'_>) -> Result<(), RequestError> {
        if self.steps.is_empty() {
            return Err(RequestError::NoSteps);
        }
        // Names may repeat (a fan-out may ask one agent many times), but not the ones
        // a template refers to.
        let mut names: std::collections::HashMap<&str, Vec<usize>> = Default::default();
        for (i, step) in self.steps.iter().enumerate() {
            names.entry(step.name.as_str()).or_default().push(i);
        }
        for (i, step) in self.steps.iter().enumerate() {
            let bad = |problem| RequestError::BadStep {
                step: i,
                name: step.name.clone(),
                problem,
            };
            match &step.action {
                Action::Agent(agent) if !known.agents.iter().any(|k| k == agent) => {
                    return Err(RequestError::UnknownAgent {
                        step: i,
                        agent: agent.clone(),
                        known: known.agents.to_vec(),
                    });
                }
                Action::Code { function, .. } if !known.code.iter().any(|k| k == function) => {
                    return Err(bad(StepProblem::UnknownCode {
                        function: function.clone(),
                        known: known.code.to_vec(),
                    }));
                }
                Action::Workflow(flow) => {
                    let inner = Self::for_branch(flow, String::new(), self.branch_timeout);
                    if let Err(problem) = inner.validate(known) {
                        return Err(bad(StepProblem::Workflow {
                            workflow: flow.name.clone(),
                            problem: Box::new(problem),
                        }));
                    }
                }
                _ => {}
            }
            if let Some(&d) = step.depends_on.iter().find(|&&d| d >= i) {
                return Err(RequestError::BadDependency { step: i, on: d });
            }
            if let Some(template) = &step.input {
                for upstream in template.steps() {
                    match names.get(upstream).map(Vec::as_slice) {
                        Some([u]) if self.is_ancestor(*u, i) => {}
                        Some([first, ..]) if names[upstream].len() > 1 => {
                            return Err(bad(StepProblem::DuplicateName {
                                name: upstream.to_owned(),
                                first: *first,
                            }));
                        }
                        _ => return Err(bad(StepProblem::NotUpstream(upstream.to_owned()))),
                    }
                }
                if template.uses_item() && step.map.is_none() {
                    return Err(bad(StepProblem::ItemOutsideMap));
                }
            }
            if let Some(map) = &step.map {
                if map.concurrency == 0 {
                    return Err(bad(StepProblem::MapConcurrency));
                }
                if let MapSource::Step(from) = map.over {
                    if !step.depends_on.contains(&from) {
                        return Err(bad(StepProblem::MapNotUpstream(from)));
                    }
                }
                if let Policy::TolerantPartial { quorum: 0 } = map.policy {
                    return Err(bad(StepProblem::MapQuorum));
                }
            }
            if step
                .timeout
                .is_some_and(|d| d.is_zero() || d > Self::LONGEST)
            {
                return Err(bad(StepProblem::Timeout));
            }
        }
        if let Policy::TolerantPartial { quorum } = self.policy {
            if quorum == 0 || quorum > self.steps.len() {
                return Err(RequestError::BadQuorum {
                    quorum,
                    steps: self.steps.len(),
                });
            }
        }
        if self.deadline.is_zero() {
            return Err(RequestError::ZeroDeadline);
        }
        if self.soft_deadline.is_some() && (self.merge.is_none() || self.policy == Policy::FailFast)
        {
            return Err(RequestError::SoftDeadlineUnused);
        }
        if let Some(cap) = self.budget.and_then(|b| b.max_cost_usd) {
            if !cap.is_finite() || cap < 0.0 {
                return Err(RequestError::BadCostCap(cap));
            }
        }
        for (what, d) in [
            (Limit::Deadline, Some(self.deadline)),
            (Limit::BranchTimeout, Some(self.branch_timeout)),
            (Limit::SoftDeadline, self.soft_deadline),
        ] {
            if d.is_some_and(|d| d > Self::LONGEST) {
                return Err(RequestError::TooLong {
                    what,
                    max_days: Self::LONGEST.as_secs() / 86_400,
                });
            }
        }
        for r in &self.reuse {
            let step = self.steps.get(r.index as usize);
            let fits = step.is_some_and(|s| s.map.is_some() == r.item.is_some());
            if !fits {
                return Err(RequestError::BadReuse {
                    index: r.index,
                    item: r.item,
                });
            }
        }
        Ok(())
    }

    /// True if step `a` is among step `b`'s transitive dependencies.
    fn is_ancestor(&self, a: usize, b: usize) -> bool {
        let mut stack = self.steps[b].depends_on.clone();
        let mut seen = vec![false; self.steps.len()];
        while let Some(s) = stack.pop() {
            if s == a {
                return true;
            }
            if s < seen.len() && !seen[s] {
                seen[s] = true;
                stack.extend(self.steps[s].depends_on.iter().copied());
            }
        }
        false
    }
}

/// What a runtime has, for checking a request: its specialists and code functions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Known<'a> {
    pub agents: &'a [String],
    pub code: &'a [String],
}

/// What is wrong with one step of a request.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StepProblem {
    /// Its input names a step whose name more than one step has.
    #[error("its input names step `{name}`, but more than one step has that name (the first is step {first})")]
    DuplicateName {
        /// The name.
        name: String,
        /// The first step with it.
        first: usize,
    },
    /// No code function has this name.
    #[error("no code function is named `{function}` (known: {})", known.join(", "))]
    UnknownCode {
        /// The name.
        function: String,
        /// The functions the runtime has.
        known: Vec<String>,
    },
    /// Its input names a step that is not upstream of it.
    #[error("its input names step `{0}`, which is not upstream of it (add it to `after`)")]
    NotUpstream(String),
    /// Its input uses `{{item}}` but it is not a map step.
    #[error("its input uses {{{{item}}}}, but it maps over nothing")]
    ItemOutsideMap,
    /// A map with a concurrency of 0.
    #[error("a map's concurrency must be at least 1")]
    MapConcurrency,
    /// A map whose quorum is 0.
    #[error("a map's quorum must be at least 1")]
    MapQuorum,
    /// The workflow it runs whole is not a valid request.
    #[error("its workflow `{workflow}` is not valid: {problem}")]
    Workflow {
        /// The workflow's name.
        workflow: String,
        /// What is wrong with it.
        problem: Box<RequestError>,
    },
    /// A map over a step it does not wait for.
    #[error("it maps over step {0}, which it does not wait for")]
    MapNotUpstream(usize),
    /// A timeout of zero or beyond the longest accepted.
    #[error("its timeout must be more than zero and at most 30 days")]
    Timeout,
}

/// Which duration of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// [`RunRequest::deadline`].
    Deadline,
    /// [`RunRequest::branch_timeout`].
    BranchTimeout,
    /// [`RunRequest::soft_deadline`].
    SoftDeadline,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Deadline => "deadline",
            Limit::BranchTimeout => "branch timeout",
            Limit::SoftDeadline => "soft deadline",
        })
    }
}

/// A duration that could not be parsed (see [`parse_duration`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Not a duration.
    #[error("`{text}`: {reason} (try 30s, 2m or 500ms)")]
    Unreadable {
        /// The text.
        text: String,
        /// The parser's reason.
        reason: String,
    },
    /// Zero: a deadline or timeout of nothing.
    #[error("`{0}`: must be greater than zero")]
    Zero(String),
    /// Longer than [`RunRequest::LONGEST`].
    #[error("`{text}`: must be at most {max_days} days")]
    TooLong {
        /// The text.
        text: String,
        /// The longest accepted, in days.
        max_days: u64,
    },
}

/// Parses a deadline or timeout with its unit (`90s`, `2m`, `1500ms`, `1h 30m`): more
/// than zero and at most [`RunRequest::LONGEST`].
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| DurationError::Unreadable {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    if d.is_zero() {
        return Err(DurationError::Zero(text.to_owned()));
    }
    if d > RunRequest::LONGEST {
        return Err(DurationError::TooLong {
            text: text.to_owned(),
            max_days: RunRequest::LONGEST.as_secs() / 86_400,
        });
    }
    Ok(d)
}

/// What is wrong with a [`RunRequest`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request has no step.
    #[error("the run has no steps")]
    NoSteps,
    /// A reused output names no step of this request (or an item of a step that is
    /// not a map, or no item of one that is).
    #[error("a reused output names step {index}{}, which this run does not have", .item.map(|k| format!(" item {k}")).unwrap_or_default())]
    BadReuse {
        /// The step it named.
        index: u32,
        /// The item it named.
        item: Option<u32>,
    },
    /// A step names an agent the runtime does not have.
    #[error("step {step} names unknown agent `{agent}` (known: {})", known.join(", "))]
    UnknownAgent {
        /// The step's index.
        step: usize,
        /// The name it gave.
        agent: String,
        /// The names the runtime knows, sorted.
        known: Vec<String>,
    },
    /// A step is malformed.
    #[error("step {step} (`{name}`): {problem}")]
    BadStep {
        /// The step's index.
        step: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        problem: StepProblem,
    },
    /// A step depends on itself or on a later step.
    #[error("step {step} depends on step {on}, which does not come before it")]
    BadDependency {
        /// The step's index.
        step: usize,
        /// The step it names.
        on: usize,
    },
    /// The quorum is 0 or more than the steps.
    #[error("quorum {quorum} must be between 1 and the {steps} steps")]
    BadQuorum {
        /// The quorum asked.
        quorum: usize,
        /// The steps in the request.
        steps: usize,
    },
    /// The overall deadline is zero.
    #[error("the deadline must be greater than zero")]
    ZeroDeadline,
    /// A soft deadline lets the merge go ahead without stragglers: it needs a merge
    /// and a tolerate-partial policy (under fail-fast every branch must succeed).
    #[error("a soft deadline needs a merge and a partial policy (partial:K); under fail-fast or without a merge it would do nothing")]
    SoftDeadlineUnused,
    /// The cost cap is negative, infinite or not a number.
    #[error("the cost cap must be a finite number of dollars ≥ 0, not {0}")]
    BadCostCap(f64),
    /// A duration is longer than [`RunRequest::LONGEST`].
    #[error("the {what} must be at most {max_days} days")]
    TooLong {
        /// Which duration.
        what: Limit,
        /// The longest accepted, in days.
        max_days: u64,
    },
}

/// Why a run produced no report at all. (A run that ran but did not succeed still
/// produces a report whose status says it failed.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The request is malformed.
    #[error("invalid run request: {0}")]
    InvalidRequest(#[from] RequestError),
    /// The orchestrator is not running.
    #[error("the orchestrator is not running")]
    OrchestratorGone,
    /// The runtime is shutting down and accepts no new runs.
    #[error("the runtime is shutting down; no new runs are accepted")]
    ShuttingDown,
}
