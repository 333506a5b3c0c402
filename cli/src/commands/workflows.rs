//! `fanfare workflows list` and `fanfare workflows show NAME`.

use std::path::Path;

use fanfare::agent::spec::{AgentSpec, LoadOptions};
use fanfare::run::workflow::{MapOver, Workflow, WorkflowMerge, WorkflowStep};
use fanfare::run::Action;

use crate::output;
use crate::plan::{check_workflow, find_workflow, load_specs, load_workflows};

pub fn list() -> anyhow::Result<()> {
    let (all, source) = load_workflows()?;
    output::line(format_args!("workflows from {source}:"))?;
    let width = all.iter().map(|w| w.name.len()).max().unwrap_or(0);
    for w in all {
        output::line(format_args!(
            "  {:<width$}  {}  [{} steps]",
            w.name,
            w.description,
            w.steps.len()
        ))?;
    }
    Ok(())
}

/// What a step does, in a few words.
pub fn doing(step: &WorkflowStep) -> String {
    let what = match &step.action {
        Action::Agent(a) => format!("agent {a}"),
        Action::Code { function, .. } => format!("code {function}"),
        Action::Workflow(w) => format!("workflow {}", w.name),
    };
    match &step.map {
        None => what,
        Some(m) => {
            let over = match &m.over {
                MapOver::Step(s) => format!("each line/item of `{s}`"),
                MapOver::Given => "each --each file".to_owned(),
            };
            format!("{what}, over {over}, {} at once", m.concurrency)
        }
    }
}

/// What a step sets beyond its action: its input template, timeout, retries, model,
/// schema and a map's policy, one line each.
fn details(step: &WorkflowStep) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(input) = &step.input {
        out.push(format!(
            "input: {}",
            shortened(&format!("{:?}", input.as_str()), 72)
        ));
    }
    if let Some(t) = step.timeout {
        out.push(format!("timeout: {}", humantime(t)));
    }
    if step.retries > 0 {
        out.push(format!("retries: {}", step.retries));
    }
    if let Some(m) = &step.model {
        out.push(format!("model: {m}"));
    }
    if let Some(schema) = &step.schema {
        let fields: Vec<&str> = schema
            .schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().map(String::as_str).collect())
            .unwrap_or_default();
        out.push(format!("schema: an object of {}", fields.join(", ")));
    }
    if let Some(m) = &step.map {
        out.push(format!("map policy: {}", m.policy));
    }
    if let Action::Code { options, .. } = &step.action {
        if !options.is_null() {
            out.push(format!("options: {}", shortened(&options.to_string(), 72)));
        }
    }
    out
}

/// One-line `text` cut to `max` characters.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// `90s`, `2m`, `1500ms`: the units the files use.
fn humantime(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    match ms {
        ms if ms % 60_000 == 0 && ms > 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// A step's expected latency in seconds: its agent's simulated latency (plus half
/// its jitter) when the spec gives one, else one second; a code step takes none; a
/// workflow run whole, the sum over its steps (a bound: some may run together).
pub fn latency(step: &WorkflowStep, specs: &[AgentSpec]) -> f64 {
    action_latency(&step.action, specs)
}

fn action_latency(action: &Action, specs: &[AgentSpec]) -> f64 {
    match action {
        Action::Code { .. } => 0.0,
        Action::Workflow(w) => w
            .steps
            .iter()
            .map(|s| action_latency(&s.action, specs))
            .sum(),
        Action::Agent(a) => specs
            .iter()
            .find(|s| &s.name == a)
            .and_then(|s| s.sim.as_ref())
            .map_or(1.0, |p| (p.latency + p.jitter / 2).as_secs_f64()),
    }
}

/// The graph as text: steps, what runs together, the critical path, the merge.
pub fn render(w: &Workflow, specs: &[AgentSpec]) -> String {
    let mut out = format!("workflow `{}` ({})\n", w.name, w.source.display());
    if !w.description.is_empty() {
        out.push_str(&format!("  {}\n", w.description));
    }
    out.push_str(&match w.policy {
        Some(p) => format!("policy: {p}\n"),
        None => "policy: fail-fast (the default; --policy overrides)\n".to_owned(),
    });
    out.push_str("steps:\n");
    let width = w.steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in &w.steps {
        let after = if s.after.is_empty() {
            String::new()
        } else {
            format!("   after {}", s.after.join(", "))
        };
        out.push_str(&format!("  {:<width$}  {}{after}\n", s.name, doing(s)));
        for detail in details(s) {
            out.push_str(&format!("  {:<width$}    {detail}\n", ""));
        }
    }
    out.push_str("runs together:\n");
    for (i, level) in w.levels().iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", i + 1, level.join(", ")));
    }
    let (path, secs) = w.critical_path(|s| latency(s, specs));
    out.push_str(&format!(
        "critical path (by the agents' expected latency): {} (≈ {secs:.1} s)\n",
        path.join(" → ")
    ));
    let ends = w.ends();
    out.push_str(&match w.merge {
        WorkflowMerge::Llm => format!("merge: llm, over {}\n", ends.join(", ")),
        WorkflowMerge::Code => format!("merge: code, one section each for {}\n", ends.join(", ")),
        WorkflowMerge::Best => format!(
            "merge: best, the one of {} with the most distinct words\n",
            ends.join(", ")
        ),
        WorkflowMerge::None => format!("merge: none; the answer is {}\n", ends.join(", ")),
    });
    out
}

pub fn show(name: &str, agents: Option<&Path>) -> anyhow::Result<()> {
    let w = find_workflow(name)?;
    let (specs, source) = load_specs(agents, LoadOptions::default())?;
    // What a run would refuse, `show` refuses too.
    check_workflow(&w, &specs, &source)?;
    output::stdout(&render(&w, &specs))?;
    Ok(())
}
