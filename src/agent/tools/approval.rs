//! Tool calls held for a person's approval. A tool may need it
//! ([`Tool::needs_approval`]), or a whole agent (a spec's `needs_approval = true`):
//! such a call waits, before it runs, for the run's [`Approver`]
//! (`RunRequest::approver`) to decide — approve, reject (the model is told, as a
//! tool error, and the branch goes on) or edit the arguments (checked against the
//! schema like the model's). Other branches go on meanwhile. The wait is bounded by
//! the branch's deadline; a run with no approver rejects such calls, saying why.
//! Each request has an id unique in its run (branch, turn and the call's place in
//! the turn), the same if the run is resumed and asks again.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::agent::BranchId;
pub use crate::provider::ApprovalState;

#[cfg(doc)]
use super::Tool;

/// A call waiting for a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// Unique in its run: `INDEX[.ITEM]-TURN-K` (the call's place in its turn).
    pub id: String,
    /// The branch.
    pub branch: BranchId,
    /// Its step's name.
    pub agent: String,
    /// The model turn that made the call (1 for the first).
    pub turn: u32,
    /// The model's id for the call.
    pub call_id: String,
    /// The tool.
    pub tool: String,
    /// The arguments the model gave.
    pub input: serde_json::Value,
    /// Why it is asked, when not because its tool or agent always asks: a repair
    /// asks before running again a call whose outcome is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// What a person decided. A field it does not have is refused (an `approve` with
/// `input` would have run the model's arguments).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", try_from = "DecisionWire")]
pub enum Decision {
    /// Run the call as the model asked.
    Approve,
    /// Do not run it; the model is told, with the reason if one is given.
    Reject {
        /// Why, for the model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Run it with these arguments instead.
    Edit {
        /// The arguments to run it with.
        input: serde_json::Value,
    },
}

impl Decision {
    /// The state it leaves its approval in.
    pub fn state(&self) -> ApprovalState {
        match self {
            Decision::Approve => ApprovalState::Approved,
            Decision::Reject { .. } => ApprovalState::Rejected,
            Decision::Edit { .. } => ApprovalState::Edited,
        }
    }
}

/// Decides the calls that need approval; see the module docs.
pub trait Approver: Send + Sync + 'static {
    /// Decides `request` (it may take as long as a person does; the branch's
    /// deadline bounds the wait).
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, Decision>;
}

/// A run's [`Approver`], as a task carries it; cheap to clone.
#[derive(Clone)]
pub struct Approvals(Arc<dyn Approver>);

impl Approvals {
    /// Calls needing approval are decided by `approver`.
    pub fn new(approver: impl Approver) -> Self {
        Self(Arc::new(approver))
    }

    /// Every call is approved as asked (`--approve-all`, for scripts).
    pub fn approve_all() -> Self {
        Self::new(ApproveAll)
    }

    /// Asks for a decision on `request`.
    pub fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, Decision> {
        self.0.decide(request)
    }
}

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Approvals")
    }
}

impl PartialEq for Approvals {
    /// The same approver.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

struct ApproveAll;

impl Approver for ApproveAll {
    fn decide(&self, _request: ApprovalRequest) -> BoxFuture<'static, Decision> {
        Box::pin(std::future::ready(Decision::Approve))
    }
}

/// The id of the `k`th call of `turn` of `branch`.
pub(crate) fn approval_id(branch: BranchId, turn: u32, k: usize) -> String {
    match branch.item {
        Some(item) => format!("{}.{item}-{turn}-{k}", branch.index),
        None => format!("{}-{turn}-{k}", branch.index),
    }
}

/// A decision as sent: every field any decision has, none other.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionWire {
    decision: DecisionKind,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DecisionKind {
    Approve,
    Reject,
    Edit,
}

impl TryFrom<DecisionWire> for Decision {
    type Error = String;

    fn try_from(w: DecisionWire) -> Result<Self, String> {
        match (w.decision, w.reason, w.input) {
            (DecisionKind::Approve, None, None) => Ok(Decision::Approve),
            (DecisionKind::Approve, ..) => Err(
                "`approve` takes no `reason` or `input` (to run other arguments, `edit`)"
                    .to_owned(),
            ),
            (DecisionKind::Reject, reason, None) => Ok(Decision::Reject { reason }),
            (DecisionKind::Reject, _, Some(_)) => Err("`reject` takes no `input`".to_owned()),
            (DecisionKind::Edit, None, Some(input)) => Ok(Decision::Edit { input }),
            (DecisionKind::Edit, Some(_), _) => Err("`edit` takes no `reason`".to_owned()),
            (DecisionKind::Edit, None, None) => Err("`edit` needs `input`".to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_a_decision_with_a_field_it_does_not_have_is_refused() {
        for (json, ok) in [
            (r#"{"decision": "approve"}"#, true),
            (r#"{"decision": "reject", "reason": "no"}"#, true),
            (r#"{"decision": "edit", "input": {"a": 1}}"#, true),
            (r#"{"decision": "approve", "input": {"a": 1}}"#, false),
            (r#"{"decision": "reject", "why": "no"}"#, false),
            (r#"{"decision": "edit"}"#, false),
            (r#"{"decision": "maybe"}"#, false),
        ] {
            assert_eq!(serde_json::from_str::<Decision>(json).is_ok(), ok, "{json}");
        }
    }
}
