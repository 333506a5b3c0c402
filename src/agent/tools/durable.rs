//! Tool loops that survive a restart. A run may carry a [`ToolJournal`]: the loop
//! hands it each turn's calls before any runs ([`ToolJournal::asked`]), each call's
//! start ([`ToolJournal::started`]) and its result as it ends
//! ([`ToolJournal::answered`]), and waits until each is kept. A branch started again
//! after a restart gets its kept turns back ([`ToolTurn`]s, `Task::replay`): the
//! loop answers those turns from them without asking the model, does not run a call
//! whose result was kept, runs a call that had not started (held for approval, say)
//! as if new, runs again a call that was in flight only if its tool is idempotent
//! ([`Tool::is_idempotent`]), and otherwise fails the branch, saying which call of
//! which tool it will not repeat.
//!
//! A repair of a failed run takes its kept turns with it, each made
//! [`ToolTurn::for_repair`]: its finished calls are answered from there, and a call
//! that was in flight runs again only if the run's approver approves it.
//!
//! `fanfare serve` keeps them in its journal; a library user may keep them anywhere.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::agent::BranchId;
use crate::provider::{Completion, ToolCall, ToolResult, Usage};

#[cfg(doc)]
use super::Tool;

/// One model turn of a tool loop as kept: what the model answered (its calls), and
/// the results of those calls that ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolTurn {
    /// The turn (1 for the first).
    pub turn: u32,
    /// The model that answered.
    pub model: String,
    /// Text it wrote beside its calls.
    #[serde(default)]
    pub text: String,
    /// Its calls.
    pub calls: Vec<ToolCall>,
    /// What the turn's model call used.
    pub usage: Usage,
    /// Its attempts.
    pub attempts: u32,
    /// The results of its calls that ended, in the order they ended.
    #[serde(default)]
    pub results: Vec<ToolResult>,
    /// The ids of its calls that began running (a call held for approval had not).
    #[serde(default)]
    pub started: Vec<String>,
    /// The ids of its calls whose outcome is not known: in flight when the run
    /// that this one repairs was interrupted. Each runs again only if a person
    /// approves it (without an approver it is answered as rejected).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsure: Vec<String>,
    /// The arguments a person gave in place of the model's, by call id, for the
    /// calls that began with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<(String, serde_json::Value)>,
}

impl ToolTurn {
    /// The model's answer, as if it had just been given.
    pub(crate) fn answer(&self) -> Completion {
        Completion {
            text: self.text.clone(),
            model: self.model.clone(),
            usage: self.usage,
            attempts: self.attempts,
            stop_reason: Some("tool_use".to_owned()),
            tool_calls: self.calls.clone(),
            ..Completion::default()
        }
    }

    /// Whether call `id` had begun running.
    pub fn began(&self, id: &str) -> bool {
        self.started.iter().any(|s| s == id)
    }

    /// The arguments call `id` began with, when a person edited them.
    pub fn edit(&self, id: &str) -> Option<&serde_json::Value> {
        self.edits
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, input)| input)
    }

    /// Whether call `id`'s outcome is not known (see [`ToolTurn::unsure`]).
    pub fn is_unsure(&self, id: &str) -> bool {
        self.unsure.iter().any(|s| s == id)
    }

    /// This turn as a repair of its run finds it: a call in flight at the
    /// interruption (begun, not answered) is no longer begun but unsure, so that
    /// the repair asks a person before running it again instead of failing on it;
    /// and the model call was the earlier run's (its usage is not the repair's).
    pub fn for_repair(mut self) -> Self {
        self.usage = Usage::default();
        self.attempts = 0;
        let (answered, unsure): (Vec<String>, Vec<String>) = std::mem::take(&mut self.started)
            .into_iter()
            .partition(|id| self.results.iter().any(|r| &r.call_id == id));
        self.started = answered;
        for id in unsure {
            if !self.is_unsure(&id) {
                self.unsure.push(id);
            }
        }
        self
    }

    /// The kept result of call `id`, if it ended.
    pub fn result(&self, id: &str) -> Option<&ToolResult> {
        self.results.iter().find(|r| r.call_id == id)
    }
}

/// Where a run keeps its tool loops' turns as they happen; see the module docs.
/// Each method answers once what it was given is kept (an error fails the branch:
/// a call whose result is not kept could be run twice).
pub trait ToolJournal: Send + Sync + 'static {
    /// Branch `branch`'s model answered `turn` with calls (`turn.results` is empty);
    /// none has run yet.
    fn asked(&self, branch: BranchId, turn: ToolTurn) -> BoxFuture<'static, Result<(), String>>;

    /// Call `call_id` of `turn` is about to run (approved, if it needed to be),
    /// with `edited` in place of the model's arguments when a person edited them:
    /// a call kept as started and not answered was in flight at an interruption,
    /// and runs again (if it may) with the arguments it began with.
    fn started(
        &self,
        branch: BranchId,
        turn: u32,
        call_id: String,
        edited: Option<serde_json::Value>,
    ) -> BoxFuture<'static, Result<(), String>>;

    /// One call of `turn` ended with `result`.
    fn answered(
        &self,
        branch: BranchId,
        turn: u32,
        result: ToolResult,
    ) -> BoxFuture<'static, Result<(), String>>;
}

/// A run's [`ToolJournal`], as a task carries it; cheap to clone.
#[derive(Clone)]
pub struct ToolKeeper(Arc<dyn ToolJournal>);

impl ToolKeeper {
    /// Keeps tool turns in `journal`.
    pub fn new(journal: impl ToolJournal) -> Self {
        Self(Arc::new(journal))
    }

    pub(crate) fn journal(&self) -> &dyn ToolJournal {
        self.0.as_ref()
    }
}

impl std::fmt::Debug for ToolKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ToolKeeper")
    }
}

impl PartialEq for ToolKeeper {
    /// The same journal.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A branch's kept turns from an earlier attempt at its run (see
/// `RunRequest::replay`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The step's position in the request.
    pub index: u32,
    /// The item, for a map step.
    #[serde(default)]
    pub item: Option<u32>,
    /// Its turns, first to last.
    pub turns: Vec<ToolTurn>,
    /// What its earlier attempts' turns, replaced by a later attempt's, used: model
    /// calls and tokens (paid for, and counted in the branch's spend).
    #[serde(default)]
    pub earlier: (u32, Usage),
}
