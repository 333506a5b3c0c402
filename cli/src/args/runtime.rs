//! What every command that starts the runtime shares: agents, provider, limits.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use fanfare::agent::tools::mcp::McpServer;
use fanfare::supervision::Strategy;

use super::parse::{at_least_one, parse_duration, parse_mcp, parse_strategy};

#[derive(Clone, Copy, PartialEq, ValueEnum)]
pub enum ProviderKind {
    /// Anthropic Messages API (key: ANTHROPIC_API_KEY; base: ANTHROPIC_BASE_URL).
    Anthropic,
    /// OpenAI Chat Completions or any compatible server (OPENAI_API_KEY, OPENAI_BASE_URL).
    Openai,
    /// The embedded simulated model.
    Sim,
}

/// What every command that starts the runtime shares: where the agents come from,
/// the provider and its limits, supervision, fault injection.
#[derive(clap::Args)]
pub struct RuntimeArgs {
    /// Directory of agent specs [default: ./agents/specs if present, else the built-in ones].
    #[arg(long, value_name = "DIR")]
    pub agents: Option<PathBuf>,
    /// Let agent specs send prompt files from outside their directory to the model,
    /// and a spec directory's fanfare.toml give read_file a root outside it.
    #[arg(long)]
    pub allow_prompts_outside: bool,
    /// Seed of the simulated provider (its latencies and wording).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Model backend [default: anthropic if ANTHROPIC_API_KEY is set, else openai if
    /// OPENAI_API_KEY is set, else sim].
    #[arg(long, value_enum)]
    pub provider: Option<ProviderKind>,
    /// Default model (a spec's own `model` wins).
    #[arg(long)]
    pub model: Option<String>,
    /// Base URL (Anthropic: without /v1; OpenAI: with /v1).
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// Read the API key from this file instead of the environment.
    #[arg(long, value_name = "F")]
    pub api_key_file: Option<PathBuf>,
    /// Ask for streamed (SSE) answers.
    #[arg(long)]
    pub stream: bool,
    /// Attempts per model call, retries included (429, 529, 5xx, connection errors).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
    /// TOML file of model prices (`[models."NAME"] input_per_mtok = …, output_per_mtok = …`)
    /// that overrides or extends the built-in table.
    #[arg(long, value_name = "F")]
    pub prices: Option<PathBuf>,
    /// Inject a fault: AGENT:KIND:RATE or AGENT:KIND:every=N (KIND: panic, hang, slow,
    /// provider-500, provider-429, garbage; slow takes :EXTRA_MS). Repeatable.
    #[arg(long = "fault", value_name = "A:K:R")]
    pub faults: Vec<String>,
    /// Which specialists restart when one crashes.
    #[arg(long, default_value = "one-for-one", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// An MCP server whose tools agents may call (repeatable): NAME=COMMAND [ARGS…],
    /// a child process speaking MCP on stdio (quote the whole value: --mcp 'fs=npx -y
    /// @modelcontextprotocol/server-filesystem ./docs'), or NAME=URL (streamable
    /// HTTP). A spec offers its tools with `tools = ["NAME.*"]` or `["NAME.TOOL"]`.
    /// It is supervised like a specialist (`mcp:NAME`) and restarted if it dies.
    #[arg(long = "mcp", value_name = "NAME=COMMAND|URL", value_parser = parse_mcp)]
    pub mcp: Vec<McpServer>,
    /// Offer the built-in `read_file` tool, which reads files (and lists folders)
    /// under DIR and nowhere else (`..`, absolute paths and symlinks out are refused).
    /// A spec offers it with `tools = ["read_file"]`.
    #[arg(long, value_name = "DIR")]
    pub read_root: Option<PathBuf>,
    /// Offer the built-in `http_get` tool, which fetches only from HOST (repeatable:
    /// `example.com` on ports 80 and 443, `*.example.com` its subdomains, or one port:
    /// `127.0.0.1:8080`); redirects stay on the first URL's origin. A spec offers it
    /// with `tools = ["http_get"]`.
    #[arg(long = "http-allow", value_name = "HOST")]
    pub http_allow: Vec<String>,
    /// Most model calls in flight at once, per model (real providers). The gate starts
    /// here, so a fan-out to a server with room goes out whole; a 429/529 cuts it to
    /// what the server carried, and that is remembered for the next run (`fanfare
    /// limits`) [default: 10000, or fewer if the open-file limit allows fewer sockets].
    #[arg(long, value_name = "C", value_parser = at_least_one)]
    pub max_concurrency: Option<usize>,
    /// Requests per minute allowed to the provider.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,
    /// Tokens per minute allowed to the provider (estimated before, settled after).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: Option<u32>,
    /// Hedge slow model calls: after this delay (or the observed p95, once known)
    /// send one duplicate and keep the first answer; at most 2 hedges per run.
    #[arg(long, value_name = "D", value_parser = parse_duration)]
    pub hedge_after: Option<Duration>,
    /// Limit on one HTTP call.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub call_timeout: Duration,
}
