//! The synthesiser actor: merges a run's branch results into one answer.
//!
//! Strategies ([`MergeStrategy`]):
//! - `Llm`: a model call whose prompt holds every successful branch output, labelled
//!   by step, the conflicts code steps found and the branches that failed and why;
//!   made to fit the model's context window, hierarchically when it must (`tree`);
//! - `Code`: a deterministic merge keyed by step, no model call;
//! - `SelectBest`: the successful output a scoring function rates highest.
//!
//! Files: `prompt` (what the merges say), `fit` (the pure window arithmetic and the
//! merge tree the report shows), `tree` (the LLM merge that fits).
//!
//! Like a specialist, it never awaits the model call in `handle`: the merge runs on a
//! task kept in a [`TaskTable`] keyed by run, aborted on `Cancel` or when the actor
//! goes away.

pub(crate) mod fit;
mod prompt;
mod tree;

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

pub use fit::{MergeNode, MergeTree, WindowSource};
pub use prompt::MERGE_SYSTEM_PROMPT;

use super::code::Conflict;
use super::outcome::{BranchOutcome, Synthesis, SynthesisError};
use crate::agent::RunId;
use crate::provider::{Provider, Usage};
use crate::tasks::{LiveCount, LiveGuard, TaskTable};
use prompt::{code_merge, select_best};
pub(crate) use tree::Learned;
use tree::LlmMerge;

/// Scores a successful branch for [`MergeStrategy::SelectBest`]: `(agent, text)` → score.
#[derive(Clone)]
pub struct Scorer(Arc<ScoreFn>);

type ScoreFn = dyn Fn(&str, &str) -> f64 + Send + Sync;

impl Scorer {
    /// A scorer from a function of `(agent, text)`.
    pub fn new(f: impl Fn(&str, &str) -> f64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Prefers the answer with the most distinct words: a crude but deterministic
    /// proxy for coverage, used by the CLI's `--merge best`.
    pub fn distinct_words() -> Self {
        Self::new(|_, text| {
            let mut words: Vec<String> =
                text.split_whitespace().map(|w| w.to_lowercase()).collect();
            words.sort();
            words.dedup();
            words.len() as f64
        })
    }
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scorer(..)")
    }
}

/// How to merge a run's branch results.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum MergeStrategy {
    /// An LLM merge of every successful branch output: one call when they fit the
    /// model's context window, else groups that fit and then the merge of those.
    Llm {
        /// Model for the merge call (`None`: the provider's default).
        model: Option<String>,
        /// Token cap of the merge call.
        max_tokens: u32,
        /// The merge model's context window in tokens, when the caller knows it
        /// (`None`: the table of known models, or what the server's overflow error
        /// says).
        context_window: Option<u32>,
    },
    /// Deterministic: the outputs under one heading per agent, in input order.
    Code,
    /// The output `Scorer` rates highest (ties go to the earlier branch).
    SelectBest(Scorer),
}

impl MergeStrategy {
    /// An LLM merge with the provider's default model and 1024 tokens.
    pub fn llm() -> Self {
        MergeStrategy::Llm {
            model: None,
            max_tokens: 1024,
            context_window: None,
        }
    }

    /// `llm`, `code` or `best`.
    pub fn label(&self) -> &'static str {
        match self {
            MergeStrategy::Llm { .. } => "llm",
            MergeStrategy::Code => "code",
            MergeStrategy::SelectBest(_) => "best",
        }
    }
}

/// One branch as the synthesiser sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MergeBranch {
    /// The step.
    pub agent: String,
    /// Its output, or why there is none.
    pub state: MergeState,
    /// Conflicts it found (a code step's fan-in), for the merge prompt.
    pub conflicts: Vec<Conflict>,
}

/// What a branch brings to the merge.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum MergeState {
    /// Its output.
    Ok(String),
    /// It ended without one.
    NotOk(BranchOutcome),
    /// Still running when a soft deadline sent the merge ahead.
    Deferred,
}

impl MergeBranch {
    /// What `outcome` brings (`None`: still running at the soft deadline).
    pub(crate) fn new(agent: String, outcome: Option<&BranchOutcome>) -> Self {
        let state = match outcome {
            Some(BranchOutcome::Ok(out)) => MergeState::Ok(out.text.clone()),
            Some(other) => MergeState::NotOk(other.clone()),
            None => MergeState::Deferred,
        };
        Self {
            agent,
            state,
            conflicts: Vec::new(),
        }
    }

