//! Argument parsing and the commands of the `fanfare` binary.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use fanfare::faults::{self, Faulty};
use fanfare::mock::{self, MockConfig};
use fanfare::pricing::PriceTable;
use fanfare::provider::{
    Admission, AdmissionConfig, AnthropicConfig, AnthropicProvider, ApiKey, Hedge, HedgeConfig,
    OpenAiConfig, OpenAiProvider, Provider, Retry, RetryPolicy, SimConfig, SimProvider, Streamed,
};
use fanfare::spec::{self, AgentSpec};
use fanfare::supervisor::{Strategy, SupervisionConfig};
use fanfare::{Budget, Fanfare, MergeStrategy, Policy, RunRequest, Scorer};

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
    Run(Box<RunArgs>),
    /// Run many documents, each a fan-out, at most N at once; resumable.
    #[command(
        after_help = "Example:\n  fanfare batch docs/*.md --concurrency 10 --out results.jsonl"
    )]
    Batch(Box<BatchArgs>),
    /// Measure fanfare side by side with references (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Serve a local mock LLM speaking the Anthropic and OpenAI wire formats.
    #[command(
        name = "mock-llm",
        after_help = "Point fanfare (or any SDK) at it:\n  \
ANTHROPIC_BASE_URL=http://127.0.0.1:PORT   (Anthropic: no /v1)\n  \
OPENAI_BASE_URL=http://127.0.0.1:PORT/v1   (OpenAI: with /v1)\n\
GET /stats reports requests, in-flight, peak in-flight, aborted and counts by status."
    )]
    MockLlm(MockArgs),
    /// Inspect the agent specs.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Fan-out of N branches + one merge over HTTP (real anthropic provider) against an
    /// in-process mock, beside bare reqwest + JoinSet and (with --python) asyncio.gather.
    #[command(
        after_help = "Prints one JSON line per case: framework, n, wall_s, overhead_s \
(wall - 2 x latency), cpu_s, peak_rss_mb, ok, failed; then the overhead ratios.\n\
With --base-url it drives that server instead and prints one fanfare line, last.\n\
scripts/bench installs the Python baseline's venv and runs this with --python."
    )]
    Fanout {
        /// Branch counts to run.
        #[arg(long = "n", value_delimiter = ',', default_value = "4,100,1000,10000")]
        sizes: Vec<usize>,
        /// The mock's fixed latency.
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        /// Drive an external server instead (Anthropic wire format; base URL without /v1).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Most calls in flight [default: N].
        #[arg(long)]
        concurrency: Option<usize>,
        /// Warm-up runs before the measured one (with --base-url).
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        /// A Python with the `anthropic` package, for the asyncio.gather baseline.
        #[arg(long, value_name = "PATH")]
        python: Option<PathBuf>,
        /// Measured repetitions per case, interleaved; medians are reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Orchestration costs on the zero-latency simulated provider: overhead per
    /// branch, runs per second, memory per idle specialist, cost of a restart.
    Inproc {
        /// Branch counts for the per-branch overhead.
        #[arg(
            long = "n",
            value_delimiter = ',',
            default_value = "10,100,1000,10000,100000"
        )]
        sizes: Vec<usize>,
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

