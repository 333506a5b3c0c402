//! One step of a run: [`Step`] (an [`Action`], its dependencies, input, limits,
//! schema), a map step's [`Map`] over a [`MapSource`], and a [`SubWorkflow`] a step
//! runs whole.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::budget::Budget;
use super::outcome::opt_secs;
use super::policy::Policy;
use super::synthesis::MergeStrategy;
use super::template::Template;
use crate::provider::OutputSchema;

/// The most retries a step may have: each is another billed call (a probe once sent
/// 1,001 calls in 0.17 s with `retries = 1000`).
pub(crate) const MAX_RETRIES: u32 = 10;

/// What a step does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Ask the specialist with this routing name.
    Agent(String),
    /// Run the code function registered under this name (see [`CodeFn`](crate::run::CodeFn)),
    /// with these options.
    Code {
        /// The function's name.
        function: String,
        /// Its options (a JSON object; what a function reads is its own business).
        #[serde(default)]
        options: serde_json::Value,
    },
    /// Run this workflow whole, as a run of its own whose input is the branch's
    /// input (in a map, the item): its steps, its policy, its merge. The branch's
    /// answer is the merged text (without a merge, the outputs of the workflow's
    /// last steps); the report keeps the nested run's own report. Not serialisable
    /// (a merge strategy may hold a function).
    #[serde(skip)]
    Workflow(Arc<SubWorkflow>),
}

/// A workflow a step runs whole (see [`Action::Workflow`]): a
/// [`RunRequest`](crate::run::RunRequest) without its input and deadline, which each
/// branch gives.
#[derive(Clone, Debug)]
pub struct SubWorkflow {
    /// Its name, for reports and errors.
    pub name: String,
    /// Its steps.
    pub steps: Vec<Step>,
    /// Its policy for failed branches.
    pub policy: Policy,
    /// Each of its branches' timeout (capped by the step's deadline).
    pub branch_timeout: Duration,
    /// How its ends are merged (`None`: not merged).
    pub merge: Option<MergeStrategy>,
    /// Each run's caps (one run per branch, so per item in a map).
    pub budget: Option<Budget>,
    /// Warm the prompt cache with its first branch (see
    /// [`RunRequest::cache_warm`](crate::run::RunRequest::cache_warm)).
    pub cache_warm: bool,
    /// Merge without stragglers after this long (see
    /// [`RunRequest::soft_deadline`](crate::run::RunRequest::soft_deadline)).
    pub soft_deadline: Option<Duration>,
}

impl SubWorkflow {
    /// One line on it, for a model choosing a workflow: its steps, and its merge.
    pub fn about(&self) -> String {
        let steps: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        let merged = if self.merge.is_some() { ", merged" } else { "" };
        format!("{} step(s): {}{merged}", steps.len(), steps.join(", "))
    }

    /// A workflow of these steps: fail-fast, a 60 s branch timeout (a request's
    /// default), no merge.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Self {
        Self {
            name: name.into(),
            steps,
            policy: Policy::FailFast,
            branch_timeout: Duration::from_secs(60),
            merge: None,
            budget: None,
            cache_warm: false,
            soft_deadline: None,
        }
    }
}

/// Two sub-workflows are equal when they are the same value or have the same
/// settings and kind of merge (a merge's scorer function cannot be compared).
impl PartialEq for SubWorkflow {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
            || (self.name == other.name
                && self.steps == other.steps
                && self.policy == other.policy
                && self.branch_timeout == other.branch_timeout
                && self.budget == other.budget
                && self.cache_warm == other.cache_warm
                && self.soft_deadline == other.soft_deadline
                && self.merge.as_ref().map(MergeStrategy::label)
                    == other.merge.as_ref().map(MergeStrategy::label))
    }
}

/// Fanning one step out over a list: one branch per item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Map {
    /// Where the items come from.
    pub over: MapSource,
    /// Most items in flight at once.
    pub concurrency: usize,
    /// How many items must succeed for the step to succeed (`FailFast`: all; the
    /// first failure cancels the rest).
    pub policy: Policy,
}

