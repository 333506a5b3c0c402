//! The command line's grammar: every command, flag and parser, with the help text.

mod approvals;
mod client;
mod cluster;
mod parse;
mod runtime;
mod serve;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use fanfare::Policy;

pub use approvals::ApprovalsCommand;
pub use client::ClientArgs;
pub use cluster::{ClusterCommand, OrchestratorArgs, WorkerArgs};
pub use parse::{at_least_one, parse_duration, parse_policy, parse_rate, parse_usd};
pub use runtime::{ProviderKind, RuntimeArgs};
pub use serve::{ApprovalDefaultArg, ServeArgs, SubmitArgs};

#[derive(Parser)]
#[command(
    name = "fanfare",
    version,
    about = "Fan a task out to specialist LLM agents running as supervised actors, and merge their answers",
    long_about = "Fan a task out to specialist LLM agents running as supervised actors, gather \
their replies under deadlines and a failure policy, and merge them into one answer.\n\n\
With no API key configured, runs use `sim`, an embedded simulated model, and say so."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run a task through a workflow (default: the four perspectives), then merge.
    #[command(
        after_help = "Examples:\n  fanfare run \"Our new API stores user queries in plain text logs.\"\n  \
fanfare run --file proposal.md --policy partial:3 --merge code --json\n  \
echo \"…\" | fanfare run - --deadline 30s --branch-timeout 10s\n  \
fanfare run --workflow summarise --each 'docs/*.md' \"A digest for the board\"\n  \
fanfare run --workflow research --dry-run \"Why do small teams adopt four-day weeks?\""
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
    /// Run a long-lived orchestrator: a runs API over HTTP with live event streams and a
    /// durable journal; unfinished runs resume at the next start.
    #[command(after_help = "API (JSON):\n  \
POST   /v1/runs               submit {\"input\": \"…\", \"workflow\": \"perspectives\"} or {\"input\": \"…\", \"agents\": [\"…\"]};\n                         \
optional: policy, deadline, branch_timeout, budget {tokens, usd}, merge, items, crash_retries;\n                         \
header Idempotency-Key returns the same run on a retry\n  \
GET    /v1/runs[?status=&limit=&before=]   recent runs, newest first\n  \
GET    /v1/runs/{id}          status, and the report once it ended\n  \
DELETE /v1/runs/{id}          cancel (the in-flight model calls are aborted)\n  \
GET    /v1/runs/{id}/events   Server-Sent Events; reconnect with Last-Event-ID\n  \
GET    /v1/cluster            the cluster's nodes (with --cluster-listen)\n  \
GET    /healthz, /readyz\n\n\
Example:\n  fanfare serve --db runs.db &\n  \
curl -s localhost:7878/v1/runs -d '{\"input\": \"Should we adopt a four-day week?\"}'\n  \
curl -N localhost:7878/v1/runs/run-1/events")]
    Serve(Box<ServeArgs>),
    /// Join a `fanfare serve --cluster-listen` as a worker node: host the specialists
    /// (the same specs and flags as `run`) and run the branches it sends.
    #[command(after_help = "Example (one machine, three terminals):\n  \
echo \"$(head -c 24 /dev/urandom | base64)\" > cluster.cookie\n  \
fanfare serve --cluster-listen 127.0.0.1:7979 --cookie-file cluster.cookie\n  \
fanfare worker --join 127.0.0.1:7979 --cookie-file cluster.cookie --name w1\n\n\
Model calls made here lease their admission from the orchestrator's gate, so a\n\
provider limit holds for the whole cluster. If the orchestrator is lost, the\n\
branches here stop and the worker rejoins.")]
    Worker(Box<WorkerArgs>),
    /// Inspect a cluster.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Send a run to a running `fanfare serve` and follow it live; prints the same
    /// report as `run`.
    #[command(
        after_help = "Examples:\n  fanfare submit \"Should we adopt a four-day week?\"\n  \
fanfare submit --file proposal.md --workflow validation --detach\n  \
FANFARE_SERVER=http://10.0.0.5:7878 FANFARE_TOKEN=… fanfare submit -"
    )]
    Submit(Box<SubmitArgs>),
    /// The tool calls of a `fanfare serve` run that wait for a person's approval:
    /// list, approve, reject or edit them.
    #[command(
        after_help = "Examples:\n  fanfare approvals list run-7\n  fanfare approvals approve run-7 0-1-0\n  \
fanfare approvals reject run-7 1-1-0 --reason \"not on a Friday\"\n  \
fanfare approvals edit run-7 2-1-0 --input '{\"path\": \"docs/plan.md\"}'"
    )]
    Approvals {
        #[command(subcommand)]
        command: ApprovalsCommand,
    },
    /// Follow a run of a running `fanfare serve` until it ends, then print its report.
    Watch {
        /// The run (run-N).
        id: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
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
    /// Inspect the workflows.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// What the admission gate learned about servers' limits, kept between runs in
    /// the user's cache directory ($XDG_CACHE_HOME/fanfare/limits.json, else
    /// ~/.cache/fanfare/limits.json; `fanfare serve` keeps its own in its journal).
    #[command(
        after_help = "A run against a server that answered 429 starts the next run against the same\n\
endpoint (base URL, model and API key — kept as a fingerprint, never the key) at the\n\
cap that worked, instead of sending the whole fan-out and meeting a wave of 429s\n\
again. An entry is forgotten after 24 hours."
    )]
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
}

