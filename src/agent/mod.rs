//! Specialists: the [`Agent`] trait, what flows in and out of one ([`Task`],
//! [`AgentOutput`], [`AgentError`]), the message protocol ([`AgentMsg`]) and the actor
//! that runs an `Agent`.
//!
//! # Lifecycle of one task
//! An [`Agent`] runs behind an actor, and its tasks run through that actor's
//! *intake*: the orchestrator's branch asks the intake for a ticket and runs
//! [`Agent::run`] in its own tokio task (no message to the actor, no task of the
//! actor's, no reply port: one task and one wake-up per branch instead of three). The
//! actor still decides what may run: the intake admits nothing while the actor
//! retires, and when the actor is stopped or killed its state closes the intake, which
//! aborts every task it admitted (the branch records the specialist as dead, and
//! retries on its replacement if it may). A branch that gives up (deadline, policy,
//! run over) drops the work it is running, which drops the provider future (an HTTP
//! request is cancelled). A caller that sends [`AgentMsg::Run`] instead (a raw
//! message) gets the same: the actor runs the task through its intake on a task it
//! spawns, answers on the port, and aborts it on [`AgentMsg::Cancel`].
//!
//! A panic inside [`Agent::run`] is caught and answered as [`AgentError::Panicked`];
//! that branch fails. The actor then *retires*: the intake tells its supervisor (a
//! `Retiring` notice), which counts it as a crash (restart intensity, strategy,
//! backoff) and publishes a fresh actor for new work, while the tasks the old one
//! admitted finish; the last to end tells the supervisor it is `Retired`, and it is
//! stopped. One panicking task says nothing about its siblings: killing them would
//! turn one failed branch into many. (A raw actor that panics in `handle` fails
//! outright, as ractor does; its in-flight callers record `SpecialistDied`.)
//!
//! # Writing a specialist as a raw actor
//! Any `ractor::Actor<Msg = AgentMsg>` can be a specialist: answer `Run` on its reply
//! port, honour `Cancel`, and ignore every other variant (`AgentMsg` is
//! `#[non_exhaustive]`; the runtime uses hidden variants for its own bookkeeping).

//!
//! # Layout
//! - this file: the trait and its payloads;
//! - [`task`]: ids and the [`Task`] a specialist receives;
//! - `actor`: [`AgentMsg`] and the actor around an `Agent`;
//! - `intake`: how that actor's tasks run in their callers' tasks, under its watch;
//! - [`spec`]: declarative agents (TOML + prompt file);
//! - [`faults`]: the [`Faulty`](faults::Faulty) wrapper for supervision experiments.

mod actor;
pub mod faults;
mod intake;
pub mod spec;
pub mod structured;
pub mod task;
pub mod tools;

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::provider::{Completion, Provider, ProviderError, Usage};

pub(crate) use actor::AgentActor;
pub use actor::AgentMsg;
pub use intake::panic_is_caught;
pub(crate) use intake::{caught, caught_now, panic_message as panic_text, Intake, Notice, Ran};
pub use task::{BranchId, Meter, RunId, Task, UpstreamOutput};

/// What a specialist produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentOutput {
    /// The text of the answer.
    pub text: String,
    /// Tokens spent producing it.
    pub usage: Usage,
    /// Provider attempts it took (1 without retries; 0 when no model was called).
    pub attempts: u32,
    /// The model that answered, if one did.
    pub model: Option<String>,
    /// Time its model call waited for admission (concurrency and rate limits).
    #[serde(default)]
    pub permit_wait_ms: u64,
    /// Calls made for it whose answer was not used: failed attempts that were
    /// retried, a hedge's loser, a shaped answer that had to be asked again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wasted_calls: u32,
    /// How many of its attempts the provider refused as rate-limited or overloaded
    /// (429 / 529).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rate_limited: u32,
    /// The model stopped because it reached `max_tokens`: the answer may be cut
    /// short (Anthropic's `max_tokens`, OpenAI's `length`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Tool calls its model made (see [`tools`]), and how many of them failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_calls: u32,
    /// Of [`AgentOutput::tool_calls`], those that went back to the model as errors.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tool_errors: u32,
    /// Each of its tool calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_log: Vec<tools::ToolUse>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl AgentOutput {
    /// An output that did not involve a model call.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            usage: Usage::default(),
            attempts: 0,
            model: None,
            permit_wait_ms: 0,
            wasted_calls: 0,
            rate_limited: 0,
            truncated: false,
            tool_calls: 0,
            tool_errors: 0,
            tool_log: Vec::new(),
        }
    }
}

impl From<Completion> for AgentOutput {
    /// An agent's output is often just the model's answer.
    fn from(c: Completion) -> Self {
        Self {
            text: c.text,
            usage: c.usage,
            attempts: c.attempts,
            model: Some(c.model),
            permit_wait_ms: c.permit_wait_ms,
            wasted_calls: c.attempts.saturating_sub(1) + u32::from(c.hedged),
            rate_limited: c.rate_limited,
            truncated: matches!(c.stop_reason.as_deref(), Some("max_tokens" | "length")),
            tool_calls: 0,
            tool_errors: 0,
            tool_log: Vec::new(),
        }
    }
}

