//! The synthesiser actor: merges a run's branch results into one answer.
//!
//! Strategies ([`MergeStrategy`]):
//! - `Llm`: one model call whose prompt holds every successful branch output,
//!   labelled by agent, and names the branches that failed and why;
//! - `Code`: a deterministic merge keyed by agent, no model call;
//! - `SelectBest`: the successful output a scoring function rates highest.
//!
//! Like a specialist, it never awaits the model call in `handle`: the call runs on a
//! task kept in a [`TaskTable`] keyed by run, aborted on `Cancel` or when the actor
//! goes away.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::outcome::{BranchOutcome, Synthesis, SynthesisError};
use crate::agent::RunId;
use crate::provider::{CompletionRequest, Provider, Usage};
use crate::tasks::{LiveCount, LiveGuard, TaskTable};

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
    /// One LLM call over every successful branch output.
    Llm {
        /// Model for the merge call (`None`: the provider's default).
        model: Option<String>,
        /// Token cap of the merge call.
        max_tokens: u32,
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
    /// The agent.
    pub agent: String,
    /// Its output, or why there is none.
    pub state: MergeState,
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
        Self { agent, state }
    }

    /// True when the branch brings an output.
    pub(crate) fn is_ok(&self) -> bool {
        matches!(self.state, MergeState::Ok(_))
    }

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

/// The system prompt of LLM merges.
pub const MERGE_SYSTEM_PROMPT: &str = "You are the synthesiser of a panel of specialists. \
Merge their analyses below into one answer: where they agree, where they conflict, and a \
recommendation. Attribute each point to the perspective it comes from. If a perspective \
is missing, say so and do not invent it.";

/// Builds the user message of an LLM merge: the task, each successful output under
/// its agent's name, and the failed branches named with their reason.
fn merge_prompt(input: &str, branches: &[MergeBranch]) -> String {
    let mut s = format!("Task:\n{input}\n");
    for b in branches {
        if let Some(text) = b.text() {
            s.push_str(&format!("\n## {}\n{}\n", b.agent, text.trim()));
        }
    }
    let failed: Vec<String> = branches
        .iter()
        .filter_map(|b| b.gap().map(|e| format!("{} ({e})", b.agent)))
        .collect();
    if !failed.is_empty() {
        s.push_str(&format!("\nMissing perspectives: {}.\n", failed.join("; ")));
    }
    s
}

fn code_merge(branches: &[MergeBranch]) -> String {
    let mut s = String::new();
    for b in branches {
        match (b.text(), b.gap()) {
            (Some(text), _) => s.push_str(&format!("## {}\n{}\n\n", b.agent, text.trim())),
            (None, gap) => s.push_str(&format!(
                "## {}\n(no output: {})\n\n",
                b.agent,
                gap.unwrap_or_default()
            )),
        }
    }
    s.trim_end().to_owned()
}

/// The output `scorer` rates highest. The scorer is user code run inside the actor:
/// a panic in it fails this merge, not the synthesiser.
fn select_best(scorer: &Scorer, branches: &[MergeBranch]) -> Result<Synthesis, SynthesisError> {
    let pick = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut best: Option<(&MergeBranch, &str, f64)> = None;
        for b in branches {
            if let Some(text) = b.text() {
                let score = (scorer.0)(&b.agent, text);
                if best.is_none_or(|(_, _, s)| score > s) {
                    best = Some((b, text, score));
                }
            }
        }
        best.map(|(b, text, _)| (b.agent.clone(), text.to_owned()))
    }));
    match pick {
        Err(_) => Err(SynthesisError::ScorerPanicked),
        Ok(None) => Err(SynthesisError::NothingToMerge),
        Ok(Some((agent, text))) => Ok(Synthesis {
            text,
            usage: Usage::default(),
            model: None,
            chosen: Some(agent),
        }),
    }
}

/// The synthesiser actor; see the module docs.
pub(crate) struct Synthesiser {
    provider: Arc<dyn Provider>,
    live: LiveCount,
}

impl Synthesiser {
    /// A synthesiser that makes LLM merges through `provider`, counted in `live`.
    pub(crate) fn new(provider: Arc<dyn Provider>, live: LiveCount) -> Self {
        Self { provider, live }
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
                        }));
                    }
                    MergeStrategy::SelectBest(scorer) => {
                        let _ = reply.send(select_best(&scorer, &branches));
                    }
                    MergeStrategy::Llm { model, max_tokens } => {
                        let mut req = CompletionRequest::new(
                            "synthesiser",
                            MERGE_SYSTEM_PROMPT,
                            merge_prompt(&input, &branches),
                        );
                        req.model = model;
                        req.max_tokens = max_tokens;
                        let provider = self.provider.clone();
                        let work = async move {
                            let result = match provider.complete(req).await {
                                Ok(c) if c.text.trim().is_empty() => {
                                    Err(SynthesisError::EmptyAnswer)
                                }
                                Ok(c) => Ok(Synthesis {
                                    text: c.text,
                                    usage: c.usage,
                                    model: Some(c.model),
                                    chosen: None,
                                }),
                                Err(e) => Err(SynthesisError::Provider(Box::new(e))),
                            };
                            let _ = reply.send(result);
                            let _ = myself.cast(SynthesiserMsg::Finished(run));
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
