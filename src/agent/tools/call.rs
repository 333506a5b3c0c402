//! One call of a tool loop's turn, governed: answered from a kept turn when it ended
//! before an interruption, held for approval when its tool or agent needs it, kept
//! as started, run (offered, its arguments checked against the schema, cut by the
//! branch's deadline, a panic caught) and kept as answered before anyone is told it
//! ended.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt as _;

use super::approval::approval_id;
use super::{
    listed, ApprovalRequest, ApprovalState, Approvals, Decision, Tool, ToolContext, ToolKeeper,
    ToolTurn, ToolUse,
};
use crate::agent::{BranchId, Task};
use crate::provider::{Delta, DeltaSink, ToolCall, ToolResult};

/// The most bytes of a tool's answer sent back to the model (the rest is cut, and
/// said to be).
const MAX_RESULT: usize = 64 * 1024;

/// The most bytes of one call's arguments, the model's or a person's edit (a call
/// of 15 MB went back with every later turn: 3 GB sent over 20 turns).
pub const MAX_ARGUMENTS: usize = 256 * 1024;

/// What a branch's task gives its tool loop beside the request.
#[derive(Clone, Debug)]
pub(crate) struct Governed {
    /// The branch.
    pub(crate) branch: BranchId,
    /// What the run's budget reserved for it, under a budget.
    pub(crate) allowance: Option<u64>,
    /// Where its turns are kept, when its run keeps them.
    pub(crate) journal: Option<ToolKeeper>,
    /// Its turns kept by an earlier attempt at the run.
    pub(crate) replay: Arc<[ToolTurn]>,
    /// Who decides calls that need approval.
    pub(crate) approvals: Option<Approvals>,
    /// Every call needs approval (the agent's spec says so).
    pub(crate) approve_every_call: bool,
    /// What the first turn must do with the tools (the spec's `tool_choice`).
    pub(crate) first_choice: crate::provider::ToolChoice,
    /// Where each answered turn's use is counted until the loop's answer reports it.
    pub(crate) meter: Option<crate::agent::Meter>,
    /// How deep its run is nested.
    pub(crate) depth: u32,
    /// What starts its calls' sub-runs.
    pub(crate) delegator: Option<super::Delegator>,
    /// Its run keeps or approves its calls where it was started (see
    /// `Task::tools_governed`).
    pub(crate) governed_elsewhere: bool,
}

impl Governed {
    /// What `task` gives.
    pub(crate) fn of(task: &Task) -> Self {
        Self {
            branch: task.branch,
            allowance: task.allowance,
            journal: task.tool_journal.clone(),
            replay: task.replay.clone(),
            approvals: task.approvals.clone(),
            approve_every_call: false,
            first_choice: crate::provider::ToolChoice::Auto,
            meter: task.meter.clone(),
            depth: task.depth,
            delegator: task.delegator.clone(),
            governed_elsewhere: task.tools_governed
                && task.tool_journal.is_none()
                && task.approvals.is_none(),
        }
    }

    /// A branch with no budget, journal or earlier turns.
    #[cfg(test)]
    pub(crate) fn plain(branch: BranchId) -> Self {
        Self {
            branch,
            allowance: None,
            journal: None,
            replay: Arc::new([]),
            approvals: None,
            approve_every_call: false,
            first_choice: crate::provider::ToolChoice::Auto,
            meter: None,
            depth: 0,
            delegator: None,
            governed_elsewhere: false,
        }
    }
}

/// Where a call of a turn runs.
pub(super) struct CallAt<'a> {
    pub(super) governed: &'a Governed,
    pub(super) offered: &'a [Arc<dyn Tool>],
    /// The turn as an earlier attempt kept it, if it did.
    pub(super) kept: Option<&'a ToolTurn>,
    pub(super) turn: u32,
    pub(super) agent: &'a str,
    pub(super) deadline: Option<tokio::time::Instant>,
    pub(super) sink: Option<DeltaSink>,
    /// The keys taken out of each answer before anyone sees it.
    pub(super) secrets: &'a crate::provider::Redactor,
    /// What the branch may still spend under its run's budget.
    pub(super) tokens_left: Option<u64>,
}

/// A call's result, its line of the log, and whether it was kept.
pub(super) type Ran = (ToolResult, ToolUse, Result<(), String>);