/// Where a map step's items come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapSource {
    /// The output of this earlier step: a JSON array (of strings, or of anything,
    /// each item then its JSON), else one item per non-empty line; a JSON object is
    /// an error (use [`MapSource::Within`] for a list inside one).
    Step(usize),
    /// These items, as given (for instance, the text of each of a set of files).
    Items(Vec<String>),
    /// The JSON array at `path` (a JSON pointer, `/items`) in the output of this
    /// earlier step, which must be JSON.
    Within {
        /// The step.
        step: usize,
        /// Where the array is.
        path: String,
    },
}

/// One step of a run: a name, what it does, the steps whose outputs it needs first,
/// and how its input is built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Unique within the run; templates and reports name the step by it.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// Indices of earlier steps this one waits for (empty in a fan-out).
    #[serde(default)]
    pub depends_on: Vec<usize>,
    /// Its input; without one, the run's input followed by its upstream outputs.
    #[serde(default)]
    pub input: Option<Template>,
    /// Its own branch timeout (else the run's).
    #[serde(default, with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Times a branch of this step that fails or times out is run again (at most
    /// 10; each retry waits a little longer than the one before, and
    /// reserves from the run's budget like a first call).
    #[serde(default)]
    pub retries: u32,
    /// The model its agent should ask (else the agent's own choice).
    #[serde(default)]
    pub model: Option<String>,
    /// Fan out over a list: one branch per item.
    #[serde(default)]
    pub map: Option<Map>,
    /// The JSON schema its answer must satisfy: asked of the model (a JSON-schema
    /// response format, or a forced tool call) and checked, with one more try on an
    /// answer that does not satisfy it.
    #[serde(default)]
    pub schema: Option<Arc<OutputSchema>>,
}

impl Step {
    /// A step that asks the specialist `agent` (and is named after it).
    pub fn agent(agent: impl Into<String>) -> Self {
        let agent = agent.into();
        Self {
            name: agent.clone(),
            action: Action::Agent(agent),
            depends_on: Vec::new(),
            input: None,
            timeout: None,
            retries: 0,
            model: None,
            map: None,
            schema: None,
        }
    }

    /// A step that runs the code function `function` with `options`.
    pub fn code(function: impl Into<String>, options: serde_json::Value) -> Self {
        let function = function.into();
        Self {
            name: function.clone(),
            action: Action::Code { function, options },
            ..Self::agent("")
        }
    }

    /// Names the step.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Waits for these earlier steps.
    pub fn after(mut self, steps: impl IntoIterator<Item = usize>) -> Self {
        self.depends_on = steps.into_iter().collect();
        self
    }

    /// Builds its input from `template`.
    pub fn input(mut self, template: Template) -> Self {
        self.input = Some(template);
        self
    }

    /// Fans it out over a list.
    pub fn map(mut self, map: Map) -> Self {
        self.map = Some(map);
        self
    }

    /// Asks for (and checks) an answer of this shape.
    pub fn schema(mut self, schema: OutputSchema) -> Self {
        self.schema = Some(Arc::new(schema));
        self
    }

    /// A step that runs `workflow` whole (and is named after it).
    pub fn workflow(workflow: SubWorkflow) -> Self {
        Self {
            name: workflow.name.clone(),
            action: Action::Workflow(Arc::new(workflow)),
            ..Self::agent("")
        }
    }

    /// The specialist it asks, if it asks one.
    pub fn agent_name(&self) -> Option<&str> {
        match &self.action {
            Action::Agent(a) => Some(a),
            Action::Code { .. } | Action::Workflow(_) => None,
        }
    }

    /// The agent's name, `code:FUNCTION` or `workflow:NAME`.
    pub fn doer(&self) -> String {
        match &self.action {
            Action::Agent(a) => a.clone(),
            Action::Code { function, .. } => format!("code:{function}"),
            Action::Workflow(w) => format!("workflow:{}", w.name),
        }
    }
}
