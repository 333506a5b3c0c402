//! The tool loop: ask the model with the tools offered; run the calls it makes (in
//! parallel, each checked, bounded and caught); send the results back and ask
//! again, until it answers without calling or `max_turns` asks have been made.

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;

use std::sync::Arc;

use super::approval::approval_id;
use super::{
    listed, ApprovalRequest, ApprovalState, Approvals, Decision, Tool, ToolContext, ToolKeeper,
    ToolTurn, ToolUse,
};
use crate::agent::{AgentContext, AgentError, AgentOutput, AgentReply, BranchId, Task};
use crate::provider::{
    CompletionRequest, Delta, DeltaSink, Message, ToolCall, ToolResult, ToolSpec, Usage,
};

/// The most bytes of a tool's answer sent back to the model (the rest is cut, and
/// said to be).
const MAX_RESULT: usize = 64 * 1024;

/// The most tool calls of one turn that run; the model is told the rest did not
/// (each still gets an answer, which both wires require).
pub(crate) const MAX_CALLS_PER_TURN: usize = 32;

/// More calls than this in one turn fail the branch: answering each would build a
/// next request of megabytes for nothing.
pub(crate) const MAX_ASKED_PER_TURN: usize = 256;

/// The most bytes of one call's arguments (a call of 15 MB went back with every
/// later turn: 3 GB sent over 20 turns).
pub(crate) const MAX_ARGUMENTS: usize = 256 * 1024;

/// The most bytes a tool loop's conversation (its messages) may grow to.
pub(crate) const MAX_CONVERSATION: usize = 4 * 1024 * 1024;

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
        }
    }
}

/// Answers `request` with the tools `names` of the runtime's toolbox offered; see
/// the module docs. The output counts every turn's tokens and attempts, and the
/// tool calls made and failed.
pub(crate) async fn converse(
    ctx: &AgentContext,
    request: CompletionRequest,
    names: &[String],
    max_turns: u32,
    governed: Governed,
) -> AgentReply {
    let mut spent = Spent::default();
    match turns(ctx, request, names, max_turns, &governed, &mut spent).await {
        Ok(out) => Ok(out),
        // Nothing answered yet, or a call cut by the branch's deadline (the branch
        // times out, keeping its whole reservation): the error as it is.
        Err(error) if spent.attempts == 0 || deadline_reached(&error) => Err(error),
        Err(error) => Err(AgentError::Spent {
            cause: Box::new(error),
            usage: spent.usage,
            attempts: spent.attempts,
        }),
    }
}

/// What the turns answered so far used.
#[derive(Default)]
struct Spent {
    usage: Usage,
    attempts: u32,
}

fn deadline_reached(error: &AgentError) -> bool {
    matches!(error, AgentError::Provider(e) if e.gave_up == Some(crate::provider::GaveUp::DeadlineReached))
}