/// The `k`th call of a turn, governed: answered from the kept turn if it ended
/// before an interruption; held for approval if its tool or agent needs it; kept
/// as started, run, and kept as answered before anyone is told it ended.
pub(super) async fn one_call(at: &CallAt<'_>, k: usize, call: &ToolCall) -> Ran {
    let (branch, turn) = (at.governed.branch, at.turn);
    let tool_name = super::shown(&call.name);
    // The digest is of the arguments that ran (a person's edit, if there was one).
    let log = |result: &ToolResult,
               took: std::time::Duration,
               kept: bool,
               input: &serde_json::Value| ToolUse {
        turn,
        tool: tool_name.clone(),
        input_digest: ToolUse::digest(input),
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        bytes: result.content.len(),
        error: result.is_error.then(|| result.content.clone()),
        kept,
        usage: crate::provider::Usage::default(),
    };
    if let Some(result) = at.kept.and_then(|t| t.result(&call.id)).cloned() {
        // It ended before the run was interrupted: not run again.
        let used = log(&result, std::time::Duration::ZERO, true, &call.input);
        return (result, used, Ok(()));
    }
    let tell = |delta| {
        if let Some(sink) = &at.sink {
            sink.send(delta);
        }
    };
    let journal = at.governed.journal.as_ref().map(ToolKeeper::journal);
    let tool = at.offered.iter().find(|t| t.name() == call.name);
    // In flight when the run this one repairs was interrupted, and not begun since:
    // what it did is not known, so a person decides whether it runs again.
    let unsure = at
        .kept
        .is_some_and(|t| t.is_unsure(&call.id) && !t.began(&call.id));
    // Begun before an interruption (so approved, if it had to be), and run again
    // now (its tool is idempotent): with the arguments it began with, not asked
    // again (a person's edit was lost at a restart).
    let began = at.kept.filter(|t| t.began(&call.id));
    let needs = began.is_none()
        && (unsure || tool.is_some_and(|t| at.governed.approve_every_call || t.needs_approval()));
    let mut edited = began.and_then(|t| t.edit(&call.id)).map(|input| ToolCall {
        input: input.clone(),
        malformed: false,
        ..call.clone()
    });
    if needs {
        let id = approval_id(branch, turn, k);
        let state = |state| Delta::Approval {
            id: id.clone(),
            call_id: call.id.clone(),
            tool: tool_name.clone(),
            state,
        };
        tell(state(ApprovalState::Pending));
        let why = unsure.then(|| {
            format!(
                "it was in flight when the run this one repairs was interrupted (turn {turn}), and what it did is not known: approve to run it again"
            )
        });
        let mut decision = decide(at, id.clone(), call, why).await;
        if let Decision::Edit { input } = &decision {
            // An edit is held to the model's own limit (one of 300 KiB ran).
            let bytes = input.to_string().len();
            if bytes > MAX_ARGUMENTS {
                decision = Decision::Reject {
                    reason: Some(format!(
                        "the edited arguments have {bytes} bytes, at most {MAX_ARGUMENTS} are taken"
                    )),
                };
            }
        }
        tell(state(decision.state()));
        match decision {
            Decision::Approve => {}
            Decision::Edit { input } => {
                edited = Some(ToolCall {
                    input,
                    malformed: false,
                    ..call.clone()
                });
            }
            Decision::Reject { reason } => {
                let result = ToolResult {
                    call_id: call.id.clone(),
                    content: match reason {
                        Some(why) => format!("not run: rejected ({why})"),
                        None => "not run: a person rejected this call".to_owned(),
                    },
                    is_error: true,
                };
                // Kept as its answer: a resume does not ask again.
                let stored = match journal {
                    Some(j) => j.answered(branch, turn, result.clone()).await,
                    None => Ok(()),
                };
                let used = log(&result, std::time::Duration::ZERO, false, &call.input);
                return (result, used, stored);
            }
        }
    }
    let call_now = edited.as_ref().unwrap_or(call);
    if let Some(j) = journal {
        let with = edited.as_ref().map(|c| c.input.clone());
        if let Err(e) = j.started(branch, turn, call.id.clone(), with).await {
            let result = ToolResult {
                call_id: call.id.clone(),
                content: "not run: it could not be kept in the run's journal".to_owned(),
                is_error: true,
            };
            let used = log(&result, std::time::Duration::ZERO, false, &call_now.input);
            return (result, used, Err(e));
        }
    }
    tell(Delta::ToolStarted {
        call_id: call.id.clone(),
        tool: tool_name.clone(),
    });
    let used = crate::agent::Meter::default();
    let context = ToolContext {
        branch,
        agent: at.agent.to_owned(),
        deadline: at.deadline,
        call_id: call.id.clone(),
        depth: at.governed.depth,
        tokens_left: at.tokens_left,
        delegator: at.governed.delegator.clone(),
        used: Some(used.clone()),
    };
    let started = tokio::time::Instant::now();
    let mut result = run_call(at.offered, call_now, context).await;
    let took = started.elapsed();
    // Before it is kept, streamed or sent on: a tool that read a `.env` file
    // carried the server's key into the journal, the events and the report.
    at.secrets.text(&mut result.content);
    // Kept before anyone is told it ended.
    let stored = match journal {
        Some(j) => j.answered(branch, turn, result.clone()).await,
        None => Ok(()),
    };
    tell(Delta::ToolFinished {
        call_id: call.id.clone(),
        tool: tool_name.clone(),
        took,
        error: result.is_error.then(|| result.content.clone()),
    });
    let mut logged = log(&result, took, false, &call_now.input);
    // What its sub-runs used is the branch's.
    logged.usage = used.take().1;
    (result, logged, stored)
}