    /// The same, listing `conflicts` in the merge prompt.
    pub(crate) fn with_conflicts(mut self, conflicts: Vec<Conflict>) -> Self {
        self.conflicts = conflicts;
        self
    }

    /// True when the branch brings an output.
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self.state, MergeState::Ok(_))
    }

    /// Its output, if it has one.
    fn text(&self) -> Option<&str> {
        match &self.state {
            MergeState::Ok(t) => Some(t),
            _ => None,
        }
    }

    /// Why there is no output, in a few words.
    fn gap(&self) -> Option<String> {
        match &self.state {
            MergeState::Ok(_) => None,
            MergeState::NotOk(outcome) => outcome.problem(),
            MergeState::Deferred => Some("deferred: still running at the soft deadline".to_owned()),
        }
    }
}

/// What to merge.
#[derive(Clone, Debug)]
pub(crate) struct MergeRequest {
    /// The run.
    pub run: RunId,
    /// The original task text.
    pub input: String,
    /// Every branch, in input order.
    pub branches: Vec<MergeBranch>,
    /// How.
    pub strategy: MergeStrategy,
    /// Where the final merge call's text goes as it streams, if anyone watches.
    pub deltas: Option<crate::provider::DeltaSink>,
    /// The run's deadline, which its merge calls carry: the stack then fails a call
    /// at once that could not be made in time (a rate limit whose reset is later)
    /// rather than wait for the deadline and say only that it timed out.
    pub deadline: tokio::time::Instant,
}

/// Messages to the [`Synthesiser`].
#[derive(Debug)]
pub(crate) enum SynthesiserMsg {
    /// Merge, answering on the port.
    Merge(
        Box<MergeRequest>,
        RpcReplyPort<Result<Synthesis, SynthesisError>>,
    ),
    /// Abandon the merge for this run (its caller gave up).
    Cancel(RunId),
    /// A merge task finished (sent by the task itself).
    Finished(RunId),
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for SynthesiserMsg {}

/// The synthesiser actor; see the module docs.
pub(crate) struct Synthesiser {
    provider: Arc<dyn Provider>,
    live: LiveCount,
    /// Context windows learned from overflow errors, kept across runs (and across
    /// restarts of the actor).
    learned: Learned,
}

impl Synthesiser {
    /// A synthesiser that makes LLM merges through `provider`, counted in `live`,
    /// keeping what it learns about context windows in `learned`.
    pub(crate) fn new(provider: Arc<dyn Provider>, live: LiveCount, learned: Learned) -> Self {
        Self {
            provider,
            live,
            learned,
        }
    }
}

impl Actor for Synthesiser {
    type Msg = SynthesiserMsg;
    type State = (TaskTable<RunId>, LiveGuard);
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<SynthesiserMsg>,
        _: (),
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok((TaskTable::default(), self.live.guard()))
    }

    async fn handle(
        &self,
        myself: ActorRef<SynthesiserMsg>,
        message: SynthesiserMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SynthesiserMsg::Merge(request, reply) => {
                let MergeRequest {
                    run,
                    input,
                    branches,
                    strategy,
                    deltas,
                    deadline,
                } = *request;
                if branches.iter().all(|b| b.text().is_none()) {
                    let _ = reply.send(Err(SynthesisError::NothingToMerge));
                    return Ok(());
                }
                match strategy {
                    MergeStrategy::Code => {
                        let _ = reply.send(Ok(Synthesis {
                            text: code_merge(&branches),
                            usage: Usage::default(),
                            model: None,
                            chosen: None,
                            tree: None,
                        }));
                    }
                    MergeStrategy::SelectBest(scorer) => {
                        let _ = reply.send(select_best(&scorer, &branches));
                    }
                    MergeStrategy::Llm {
                        model,
                        max_tokens,
                        context_window,
                    } => {
                        let merge = LlmMerge {
                            provider: self.provider.clone(),
                            model,
                            max_tokens,
                            context_window,
                            learned: self.learned.clone(),
                            deltas,
                            deadline: Some(deadline),
                        };
                        let work = async move {
                            let result = merge.run(input, &branches).await;
                            let _ = reply.send(result);
                            let _ = myself.cast(SynthesiserMsg::Finished(run));
                            // After the reply: dropping 10,000 outputs took
                            // milliseconds the run waited for.
                            drop(branches);
                        };
                        state.0.insert(run, tokio::spawn(work).abort_handle());
                    }
                }
            }
            SynthesiserMsg::Cancel(run) => {
                state.0.abort(&run);
            }
            SynthesiserMsg::Finished(run) => state.0.remove(&run),
        }
        Ok(())
    }
}
