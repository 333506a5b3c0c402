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
use serde::{Deserialize, Serialize};

use crate::provider::{CompletionRequest, Provider, ProviderError, Usage};
use crate::task::RunId;
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

/// One branch as the synthesiser sees it: the output, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeBranch {
    /// The agent.
    pub agent: String,
    /// Its output, or a description of its failure.
    pub result: Result<String, String>,
}

/// What to merge.
#[derive(Clone, Debug)]
pub struct MergeRequest {
    /// The run.
    pub run: RunId,
    /// The original task text.
    pub input: String,
    /// Every branch, in input order.
    pub branches: Vec<MergeBranch>,
    /// How.
    pub strategy: MergeStrategy,
}

/// A merged answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Synthesis {
    /// The merged text.
    pub text: String,
    /// Tokens spent on the merge (zero for code merges).
    pub usage: Usage,
    /// The model that merged, for LLM merges.
    pub model: Option<String>,
    /// The chosen agent, for select-best.
    pub chosen: Option<String>,
}

/// Why a merge failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SynthesisError {
    /// No branch succeeded, so there is nothing to merge.
    #[error("no branch succeeded; nothing to merge")]
    NothingToMerge,
    /// The merge model call failed.
    #[error("merge call failed: {0}")]
    Provider(ProviderError),
    /// The merge task ended without an answer (cancelled or panicked).
    #[error("merge task ended without an answer")]
    Aborted,
}

/// Messages to the [`Synthesiser`].
#[derive(Debug)]
#[non_exhaustive]
pub enum SynthesiserMsg {
    /// Merge, answering on the port.
    Merge(
        Box<MergeRequest>,
        RpcReplyPort<Result<Synthesis, SynthesisError>>,
    ),
    /// Abandon the merge for this run (its caller gave up).
    Cancel(RunId),
    #[doc(hidden)]
    Finished(RunId),
}

/// The system prompt of LLM merges.
pub const MERGE_SYSTEM_PROMPT: &str = "You are the synthesiser of a panel of specialists. \
Merge their analyses below into one answer: where they agree, where they conflict, and a \
recommendation. Attribute each point to the perspective it comes from. If a perspective \
is missing, say so and do not invent it.";

/// Builds the user message of an LLM merge: the task, each successful output under
/// its agent's name, and the failed branches named with their reason.
pub fn merge_prompt(input: &str, branches: &[MergeBranch]) -> String {
    let mut s = format!("Task:\n{input}\n");
    for b in branches {
        if let Ok(text) = &b.result {
            s.push_str(&format!("\n## {}\n{}\n", b.agent, text.trim()));
        }
    }
    let failed: Vec<String> = branches
        .iter()
        .filter_map(|b| {
            b.result
                .as_ref()
                .err()
                .map(|e| format!("{} ({e})", b.agent))
        })
        .collect();
    if !failed.is_empty() {
        s.push_str(&format!("\nMissing perspectives: {}.\n", failed.join("; ")));
    }
    s
}

fn code_merge(branches: &[MergeBranch]) -> String {
    let mut s = String::new();
    for b in branches {
        match &b.result {
            Ok(text) => s.push_str(&format!("## {}\n{}\n\n", b.agent, text.trim())),
            Err(e) => s.push_str(&format!("## {}\n(no output: {e})\n\n", b.agent)),
        }
    }
    s.trim_end().to_owned()
}

/// The synthesiser actor; see the module docs.
pub struct Synthesiser {
    provider: Arc<dyn Provider>,
    live: LiveCount,
}

impl Synthesiser {
    /// A synthesiser that makes LLM merges through `provider`.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self {
            provider,
            live: LiveCount::default(),
        }
    }

    /// Counts this actor in `live` while it runs.
    pub fn counted_in(mut self, live: LiveCount) -> Self {
        self.live = live;
        self
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
                if branches.iter().all(|b| b.result.is_err()) {
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
                        let mut best: Option<(&MergeBranch, &String, f64)> = None;
                        for b in &branches {
                            if let Ok(text) = &b.result {
                                let score = (scorer.0)(&b.agent, text);
                                if best.is_none_or(|(_, _, s)| score > s) {
                                    best = Some((b, text, score));
                                }
                            }
                        }
                        let synthesis = best.map(|(b, text, _)| Synthesis {
                            text: text.clone(),
                            usage: Usage::default(),
                            model: None,
                            chosen: Some(b.agent.clone()),
                        });
                        let _ = reply.send(synthesis.ok_or(SynthesisError::NothingToMerge));
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
                            let result = provider.complete(req).await;
                            let _ = reply.send(
                                result
                                    .map(|c| Synthesis {
                                        text: c.text,
                                        usage: c.usage,
                                        model: Some(c.model),
                                        chosen: None,
                                    })
                                    .map_err(SynthesisError::Provider),
                            );
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
