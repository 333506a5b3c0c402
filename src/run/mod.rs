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
//! - `request`: [`RunRequest`] and its errors; `step`: [`Step`], maps and the
//!   [`SubWorkflow`] a step may run whole; `policy`: [`Policy`];
//! - `outcome`: [`BranchOutcome`] and its reasons, [`RunFailure`]; `event`:
//!   [`RunEvent`];
//! - `scheduler`: the scheduling decisions, a pure state machine with table-driven
//!   tests; `budget`: [`Budget`] and the run's token and cost ledger it consults;
//! - `execute`: the scheduler's async driver; `launch`: what a branch gets and how
//!   it is spawned; `branch`: one branch's call; `warm`: the cache warm-up;
//!   `stream`: streamed text as events;
//! - `orchestrator`: the actor that accepts runs (and runs a step's workflow as a
//!   run of its own); `record`: what a run did, and [`SubRun`];
//! - `synthesis`: the synthesiser actor and the merge strategies (the LLM merge
//!   made to fit its model's context window);
//! - `template`: step input templates; `items`: a map's items from an upstream
//!   output; `code`: code steps and their built-ins;
//! - [`workflow`]: workflow files (a step graph in TOML) turned into requests.

mod branch;
mod budget;
mod code;
mod event;
mod execute;
mod items;
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

pub(crate) use branch::{call_here, BranchCall};
pub use budget::Budget;
pub use code::{CodeError, CodeFn, CodeInput, CodeOutput, CodeRegistry, Conflict};
pub use event::RunEvent;
pub(crate) use orchestrator::{Orchestrator, OrchestratorArgs, OrchestratorMsg};
pub(crate) use outcome::{opt_secs, secs};
pub use outcome::{
    BranchError, BranchOutcome, CancelReason, DeadlineKind, FinalStep, RefusalReason, RunFailure,
    Synthesis, SynthesisError, Unavailable,
};
pub use placement::{NodeLost, Place, Placement, RemoteCall, RemoteSpecialist, Router};
pub use policy::{ParsePolicyError, Policy};
pub use record::{Asked, SubRun};
pub(crate) use record::{BranchRecord, Branches, ItemRecord, RunRecord, SynthesisRecord};
pub(crate) use request::Known;
pub use request::{
    parse_duration, DurationError, Graph, GraphError, Limit, RequestError, Reuse, Reused, RunError,
    RunRequest, StepProblem,
};
pub use step::{Action, Map, MapSource, Step, SubWorkflow};
pub(crate) use synthesis::{Learned, Synthesiser, SynthesiserMsg};
pub use synthesis::{
    MergeNode, MergeStrategy, MergeTree, Scorer, WindowSource, MERGE_SYSTEM_PROMPT,
};
pub use template::{Template, TemplateError};
