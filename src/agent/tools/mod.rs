//! Tools an agent may call: the [`Tool`] trait, typed tools whose input schema is
//! derived from a Rust type ([`tool`], with `schemars`), and the runtime's
//! [`Toolbox`] (`FanfareBuilder::tool`). A spec agent whose spec names tools
//! (`tools = ["clock"]`) runs the loop in `converse`: it offers them, runs what the
//! model calls (in parallel), returns the results and asks again, until an answer or
//! `max_turns`.
//!
//! A call is governed: its arguments are checked against the tool's schema before
//! it runs, it is cut by the branch's deadline, and a bad argument, an unknown tool,
//! an error, a panic or a timeout goes back to the model as a tool error (the branch
//! goes on) and is counted in the branch's output.
//!
//! ```
//! use fanfare::agent::tools::{tool, ToolError};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Add {
//!     /// The first number.
//!     a: f64,
//!     /// The second number.
//!     b: f64,
//! }
//!
//! let add = tool("add", "Adds two numbers.", |_ctx, input: Add| async move {
//!     Ok::<_, ToolError>((input.a + input.b).to_string())
//! });
//! # let _ = add;
//! ```

pub mod approval;
pub mod builtin;
mod call;
mod converse;
pub mod delegate;
pub mod durable;
#[cfg(feature = "mcp")]
pub mod mcp;

pub use approval::{ApprovalRequest, ApprovalState, Approvals, Approver, Decision};
pub(crate) use call::Governed;
pub use call::MAX_ARGUMENTS;
pub(crate) use converse::converse;
#[cfg(test)]
use converse::{MAX_ASKED_PER_TURN, MAX_CALLS_PER_TURN};
pub use delegate::{Delegated, Delegation, Delegator};
pub use durable::{Replay, ToolJournal, ToolKeeper, ToolTurn};

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;

use crate::agent::BranchId;

/// Where a tool call runs.
#[derive(Clone, Debug)]
pub struct ToolContext {
    /// The branch whose model called it.
    pub branch: BranchId,
    /// The agent.
    pub agent: String,
    /// When the branch stops waiting (the call is cut then too).
    pub deadline: Option<tokio::time::Instant>,
    /// The model's id for this call.
    pub call_id: String,
    /// How deep the branch's run is nested (0 for a run started from outside; see
    /// [`delegate`]).
    pub depth: u32,
    /// The tokens the branch may still spend under its run's budget, if it has one.
    pub tokens_left: Option<u64>,
    /// What starts sub-runs, when the runtime has workflows.
    pub(crate) delegator: Option<Delegator>,
    /// Where a call's sub-runs' use is counted for the branch.
    pub(crate) used: Option<crate::agent::Meter>,
}

impl ToolContext {
    /// The context of call `call_id` of `agent` in `branch`, with no deadline, at
    /// the top level, with no budget (for calling a tool outside a run, as tests do).
    pub fn new(branch: BranchId, agent: impl Into<String>, call_id: impl Into<String>) -> Self {
        Self {
            branch,
            agent: agent.into(),
            deadline: None,
            call_id: call_id.into(),
            depth: 0,
            tokens_left: None,
            delegator: None,
            used: None,
        }
    }

    /// A key that names this call in this branch of this run: the same call asked
    /// again (a retried turn) has the same key, for a tool with side effects to
    /// do them once.
    pub fn idempotency_key(&self) -> String {
        let item = self
            .branch
            .item
            .map(|k| format!(".{k}"))
            .unwrap_or_default();
        format!(
            "run-{}/{}{item}/{}",
            self.branch.run.0, self.branch.index, self.call_id
        )
    }
}

/// One tool call, as the report tells it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ToolUse {
    /// The model turn that made it (1 for the first).
    pub turn: u32,
    /// The tool, as the model named it.
    pub tool: String,
    /// The first 16 hex digits of the SHA-256 of the arguments it ran with (the
    /// model's, or a person's edit), to tell calls apart without keeping them.
    pub input_digest: String,
    /// How long it ran, in milliseconds.
    pub took_ms: u64,
    /// The size of the answer sent back to the model, in bytes.
    pub bytes: usize,
    /// Why it failed, if it did (what the model was told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its result was kept by an earlier attempt at the run (interrupted): it was
    /// not run again ([`durable`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// What the runs it started used ([`delegate`]), counted in the branch's own.
    #[serde(default, skip_serializing_if = "no_usage")]
    pub usage: crate::provider::Usage,
}

fn no_usage(u: &crate::provider::Usage) -> bool {
    *u == crate::provider::Usage::default()
}

