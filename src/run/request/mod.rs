//! What to run: [`RunRequest`] (steps, [`Policy`], deadlines, [`Budget`], merge), how
//! it is checked before anything is dispatched (`validate`), and why a request is
//! refused ([`RequestError`]) or produces no report ([`RunError`]) (`error`).
//! Plain data: the scheduler and the orchestrator read it, nothing here acts.

mod error;
mod graph;
mod validate;

pub use error::{parse_duration, DurationError, Limit, RequestError, RunError, StepProblem};
pub use graph::{Graph, GraphError};
pub(crate) use validate::Known;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::policy::Policy;
use super::step::{Step, SubWorkflow};
use super::synthesis::MergeStrategy;
use crate::agent::tools::{Approvals, Replay, ToolKeeper};
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
    /// The most items one map step may fan out to (`None`: no limit). A map over
    /// an upstream answer gets its width from a model, which a task can steer: past
    /// this it fails, saying so, before any item is called.
    pub max_items: Option<usize>,
    /// Where its branches' tool loops keep their turns as they happen (see
    /// [`crate::agent::tools::durable`]); `None`: nowhere.
    pub tool_journal: Option<ToolKeeper>,
    /// Who decides its tool calls that need a person's approval (see
    /// [`crate::agent::tools::approval`]); `None`: such calls are rejected.
    pub approver: Option<Approvals>,
    /// Tool turns its branches kept in an earlier attempt at this run: a branch
    /// started again answers them from here (see
    /// [`crate::agent::tools::durable`]).
    pub replay: Vec<Replay>,
    /// How deep it is nested: 0 from outside, one more for each `run_workflow`
    /// between ([`crate::agent::tools::delegate`]).
    pub(crate) depth: u32,
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
    /// Which run answered it (and paid for it).
    #[serde(default)]
    pub from: Reused,
}

/// Where a reused answer came from, which says whose spend it was.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reused {
    /// This run answered it before it was resumed (after a crash or a restart):
    /// this run paid for it, and its totals count it.
    BeforeResume,
    /// An earlier run answered it (a repair takes its answers): that run paid for
    /// it, and this one's totals do not count it again.
    #[default]
    EarlierRun,
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
            max_items: None,
            tool_journal: None,
            approver: None,
            replay: Vec::new(),
            depth: 0,
        }
    }

    /// Caps how many items one map step may fan out to (see
    /// [`RunRequest::max_items`]).
    pub fn max_items(mut self, max: usize) -> Self {
        self.max_items = Some(max);
        self
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

    /// Keeps its branches' tool turns in `journal` (see the field).
    pub fn tool_journal(mut self, journal: ToolKeeper) -> Self {
        self.tool_journal = Some(journal);
        self
    }

    /// Has `approver` decide its tool calls that need approval (see the field).
    pub fn approver(mut self, approver: Approvals) -> Self {
        self.approver = Some(approver);
        self
    }

    /// Answers its branches' tool turns kept earlier from `turns` (see the field).
    pub fn replay(mut self, turns: impl IntoIterator<Item = Replay>) -> Self {
        self.replay = turns.into_iter().collect();
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
            max_items: None,
            tool_journal: None,
            approver: None,
            replay: Vec::new(),
            depth: 0,
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
}