async fn turns(
    ctx: &AgentContext,
    mut request: CompletionRequest,
    names: &[String],
    max_turns: u32,
    governed: &Governed,
    spent: &mut Spent,
) -> AgentReply {
    let resolve = || {
        ctx.tools
            .resolve(names)
            .map_err(|reason| AgentError::Rejected { reason })
    };
    let branch = governed.branch;
    let mut offered = resolve()?;
    let (mut wasted, mut rate_limited) = (0u32, 0u32);
    let (mut calls, mut failed) = (0u32, 0u32);
    let mut log: Vec<ToolUse> = Vec::new();
    for turn in 1..=max_turns.max(1) {
        if turn > 1 {
            // An MCP server that restarted since may offer other tools now.
            offered = resolve()?;
        }
        request.tools = offered
            .iter()
            .map(|t| spec_of(t.as_ref()))
            .collect::<Vec<_>>()
            .into();
        // A turn kept by an earlier attempt at the run is answered from there.
        let kept = governed.replay.get(turn as usize - 1);
        if let (Some(allowance), None) = (governed.allowance, kept) {
            // Each turn is covered before it is sent: what the run's budget
            // reserved for this branch, less what its turns used.
            let next = request
                .prompt_tokens()
                .saturating_add(u64::from(request.max_tokens));
            let used = spent.usage.total();
            // The first turn too: its tools' descriptions and schemas are part of
            // its prompt, which the reservation did not know of.
            if used.saturating_add(next) > allowance {
                return Err(AgentError::Rejected {
                    reason: format!(
                        "turn {turn} was not sent: it could use {next} tokens, and the branch had used {used} of the {allowance} the run's budget reserved for it"
                    ),
                });
            }
        }
        let answer = match kept {
            Some(kept) => kept.answer(),
            None => ctx.provider.complete(request.clone()).await?,
        };
        spent.usage += answer.usage;
        spent.attempts += answer.attempts;
        let (usage, attempts) = (spent.usage, spent.attempts);
        wasted += answer.attempts.saturating_sub(1) + u32::from(answer.hedged);
        rate_limited += answer.rate_limited;
        if answer.tool_calls.is_empty() {
            if answer.text.trim().is_empty() {
                return Err(AgentError::EmptyAnswer {
                    model: answer.model,
                    stop_reason: answer.stop_reason,
                });
            }
            let mut out = AgentOutput::from(answer);
            out.usage = usage;
            out.attempts = attempts;
            out.wasted_calls = wasted;
            out.rate_limited = rate_limited;
            out.tool_calls = calls;
            out.tool_errors = failed;
            out.tool_log = log;
            return Ok(out);
        }
        if turn >= max_turns {
            return Err(AgentError::Rejected {
                reason: format!(
                    "the model was still calling tools after {max_turns} turns ({calls} calls; raise max_turns in the spec if it needs more)"
                ),
            });
        }
        let asked = answer.tool_calls.len();
        if asked > MAX_ASKED_PER_TURN {
            return Err(AgentError::Rejected {
                reason: format!(
                    "the model asked for {asked} tool calls in one turn (at most {MAX_ASKED_PER_TURN} are answered)"
                ),
            });
        }
        if let Some(call) = answer
            .tool_calls
            .iter()
            .find(|c| c.input.to_string().len() > MAX_ARGUMENTS)
        {
            // Sent back with the conversation at every later turn: refused, not run.
            return Err(AgentError::Rejected {
                reason: format!(
                    "the model's call of `{}` has {} bytes of arguments (at most {MAX_ARGUMENTS})",
                    call.name,
                    call.input.to_string().len()
                ),
            });
        }
        let (running, skipped) = answer.tool_calls.split_at(asked.min(MAX_CALLS_PER_TURN));
        if let Some(kept) = kept {
            not_repeated(kept, running, &offered)?;
        } else if let Some(journal) = &governed.journal {
            let asked = ToolTurn {
                turn,
                model: answer.model.clone(),
                text: answer.text.clone(),
                calls: answer.tool_calls.clone(),
                usage: answer.usage,
                attempts: answer.attempts,
                results: Vec::new(),
                started: Vec::new(),
            };
            journal
                .journal()
                .asked(branch, asked)
                .await
                .map_err(unkept)?;
        }
        let at = CallAt {
            governed,
            offered: &offered,
            kept,
            turn,
            agent: &request.agent,
            deadline: request.deadline,
            sink: request.deltas.clone(),
        };
        let ran = futures::future::join_all(
            running
                .iter()
                .enumerate()
                .map(|(k, call)| one_call(&at, k, call)),
        )
        .await;
        let mut results = Vec::with_capacity(asked);
        for (result, used, stored) in ran {
            stored.map_err(unkept)?;
            results.push(result);
            log.push(used);
        }
        results.extend(skipped.iter().map(|call| ToolResult {
            call_id: call.id.clone(),
            content: format!(
                "not run: at most {MAX_CALLS_PER_TURN} tool calls run in one turn; ask again for this one"
            ),
            is_error: true,
        }));
        calls += results.len() as u32;
        failed += results.iter().filter(|r| r.is_error).count() as u32;
        request
            .messages
            .push(Message::calling(answer.text, answer.tool_calls));
        request.messages.push(Message::results(results));
        if request
            .deadline
            .is_some_and(|d| tokio::time::Instant::now() >= d)
        {
            // Not a model call cut at once by a deadline already past (which blamed
            // the provider): the tools took the branch's time.
            return Err(AgentError::Rejected {
                reason: format!(
                    "the branch's deadline came while its tools ran (turn {turn}); no further model turn was sent"
                ),
            });
        }
        let bytes = conversation_bytes(&request);
        if bytes > MAX_CONVERSATION {
            return Err(AgentError::Rejected {
                reason: format!(
                    "the tool conversation grew to {bytes} bytes after turn {turn} (at most {MAX_CONVERSATION} are sent)"
                ),
            });
        }
    }
    unreachable!("the last turn returns")
}

/// The bytes of `request`'s messages: text, calls' arguments and results.
fn conversation_bytes(request: &CompletionRequest) -> usize {
    request
        .messages
        .iter()
        .map(|m| {
            m.content.len()
                + m.tool_calls
                    .iter()
                    .map(|c| c.input.to_string().len() + c.name.len())
                    .sum::<usize>()
                + m.tool_results
                    .iter()
                    .map(|r| r.content.len())
                    .sum::<usize>()
        })
        .sum()
}

/// Where a call of a turn runs.
struct CallAt<'a> {
    governed: &'a Governed,
    offered: &'a [Arc<dyn Tool>],
    /// The turn as an earlier attempt kept it, if it did.
    kept: Option<&'a ToolTurn>,
    turn: u32,
    agent: &'a str,
    deadline: Option<tokio::time::Instant>,
    sink: Option<DeltaSink>,
}

/// A call's result, its line of the log, and whether it was kept.
type Ran = (ToolResult, ToolUse, Result<(), String>);