impl ToolUse {
    /// The digest [`ToolUse::input_digest`] holds, of `input`.
    pub fn digest(input: &serde_json::Value) -> String {
        let sum = ring::digest::digest(&ring::digest::SHA256, input.to_string().as_bytes());
        sum.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Why a tool call failed, as the model is told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    /// An error saying `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// A tool an agent may call.
pub trait Tool: Send + Sync + 'static {
    /// Its name (letters, digits, `_` and `-`).
    fn name(&self) -> &str;
    /// What it does and when to call it, for the model.
    fn description(&self) -> &str;
    /// The JSON schema of its input (an object).
    fn input_schema(&self) -> serde_json::Value;
    /// Whether a call may be run again with the same input and do no more than
    /// once (a read, or a write keyed by [`ToolContext::idempotency_key`]): a call
    /// in flight when a run was interrupted is run again at its resume only then
    /// ([`durable`]). Default: not.
    fn is_idempotent(&self) -> bool {
        false
    }

    /// Whether a call waits for a person's approval before it runs ([`approval`]).
    /// Default: not.
    fn needs_approval(&self) -> bool {
        false
    }

    /// Runs one call with `input`, already checked against the schema; answers
    /// text for the model.
    fn call(
        &self,
        ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>>;
}

/// A tool whose input is a Rust type `I`: its schema is derived from `I`
/// (`schemars::JsonSchema`), and the input is decoded into `I` before `f` runs.
pub fn tool<I, F, Fut>(name: &str, description: &str, f: F) -> TypedTool<I, F>
where
    I: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    F: Fn(ToolContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, ToolError>> + Send + 'static,
{
    let schema = serde_json::to_value(schemars::schema_for!(I)).unwrap_or_default();
    TypedTool {
        name: name.to_owned(),
        description: description.to_owned(),
        schema,
        idempotent: false,
        approval: false,
        f,
        input: PhantomData,
    }
}

/// See [`tool`].
pub struct TypedTool<I, F> {
    name: String,
    description: String,
    schema: serde_json::Value,
    idempotent: bool,
    approval: bool,
    f: F,
    input: PhantomData<fn(I)>,
}

impl<I, F> TypedTool<I, F> {
    /// Declares its calls idempotent ([`Tool::is_idempotent`]).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// Makes each call wait for a person's approval ([`Tool::needs_approval`]).
    pub fn needs_approval(mut self) -> Self {
        self.approval = true;
        self
    }
}

impl<I, F, Fut> Tool for TypedTool<I, F>
where
    I: DeserializeOwned + schemars::JsonSchema + Send + 'static,
    F: Fn(ToolContext, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, ToolError>> + Send + 'static,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn input_schema(&self) -> serde_json::Value {
        self.schema.clone()
    }

    fn is_idempotent(&self) -> bool {
        self.idempotent
    }

    fn needs_approval(&self) -> bool {
        self.approval
    }

    fn call(
        &self,
        ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>> {
        match serde_json::from_value::<I>(input) {
            Ok(input) => Box::pin((self.f)(ctx, input)),
            Err(e) => Box::pin(std::future::ready(Err(ToolError(format!(
                "the input does not fit `{}`: {e}",
                self.name
            ))))),
        }
    }
}

/// The tools a runtime's agents may call: its own, by name, and the tools of its
/// MCP servers, by server; cheap to clone.
#[derive(Clone, Default)]
pub struct Toolbox {
    tools: Arc<HashMap<String, Arc<dyn Tool>>>,
    servers: Arc<HashMap<String, Arc<dyn ToolSource>>>,
    /// The keys taken out of every tool's answer.
    secrets: crate::provider::Redactor,
}

/// Where a server's tools come from: their list as of now (it changes when the
/// server restarts).
pub(crate) trait ToolSource: Send + Sync + 'static {
    /// Its tools: each by the server's own name for it, and as the model sees it
    /// (named `SERVER__TOOL`).
    fn tools(&self) -> Vec<(String, Arc<dyn Tool>)>;

    /// Why it is down, when it is and no reconnection is under way.
    fn down(&self) -> Option<String> {
        None
    }
}

impl std::fmt::Debug for Toolbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("tools", &self.names())
            .field("servers", &self.servers())
            .finish()
    }
}

