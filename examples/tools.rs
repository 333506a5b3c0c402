//! Run with `cargo run --example tools`: an agent that calls a tool written in Rust.
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

use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::{Fanfare, RunRequest};

/// What the `working_days` tool takes.
#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Span {
    /// Calendar days from today.
    days: u32,
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

    let provider = SimProvider::with_profile(SimProfile::fixed(Duration::from_millis(200)));
    let fanfare = Fanfare::builder(Arc::new(provider))
        .tool(working_days)
        .agent(planner)
        .start()
        .await?;
    let report = fanfare
        .run(RunRequest::fan_out(
            "The launch is 39 days away. How much working time is that?",
            ["planner"],
        ))
        .await?;
    fanfare.shutdown().await;
    print!("{}", report.render());
    let calls = report.branches[0]
        .outcome
        .output()
        .map_or(0, |o| o.tool_calls);
    assert!(calls > 0, "the agent called its tool");
    Ok(())
}