/// The `k`th call of a turn, governed: answered from the kept turn if it ended
/// before an interruption; held for approval if its tool or agent needs it; kept
/// as started, run, and kept as answered before anyone is told it ended.
async fn one_call(at: &CallAt<'_>, k: usize, call: &ToolCall) -> Ran {
    let (branch, turn) = (at.governed.branch, at.turn);
    let log = |result: &ToolResult, took: std::time::Duration, kept: bool| ToolUse {
        turn,
        tool: call.name.clone(),
        input_digest: ToolUse::digest(&call.input),
        took_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        bytes: result.content.len(),
        error: result.is_error.then(|| result.content.clone()),
        kept,
    };
    if let Some(result) = at.kept.and_then(|t| t.result(&call.id)).cloned() {
        // It ended before the run was interrupted: not run again.
        let used = log(&result, std::time::Duration::ZERO, true);
        return (result, used, Ok(()));
    }
    let tell = |delta| {
        if let Some(sink) = &at.sink {
            sink.send(delta);
        }
    };
    let journal = at.governed.journal.as_ref().map(ToolKeeper::journal);
    let tool = at.offered.iter().find(|t| t.name() == call.name);
    let needs = tool.is_some_and(|t| at.governed.approve_every_call || t.needs_approval());
    let mut edited = None;
    if needs {
        let id = approval_id(branch, turn, k);
        let state = |state| Delta::Approval {
            id: id.clone(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            state,
        };
        tell(state(ApprovalState::Pending));
        let decision = decide(at, id.clone(), call).await;
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
                let used = log(&result, std::time::Duration::ZERO, false);
                return (result, used, stored);
            }
        }
    }
    let call_now = edited.as_ref().unwrap_or(call);
    if let Some(j) = journal {
        if let Err(e) = j.started(branch, turn, call.id.clone()).await {
            let result = ToolResult {
                call_id: call.id.clone(),
                content: "not run: it could not be kept in the run's journal".to_owned(),
                is_error: true,
            };
            let used = log(&result, std::time::Duration::ZERO, false);
            return (result, used, Err(e));
        }
    }
    tell(Delta::ToolStarted {
        call_id: call.id.clone(),
        tool: call.name.clone(),
    });
    let context = ToolContext {
        branch,
        agent: at.agent.to_owned(),
        deadline: at.deadline,
        call_id: call.id.clone(),
    };
    let started = tokio::time::Instant::now();
    let result = run_call(at.offered, call_now, context).await;
    let took = started.elapsed();
    // Kept before anyone is told it ended.
    let stored = match journal {
        Some(j) => j.answered(branch, turn, result.clone()).await,
        None => Ok(()),
    };
    tell(Delta::ToolFinished {
        call_id: call.id.clone(),
        tool: call.name.clone(),
        took,
        error: result.is_error.then(|| result.content.clone()),
    });
    let used = log(&result, took, false);
    (result, used, stored)
}

/// What the run's approver decides of `call`, within the branch's deadline; a
/// rejection when there is no approver or no decision in time.
async fn decide(at: &CallAt<'_>, id: String, call: &ToolCall) -> Decision {
    let Some(approvals) = &at.governed.approvals else {
        return Decision::Reject {
            reason: Some(
                "it needs a person's approval, and this run has no one to ask: in `fanfare run`, answer at the terminal or give --approve-all; in `serve`, POST /v1/runs/{id}/approvals/{approval}".to_owned(),
            ),
        };
    };
    let request = ApprovalRequest {
        id,
        branch: at.governed.branch,
        agent: at.agent.to_owned(),
        turn: at.turn,
        call_id: call.id.clone(),
        tool: call.name.clone(),
        input: call.input.clone(),
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

/// A branch whose turn could not be kept fails: a call not kept could be run twice.
fn unkept(why: String) -> AgentError {
    AgentError::Rejected {
        reason: format!("the tool turn could not be kept in the run's journal: {why}"),
    }
}

/// Refuses to run again, after a restart, a call of `kept` that was in flight
/// (no result kept) unless its tool is idempotent.
fn not_repeated(
    kept: &ToolTurn,
    running: &[ToolCall],
    offered: &[Arc<dyn Tool>],
) -> Result<(), AgentError> {
    for call in running {
        // Ended (its result is kept), or never began (held for approval): safe.
        if kept.result(&call.id).is_some() || !kept.began(&call.id) {
            continue;
        }
        let idempotent = offered
            .iter()
            .find(|t| t.name() == call.name)
            .is_some_and(|t| t.is_idempotent());
        if !idempotent {
            return Err(AgentError::Rejected {
                reason: format!(
                    "the call `{}` of the tool `{}` (turn {}) was in flight when the run was interrupted, and the tool does not declare itself idempotent: it is not run again (what it did, if anything, is not known)",
                    call.id, call.name, kept.turn
                ),
            });
        }
    }
    Ok(())
}

/// What the model is told of `tool`.
fn spec_of(tool: &dyn Tool) -> ToolSpec {
    ToolSpec {
        name: tool.name().to_owned(),
        description: tool.description().to_owned(),
        input_schema: tool.input_schema(),
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
                call.name,
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
    let mut end = MAX_RESULT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut: {} bytes in all)", &text[..end], text.len())
}
