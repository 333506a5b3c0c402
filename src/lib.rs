//! fanfare: fan-out / fan-in multi-agent LLM work on supervised `ractor` actors.
//!
//! A task is broadcast to specialist agents that run concurrently as supervised
//! actors; an orchestrator gathers their replies with deadlines under a
//! [`Policy`] (fail-fast or tolerate-partial), a synthesiser merges them, and a
//! [`RunReport`] says what every branch did. Wall time is the slowest branch, not the
//! sum: *serialise what depends on something, parallelise everything else*.
//!
//! # Layout
//! The modules follow a run's life, and each uses only the ones listed before it:
//! - [`provider`]: the [`Provider`] trait (one request in, one completion out), the
//!   `anthropic`, `openai` and simulated models, the wrappers that add retries,
//!   admission control and hedging, and model prices;
//! - [`agent`]: the [`Agent`] trait a user writes, what it receives ([`Task`]) and
//!   answers ([`AgentOutput`]), the [`AgentMsg`] protocol every specialist speaks,
//!   declarative specs ([`agent::spec`]) and fault injection ([`agent::faults`]);
//! - [`supervision`]: the supervisor, its restart decision and the roster;
//! - [`run`]: [`RunRequest`] and [`Policy`], the scheduler, the orchestrator and the
//!   synthesiser; every branch ends in one [`BranchOutcome`];
//! - [`report`]: [`RunReport`], built from what a run did, as JSON or a human view;
//! - `runtime`: [`Fanfare`], the handle that starts, runs and shuts down.
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
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod provider;
pub mod report;
pub mod run;
mod runtime;
pub mod supervision;
mod tasks;

pub use agent::{Agent, AgentContext, AgentError, AgentMsg, AgentOutput, AgentReply, Task};
pub use provider::Provider;
pub use report::{RunReport, RunStatus};
pub use run::{BranchOutcome, MergeStrategy, Policy, RunError, RunEvent, RunRequest, Step};
pub use runtime::{Fanfare, FanfareBuilder, RunHandle, StartError};
pub use supervision::Specialist;
pub use tasks::LiveCount;

/// The README's code blocks, compiled and run as doctests so it stays true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
