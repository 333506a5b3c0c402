//! `run_workflow`: an agent hands a sub-task to a workflow of the same runtime
//! (`FanfareBuilder::workflow`). The workflow runs as a child run of the branch:
//! within the branch's deadline, its tokens bounded by what the branch may still
//! spend under the run's budget and counted in the branch's own, cancelled with the
//! branch (dropping the call drops the run), shown in the report under the branch,
//! and nested at most [`MAX_DEPTH`] deep. Its answer (its merge, or its one final
//! step) is the tool's result; a run that fails is a tool error saying why.
//!
//! The agent layer knows no workflows: the run layer does, behind [`Delegator`].

use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Tool, ToolContext, ToolError};
use crate::agent::BranchId;
use crate::provider::Usage;

/// How deep sub-runs nest: a run's branch may start a run whose branch may start
/// one, and so on, this many times.
pub const MAX_DEPTH: u32 = 3;

/// The tool's name.
pub const RUN_WORKFLOW: &str = "run_workflow";

/// A sub-run a tool call asks for.
#[derive(Clone, Debug)]
pub struct Delegation {
    /// The workflow, by name.
    pub workflow: String,
    /// Its input.
    pub input: String,
    /// When it must have ended (the branch's deadline).
    pub deadline: Option<tokio::time::Instant>,
    /// How deep it is (1 for a run a top-level run's branch started).
    pub depth: u32,
    /// The most tokens it may use (what the branch may still spend), under a budget.
    pub tokens: Option<u64>,
}

/// How a sub-run ended.
#[derive(Clone, Debug)]
pub struct Delegated {
    /// Its answer, or why there is none.
    pub answer: Result<String, String>,
    /// What its model calls used.
    pub usage: Usage,
    /// Its model calls.
    pub attempts: u32,
}

/// Runs the workflows of a runtime for a branch's tool calls (the run layer's).
pub(crate) trait Delegate: Send + Sync + 'static {
    /// Runs `ask` as a child of `branch`'s run.
    fn delegate(&self, branch: BranchId, ask: Delegation) -> BoxFuture<'static, Delegated>;
}

/// What starts a branch's sub-runs; cheap to clone. A task carries it when its
/// runtime has workflows ([`crate::agent::Task::delegator`]).
#[derive(Clone)]
pub struct Delegator(pub(crate) Arc<dyn Delegate>);

impl std::fmt::Debug for Delegator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Delegator")
    }
}

impl PartialEq for Delegator {
    /// The same one.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The `run_workflow` tool over `workflows` (name, one line on it).
pub struct RunWorkflow {
    workflows: Vec<(String, String)>,
    description: String,
}

impl RunWorkflow {
    /// The tool over `workflows`: each a name and one line on what it does.
    pub fn new(mut workflows: Vec<(String, String)>) -> Self {
        workflows.sort();
        let listed: Vec<String> = workflows
            .iter()
            .map(|(name, about)| format!("`{name}`: {about}"))
            .collect();
        let description = format!(
            "Hands a sub-task to a workflow, which runs it and answers. Workflows: {}.",
            listed.join("; ")
        );
        Self {
            workflows,
            description,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    workflow: String,
    input: String,
}

impl Tool for RunWorkflow {
    fn name(&self) -> &str {
        RUN_WORKFLOW
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn input_schema(&self) -> serde_json::Value {
        let names: Vec<&str> = self.workflows.iter().map(|(n, _)| n.as_str()).collect();
        serde_json::json!({
            "type": "object",
            "properties": {
                "workflow": {
                    "type": "string",
                    "enum": names,
                    "description": "The workflow to run."
                },
                "input": {
                    "type": "string",
                    "description": "The sub-task, as the workflow's input."
                }
            },
            "required": ["workflow", "input"],
            "additionalProperties": false
        })
    }

    fn call(
        &self,
        ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async move {
            let ask: Ask = serde_json::from_value(input)
                .map_err(|e| ToolError(format!("the arguments do not fit: {e}")))?;
            if !self.workflows.iter().any(|(n, _)| *n == ask.workflow) {
                return Err(ToolError(format!(
                    "there is no workflow `{}`",
                    super::shown(&ask.workflow)
                )));
            }
            let Some(delegator) = ctx.delegator.clone() else {
                return Err(ToolError(
                    "this branch cannot start runs (its runtime gave it no way to)".to_owned(),
                ));
            };
            if ctx.depth >= MAX_DEPTH {
                return Err(ToolError(format!(
                    "runs nest at most {MAX_DEPTH} deep, and this branch's run is {} deep: do the sub-task here",
                    ctx.depth
                )));
            }
            let ask = Delegation {
                workflow: ask.workflow,
                input: ask.input,
                deadline: ctx.deadline,
                depth: ctx.depth + 1,
                tokens: ctx.tokens_left,
            };
            let name = ask.workflow.clone();
            let ended = delegator.0.delegate(ctx.branch, ask).await;
            if let Some(used) = &ctx.used {
                used.add(ended.attempts, ended.usage);
            }
            ended
                .answer
                .map_err(|why| ToolError(format!("the workflow `{name}` did not answer: {why}")))
        })
    }
}
