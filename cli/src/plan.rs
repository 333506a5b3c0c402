//! What a command runs: a workflow, or a plain fan-out over chosen agents; where the
//! agents and workflows come from; and the request for one task.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::{self, AgentSpec};
use fanfare::run::workflow::{self, Workflow};
use fanfare::run::{Action, Budget, CodeRegistry, Scorer};
use fanfare::{MergeStrategy, Policy, RunRequest};

use crate::args::{CommonArgs, Merge};

/// What a run runs.
pub enum Plan {
    /// Every chosen agent on the same input, then the merge.
    FanOut(Vec<String>),
    /// A workflow.
    Workflow(Box<Workflow>),
}

impl Plan {
    /// The agents it needs started.
    pub fn agents(&self) -> Vec<String> {
        match self {
            Plan::FanOut(names) => names.clone(),
            Plan::Workflow(w) => w.agents().into_iter().map(str::to_owned).collect(),
        }
    }

    /// One line on what it is.
    pub fn describe(&self) -> String {
        match self {
            // A long fan-out is named by its first and last few agents, not in full:
            // a banner of 1,000 names said nothing a count does not.
            Plan::FanOut(names) if names.len() > 8 => format!(
                "a fan-out to {} agents ({}, …, {})",
                names.len(),
                names[..4].join(", "),
                names[names.len() - 2..].join(", ")
            ),
            Plan::FanOut(names) => format!("a fan-out to {}", names.join(", ")),
            Plan::Workflow(w) => format!("workflow `{}` ({})", w.name, w.source.display()),
        }
    }
}

/// The directory specs are loaded from: `dir`, else `./agents/specs` if there is
/// one; none for the built-in specs.
pub fn spec_dir(dir: Option<&Path>) -> Option<PathBuf> {
    match dir {
        Some(dir) => Some(dir.to_owned()),
        None => Some(PathBuf::from("agents/specs")).filter(|local| local.is_dir()),
    }
}

/// The specs in [`spec_dir`], else the built-in ones; and where they came from.
pub fn load_specs(
    dir: Option<&Path>,
    options: spec::LoadOptions,
) -> anyhow::Result<(Vec<AgentSpec>, String)> {
    match spec_dir(dir) {
        Some(dir) => Ok((
            spec::load_dir_with(&dir, options)?,
            dir.display().to_string(),
        )),
        None => Ok((fanfare_agents::specs()?, "built-in".to_owned())),
    }
}

/// The workflows in `./agents/workflows`, else the built-in ones; and where from.
pub fn load_workflows() -> anyhow::Result<(Vec<Workflow>, String)> {
    let local = Path::new("agents/workflows");
    if local.is_dir() {
        Ok((workflow::load_dir(local)?, local.display().to_string()))
    } else {
        Ok((fanfare_agents::workflows()?, "built-in".to_owned()))
    }
}

/// The workflow `name`: a file if one is there, else one of [`load_workflows`].
pub fn find_workflow(name: &str) -> anyhow::Result<Workflow> {
    let path = PathBuf::from(name);
    if path.is_file() {
        return Ok(Workflow::load(&path)?);
    }
    let (all, source) = load_workflows()?;
    let known: Vec<String> = all.iter().map(|w| w.name.clone()).collect();
    all.into_iter().find(|w| w.name == name).with_context(|| {
        format!(
            "no workflow `{name}`: not a file, and not among the workflows in {source} ({})",
            known.join(", ")
        )
    })
}

/// What `args` asks to run, given the loaded `specs` (from `source`).
pub fn plan(args: &CommonArgs, specs: &[AgentSpec], source: &str) -> anyhow::Result<Plan> {
    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    if let Some(name) = &args.workflow {
        if !args.only.is_empty() {
            bail!("--only and --workflow choose the agents two ways; give one");
        }
        let w = find_workflow(name)?;
        check_workflow(&w, specs, source)?;
        return Ok(Plan::Workflow(Box::new(w)));
    }
    if !args.only.is_empty() {
        for name in &args.only {
            if !known.contains(&name.as_str()) {
                bail!(
                    "--only: no agent named `{name}` in {source} (known: {})",
                    known.join(", ")
                );
            }
        }
        let chosen = known
            .iter()
            .filter(|n| args.only.iter().any(|o| o == *n))
            .map(|n| (*n).to_owned())
            .collect();
        return Ok(Plan::FanOut(chosen));
    }
    if args.runtime.agents.is_some() {
        return Ok(Plan::FanOut(
            known.iter().map(|n| (*n).to_owned()).collect(),
        ));
    }
    // The default: the perspectives workflow, as long as its agents are here.
    let w = find_workflow("perspectives")?;
    if w.agents().iter().all(|a| known.contains(a)) {
        Ok(Plan::Workflow(Box::new(w)))
    } else {
        Ok(Plan::FanOut(
            known.iter().map(|n| (*n).to_owned()).collect(),
        ))
    }
}

