//! How a spec agent answers: one model call with its system prompt (the task leading
//! it as the shared prefix in a fan-out), a structured answer asked for, checked and
//! asked once more, or the tool loop when its spec names tools.

use std::future::Future;
use std::sync::Arc;

use super::AgentSpec;
use crate::agent::structured;
use crate::agent::{Agent, AgentContext, AgentError, AgentOutput, AgentReply, CallEstimate, Task};
use crate::provider::{
    estimate_shared_tokens, estimate_tokens, Completion, CompletionRequest, Message, OutputSchema,
};

impl Agent for AgentSpec {
    fn name(&self) -> &str {
        &self.name
    }

    fn call_estimate(&self, task: &Task) -> Option<CallEstimate> {
        // An agent that calls tools may ask up to `max_turns` times, each with the
        // prompt again: what a budget reserves covers every turn (the turns' added
        // calls and results are settled after, from the real counts).
        let turns = if self.tools.is_empty() {
            1
        } else {
            u64::from(self.max_turns.max(1))
        };
        let prompt = estimate_tokens(&self.prompt) + estimate_shared_tokens(&task.prompt());
        Some(CallEstimate {
            model: task.model.clone().or_else(|| self.model.clone()),
            input_tokens: prompt.saturating_mul(turns),
            max_output_tokens: u64::from(self.max_tokens).saturating_mul(turns),
        })
    }

    fn run(&self, ctx: &AgentContext, task: Task) -> impl Future<Output = AgentReply> + Send {
        // The request is made before the future, which then holds it and not the task
        // as well (this future is boxed for every branch).
        let mut governed = crate::agent::tools::Governed::of(&task);
        governed.approve_every_call = self.needs_approval;
        governed.first_choice = self.tool_choice.clone();
        let (request, schema) = self.request(task);
        async move {
            match schema {
                // Boxed too: the loop's future is large, and most agents call none.
                None if !self.tools.is_empty() => {
                    Box::pin(crate::agent::tools::converse(
                        ctx,
                        request,
                        &self.tools,
                        self.max_turns,
                        governed,
                    ))
                    .await
                }
                None => answered(ctx.provider.complete(request).await?),
                // Rare, and its future is large: boxed.
                Some(schema) => Box::pin(self.shaped(ctx, request, schema)).await,
            }
        }
    }
}

impl AgentSpec {
    /// The request for `task`, and the shape its answer must have, if any.
    fn request(&self, task: Task) -> (CompletionRequest, Option<Arc<OutputSchema>>) {
        let mut request = if task.templated {
            CompletionRequest::new(self.name.clone(), self.prompt.clone(), &*task.prompt())
        } else {
            // Every branch of a fan-out reads the same task: it leads the prompt (the
            // shared prefix servers cache), the specialist's instructions follow. With
            // no upstream outputs it is the run's own copy of the input, not a new one.
            let mut r = CompletionRequest::new(self.name.clone(), self.prompt.clone(), FAN_OUT_ASK);
            r.shared_prefix = Some(task.prompt());
            r
        };
        request.model = task.model.or_else(|| self.model.clone());
        request.max_tokens = self.max_tokens;
        request.temperature = self.temperature;
        request.group = Some(task.branch.run.0);
        request.deadline = task.deadline;
        request.deltas = task.deltas;
        (request, task.schema)
    }

    /// Asks for an answer of `schema`'s shape: asked of the server, said in the system
    /// prompt for servers that do not enforce it, checked, and asked once more with
    /// the problems.
    async fn shaped(
        &self,
        ctx: &AgentContext,
        mut request: CompletionRequest,
        schema: Arc<OutputSchema>,
    ) -> AgentReply {
        request.system.push_str(&format!(
            "\n\nAnswer with one JSON object that satisfies this JSON schema, and nothing else:\n{}",
            schema.schema
        ));
        request.schema = Some(schema.clone());
        let first = answered(ctx.provider.complete(request.clone()).await?)?;
        let problem = match structured::check(&schema, &first.text) {
            Ok(value) => {
                return Ok(AgentOutput {
                    text: value.to_string(),
                    ..first
                })
            }
            Err(problem) => problem,
        };
        request
            .messages
            .push(Message::assistant(first.text.clone()));
        request.messages.push(Message::user(format!(
            "{problem}. Answer again with only the JSON object, satisfying the schema."
        )));
        let second = answered(ctx.provider.complete(request).await?)?;
        let mut usage = first.usage;
        usage += second.usage;
        match structured::check(&schema, &second.text) {
            Ok(value) => Ok(AgentOutput {
                text: value.to_string(),
                usage,
                attempts: first.attempts + second.attempts,
                permit_wait_ms: first.permit_wait_ms + second.permit_wait_ms,
                // The first answer, not of the asked shape, was not used.
                wasted_calls: first.wasted_calls + second.wasted_calls + 1,
                rate_limited: first.rate_limited + second.rate_limited,
                ..second
            }),
            Err(problem) => Err(AgentError::InvalidOutput { problem, tries: 2 }),
        }
    }
}

/// The user message of a fan-out branch, whose task leads the system prompt.
pub const FAN_OUT_ASK: &str =
    "Answer the task above as the instructions after it say, from your perspective.";

/// A completion as an output; an answer with no text is an error.
fn answered(completion: Completion) -> Result<AgentOutput, AgentError> {
    if completion.text.trim().is_empty() {
        return Err(AgentError::EmptyAnswer {
            model: completion.model,
            stop_reason: completion.stop_reason,
        });
    }
    Ok(AgentOutput::from(completion))
}
