//! fanfare: fan-out / fan-in multi-agent LLM work on supervised `ractor` actors.
//!
//! A task is broadcast to specialist agents that run concurrently as supervised
//! actors; an orchestrator gathers their replies with deadlines under a
//! [`Policy`] (fail-fast or tolerate-partial), a synthesiser merges them, and a
//! [`RunReport`] says what every branch did. Wall time is the slowest branch, not the
//! sum: *serialise what depends on something, parallelise everything else*.
//!
//! # Layout
//! - [`agent`]: the [`Agent`] trait, the [`AgentMsg`] protocol, the actor wrapping an agent.
//! - [`supervisor`]: spawns specialists linked, restarts them, keeps the [`Roster`].
//! - [`orchestrator`]: the actor that accepts runs; [`RunRequest`], [`Policy`], [`Step`].
//! - `schedule` (private): the scheduling core shared by fan-outs and step graphs.
//! - [`synthesiser`]: merge strategies (LLM, code, select-best).
//! - [`outcome`]: [`BranchOutcome`] and run events.
//! - [`report`]: [`RunReport`], JSON and human view with a timeline.
//! - [`provider`]: the [`Provider`] trait and the embedded simulated model.
//! - [`spec`]: declarative agent specs (TOML + prompt files).
//! - [`runtime`]: [`Fanfare`], the handle that starts, runs and shuts down.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use fanfare::{Fanfare, RunRequest, Policy, MergeStrategy};
//! use fanfare::provider::{SimProvider, SimProfile};
//! use fanfare::{Agent, AgentContext, AgentOutput, AgentReply, Task};
//!
//! struct Shouty;
//! impl Agent for Shouty {
//!     fn name(&self) -> &str { "shouty" }
//!     async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
//!         Ok(AgentOutput::text(task.input.to_uppercase()))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
//! let fanfare = Fanfare::builder(provider).agent(Shouty).start().await?;
//! let request = RunRequest::fan_out("hello", ["shouty"])
//!     .policy(Policy::TolerantPartial { quorum: 1 })
//!     .merge(MergeStrategy::Code);
//! let report = fanfare.run(request).await?;
//! assert!(report.status.is_success());
//! assert_eq!(report.branches[0].outcome.output().map(|o| o.text.as_str()), Some("HELLO"));
//! fanfare.shutdown().await;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod faults;
pub mod orchestrator;
pub mod outcome;
pub mod pricing;
pub mod provider;
pub mod report;
pub mod runtime;
mod schedule;
pub mod spec;
pub mod supervisor;
pub mod synthesiser;
pub mod task;
pub mod tasks;

pub use agent::{Agent, AgentActor, AgentContext, AgentError, AgentMsg, AgentOutput, AgentReply};
pub use orchestrator::{Budget, Policy, RunError, RunRequest, Step};
pub use outcome::{
    BranchError, BranchOutcome, CancelReason, DeadlineKind, RefusalReason, RunEvent,
};
pub use provider::{
    Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Usage,
};
pub use report::{BranchReport, RunReport, RunStatus};
pub use runtime::{Fanfare, FanfareBuilder, RunHandle, StartError};
pub use supervisor::{RestartIntensity, Specialist, SpecialistStatus};
pub use synthesiser::{MergeStrategy, Scorer};
pub use task::{BranchId, RunId, Task, UpstreamOutput};

/// The README's code blocks, compiled and run as doctests so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