/// Checks what a run of `w` would before anything is called: every agent is among
/// `specs` (from `source`) and every code function is a built-in one (the CLI
/// registers no other).
pub fn check_workflow(w: &Workflow, specs: &[AgentSpec], source: &str) -> anyhow::Result<()> {
    let code = CodeRegistry::default().names();
    let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    fn walk(
        w: &Workflow,
        file: &Path,
        known: &[&str],
        code: &[String],
        source: &str,
    ) -> anyhow::Result<()> {
        for step in &w.steps {
            let at = || format!("{}:{}: step `{}`", file.display(), step.line, step.name);
            match &step.action {
                Action::Agent(agent) if !known.contains(&agent.as_str()) => bail!(
                    "{}: agent `{agent}` is not in {source} (known: {})",
                    at(),
                    known.join(", ")
                ),
                Action::Code { function, .. } if !code.contains(function) => bail!(
                    "{}: no code function is named `{function}` (built in: {})",
                    at(),
                    code.join(", ")
                ),
                // A TOML file cannot nest a workflow; a library caller's is checked
                // by the runtime.
                _ => {}
            }
        }
        Ok(())
    }
    walk(w, &w.source, &known, &code, source)
}

/// The files `patterns` match, sorted, each once; a pattern that matches no file is
/// an error naming it.
pub fn each_files(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let matched = glob::glob(pattern).with_context(|| format!("--each `{pattern}`"))?;
        let before = files.len();
        for path in matched {
            let path = path.with_context(|| format!("--each `{pattern}`"))?;
            if path.is_file() {
                files.push(path);
            }
        }
        if files.len() == before {
            bail!("--each `{pattern}` matches no file");
        }
    }
    files.sort();
    files.dedup();
    Ok(files)
}

/// The texts of the files `patterns` match (see [`each_files`]).
pub fn items(patterns: &[String]) -> anyhow::Result<Option<Vec<String>>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    each_files(patterns)?
        .iter()
        .map(|f| crate::input::read_document(f))
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// The request for one task: the plan's, with what the flags override.
pub fn request_for(
    args: &CommonArgs,
    input: String,
    plan: &Plan,
    items: Option<Vec<String>>,
) -> anyhow::Result<RunRequest> {
    let mut request = match plan {
        Plan::FanOut(names) => {
            if items.is_some() {
                bail!("--each needs a workflow with a map step (--workflow NAME)");
            }
            RunRequest::fan_out(input, names.iter().cloned()).merge(MergeStrategy::llm())
        }
        Plan::Workflow(w) => w.request(&input, items)?,
    };
    request = request
        .deadline(args.deadline)
        .branch_timeout(args.branch_timeout)
        .crash_retries(args.crash_retries)
        .cache_warm(args.cache_warm);
    if let Some(approver) = crate::approve::approver(args.approve_all) {
        request = request.approver(approver);
    }
    if let Some(policy) = args.policy {
        request.policy = policy;
    }
    if let Some(soft) = args.soft_deadline {
        request = request.soft_deadline(soft);
    }
    if args.budget_tokens.is_some() || args.budget_usd.is_some() {
        request = request.budget(Budget {
            max_tokens: args.budget_tokens,
            max_cost_usd: args.budget_usd,
            ..Budget::default()
        });
    }
    if let Some(merge) = args.merge {
        request.merge = match merge {
            Merge::Llm => Some(MergeStrategy::llm()),
            Merge::Code => Some(MergeStrategy::Code),
            Merge::Best => Some(MergeStrategy::SelectBest(Scorer::distinct_words())),
            Merge::None => None,
        };
    }
    if let Some(window) = args.context_window {
        match &mut request.merge {
            Some(MergeStrategy::Llm { context_window, .. }) => *context_window = Some(window),
            _ => bail!("--context-window is for an llm merge; this run's merge is not one"),
        }
    }
    if request.policy == Policy::FailFast && request.soft_deadline.is_some() {
        bail!("--soft-deadline needs a partial policy (partial:K)");
    }
    Ok(request)
}
