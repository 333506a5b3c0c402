//! The server's flags, and its clients' (`submit`, `watch`).

use std::path::PathBuf;
use std::time::Duration;

use super::client::ClientArgs;
use super::parse::{at_least_one, parse_duration};
use super::runtime::RuntimeArgs;

#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The task text; `-` reads it from standard input.
    #[arg(value_name = "TEXT", conflicts_with = "file")]
    pub text: Option<String>,
    /// Read the task text from a file.
    #[arg(long, short, value_name = "F")]
    pub file: Option<PathBuf>,
    /// A workflow the server has [default: the server's].
    #[arg(long, value_name = "NAME")]
    pub workflow: Option<String>,
    /// Map the workflow over these files (a glob; repeat for more): each file's
    /// text is one of its items, sent as the run's `items`.
    #[arg(long, value_name = "GLOB")]
    pub each: Vec<String>,
    /// A plain fan-out to these agents instead (comma-separated).
    #[arg(
        long,
        value_name = "A,B",
        value_delimiter = ',',
        conflicts_with = "workflow"
    )]
    pub only: Vec<String>,
    /// fail-fast, partial or partial:K [default: the workflow's].
    #[arg(long)]
    pub policy: Option<String>,
    /// The run's deadline (e.g. 90s) [default: the server's].
    #[arg(long)]
    pub deadline: Option<String>,
    /// Each branch's deadline [default: the server's].
    #[arg(long)]
    pub branch_timeout: Option<String>,
    /// llm, code, best or none [default: the workflow's].
    #[arg(long)]
    pub merge: Option<String>,
    /// Sent as Idempotency-Key: a retry with the same key returns the same run.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Print the run's id and return at once.
    #[arg(long)]
    pub detach: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Anything but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// The journal (SQLite), created if missing.
    #[arg(long, default_value = "fanfare.db", value_name = "F")]
    pub db: PathBuf,
    /// File holding the bearer token clients must send (Authorization: Bearer …).
    #[arg(long, value_name = "F")]
    pub token_file: Option<PathBuf>,
    /// A host name the server answers to besides localhost, 127.0.0.1, [::1] and its
    /// own address when it listens on a loopback address (requests naming any other
    /// host are refused: a web page can point its own name at 127.0.0.1). Repeatable.
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Most runs in progress at once.
    #[arg(long, default_value_t = 16, value_parser = at_least_one)]
    pub max_runs: usize,
    /// Most runs waiting for a slot; beyond it submissions get 429 with Retry-After.
    #[arg(long, default_value_t = 256)]
    pub max_queued: usize,
    /// On SIGTERM or Ctrl-C, how long runs in progress may take to end before they
    /// are interrupted (and resumed at the next start).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Most event streams open at once (each holds up to 256 KiB of events while its
    /// client reads); more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 128, value_parser = at_least_one)]
    pub max_event_streams: usize,
    /// Most client connections open at once; more wait to be accepted (keep it well
    /// under the open-file limit: the journal and the provider calls need files too).
    #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
    pub max_connections: usize,
    /// New runs are refused (503) while the journal's disk has less free than this,
    /// MiB: each run writes its answers several times over (events, report), and a
    /// full disk stops every run. 0 sets no floor.
    #[arg(long, default_value_t = 1024)]
    pub min_free_disk_mb: u64,
    /// How long a tool call that needs approval waits for a decision (`fanfare
    /// approvals`, the page, the API) before --approval-default decides it. Without
    /// it the call waits as long as its branch may (its deadline), so give runs with
    /// approvals a long enough --branch-timeout and --deadline.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub approval_timeout: Option<std::time::Duration>,
    /// What decides a call no one decided within --approval-timeout. A repair's call
    /// of unknown outcome (in flight at a crash) is rejected whatever this says: only
    /// a person runs it again.
    #[arg(long, value_enum, default_value = "reject")]
    pub approval_default: ApprovalDefaultArg,
    /// The most branches one submitted run may ask for (agents in a fan-out, items of
    /// a map); more are refused with 422 naming the limit.
    #[arg(long, default_value_t = 10_000, value_parser = at_least_one)]
    pub max_branches: usize,
    /// Largest request body, KiB.
    #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
    pub max_body_kib: usize,
    /// The workflow of a run that names neither a workflow nor agents.
    #[arg(long, default_value = "perspectives", value_name = "NAME")]
    pub workflow: String,
    /// A run's deadline when it gives none.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Each branch's deadline when the run gives none.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub branch_timeout: Duration,
    /// Retry a branch up to N times on the restarted specialist when it crashed under it.
    #[arg(long, default_value_t = 0)]
    pub crash_retries: u32,
    #[command(flatten)]
    pub cluster: super::cluster::OrchestratorArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// What decides a tool call no one decided in time.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ApprovalDefaultArg {
    /// The call is not run; the model is told.
    Reject,
    /// The call runs as the model asked.
    Approve,
}