#[derive(Subcommand)]
pub enum LimitsCommand {
    /// List the learned limits: endpoint, model, cap, where the server refused, age.
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget every learned limit: the next run starts wide again.
    Clear,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Fan-out of N branches + one merge over HTTP (real anthropic provider) against an
    /// in-process mock, beside fanfare's provider stack alone in a JoinSet, bare
    /// reqwest + JoinSet and (with --python) asyncio.gather.
    #[command(
        after_help = "Prints one JSON line per case: framework, n, wall_s, overhead_s \
(wall - 2 x latency), cpu_s, peak_rss_mb, ok, failed, for fanfare, fanfare-provider-joinset and reqwest-joinset; \
then the ratios: fanfare over bare reqwest (overhead, cpu), and the same gap in two layers (provider_stack: the stack alone over \
bare reqwest; runtime_over_stack: fanfare over the stack alone).\n\
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
        /// A document of about this many bytes that every branch reads with the task
        /// (0: the one-line task alone). 20000 is about 5,000 tokens.
        #[arg(long, default_value_t = 0, value_name = "BYTES")]
        document_bytes: usize,
    },
    /// The path a user types: N agent specs on disk, `fanfare run` as a process with
    /// its defaults (the report's own wall), beside the bare client sending the same
    /// requests; with --limit, the same command twice against a server that allows
    /// LIMIT in flight (first contact, then from what it learned).
    Run {
        /// Branch counts to run.
        #[arg(long = "n", value_delimiter = ',', default_value = "4,100,1000,10000")]
        sizes: Vec<usize>,
        /// The mock's fixed latency, in milliseconds.
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        /// Measured repetitions per case (after one unmeasured); medians are reported.
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        repeat: usize,
        /// The mock answers 429 above this many calls in flight.
        #[arg(long, value_parser = at_least_one)]
        limit: Option<usize>,
    },
    /// Runs submitted at once to `fanfare serve` started as a process with its
    /// defaults: each run's wall (its report's) against the floor.
    Submit {
        /// Runs submitted at once.
        #[arg(long, default_value_t = 10, value_parser = at_least_one)]
        runs: usize,
        /// Branches per run (a fan-out to that many agent specs).
        #[arg(long = "n", default_value_t = 100, value_parser = at_least_one)]
        n: usize,
        /// The mock's fixed latency, in milliseconds.
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        /// Measured rounds (after one unmeasured).
        #[arg(long, default_value_t = 3, value_parser = at_least_one)]
        repeat: usize,
    },
    /// The tool loop's own cost: N branches whose model (a stub answering at once)
    /// calls a no-op tool TURNS times, against N answering at once; CPU per turn.
    Tools {
        /// Branches.
        #[arg(long, default_value_t = 1000, value_parser = at_least_one)]
        n: usize,
        /// Tool turns per branch.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=63))]
        turns: u32,
        /// Measured repetitions per case, interleaved; medians are reported.
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        repeat: usize,
    },
    /// Orchestration costs on the simulated provider: overhead per branch (calls that
    /// return at once), CPU per branch when every call waits 200 ms (beside the provider
    /// stack alone), maps, runs per second, memory per idle specialist, a restart.
    Inproc {
        /// Branch counts for the per-branch overhead.
        #[arg(
            long = "n",
            value_delimiter = ',',
            default_value = "10,100,1000,10000,100000"
        )]
        sizes: Vec<usize>,
    },
    /// N branches through the gate with its defaults (the ceiling set to N) against a
    /// mock that answers 429 above LIMIT in flight: 429s per useful call, wasted
    /// calls, wall vs floor.
    Admission {
        /// Branches.
        #[arg(long = "n", default_value_t = 1000, value_parser = at_least_one)]
        n: usize,
        /// Calls the mock allows in flight.
        #[arg(long, default_value_t = 50, value_parser = at_least_one)]
        limit: usize,
        /// The mock's latency.
        #[arg(long, default_value_t = 200)]
        latency_ms: u64,
        /// Slow start: the adaptive cap starts here and doubles per round trip
        /// [default: N, the gate's default — every branch goes out in the first round].
        #[arg(long, value_parser = at_least_one)]
        initial: Option<usize>,
    },
    /// N runs submitted at once to `fanfare serve` (in process, journal on disk):
    /// submit latency p50/p99/max, accepted vs shed, runs per second.
    Serve {
        /// Runs to submit at once.
        #[arg(long = "n", default_value_t = 1000)]
        n: usize,
        /// Most runs in progress at once.
        #[arg(long, default_value_t = 64, value_parser = at_least_one)]
        max_runs: usize,
        /// Most runs waiting [default: N, so that none is shed].
        #[arg(long)]
        max_queued: Option<usize>,
    },
    /// Against a real server (llama.cpp): four specialists over one document, one call
    /// at a time — the prompt tokens each read from the server's cache, with the
    /// specialist's instructions first (the old layout), with the document first
    /// (today's), and through a run with --cache-warm.
    #[command(
        after_help = "Example:\n  scripts/llm-server start -- --parallel 1   # prints URL\n  \
fanfare bench cache --base-url URL/v1\n  \
fanfare bench cache --wire anthropic --base-url URL"
    )]
    Cache {
        /// The server's base URL (with `/v1` for the OpenAI wire, without for Anthropic).
        #[arg(long, value_name = "URL")]
        base_url: String,
        /// The wire format.
        #[arg(long, value_enum, default_value = "openai")]
        wire: Wire,
        /// The model name to send.
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Words in the shared document (~4/3 tokens each).
        #[arg(long, default_value_t = 750)]
        words: usize,
    },
    /// One fan-out on this process's specialist, on one worker node (a `fanfare
    /// worker` process on 127.0.0.1), on two: branches per second and the time each
    /// branch costs beyond the model's latency (simulated model).
    Cluster {
        /// Branches in the fan-out.
        #[arg(long = "n", default_value_t = 2000)]
        n: usize,
        /// The simulated model's latency.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Measured rounds (the three cases interleaved); medians are reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
}