/// Why a toolbox could not take a tool.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ToolboxError {
    /// Two tools of one name.
    #[error("two tools are named `{0}`")]
    Duplicate(String),
    /// Two MCP servers of one name.
    #[error("two MCP servers are named `{0}`")]
    DuplicateServer(String),
    /// A name the wires do not take.
    #[error("tool name `{0}` must be 1 to 64 letters, digits, `_` or `-`")]
    BadName(String),
    /// Its input schema is not a JSON schema of an object.
    #[error("tool `{name}`: its input schema {problem}")]
    BadSchema {
        /// The tool.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// Whether the wires take `name` as a tool's name (1 to 64 letters, digits, `_`
/// or `-`): a name no offered tool can have is a model's invention.
pub fn is_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Toolbox {
    /// A toolbox of `tools`.
    pub fn new(tools: Vec<Arc<dyn Tool>>) -> Result<Self, ToolboxError> {
        let mut map = HashMap::new();
        for t in tools {
            let name = t.name().to_owned();
            if !is_tool_name(&name) {
                return Err(ToolboxError::BadName(name));
            }
            crate::agent::structured::usable(&t.input_schema()).map_err(|problem| {
                ToolboxError::BadSchema {
                    name: name.clone(),
                    problem,
                }
            })?;
            if map.insert(name.clone(), t).is_some() {
                return Err(ToolboxError::Duplicate(name));
            }
        }
        Ok(Self {
            tools: Arc::new(map),
            servers: Arc::default(),
            secrets: crate::provider::Redactor::default(),
        })
    }

    /// Takes the keys of `secrets` out of every tool's answer (and error) before it
    /// is kept, streamed, reported or sent to a model: a tool that reads a `.env`
    /// file or a server's config must not spread the runtime's own API keys.
    pub fn redacting(mut self, secrets: crate::provider::Redactor) -> Self {
        self.secrets = self.secrets.and(secrets);
        self
    }

    /// What it takes out of tools' answers.
    pub(crate) fn secrets(&self) -> &crate::provider::Redactor {
        &self.secrets
    }

    /// Adds the server `name`'s tools, offered as `name.*` or `name.TOOL`.
    #[cfg_attr(not(feature = "mcp"), allow(dead_code))]
    pub(crate) fn with_server(
        mut self,
        name: &str,
        source: Arc<dyn ToolSource>,
    ) -> Result<Self, ToolboxError> {
        let servers = Arc::make_mut(&mut self.servers);
        if servers.insert(name.to_owned(), source).is_some() {
            return Err(ToolboxError::DuplicateServer(name.to_owned()));
        }
        Ok(self)
    }

    /// The tool named `name` (its own tools only).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.get(name)
    }

    /// The names of its own tools, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.tools.keys().cloned().collect();
        names.sort();
        names
    }

    /// The names of its MCP servers, sorted.
    pub fn servers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.servers.keys().cloned().collect();
        names.sort();
        names
    }

    /// Its MCP servers that are down with no reconnection under way (a restart
    /// failed), by name, each with why.
    pub fn servers_down(&self) -> Vec<(String, String)> {
        let mut down: Vec<(String, String)> = self
            .servers
            .iter()
            .filter_map(|(name, source)| Some((name.clone(), source.down()?)))
            .collect();
        down.sort();
        down
    }

    /// The tools a spec's `tools` names, as of now: `NAME` is one of its own,
    /// `SERVER.*` every tool of an MCP server, `SERVER.TOOL` one of them. A tool
    /// named twice is offered once. Errs with what cannot be found.
    pub(crate) fn resolve(&self, names: &[String]) -> Result<Vec<Arc<dyn Tool>>, String> {
        let mut offered: Vec<Arc<dyn Tool>> = Vec::new();
        for name in names {
            match name.split_once('.') {
                Some((server, tool)) => {
                    let source = self.servers.get(server).ok_or_else(|| {
                        format!(
                            "`{name}` names the MCP server `{server}`, which this runtime does not have (it has: {})",
                            listed(&self.servers())
                        )
                    })?;
                    let tools = source.tools();
                    if tool == "*" {
                        offered.extend(tools.into_iter().map(|(_, t)| t));
                    } else {
                        let all: Vec<String> = tools.iter().map(|(n, _)| n.clone()).collect();
                        let found =
                            tools.into_iter().find(|(n, _)| n == tool).ok_or_else(|| {
                                format!(
                                    "the MCP server `{server}` has no tool `{tool}` (it has: {})",
                                    listed(&all)
                                )
                            })?;
                        offered.push(found.1);
                    }
                }
                None => {
                    let tool = self.get(name).ok_or_else(|| {
                        format!(
                            "it names the tool `{name}`, which this runtime does not have (it has: {})",
                            listed(&self.names())
                        )
                    })?;
                    offered.push(tool.clone());
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        offered.retain(|t| seen.insert(t.name().to_owned()));
        Ok(offered)
    }
}

/// The model's name for a call's tool as people are shown it: itself when it can
/// be a tool's name; else at most 64 characters, each control character (a newline
/// too) replaced. A newline in a model's tool name forged lines of the live view,
/// the report and `submit`.
pub(crate) fn shown(name: &str) -> String {
    if is_tool_name(name) {
        return name.to_owned();
    }
    let mut out: String = name
        .chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if name.chars().count() > 64 {
        out.push('…');
    }
    out
}

/// `names` as a list for a message.
pub(crate) fn listed(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