/// Why a specialist could not produce an output. In JSON the variant is `error`
/// (a provider error it wraps has a `kind` of its own).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentError {
    /// The model call failed.
    #[error(transparent)]
    Provider(Box<ProviderError>),
    /// The model answered with no text (only whitespace), which is no answer.
    #[error("the model `{model}` answered with no text (stop reason: {})", .stop_reason.as_deref().unwrap_or("none given"))]
    EmptyAnswer {
        /// The model that answered.
        model: String,
        /// Why it stopped, as it said.
        stop_reason: Option<String>,
    },
    /// The step asked for a shaped answer (a JSON schema) and the model's answers did
    /// not have it, on the first try nor on the one more it was given with the
    /// problems.
    #[error("no answer of the asked shape after {tries} tries: {problem}")]
    InvalidOutput {
        /// What was wrong with the last answer.
        problem: String,
        /// Answers asked for.
        tries: u32,
    },
    /// The agent declined the task, with its reason.
    #[error("rejected the task: {reason}")]
    Rejected {
        /// Why.
        reason: String,
    },
    /// The agent's code panicked; the message is the panic payload.
    #[error("panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The specialist is retiring after a panic and took no new work; the caller
    /// should send the task to its replacement (the orchestrator does so).
    #[error("the specialist is retiring; retry on its replacement")]
    Retiring,
    /// A tool call was in flight when its run was interrupted, and it may not run
    /// again (its tool is not idempotent): what it did is not known. Final: a
    /// step's retry would repeat what this refuses to repeat.
    #[error("the call `{call}` of the tool `{tool}` (turn {turn}) was in flight when the run was interrupted, and the tool does not declare itself idempotent: it is not run again (what it did, if anything, is not known)")]
    NotRepeated {
        /// The model's id for the call.
        call: String,
        /// The tool.
        tool: String,
        /// The model turn that made it.
        turn: u32,
    },
    /// The agent's model calls were answered, and billed, before it failed: a tool
    /// loop that ran out of turns or of what the run's budget reserved for it, or
    /// whose later turn failed. What they used counts in the run's budget and
    /// report.
    #[error("{cause} (after {} tokens in {attempts} model calls)", .usage.total())]
    Spent {
        /// Why it failed.
        cause: Box<AgentError>,
        /// What its answered calls used.
        usage: crate::provider::Usage,
        /// Its model calls (attempts).
        attempts: u32,
        /// The model that answered them (the last one's), to price them by.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
}

impl From<ProviderError> for AgentError {
    /// So that an agent can `?` a model call.
    fn from(e: ProviderError) -> Self {
        AgentError::Provider(Box::new(e))
    }
}

/// What a specialist answers on its reply port.
pub type AgentReply = Result<AgentOutput, AgentError>;

/// Everything an [`Agent`] may use while running a task.
#[derive(Clone)]
pub struct AgentContext {
    /// The model backend the runtime was built with.
    pub provider: Arc<dyn Provider>,
    /// The tools its agents may call (`FanfareBuilder::tool`).
    pub tools: tools::Toolbox,
}

impl std::fmt::Debug for AgentContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentContext")
            .field("provider", &self.provider.name())
            .field("tools", &self.tools)
            .finish()
    }
}

/// A specialist: the one thing a user writes to add a perspective.
///
/// The runtime wraps it in an actor (speaking [`AgentMsg`]) and supervises it; each
/// task runs in the tokio task of the branch that asked for it. `run` may be cancelled
/// at any `.await` (the branch gave up, or the actor was stopped), so keep no state
/// that must be cleaned up by running to the end.
pub trait Agent: Send + Sync + 'static {
    /// The name the orchestrator routes by; unique within a runtime.
    fn name(&self) -> &str;

    /// Do the task. Called concurrently for different branches.
    fn run(&self, ctx: &AgentContext, task: Task) -> impl Future<Output = AgentReply> + Send;

    /// What one model call for `task` may use at most, if this agent makes one: run
    /// budgets reserve it before dispatch (a cost cap prices it with the model's
    /// price). `None` (the default): the runtime estimates the task's prompt plus the
    /// budget's `branch_tokens`, on the provider's default model.
    fn call_estimate(&self, task: &Task) -> Option<CallEstimate> {
        let _ = task;
        None
    }
}

/// What one model call may use at most: its model and tokens in and out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallEstimate {
    /// The model it asks for (`None`: the provider's default).
    pub model: Option<String>,
    /// Prompt tokens: the system prompt and the task (an estimate).
    pub input_tokens: u64,
    /// The cap on generated tokens (`max_tokens`).
    pub max_output_tokens: u64,
}

impl CallEstimate {
    /// The most the call may use: its prompt in, its whole `max_tokens` out (what a
    /// run's budget reserves for it, priced as such).
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.max_output_tokens,
            ..Usage::default()
        }
    }
}
