//! Run with `cargo run --example tools`: an agent that calls a tool written in Rust,
//! and one whose calls wait for an approval.
//!
//! The tool's input is a Rust type: its JSON schema (what the model is told) is
//! derived from it with `schemars`, a call's arguments are checked against it before
//! the tool runs, and a call that fails (bad arguments, an error, a panic, the
//! branch's deadline) goes back to the model as a tool error while the branch goes
//! on. The report lists each call.
//!
//! Offline as written: the simulated provider calls the first tool it is offered and
//! quotes the result. Give the same builder a real provider (see `provider_stack`)
//! and the model decides. An MCP server's tools are added the same way, with
//! `.mcp(McpServer::parse("fs=npx -y @modelcontextprotocol/server-filesystem ./docs")?)`
//! and `tools = ["fs.*"]` in the spec (see the README).
//!
//! A tool with side effects can hold each call for a decision: `.needs_approval()`
//! (or `needs_approval = true` in a spec), and the run's `Approver` decides — here
//! code that approves a small order and rejects a large one; in `fanfare run`, the
//! person at the terminal; in `fanfare serve`, the approvals API.

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ApprovalRequest, Approvals, Approver, Decision, ToolError};
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::{Fanfare, RunRequest};

/// What the `working_days` tool takes.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Span {
    /// Calendar days from today.
    days: u32,
}

/// What the `order_laptops` tool takes.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Order {
    /// How many laptops.
    count: u32,
}

/// Approves orders of up to 10 laptops; a person would be asked here.
struct Purchasing;

impl Approver for Purchasing {
    fn decide(&self, request: ApprovalRequest) -> futures::future::BoxFuture<'static, Decision> {
        let count = request.input["count"].as_u64().unwrap_or(u64::MAX);
        let decision = if count <= 10 {
            Decision::Approve
        } else {
            Decision::Reject {
                reason: Some(format!("{count} laptops need a purchase order")),
            }
        };
        Box::pin(std::future::ready(decision))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A tool: its name, what it is for (the model reads this), and what it does.
    let working_days = tool(
        "working_days",
        "How many working days (Monday to Friday) there are in a span of calendar days.",
        |_ctx, input: Span| async move {
            if input.days > 3_650 {
                return Err(ToolError::new(
                    "spans of more than ten years are not planned",
                ));
            }
            let weeks = input.days / 7;
            let rest = (input.days % 7).min(5);
            Ok(format!(
                "{} calendar days hold about {} working days",
                input.days,
                weeks * 5 + rest
            ))
        },
    );

    // An agent that may call it (a spec file would say `tools = ["working_days"]`).
    let mut planner = AgentSpec::new(
        "planner",
        "You plan launches. Use working_days to know how much working time a span holds.",
    );
    planner.tools = vec!["working_days".into()];
    planner.max_turns = 3;

    // A tool with a side effect: each call waits for the run's approver.
    let order = tool(
        "order_laptops",
        "Orders laptops for the launch team.",
        |_ctx, input: Order| async move { Ok::<_, ToolError>(format!("ordered {}", input.count)) },
    )
    .needs_approval();
    let mut buyer = AgentSpec::new("buyer", "You equip the launch team.");
    buyer.tools = vec!["order_laptops".into()];
    buyer.max_turns = 3;

    let provider = SimProvider::with_profile(SimProfile::fixed(Duration::from_millis(200)));
    let fanfare = Fanfare::builder(Arc::new(provider))
        .tool(working_days)
        .tool(order)
        .agent(planner)
        .agent(buyer)
        .start()
        .await?;
    let report = fanfare
        .run(
            RunRequest::fan_out(
                "The launch is 39 days away. How much working time is that, and what do we order?",
                ["planner", "buyer"],
            )
            .approver(Approvals::new(Purchasing)),
        )
        .await?;
    fanfare.shutdown().await;
    print!("{}", report.render());
    for branch in &report.branches {
        let calls = branch.outcome.output().map_or(0, |o| o.tool_calls);
        assert!(calls > 0, "{} called its tool", branch.step);
    }
    Ok(())
}
