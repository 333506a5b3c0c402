//! Argument parsing and the commands of the `fanfare` binary.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use fanfare::provider::{SimConfig, SimProvider};
use fanfare::spec::{self, AgentSpec};
use fanfare::{Fanfare, MergeStrategy, Policy, RunRequest, Scorer};

#[derive(Parser)]
#[command(
    name = "fanfare",
    version,
    about = "Fan a task out to specialist LLM agents running as supervised actors, and merge their answers",
    long_about = "Fan a task out to specialist LLM agents running as supervised actors, gather \
their replies under deadlines and a failure policy, and merge them into one answer.\n\n\
With no API key configured, runs use `sim`, an embedded simulated model, and say so."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one task through every agent, then merge the answers.
    #[command(
        after_help = "Examples:\n  fanfare run \"Our new API stores user queries in plain text logs.\"\n  \
fanfare run --file proposal.md --policy partial:3 --merge code --json\n  \
echo \"…\" | fanfare run - --deadline 30s --branch-timeout 10s"
    )]
    Run(RunArgs),
    /// Inspect the agent specs.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List the agents in the spec directory.
    List {
        /// Directory of agent specs (*.toml + prompt files).
        #[arg(long, value_name = "DIR")]
        agents: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Merge {
    /// One LLM call over all successful answers.
    Llm,
    /// Deterministic merge, one section per agent, no model call.
    Code,
    /// The single answer with the most distinct words.
    Best,
    /// No merge.
    None,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The task text; `-` reads it from standard input.
    #[arg(value_name = "TEXT", conflicts_with = "file")]
    text: Option<String>,
    /// Read the task text from a file.
    #[arg(long, short, value_name = "F")]
    file: Option<PathBuf>,
    /// Directory of agent specs [default: ./agents/specs if present, else the built-in four].
    #[arg(long, value_name = "DIR")]
    agents: Option<PathBuf>,
    /// Run only these agents (comma-separated names).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    only: Vec<String>,
    /// fail-fast: the first failed branch ends the run. partial[:K]: succeed if at
    /// least K branches (default 1) succeed.
    #[arg(long, default_value = "fail-fast", value_parser = parse_policy)]
    policy: Policy,
    /// Overall deadline for branches and merge (e.g. 90s, 2m, 1500ms).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    deadline: Duration,
    /// Deadline for each branch.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    branch_timeout: Duration,
    /// How to merge the answers.
    #[arg(long, value_enum, default_value = "llm")]
    merge: Merge,
    /// Print the report as JSON instead of the human view.
    #[arg(long)]
    json: bool,
    /// Seed of the simulated provider (its latencies and wording).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (try 30s, 2m or 500ms)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(d)
}

/// The four perspective specs, compiled in so that `fanfare run` works anywhere.
const BUILTIN: &[(&str, &str, &str, &str)] = &[
    (
        "legal.toml",
        include_str!("../agents/specs/legal.toml"),
        "legal.md",
        include_str!("../agents/specs/legal.md"),
    ),
    (
        "technical.toml",
        include_str!("../agents/specs/technical.toml"),
        "technical.md",
        include_str!("../agents/specs/technical.md"),
    ),
    (
        "financial.toml",
        include_str!("../agents/specs/financial.toml"),
        "financial.md",
        include_str!("../agents/specs/financial.md"),
    ),
    (
        "security.toml",
        include_str!("../agents/specs/security.toml"),
        "security.md",
        include_str!("../agents/specs/security.md"),
    ),
];

fn builtin_specs() -> anyhow::Result<Vec<AgentSpec>> {
    let dir = Path::new("<built-in>");
    let specs = BUILTIN
        .iter()
        .map(|(file, text, prompt_name, prompt)| {
            AgentSpec::parse(&dir.join(file), text, |p| {
                if p.file_name().is_some_and(|n| n == *prompt_name) {
                    Ok((*prompt).to_owned())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not built in",
                    ))
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(spec::finish(specs, dir)?)
}

fn load_specs(dir: Option<&Path>) -> anyhow::Result<(Vec<AgentSpec>, String)> {
    match dir {
        Some(dir) => Ok((spec::load_dir(dir)?, dir.display().to_string())),
        None => {
            let local = Path::new("agents/specs");
            if local.is_dir() {
                Ok((spec::load_dir(local)?, local.display().to_string()))
            } else {
                Ok((builtin_specs()?, "built-in".to_owned()))
            }
        }
    }
}

fn read_input(args: &RunArgs) -> anyhow::Result<String> {
    let text = match (&args.text, &args.file) {
        (Some(t), _) if t == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the task from standard input")?;
            s
        }
        (Some(t), _) => t.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => bail!("no task given: pass TEXT, --file F, or - to read standard input"),
    };
    if text.trim().is_empty() {
        bail!("the task text is empty");
    }
    Ok(text)
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let input = read_input(&args)?;
    let (mut specs, source) = load_specs(args.agents.as_deref())?;
    if !args.only.is_empty() {
        for name in &args.only {
            if !specs.iter().any(|s| &s.name == name) {
                let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                bail!(
                    "--only: no agent named `{name}` in {source} (known: {})",
                    known.join(", ")
                );
            }
        }
        specs.retain(|s| args.only.contains(&s.name));
    }
    let provider = SimProvider::new(SimConfig {
        seed: args.seed,
        per_agent: spec::sim_profiles(&specs),
        ..SimConfig::default()
    });
    eprintln!(
        "fanfare: provider `sim` — output is SIMULATED (no model is called; real providers are not in this build yet). \
agents: {} from {source}",
        specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
    );
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let fanfare = Fanfare::builder(Arc::new(provider))
        .agents_from(specs)
        .start()
        .await?;
    let mut request = RunRequest::fan_out(input, names)
        .policy(args.policy)
        .deadline(args.deadline)
        .branch_timeout(args.branch_timeout);
    request.merge = match args.merge {
        Merge::Llm => Some(MergeStrategy::llm()),
        Merge::Code => Some(MergeStrategy::Code),
        Merge::Best => Some(MergeStrategy::SelectBest(Scorer::distinct_words())),
        Merge::None => None,
    };
    let outcome = tokio::select! {
        r = fanfare.run(request) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    fanfare.shutdown().await;
    let Some(report) = outcome else {
        bail!("interrupted; in-flight branches were cancelled");
    };
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}

fn list_agents(dir: Option<&Path>) -> anyhow::Result<()> {
    let (specs, source) = load_specs(dir)?;
    println!("agents from {source}:");
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in specs {
        let model = s.model.as_deref().unwrap_or("provider default");
        println!(
            "  {:<width$}  {}  [model: {model}, max_tokens: {}]",
            s.name, s.description, s.max_tokens
        );
    }
    Ok(())
}

/// Parses arguments, runs the command, and maps the result to an exit code:
/// 0 success, 1 the run did not succeed, 2 bad input or configuration.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fanfare: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Agents {
                command: AgentsCommand::List { agents },
            } => list_agents(agents.as_deref()).map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("fanfare: {e:#}");
            ExitCode::from(2)
        }
    }
}
