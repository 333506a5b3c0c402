//! Workflow files: a step graph in TOML, checked when it is loaded and turned into a
//! [`RunRequest`] for a task.
//!
//! ```toml
//! name = "research"
//! description = "Gather from three angles, summarise, then criticise"
//! policy = "partial:2"          # the run's policy (optional)
//! merge = "none"                # llm | code | best | none (default: llm)
//!
//! [[steps]]
//! name = "web"                  # unique; templates and reports use it
//! agent = "gatherer"            # or: code = "concat", with options = { … }
//! input = "Find what the web says about: {{task}}"
//! timeout = "30s"               # optional: the step's branch timeout
//! retries = 1                   # optional: run a failed branch again
//! model = "claude-haiku-4-5"    # optional: the model its agent should ask
//!
//! [[steps]]
//! name = "summary"
//! agent = "summariser"
//! after = ["web", "papers"]     # what it waits for
//! input = "Summarise:\n{{step.web}}\n\n{{step.papers}}"
//!
//! [[steps]]
//! name = "each"
//! agent = "summariser"
//! after = ["split"]
//! map = { over = "split", concurrency = 10, policy = "partial:1" }   # or over = "items"
//! input = "Summarise this document:\n{{item}}"
//! ```
//!
//! Checked at load, each error naming the file, the line of the step and its name:
//! unknown keys, duplicate names, `after` or a map naming no step, cycles (and the
//! steps that can never run because of one), a template naming a step that is not
//! upstream, `{{item}}` outside a map. Agents and code functions are checked against a
//! runtime when the workflow runs.

mod load;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::policy::Policy;
use super::request::RunRequest;
use super::step::{Action, Map, MapSource, Step};
use super::synthesis::{MergeStrategy, Scorer};
use super::template::Template;
use crate::provider::OutputSchema;

pub use load::load_dir;

/// How a workflow's end is merged: the outputs of the steps nothing depends on (in a
/// flat fan-out, every step).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkflowMerge {
    /// An LLM merge (made to fit the model's context window).
    #[default]
    Llm,
    /// Deterministic sections, no model call.
    Code,
    /// The output with the most distinct words.
    Best,
    /// No merge: the answer is the output of the steps nothing depends on.
    None,
}

/// The most steps a workflow file may have: its checks and `workflows show` stay
/// well under a second.
pub const MAX_STEPS: usize = 10_000;

/// Where a map step's items come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapOver {
    /// The output of this upstream step.
    Step(String),
    /// The items the caller gives (`--each FILES`).
    Given,
}

/// A map, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowMap {
    /// Where the items come from.
    pub over: MapOver,
    /// Where the list is in a step's JSON output (a JSON pointer), when it is not
    /// the whole output.
    pub path: Option<String>,
    /// Most items in flight at once.
    pub concurrency: usize,
    /// How many items must succeed.
    pub policy: Policy,
}

/// One step, as written.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowStep {
    /// Its name.
    pub name: String,
    /// What it does.
    pub action: Action,
    /// The steps it waits for.
    pub after: Vec<String>,
    /// Its input template.
    pub input: Option<Template>,
    /// Its branch timeout.
    pub timeout: Option<Duration>,
    /// Times a failed branch is run again.
    pub retries: u32,
    /// The model its agent should ask.
    pub model: Option<String>,
    /// The JSON schema its answer must satisfy, if it sets one.
    pub schema: Option<Arc<OutputSchema>>,
    /// Its map.
    pub map: Option<WorkflowMap>,
    /// The line of its `[[steps]]` header.
    pub line: usize,
}

/// A workflow, checked; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct Workflow {
    /// Its name.
    pub name: String,
    /// One line on what it does.
    pub description: String,
    /// The run's policy, if it sets one.
    pub policy: Option<Policy>,
    /// How the end is merged.
    pub merge: WorkflowMerge,
    /// The LLM merge model's context window in tokens, if the workflow sets it.
    pub context_window: Option<u32>,
    /// The steps, in an order where every step comes after what it waits for.
    pub steps: Vec<WorkflowStep>,
    /// The file it came from.
    pub source: PathBuf,
}

/// Why a workflow could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[error("{}{}{}: {problem}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), step.as_ref().map(|s| format!(": step `{s}`")).unwrap_or_default())]
pub struct WorkflowError {
    /// The file.
    pub path: PathBuf,
    /// The line, when known.
    pub line: Option<usize>,
    /// The step, when one is to blame.
    pub step: Option<String>,
    /// What is wrong.
    pub problem: Box<WorkflowProblem>,
}

/// What is wrong with a workflow.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowProblem {
    /// It could not be read (the reason is in the message: the CLI showed "cannot
    /// read it" and no more).
    #[error("cannot read it: {0}")]
    Io(std::io::Error),
    /// Malformed TOML, or a wrong, missing or unknown field.
    #[error("{0}")]
    Parse(String),
    /// A field's value is unusable.
    #[error("field `{field}`: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Two steps share a name.
    #[error("the name is also used on line {first_line}")]
    Duplicate {
        /// Where it was first used.
        first_line: usize,
    },
    /// A reference to a step that does not exist.
    #[error("{what} names `{name}`, which is no step here (steps: {})", known.join(", "))]
    UnknownStep {
        /// Where (`after`, `map.over`, `input`).
        what: &'static str,
        /// The name.
        name: String,
        /// The steps there are.
        known: Vec<String>,
    },
    /// The steps wait for each other in a circle.
    #[error("a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    /// The step waits for a cycle, so it can never run.
    #[error("it can never run: it waits for the cycle through `{0}`")]
    Unreachable(String),
    /// Its input names a step that is not upstream of it.
    #[error(
        "its input uses {{{{step.{0}}}}}, but `{0}` is not upstream of it (add it to `after`)"
    )]
    NotUpstream(String),
    /// Its input uses `{{item}}` but it maps over nothing.
    #[error("its input uses {{{{item}}}}, but it has no `map`")]
    ItemOutsideMap,
    /// A map over the caller's items, and none were given.
    #[error("it maps over the run's items (`--each` on the command line, `items` in the API), and none were given")]
    NoItems,
    /// Items given, but no step maps over them.
    #[error(
        "items were given (`--each`, or `items` in the API), but no step maps over them (map = {{ over = \"items\" }})"
    )]
    ItemsUnused,
    /// More steps than a workflow file may have.
    #[error("{steps} steps, more than the {max} a workflow may have")]
    TooManySteps {
        /// Its steps.
        steps: usize,
        /// The limit ([`MAX_STEPS`]).
        max: usize,
    },
    /// No steps.
    #[error("it has no steps")]
    Empty,
}