#[derive(clap::Args)]
struct MockArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Fixed latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Uniform extra latency, in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Probability of an HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    error_rate: f64,
    /// Probability of an HTTP 429 (with retry-after).
    #[arg(long = "rate-429", default_value_t = 0.0, value_parser = parse_rate)]
    rate_429: f64,
    /// Answer 429 above this many requests in flight.
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Probability of never answering.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    hang_rate: f64,
    /// Probability of a 200 whose body is not JSON.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    garbage_rate: f64,
    /// The wait suggested with each 429, in milliseconds.
    #[arg(long, default_value_t = 200)]
    retry_after_ms: u64,
    /// Require this API key (x-api-key or bearer); otherwise any is accepted.
    #[arg(long, env = "FANFARE_MOCK_KEY", hide_env_values = true)]
    require_key: Option<String>,
    /// Seed of the fault rolls.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a probability between 0 and 1")),
    }
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ProviderKind {
    /// Anthropic Messages API (key: ANTHROPIC_API_KEY; base: ANTHROPIC_BASE_URL).
    Anthropic,
    /// OpenAI Chat Completions or any compatible server (OPENAI_API_KEY, OPENAI_BASE_URL).
    Openai,
    /// The embedded simulated model.
    Sim,
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
    /// Print the report as JSON instead of the human view.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args)]
struct BatchArgs {
    /// Documents to process; each one's text is the task of one run.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Most documents in flight at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Where results go, one JSON line per document, in input order. Documents
    /// already in it are skipped, so an interrupted batch resumes.
    #[arg(long, default_value = "results.jsonl", value_name = "F")]
    out: PathBuf,
    /// On resume, run again the documents whose line says they failed (a new line is
    /// appended; the last line for a document is the one that counts).
    #[arg(long)]
    retry_failed: bool,
    #[command(flatten)]
    common: CommonArgs,
}

/// What `run` and `batch` share: agents, policy, deadlines, merge, provider.
#[derive(clap::Args)]
struct CommonArgs {
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
    /// Seed of the simulated provider (its latencies and wording).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Model backend [default: anthropic if ANTHROPIC_API_KEY is set, else openai if
    /// OPENAI_API_KEY is set, else sim].
    #[arg(long, value_enum)]
    provider: Option<ProviderKind>,
    /// Default model (a spec's own `model` wins).
    #[arg(long)]
    model: Option<String>,
    /// Base URL (Anthropic: without /v1; OpenAI: with /v1).
    #[arg(long, value_name = "URL")]
    base_url: Option<String>,
    /// Read the API key from this file instead of the environment.
    #[arg(long, value_name = "F")]
    api_key_file: Option<PathBuf>,
    /// Ask for streamed (SSE) answers.
    #[arg(long)]
    stream: bool,
    /// Attempts per model call, retries included (429, 529, 5xx, connection errors).
    #[arg(long, default_value_t = 10)]
    max_attempts: u32,
    /// TOML file of model prices (`[models."NAME"] input_per_mtok = …, output_per_mtok = …`)
    /// that overrides or extends the built-in table.
    #[arg(long, value_name = "F")]
    prices: Option<PathBuf>,
    /// Inject a fault: AGENT:KIND:RATE or AGENT:KIND:every=N (KIND: panic, hang, slow,
    /// provider-500, provider-429, garbage; slow takes :EXTRA_MS). Repeatable.
    #[arg(long = "fault", value_name = "A:K:R")]
    faults: Vec<String>,
    /// Which specialists restart when one crashes.
    #[arg(long, default_value = "one-for-one", value_parser = parse_strategy)]
    strategy: Strategy,
    /// Retry a branch up to N times on the restarted specialist when it crashed under it.
    #[arg(long, default_value_t = 0)]
    crash_retries: u32,
    /// Most model calls in flight at once (real providers; the cap adapts to 429s below it).
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Requests per minute allowed to the provider.
    #[arg(long)]
    rpm: Option<u32>,
    /// Tokens per minute allowed to the provider (estimated before, settled after).
    #[arg(long)]
    tpm: Option<u32>,
    /// Hedge slow model calls: after this delay (or the observed p95, once known)
    /// send one duplicate and keep the first answer; at most 2 hedges per run.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    hedge_after: Option<Duration>,
    /// Merge without stragglers after this long if the quorum is met (partial
    /// policies); their late answers still appear in the report, marked late.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    soft_deadline: Option<Duration>,
    /// Cap on the run's tokens; branches it cannot cover are refused, not sent.
    #[arg(long, value_name = "N")]
    budget_tokens: Option<u64>,
    /// Cap on the run's cost in USD (priced with the price table).
    #[arg(long, value_name = "USD")]
    budget_usd: Option<f64>,
    /// Limit on one HTTP call.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    call_timeout: Duration,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
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

/// A started runtime for `run` and `batch`.
struct Prepared {
    fanfare: Fanfare,
    names: Vec<String>,
    gate: Option<Gate>,
}

async fn prepare(args: &CommonArgs) -> anyhow::Result<Prepared> {
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
    for flag in &args.faults {
        let (agent, kind, trigger) =
            faults::parse_flag(flag).map_err(|e| anyhow::anyhow!("--fault {e}"))?;
        let Some(spec) = specs.iter_mut().find(|s| s.name == agent) else {
            bail!("--fault {flag}: no agent named `{agent}`");
        };
        spec.faults
            .set(&kind, trigger)
            .map_err(|e| anyhow::anyhow!("--fault {flag}: {e}"))?;
    }
    let (provider, gate, described) = build_provider(args, &specs)?;
    eprintln!(
        "fanfare: {described}. agents: {} from {source}",
        specs
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let mut prices = PriceTable::default();
    if let Some(path) = &args.prices {
        prices.merge_file(path)?;
    }
    let agents = specs.into_iter().map(|s| {
        let faults = s.faults.clone();
        Faulty::new(s, faults)
    });
    let supervision = SupervisionConfig {
        strategy: args.strategy,
        ..SupervisionConfig::default()
    };
    let fanfare = Fanfare::builder(provider)
        .agents_from(agents)
        .supervision(supervision)
        .prices(prices)
        .start()
        .await?;
    Ok(Prepared {
        fanfare,
        names,
        gate,
    })
}

fn request_for(args: &CommonArgs, input: String, names: &[String]) -> RunRequest {
    let mut request = RunRequest::fan_out(input, names.iter().cloned())
        .policy(args.policy)
        .deadline(args.deadline)
        .branch_timeout(args.branch_timeout)
        .crash_retries(args.crash_retries);
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
    request.merge = match args.merge {
        Merge::Llm => Some(MergeStrategy::llm()),
        Merge::Code => Some(MergeStrategy::Code),
        Merge::Best => Some(MergeStrategy::SelectBest(Scorer::distinct_words())),
        Merge::None => None,
    };
    request
}

fn print_admission(gate: Option<&Gate>) {
    if let Some(gate) = gate {
        let m = gate.metrics();
        eprintln!(
            "fanfare: admission: {} calls, {} rate-limited (429), {} overloaded, max {} in flight, cap now {}",
            m.admitted, m.rate_limited, m.overloaded, m.max_in_flight, m.cap
        );
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let input = read_input(&args)?;
    let Prepared {
        fanfare,
        names,
        gate,
    } = prepare(&args.common).await?;
    let request = request_for(&args.common, input, &names);
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
    print_admission(gate.as_ref());
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}

async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fanout {
            sizes,
            latency_ms,
            base_url,
            concurrency,
            warmup,
            python,
            repeat,
        } => {
            if sizes.is_empty() || sizes.contains(&0) {
                bail!("--n takes branch counts of at least 1");
            }
            crate::bench::fanout(crate::bench::FanoutArgs {
                sizes,
                latency: Duration::from_millis(latency_ms),
                base_url,
                concurrency,
                warmup,
                python,
                perspectives: builtin_specs()?,
                repeat,
            })
            .await
        }
        BenchCommand::Inproc { sizes } => crate::bench::inproc(&sizes).await,
    }
}

/// One line of a batch's output file.
#[derive(serde::Serialize, serde::Deserialize)]
struct BatchLine {
    document: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<fanfare::RunReport>,
}

/// Documents already in `out` (so a rerun skips them).
fn already_done(
    out: &Path,
    retry_failed: bool,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut done = std::collections::HashSet::new();
    let text = match std::fs::read_to_string(out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    for (n, line) in text.lines().enumerate() {
        match serde_json::from_str::<BatchLine>(line) {
            Ok(l) if retry_failed && l.status != "succeeded" => {
                done.remove(&l.document);
            }
            Ok(l) => {
                done.insert(l.document);
            }
            // An interrupted write leaves a partial last line: redo that document.
            Err(_) => eprintln!(
                "fanfare: {}:{}: unreadable line ignored",
                out.display(),
                n + 1
            ),
        }
    }
    Ok(done)
}

async fn batch(args: BatchArgs) -> anyhow::Result<bool> {
    use futures::StreamExt;
    use std::io::{IsTerminal, Write};
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let done = already_done(&args.out, args.retry_failed)?;
    let todo: Vec<PathBuf> = args
        .files
        .iter()
        .filter(|f| !done.contains(&f.display().to_string()))
        .cloned()
        .collect();
    let skipped = args.files.len() - todo.len();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let Prepared {
        fanfare,
        names,
        gate,
    } = prepare(&args.common).await?;
    let started = std::time::Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents · {elapsed} · {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let total = todo.len();
    let common = &args.common;
    let names = &names;
    let runs = futures::stream::iter(todo)
        .map(|path| {
            let fanfare = fanfare.clone();
            async move {
                let result = match std::fs::read_to_string(&path) {
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                    Ok(text) if text.trim().is_empty() => {
                        Err(format!("{} is empty", path.display()))
                    }
                    Ok(text) => fanfare
                        .run(request_for(common, text, names))
                        .await
                        .map_err(|e| e.to_string()),
                };
                (path, result)
            }
        })
        .buffered(args.concurrency);
    futures::pin_mut!(runs);
    let (mut ok, mut failed, mut usage, mut cost) =
        (0usize, 0usize, fanfare::Usage::default(), 0.0f64);
    let mut finished = 0usize;
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            n = runs.next() => n,
            _ = tokio::signal::ctrl_c() => { interrupted = true; None }
        };
        let Some((path, result)) = next else { break };
        finished += 1;
        let document = path.display().to_string();
        let line = match result {
            Ok(report) => {
                usage += report.totals.usage;
                cost += report.totals.cost_usd.unwrap_or(0.0);
                let (status, reason) = match &report.status {
                    fanfare::RunStatus::Succeeded => ("succeeded", None),
                    fanfare::RunStatus::Failed { reason } => ("failed", Some(reason.clone())),
                };
                BatchLine {
                    document: document.clone(),
                    status: status.to_owned(),
                    reason,
                    report: Some(report),
                }
            }
            Err(reason) => BatchLine {
                document: document.clone(),
                status: "failed".to_owned(),
                reason: Some(reason),
                report: None,
            },
        };
        if line.status == "succeeded" {
            ok += 1
        } else {
            failed += 1
        }
        let verdict = match &line.reason {
            None => "ok".to_owned(),
            Some(r) => format!("FAILED: {r}"),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        out.flush()?;
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{ok} ok, {failed} failed"));
                bar.inc(1);
            }
            None => eprintln!("fanfare: [{finished}/{total}] {document}: {verdict}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    fanfare.clone().shutdown().await;
    eprintln!(
        "batch: {ok} ok, {failed} failed, {skipped} skipped (already in {}) · tokens {} in / {} out · cost ${cost:.4} · {:.1}s",
        args.out.display(),
        usage.input_tokens,
        usage.output_tokens,
        started.elapsed().as_secs_f64()
    );
    print_admission(gate.as_ref());
    if interrupted {
        bail!("interrupted after {finished} of {total} documents; run the same command again to resume");
    }
    Ok(failed == 0)
}

/// The provider to run with, its admission gate (real providers), and a description.
type Built = (Arc<dyn Provider>, Option<Gate>, String);

/// The admission gate in front of a real provider (for its metrics).
type Gate = Arc<Admission<Arc<dyn Provider>>>;

fn build_provider(args: &CommonArgs, specs: &[AgentSpec]) -> anyhow::Result<Built> {
    let file_key = match &args.api_key_file {
        Some(path) => Some(
            ApiKey::from_file(path)
                .with_context(|| format!("reading the API key from {}", path.display()))?,
        ),
        None => None,
    };
    let kind = match args.provider {
        Some(kind) => kind,
        None if ApiKey::from_env("ANTHROPIC_API_KEY").is_some() => ProviderKind::Anthropic,
        None if ApiKey::from_env("OPENAI_API_KEY").is_some() => ProviderKind::Openai,
        None if file_key.is_some() => {
            bail!("--api-key-file needs --provider anthropic or --provider openai")
        }
        None => ProviderKind::Sim,
    };
    let policy = RetryPolicy {
        max_attempts: args.max_attempts.max(1),
        ..RetryPolicy::default()
    };
    let admission = AdmissionConfig {
        max_concurrency: args.max_concurrency.max(1),
        rpm: args.rpm,
        tpm: args.tpm,
        ..AdmissionConfig::default()
    };
    let wrap = |p: Arc<dyn Provider>| -> (Arc<dyn Provider>, Option<Gate>) {
        let p: Arc<dyn Provider> = if args.stream {
            Arc::new(Streamed(p))
        } else {
            p
        };
        let gate = Arc::new(Admission::new(p, admission));
        let hedged: Arc<dyn Provider> = match args.hedge_after {
            Some(delay) => Arc::new(Hedge::new(
                gate.clone(),
                HedgeConfig {
                    delay,
                    ..HedgeConfig::default()
                },
            )),
            None => gate.clone(),
        };
        (Arc::new(Retry::new(hedged, policy)), Some(gate))
    };
    match kind {
        ProviderKind::Sim => {
            if args.base_url.is_some() || args.model.is_some() {
                bail!("--base-url and --model need --provider anthropic or --provider openai");
            }
            let sim = SimProvider::new(SimConfig {
                seed: args.seed,
                per_agent: spec::sim_profiles(specs),
                ..SimConfig::default()
            });
            let why = if args.provider.is_some() {
                "chosen with --provider"
            } else {
                "no ANTHROPIC_API_KEY or OPENAI_API_KEY set"
            };
            let described =
                format!("provider `sim` ({why}) — output is SIMULATED, no model is called");
            Ok((Arc::new(sim), None, described))
        }
        ProviderKind::Anthropic => {
            let key = file_key
                .or_else(|| ApiKey::from_env("ANTHROPIC_API_KEY"))
                .context(
                "the anthropic provider needs a key: set ANTHROPIC_API_KEY or pass --api-key-file \
(local servers accept any value)",
            )?;
            let mut config =
                AnthropicConfig::from_env().unwrap_or_else(|| AnthropicConfig::new(key.clone()));
            config.api_key = key;
            if let Some(url) = &args.base_url {
                config.base_url = url.clone();
            }
            if let Some(model) = &args.model {
                config.default_model = model.clone();
            }
            config.timeout = args.call_timeout;
            let described = format!(
                "provider `anthropic` at {} (default model {})",
                config.base_url, config.default_model
            );
            let (provider, gate) = wrap(Arc::new(AnthropicProvider::new(config)));
            Ok((provider, gate, described))
        }
        ProviderKind::Openai => {
            let mut config = OpenAiConfig::from_env();
            if file_key.is_some() {
                config.api_key = file_key;
            }
            if let Some(url) = &args.base_url {
                config.base_url = url.clone();
            }
            if let Some(model) = &args.model {
                config.default_model = model.clone();
            }
            config.timeout = args.call_timeout;
            let described = format!(
                "provider `openai` at {} (default model {})",
                config.base_url, config.default_model
            );
            let (provider, gate) = wrap(Arc::new(OpenAiProvider::new(config)));
            Ok((provider, gate, described))
        }
    }
}

async fn mock_llm(args: MockArgs) -> anyhow::Result<bool> {
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        error_rate: args.error_rate,
        rate_429: args.rate_429,
        max_concurrency: args.max_concurrency,
        hang_rate: args.hang_rate,
        garbage_rate: args.garbage_rate,
        retry_after: Duration::from_millis(args.retry_after_ms),
        require_key: args.require_key,
        seed: args.seed,
    };
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    println!("fanfare mock-llm listening on http://{addr}");
    println!("  ANTHROPIC_BASE_URL=http://{addr}    OPENAI_BASE_URL=http://{addr}/v1    stats: http://{addr}/stats");
    mock::serve(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
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
    // A panicking agent is caught and recorded as a failed branch; say so in one line
    // rather than with a backtrace in the middle of the output.
    std::panic::set_hook(Box::new(|info| {
        let what = info.payload_as_str().unwrap_or("non-string panic payload");
        eprintln!("fanfare: caught a panic ({what}); the branch is recorded as failed");
    }));
    // Benchmarks provoke what other commands warn about (panics, restarts): quieter.
    let default_level = if matches!(cli.command, Command::Bench { .. }) {
        "error"
    } else {
        "warn"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
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
            Command::Run(args) => run(*args).await,
            Command::MockLlm(args) => mock_llm(args).await,
            Command::Batch(args) => batch(*args).await,
            Command::Bench { command } => bench(command).await.map(|()| true),
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
