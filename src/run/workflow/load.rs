//! Reading a workflow file and checking its graph (see the parent module's docs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::{
    MapOver, Workflow, WorkflowError, WorkflowMap, WorkflowMerge, WorkflowProblem, WorkflowStep,
};
use crate::agent::structured;
use crate::provider::OutputSchema;
use crate::run::code::check_builtin_options;
use crate::run::policy::Policy;
use crate::run::request::parse_duration;
use crate::run::step::Action;
use crate::run::template::Template;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkflow {
    name: String,
    #[serde(default)]
    description: String,
    policy: Option<String>,
    merge: Option<String>,
    context_window: Option<u32>,
    #[serde(default)]
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    agent: Option<String>,
    code: Option<String>,
    #[serde(default)]
    options: Option<toml::Value>,
    #[serde(default)]
    after: Vec<String>,
    input: Option<String>,
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    model: Option<String>,
    map: Option<RawMap>,
    schema: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMap {
    over: String,
    path: Option<String>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    policy: Option<String>,
}

fn default_concurrency() -> usize {
    10
}

/// The line of each `[[steps]]` header, in order.
fn step_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "[[steps]]")
        .map(|(n, _)| n + 1)
        .collect()
}

/// A step's name as a schema name (the OpenAI `json_schema.name` and the Anthropic
/// tool name take letters, digits, `_` and `-`).
fn schema_name(step: &str) -> String {
    step.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn toml_to_json(v: toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

impl Workflow {
    /// Parses and checks a workflow file's `text` (see the module docs).
    pub fn parse(path: &Path, text: &str) -> Result<Self, WorkflowError> {
        let err = |line, step: Option<&str>, problem| WorkflowError {
            path: path.to_owned(),
            line,
            step: step.map(str::to_owned),
            problem: Box::new(problem),
        };
        let raw: RawWorkflow = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            err(
                line,
                None,
                WorkflowProblem::Parse(e.message().trim().to_owned()),
            )
        })?;
        if raw.steps.is_empty() {
            return Err(err(None, None, WorkflowProblem::Empty));
        }
        if raw.steps.len() > super::MAX_STEPS {
            return Err(err(
                None,
                None,
                WorkflowProblem::TooManySteps {
                    steps: raw.steps.len(),
                    max: super::MAX_STEPS,
                },
            ));
        }
        let lines = step_lines(text);
        let line_of = |i: usize| lines.get(i).copied();
        let policy = |field, s: &str, line, step: Option<&str>| {
            s.parse::<Policy>().map_err(|e| {
                err(
                    line,
                    step,
                    WorkflowProblem::Invalid {
                        field,
                        reason: e.to_string(),
                    },
                )
            })
        };
        let run_policy = raw
            .policy
            .as_deref()
            .map(|p| policy("policy", p, None, None))
            .transpose()?;
        let merge = match raw.merge.as_deref() {
            None | Some("llm") => WorkflowMerge::Llm,
            Some("code") => WorkflowMerge::Code,
            Some("best") => WorkflowMerge::Best,
            Some("none") => WorkflowMerge::None,
            Some(other) => {
                return Err(err(
                    None,
                    None,
                    WorkflowProblem::Invalid {
                        field: "merge",
                        reason: format!("`{other}`: use llm, code, best or none"),
                    },
                ))
            }
        };
        if raw.context_window == Some(0) {
            return Err(err(
                None,
                None,
                WorkflowProblem::Invalid {
                    field: "context_window",
                    reason: "must be at least 1 token".to_owned(),
                },
            ));
        }
        let mut steps = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, s) in raw.steps.into_iter().enumerate() {
            let line = line_of(i);
            let name = s.name.clone();
            let at = Some(name.as_str());
            let invalid =
                |field, reason: String| err(line, at, WorkflowProblem::Invalid { field, reason });
            if let Some(first) = seen.insert(name.clone(), i) {
                return Err(err(
                    line,
                    at,
                    WorkflowProblem::Duplicate {
                        first_line: line_of(first).unwrap_or(0),
                    },
                ));
            }
            let action = match (s.agent, s.code) {
                (Some(agent), None) => Action::Agent(agent),
                (None, Some(function)) => Action::Code {
                    function,
                    options: s
                        .options
                        .map(toml_to_json)
                        .unwrap_or(serde_json::Value::Null),
                },
                _ => {
                    return Err(invalid(
                        "agent",
                        "give `agent` or `code`, exactly one".to_owned(),
                    ))
                }
            };
            if let Action::Code { function, options } = &action {
                check_builtin_options(function, options, &s.after)
                    .map_err(|e| invalid("options", e.to_string()))?;
            }
            let input = s
                .input
                .as_deref()
                .map(Template::parse)
                .transpose()
                .map_err(|e| invalid("input", e.to_string()))?;
            let timeout = s
                .timeout
                .as_deref()
                .map(parse_duration)
                .transpose()
                .map_err(|e| invalid("timeout", e.to_string()))?;
            let map = match s.map {
                None => None,
                Some(m) => {
                    if m.concurrency == 0 {
                        return Err(invalid("map.concurrency", "must be at least 1".to_owned()));
                    }
                    let over = match m.over.as_str() {
                        "items" => MapOver::Given,
                        step => MapOver::Step(step.to_owned()),
                    };
                    match (&over, &m.path) {
                        (MapOver::Given, Some(_)) => {
                            return Err(invalid(
                                "map.path",
                                "is for a map over a step's output, not over `items`".to_owned(),
                            ))
                        }
                        (_, Some(p)) if !p.starts_with('/') => {
                            return Err(invalid(
                                "map.path",
                                format!("`{p}` is not a JSON pointer (they start with `/`, e.g. \"/items\")"),
                            ))
                        }
                        _ => {}
                    }
                    let policy = match m.policy.as_deref() {
                        Some(p) => policy("map.policy", p, line, at)?,
                        None => Policy::FailFast,
                    };
                    Some(WorkflowMap {
                        over,
                        path: m.path,
                        concurrency: m.concurrency,
                        policy,
                    })
                }
            };
            let schema = match s.schema {
                None => None,
                Some(raw) => {
                    if !matches!(action, Action::Agent(_)) {
                        return Err(invalid(
                            "schema",
                            "only an agent step asks a model for a shaped answer".to_owned(),
                        ));
                    }
                    let schema = toml_to_json(raw);
                    structured::usable(&schema).map_err(|e| invalid("schema", e))?;
                    Some(Arc::new(OutputSchema {
                        name: schema_name(&name),
                        schema,
                    }))
                }
            };
            let mut after = s.after;
            if let Some(WorkflowMap {
                over: MapOver::Step(from),
                ..
            }) = &map
            {
                if !after.contains(from) {
                    after.push(from.clone());
                }
            }
            steps.push(WorkflowStep {
                name,
                action,
                after,
                input,
                timeout,
                retries: s.retries,
                model: s.model,
                map,
                schema,
                line: line.unwrap_or(0),
            });
        }
        let workflow = Self {
            name: raw.name,
            description: raw.description,
            policy: run_policy,
            merge,
            context_window: raw.context_window,
            steps,
            source: path.to_owned(),
        };
        workflow.check()
    }

    /// Reads and parses a workflow file.
    pub fn load(path: &Path) -> Result<Self, WorkflowError> {
        let text = crate::agent::spec::read_small_file(path).map_err(|e| WorkflowError {
            path: path.to_owned(),
            line: None,
            step: None,
            problem: Box::new(WorkflowProblem::Io(e)),
        })?;
        Self::parse(path, &text)
    }

    /// Checks the graph and orders the steps so each comes after what it waits for.
    fn check(mut self) -> Result<Self, WorkflowError> {
        let err = |step: &WorkflowStep, problem| WorkflowError {
            path: self.source.clone(),
            line: Some(step.line),
            step: Some(step.name.clone()),
            problem: Box::new(problem),
        };
        let names: Vec<String> = self.steps.iter().map(|s| s.name.clone()).collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        for step in &self.steps {
            // Named first: a map's step is also waited for, and was blamed on `after`.
            if let Some(WorkflowMap {
                over: MapOver::Step(from),
                ..
            }) = &step.map
            {
                if !index.contains_key(from.as_str()) {
                    return Err(err(
                        step,
                        WorkflowProblem::UnknownStep {
                            what: "`map.over`",
                            name: from.clone(),
                            known: names.clone(),
                        },
                    ));
                }
            }
            for a in &step.after {
                if !index.contains_key(a.as_str()) {
                    return Err(err(
                        step,
                        WorkflowProblem::UnknownStep {
                            what: "`after`",
                            name: a.clone(),
                            known: names.clone(),
                        },
                    ));
                }
            }
            if let Some(t) = &step.input {
                for used in t.steps() {
                    if !index.contains_key(used) {
                        return Err(err(
                            step,
                            WorkflowProblem::UnknownStep {
                                what: "its input",
                                name: used.to_owned(),
                                known: names.clone(),
                            },
                        ));
                    }
                }
                if t.uses_item() && step.map.is_none() {
                    return Err(err(step, WorkflowProblem::ItemOutsideMap));
                }
            }
        }
        // Order: Kahn's algorithm, stable in file order; what is left is a cycle or
        // waits for one.
        let deps: Vec<Vec<usize>> = self
            .steps
            .iter()
            .map(|s| s.after.iter().map(|a| index[a.as_str()]).collect())
            .collect();
        // Each step's count of unplaced dependencies, and who waits on each; the
        // lowest-numbered ready step goes next. (Looking for the next ready step
        // over all steps each time was quadratic: 50,000 steps took 11 s.)
        let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, d) in deps.iter().enumerate() {
            for &on in d {
                dependents[on].push(i);
            }
        }
        let mut ready: std::collections::BTreeSet<usize> =
            (0..deps.len()).filter(|&i| waiting[i] == 0).collect();
        let mut placed = vec![false; deps.len()];
        let mut order = Vec::new();
        while let Some(i) = ready.pop_first() {
            placed[i] = true;
            order.push(i);
            for &next in &dependents[i] {
                waiting[next] -= 1;
                if waiting[next] == 0 {
                    ready.insert(next);
                }
            }
        }
        if order.len() < deps.len() {
            let stuck: Vec<usize> = (0..deps.len()).filter(|&i| !placed[i]).collect();
            // Walk the stuck steps' unplaced dependencies until one repeats: a cycle.
            let mut path = vec![stuck[0]];
            loop {
                let at = *path.last().unwrap_or(&stuck[0]);
                let Some(&next) = deps[at].iter().find(|&&d| !placed[d]) else {
                    break;
                };
                if let Some(pos) = path.iter().position(|&p| p == next) {
                    let cycle: Vec<String> = path[pos..]
                        .iter()
                        .chain(std::iter::once(&next))
                        .map(|&i| names[i].clone())
                        .collect();
                    let first = &self.steps[path[pos]];
                    let in_cycle = path[pos..].contains(&stuck[0]);
                    return Err(if in_cycle {
                        err(first, WorkflowProblem::Cycle(cycle))
                    } else {
                        err(
                            &self.steps[stuck[0]],
                            WorkflowProblem::Unreachable(names[next].clone()),
                        )
                    });
                }
                path.push(next);
            }
        }
        // Templates may only name upstream steps (transitively).
        let upstream = |i: usize| {
            let mut all = vec![false; deps.len()];
            let mut stack = deps[i].clone();
            while let Some(d) = stack.pop() {
                if !all[d] {
                    all[d] = true;
                    stack.extend(deps[d].iter().copied());
                }
            }
            all
        };
        for (i, step) in self.steps.iter().enumerate() {
            if let Some(t) = &step.input {
                // A direct dependency is the common case, and needs no walk: a chain
                // of templated steps, each walking all its ancestors, was quadratic.
                let mut up: Option<Vec<bool>> = None;
                for used in t.steps() {
                    let u = index[used];
                    if deps[i].contains(&u) {
                        continue;
                    }
                    if !up.get_or_insert_with(|| upstream(i))[u] {
                        return Err(err(step, WorkflowProblem::NotUpstream(used.to_owned())));
                    }
                }
            }
        }
        let mut steps: Vec<Option<WorkflowStep>> = self.steps.drain(..).map(Some).collect();
        self.steps = order.iter().filter_map(|&i| steps[i].take()).collect();
        Ok(self)
    }
}

/// Loads every `*.toml` workflow in `dir`, sorted by name.
pub fn load_dir(dir: &Path) -> Result<Vec<Workflow>, WorkflowError> {
    let io = |e| WorkflowError {
        path: dir.to_owned(),
        line: None,
        step: None,
        problem: Box::new(WorkflowProblem::Io(e)),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    let mut all = files
        .iter()
        .map(|f| Workflow::load(f))
        .collect::<Result<Vec<_>, _>>()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}
