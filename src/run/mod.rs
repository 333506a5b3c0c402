//! Runs: what to run, how its branches are scheduled, and how they are merged.
//!
//! A run is a list of steps ([`Step`]); a step may depend on earlier steps, whose
//! outputs become its `Task::upstream`. A plain fan-out is the case with no
//! dependencies. The orchestrator validates a [`RunRequest`], runs it on its own
//! task, the scheduler dispatches each step the moment its dependencies have
//! succeeded, every branch ends in exactly one [`BranchOutcome`], the [`Policy`]
//! decides the verdict, and the synthesiser merges ([`MergeStrategy`]).
//!
//! # Layout
//! - `request`: [`RunRequest`], [`Budget`] and their errors; `step`: [`Step`] and
//!   maps; `policy`: [`Policy`];
//! - `outcome`: [`BranchOutcome`] and its reasons, [`RunFailure`], [`RunEvent`];
//! - `scheduler`: the scheduling decisions, a pure state machine with table-driven
//!   tests; `budget`: the run's token and cost ledger it consults;
//! - `execute`: the scheduler's async driver; `launch`: what a branch gets and how
//!   it is spawned; `branch`: one branch's call; `warm`: the cache warm-up;
//!   `stream`: streamed text as events;
//! - `orchestrator`: the actor that accepts runs; `record`: what a run did;
//! - `synthesis`: the synthesiser actor and the merge strategies (the LLM merge
//!   made to fit its model's context window);
//! - `template`: step input templates; `code`: code steps and their built-ins;
//! - [`workflow`]: workflow files (a step graph in TOML) turned into requests.

mod branch;
mod budget;
mod code;
mod execute;
mod launch;
mod orchestrator;
mod outcome;
mod placement;
mod policy;
mod record;
mod request;
mod scheduler;
mod step;
mod stream;
mod synthesis;
mod template;
mod warm;
pub mod workflow;

pub(crate) use branch::call_here;
pub use code::{CodeError, CodeFn, CodeInput, CodeOutput, CodeRegistry, Conflict};
pub(crate) use orchestrator::{Orchestrator, OrchestratorArgs, OrchestratorMsg};
pub(crate) use outcome::{opt_secs, secs};
pub use outcome::{
    BranchError, BranchOutcome, CancelReason, DeadlineKind, RefusalReason, RunEvent, RunFailure,
    Synthesis, SynthesisError, Unavailable,
};
pub use placement::{NodeLost, Place, Placement, RemoteCall, RemoteSpecialist, Router};
pub use policy::{ParsePolicyError, Policy};
pub(crate) use record::{BranchRecord, ItemRecord, RunRecord, SynthesisRecord};
pub(crate) use request::Known;
pub use request::{
    parse_duration, Budget, DurationError, Limit, RequestError, Reuse, RunError, RunRequest,
    StepProblem,
};
pub use step::{Action, Map, MapSource, Step};
pub(crate) use synthesis::{Learned, Synthesiser, SynthesiserMsg};
pub use synthesis::{
    MergeNode, MergeStrategy, MergeTree, Scorer, WindowSource, MERGE_SYSTEM_PROMPT,
};
pub use template::{Template, TemplateError};