/// Which wire format `bench cache` speaks.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Wire {
    /// `/v1/chat/completions` (the base URL ends in `/v1`).
    Openai,
    /// `/v1/messages` (the base URL without `/v1`).
    Anthropic,
}

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// List the agents in the spec directory.
    List {
        /// Directory of agent specs (*.toml + prompt files).
        #[arg(long, value_name = "DIR")]
        agents: Option<PathBuf>,
        /// Let agent specs read prompt files from outside their directory.
        #[arg(long)]
        allow_prompts_outside: bool,
    },
}

#[derive(Subcommand)]
pub enum WorkflowsCommand {
    /// List the workflows (./agents/workflows, else the built-in ones).
    List,
    /// Show a workflow's graph: its steps, what runs together, the critical path.
    Show {
        /// A workflow name or file.
        name: String,
        /// Directory of agent specs, for the agents' expected latencies.
        #[arg(long, value_name = "DIR")]
        agents: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct MockArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8089)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Fixed latency of every answer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub latency_ms: u64,
    /// Uniform extra latency, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Probability of an HTTP 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Probability of an HTTP 429 (with retry-after).
    #[arg(long = "rate-429", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate_429: f64,
    /// Answer 429 above this many requests in flight.
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Allow this many requests per --rate-window, as a provider's rate limit: every
    /// answer carries the provider's rate-limit headers (limit, remaining, reset), and
    /// requests over it get a 429 until the window ends.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests_per_window: Option<u64>,
    /// The window --requests-per-window counts in.
    #[arg(long, value_name = "D", default_value = "1m", value_parser = parse_duration)]
    pub rate_window: std::time::Duration,
    /// Probability of never answering.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub hang_rate: f64,
    /// Probability of a 200 whose body is not JSON.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub garbage_rate: f64,
    /// Probability of cutting the connection right after the headers.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Probability of cutting a streamed answer halfway.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub midstream_close_rate: f64,
    /// The wait suggested with each 429, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub retry_after_ms: u64,
    /// Require this API key (x-api-key or bearer); otherwise any is accepted.
    #[arg(long, env = "FANFARE_MOCK_KEY", hide_env_values = true)]
    pub require_key: Option<String>,
    /// Seed of the fault rolls.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Answer as this model instead of the one asked for.
    #[arg(long, value_name = "MODEL")]
    pub answer_model: Option<String>,
    /// Refuse prompts of more tokens than this with the 400 a real server gives
    /// (llama.cpp's on the OpenAI route, Anthropic's on the Anthropic route).
    #[arg(long, value_name = "TOKENS")]
    pub context_window: Option<u64>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Merge {
    /// An LLM merge of the ends of the graph, in levels when they do not fit the model.
    Llm,
    /// Deterministic merge, one section per step, no model call.
    Code,
    /// The single answer with the most distinct words.
    Best,
    /// No merge.
    None,
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// The task text; `-` reads it from standard input.
    #[arg(value_name = "TEXT", conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the task text from a file.
    #[arg(long, short, value_name = "F")]
    pub file: Option<PathBuf>,
    /// Print the report as JSON instead of the human view.
    #[arg(long)]
    pub json: bool,
    /// Files a workflow's map step fans out over (`map = { over = "items" }`), one
    /// branch per file; a glob like 'docs/*.md'. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub each: Vec<String>,
    /// Print the plan — steps, what runs together, estimated tokens and cost — and
    /// call nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Mend an earlier run: REPORT is its `--json` output. Run the same task and
    /// workflow again, reusing the branches that succeeded there (not called again);
    /// only the others run, then the merge.
    #[arg(long, value_name = "REPORT")]
    pub repair: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(clap::Args)]
pub struct BatchArgs {
    /// Documents to process; each one's text is the task of one run.
    #[arg(value_name = "FILE", required_unless_present = "show")]
    pub files: Vec<PathBuf>,
    /// Most documents in flight at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// Where results go, one JSON line per document, as each finishes (its answer is
    /// printed too). A document already in it with the same content is skipped, so
    /// an interrupted batch resumes; an edited one runs again.
    #[arg(long, default_value = "results.jsonl", value_name = "F")]
    pub out: PathBuf,
    /// Print what --out holds, readably (each document's answer, or why it failed;
    /// the last line for a document counts), and run nothing.
    #[arg(long, conflicts_with = "retry_failed")]
    pub show: bool,
    /// On resume, run again the documents whose line says they failed (a new line is
    /// appended; the last line for a document is the one that counts).
    #[arg(long)]
    pub retry_failed: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `run` and `batch` share: the workflow or agents, policy, deadlines, merge,
/// and the runtime.
#[derive(clap::Args)]
pub struct CommonArgs {
    /// Run this workflow: a name (./agents/workflows/NAME.toml, else a built-in one:
    /// perspectives, validation, research, summarise) or a file [default: perspectives,
    /// unless --agents or --only choose the agents of a plain fan-out].
    #[arg(long, value_name = "NAME|FILE")]
    pub workflow: Option<String>,
    /// Run only these agents (comma-separated names).
    #[arg(long, value_name = "A,B", value_delimiter = ',')]
    pub only: Vec<String>,
    /// fail-fast: the first failed branch ends the run. partial[:K]: succeed if at
    /// least K branches (default 1) succeed.
    /// [default: the workflow's, else fail-fast]
    #[arg(long, value_parser = parse_policy)]
    pub policy: Option<Policy>,
    /// Overall deadline for branches and merge (e.g. 90s, 2m, 1500ms).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Deadline for each branch.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub branch_timeout: Duration,
    /// How to merge the answers [default: the workflow's, else llm].
    #[arg(long, value_enum)]
    pub merge: Option<Merge>,
    /// The merge model's context window in tokens, when it is not a known model
    /// (e.g. a local server with 1024 tokens per slot). Without it, a window too
    /// small is learned from the server's error and the merge planned again.
    #[arg(long, value_name = "TOKENS", value_parser = clap::value_parser!(u32).range(1..))]
    pub context_window: Option<u32>,
    /// Retry a branch up to N times on the restarted specialist when it crashed under it.
    #[arg(long, default_value_t = 0)]
    pub crash_retries: u32,
    /// Merge without stragglers after this long if the quorum is met (partial
    /// policies); their late answers still appear in the report, marked late.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub soft_deadline: Option<Duration>,
    /// Warm the provider's prompt cache first: the first branch goes alone and the
    /// others once its answer starts (with --stream; else once it ends), so that they
    /// read the shared task from the cache instead of each paying for it.
    #[arg(long)]
    pub cache_warm: bool,
    /// Approve every tool call that needs approval (a tool or agent marked
    /// `needs_approval`), for scripts. Without it such calls are asked about at the
    /// terminal, one at a time, or rejected when there is no terminal.
    #[arg(long)]
    pub approve_all: bool,
    /// Cap on the run's tokens; branches it cannot cover are refused, not sent.
    #[arg(long, value_name = "N")]
    pub budget_tokens: Option<u64>,
    /// Cap on the run's cost in USD (priced with the price table).
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub budget_usd: Option<f64>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
