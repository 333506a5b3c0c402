//! The tool loop: ask the model with the tools offered; run the calls it makes (in
//! parallel, each checked, bounded and caught); send the results back and ask
//! again, until it answers without calling or `max_turns` asks have been made.

use std::sync::Arc;

use super::call::{one_call, CallAt, Governed, MAX_ARGUMENTS};
use super::{Tool, ToolTurn, ToolUse};
use crate::agent::{AgentContext, AgentError, AgentOutput, AgentReply};
use crate::provider::{
    CompletionRequest, Message, ToolCall, ToolChoice, ToolResult, ToolSpec, Usage,
};

/// The most tool calls of one turn that run; the model is told the rest did not
/// (each still gets an answer, which both wires require).
pub(crate) const MAX_CALLS_PER_TURN: usize = 32;

/// More calls than this in one turn fail the branch: answering each would build a
/// next request of megabytes for nothing.
pub(crate) const MAX_ASKED_PER_TURN: usize = 256;

/// The most bytes a tool loop's conversation (its messages) may grow to.
pub(crate) const MAX_CONVERSATION: usize = 4 * 1024 * 1024;

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
    let answered = turns(ctx, request, names, max_turns, &governed, &mut spent).await;
    // What the answer reports is no longer the meter's to report. A call cut by
    // the branch's deadline reports only itself: the turns before it stay there
    // (as do all of them if this future is dropped: the branch timed out or was
    // cancelled while its tools ran).
    let reports = match &answered {
        Ok(_) => true,
        Err(error) => spent.attempts > 0 && !deadline_reached(error),
    };
    if let (true, Some(meter)) = (reports, &governed.meter) {
        meter.take();
    }
    match answered {
        Ok(out) => Ok(out),
        // Nothing answered yet, or a call cut by the branch's deadline (the branch
        // times out, keeping its whole reservation): the error as it is.
        Err(error) if !reports => Err(error),
        Err(error) => Err(AgentError::Spent {
            cause: Box::new(error),
            usage: spent.usage,
            attempts: spent.attempts,
            model: spent.model,
        }),
    }
}

/// What the turns answered so far used.
#[derive(Default)]
struct Spent {
    usage: Usage,
    attempts: u32,
    /// The model of the last answered turn.
    model: Option<String>,
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
        // The spec's choice binds the first turn; after it the model chooses (a
        // forced call at every turn would never answer), unless it may call none.
        request.tool_choice = match (&governed.first_choice, turn) {
            (choice, 1) | (choice @ ToolChoice::Never, _) => choice.clone(),
            _ => ToolChoice::Auto,
        };
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
        spent.model = Some(answer.model.clone());
        if let (None, Some(meter)) = (kept, &governed.meter) {
            // Paid now; a kept turn was paid by the attempt that kept it.
            meter.add(answer.attempts, answer.usage);
        }
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
                    super::shown(&call.name),
                    call.input.to_string().len()
                ),
            });
        }
        if governed.governed_elsewhere {
            // A cluster worker has neither the run's journal nor its approver: a
            // call run here would be neither kept (a crash ran it twice) nor asked.
            return Err(AgentError::Rejected {
                reason: "its run keeps and approves tool calls where it was started, and this process (a cluster worker) can do neither: give agents that call tools room on the orchestrator's node (--local-capacity)".to_owned(),
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
                unsure: Vec::new(),
                edits: Vec::new(),
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
            secrets: ctx.tools.secrets(),
            tokens_left: governed
                .allowance
                .map(|a| a.saturating_sub(spent.usage.total())),
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
            // A sub-run's tokens are the branch's (the budget and the report count
            // them with its own).
            if used.usage != Usage::default() {
                spent.usage += used.usage;
                if let Some(meter) = &governed.meter {
                    meter.add(0, used.usage);
                }
            }
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
            return Err(AgentError::NotRepeated {
                call: super::shown(&call.id),
                tool: super::shown(&call.name),
                turn: kept.turn,
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