impl Workflow {
    /// The run of this workflow on `input`; `items` are what a map over the given
    /// items fans out over (the `--each` files' texts).
    pub fn request(
        &self,
        input: &str,
        items: Option<Vec<String>>,
    ) -> Result<RunRequest, WorkflowError> {
        let index: HashMap<&str, usize> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let mut given = items;
        let mut used_items = false;
        let mut steps = Vec::new();
        for step in &self.steps {
            let map = match &step.map {
                None => None,
                Some(m) => {
                    let over = match &m.over {
                        MapOver::Step(from) => match &m.path {
                            None => MapSource::Step(index[from.as_str()]),
                            Some(path) => MapSource::Within {
                                step: index[from.as_str()],
                                path: path.clone(),
                            },
                        },
                        MapOver::Given => {
                            used_items = true;
                            match given.take() {
                                Some(items) => MapSource::Items(items),
                                None => {
                                    return Err(WorkflowError {
                                        path: self.source.clone(),
                                        line: Some(step.line),
                                        step: Some(step.name.clone()),
                                        problem: Box::new(WorkflowProblem::NoItems),
                                    })
                                }
                            }
                        }
                    };
                    Some(Map {
                        over,
                        concurrency: m.concurrency,
                        policy: m.policy,
                    })
                }
            };
            steps.push(Step {
                name: step.name.clone(),
                action: step.action.clone(),
                depends_on: step.after.iter().map(|a| index[a.as_str()]).collect(),
                input: step.input.clone(),
                timeout: step.timeout,
                retries: step.retries,
                model: step.model.clone(),
                map,
                schema: step.schema.clone(),
            });
        }
        if given.is_some() && !used_items {
            return Err(WorkflowError {
                path: self.source.clone(),
                line: None,
                step: None,
                problem: Box::new(WorkflowProblem::ItemsUnused),
            });
        }
        let mut request = RunRequest::fan_out(input, Vec::<String>::new());
        request.steps = steps;
        if let Some(p) = self.policy {
            request.policy = p;
        }
        request.merge = match self.merge {
            WorkflowMerge::Llm => Some(MergeStrategy::Llm {
                model: None,
                max_tokens: 1024,
                context_window: self.context_window,
            }),
            WorkflowMerge::Code => Some(MergeStrategy::Code),
            WorkflowMerge::Best => Some(MergeStrategy::SelectBest(Scorer::distinct_words())),
            WorkflowMerge::None => None,
        };
        Ok(request)
    }

    /// The agents it asks, each once, in step order.
    pub fn agents(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in &self.steps {
            if let Action::Agent(a) = &s.action {
                if !out.contains(&a.as_str()) {
                    out.push(a);
                }
            }
        }
        out
    }

    /// The steps nothing depends on, in order: what a merge takes, or, with no
    /// merge, the answer.
    pub fn ends(&self) -> Vec<&str> {
        let needed: std::collections::HashSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.after.iter().map(String::as_str))
            .collect();
        self.steps
            .iter()
            .map(|s| s.name.as_str())
            .filter(|name| !needed.contains(name))
            .collect()
    }

    /// The steps by depth: each level waits only for earlier levels, so the steps of
    /// a level can run at the same time.
    pub fn levels(&self) -> Vec<Vec<&str>> {
        let mut depth: HashMap<&str, usize> = HashMap::new();
        for s in &self.steps {
            let d = s
                .after
                .iter()
                .filter_map(|a| depth.get(a.as_str()))
                .map(|d| d + 1)
                .max()
                .unwrap_or(0);
            depth.insert(&s.name, d);
        }
        let mut levels: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        for s in &self.steps {
            levels
                .entry(depth[s.name.as_str()])
                .or_default()
                .push(&s.name);
        }
        levels.into_values().collect()
    }

    /// The longest chain of steps by `cost` (say, each step's expected latency): what
    /// bounds the run's wall time however much runs in parallel.
    pub fn critical_path(&self, cost: impl Fn(&WorkflowStep) -> f64) -> (Vec<&str>, f64) {
        let mut best: HashMap<&str, (f64, Option<&str>)> = HashMap::new();
        for s in &self.steps {
            let (before, via) = s
                .after
                .iter()
                .filter_map(|a| best.get(a.as_str()).map(|(c, _)| (*c, Some(a.as_str()))))
                .fold((0.0, None), |acc, x| if x.0 > acc.0 { x } else { acc });
            best.insert(&s.name, (before + cost(s), via));
        }
        let Some((mut at, &(total, _))) = best
            .iter()
            .max_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .map(|(n, v)| (*n, v))
        else {
            return (Vec::new(), 0.0);
        };
        let mut path = vec![at];
        while let Some((_, Some(prev))) = best.get(at) {
            path.push(prev);
            at = prev;
        }
        path.reverse();
        (path, total)
    }
}

#[cfg(test)]
mod tests;