/// What the run's approver decides of `call` (asked because of `why`, when it is
/// not the tool's or agent's rule), within the branch's deadline; a rejection when
/// there is no approver or no decision in time.
async fn decide(at: &CallAt<'_>, id: String, call: &ToolCall, why: Option<String>) -> Decision {
    let Some(approvals) = &at.governed.approvals else {
        let need = match &why {
            Some(why) => format!("{why}; this run has no one to ask"),
            None => "it needs a person's approval, and this run has no one to ask: in `fanfare run`, answer at the terminal or give --approve-all; in `serve`, POST /v1/runs/{id}/approvals/{approval}".to_owned(),
        };
        return Decision::Reject { reason: Some(need) };
    };
    let request = ApprovalRequest {
        id,
        branch: at.governed.branch,
        agent: at.agent.to_owned(),
        turn: at.turn,
        call_id: call.id.clone(),
        tool: call.name.clone(),
        input: call.input.clone(),
        why,
    };
    let asked = approvals.decide(request);
    match at.deadline {
        Some(deadline) => {
            tokio::time::timeout_at(deadline, asked)
                .await
                .unwrap_or(Decision::Reject {
                    reason: Some("no decision before the branch's deadline".to_owned()),
                })
        }
        None => asked.await,
    }
}

/// Runs one call: the tool must be one offered, its arguments JSON that fits its
/// schema; it is cut at the branch's deadline and a panic is caught. Whatever goes
/// wrong is a result marked as an error, for the model.
async fn run_call(offered: &[Arc<dyn Tool>], call: &ToolCall, ctx: ToolContext) -> ToolResult {
    let answer = |content: String, is_error: bool| ToolResult {
        call_id: call.id.clone(),
        content,
        is_error,
    };
    let Some(tool) = offered.iter().find(|t| t.name() == call.name).cloned() else {
        let names: Vec<String> = offered.iter().map(|t| t.name().to_owned()).collect();
        return answer(
            format!(
                "there is no tool `{}`; the tools are: {}",
                super::shown(&call.name),
                listed(&names)
            ),
            true,
        );
    };
    if call.malformed {
        return answer(
            format!(
                "the arguments are not JSON: {}",
                cut(&call.input.to_string())
            ),
            true,
        );
    }
    if let Err(problems) = fits(tool.as_ref(), &call.input) {
        return answer(problems, true);
    }
    let work = AssertUnwindSafe(tool.call(ctx.clone(), call.input.clone())).catch_unwind();
    let ran = match ctx.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, work).await.ok(),
        None => Some(work.await),
    };
    match ran {
        None => answer("the call was cut by the branch's deadline".to_owned(), true),
        Some(Err(panic)) => answer(
            format!(
                "the tool panicked: {}",
                crate::agent::panic_text(panic.as_ref())
            ),
            true,
        ),
        Some(Ok(Err(e))) => answer(cut(&e.0), true),
        Some(Ok(Ok(text))) => answer(cut(&text), false),
    }
}

/// Whether `input` fits `tool`'s schema, or the first problems.
fn fits(tool: &dyn Tool, input: &serde_json::Value) -> Result<(), String> {
    let problems = crate::agent::structured::problems(&tool.input_schema(), input, 3)
        .map_err(|e| format!("the tool's schema is not valid: {e}"))?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the arguments do not fit `{}`'s schema: {}",
            tool.name(),
            problems.join("; ")
        ))
    }
}

/// `text`, cut at [`MAX_RESULT`] bytes (on a character boundary) with a note.
fn cut(text: &str) -> String {
    if text.len() <= MAX_RESULT {
        return text.to_owned();
    }
    let end = text.floor_char_boundary(MAX_RESULT);
    format!("{}… (cut: {} bytes in all)", &text[..end], text.len())
}
