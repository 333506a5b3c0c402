//! `bench tools`: what the tool loop itself costs per turn. N branches of a spec
//! agent whose model (a stub answering at once) calls a no-op tool T times before it
//! answers, against the same N branches answering at once (T = 0): the CPU the extra
//! turns took, per turn. The stub's and the tool's own work are in it, so the figure
//! is an upper bound on the loop's.

use std::sync::Arc;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::{tool, ToolError};
use fanfare::provider::{BoxFuture, Completion, CompletionRequest, ProviderError, ToolCall, Usage};
use fanfare::{Fanfare, Policy, Provider, RunRequest};
use serde_json::json;

use super::measure::{cpu_seconds, median, Measured};
use super::TASK;

/// A model that calls `noop` until its request carries `turns` tool results, then
/// answers; at once, every time.
struct Stub {
    turns: usize,
}

impl Provider for Stub {
    fn name(&self) -> &str {
        "stub"
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        let answered: usize = request.messages.iter().map(|m| m.tool_results.len()).sum();
        let mut out = Completion {
            model: "stub".into(),
            attempts: 1,
            usage: Usage {
                input_tokens: 40,
                output_tokens: 8,
                ..Usage::default()
            },
            ..Completion::default()
        };
        if answered < self.turns {
            out.tool_calls = vec![ToolCall::from_raw(format!("c{answered}"), "noop", "{}")];
        } else {
            out.text = "done".into();
        }
        Box::pin(std::future::ready(Ok(out)))
    }
}

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Nothing {}

async fn runtime(turns: usize) -> anyhow::Result<Fanfare> {
    let mut agent = AgentSpec::new("looper", "You call noop.");
    agent.tools = vec!["noop".into()];
    agent.max_turns = u32::try_from(turns + 1).unwrap_or(64);
    Ok(Fanfare::builder(Arc::new(Stub { turns }))
        .tool(tool("noop", "Does nothing.", |_ctx, _: Nothing| async {
            Ok::<_, ToolError>("ok".to_owned())
        }))
        .agent(agent)
        .start()
        .await?)
}

async fn once(fanfare: &Fanfare, n: usize) -> anyhow::Result<Measured> {
    let request = RunRequest::fan_out(TASK, (0..n).map(|_| "looper"))
        .policy(Policy::TolerantPartial { quorum: 1 })
        .merge(fanfare::MergeStrategy::Code);
    let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
    let report = fanfare.run(request).await?;
    Ok((
        t0.elapsed(),
        cpu_seconds() - c0,
        report.totals.ok,
        report.totals.failed,
    ))
}

/// `bench tools`: the loop's CPU per turn, N branches of T turns against N of none.
pub async fn tools(n: usize, turns: usize, repeat: usize) -> anyhow::Result<()> {
    let (plain, looping) = (runtime(0).await?, runtime(turns).await?);
    // Warm-up, then the two cases interleaved.
    once(&plain, n).await?;
    once(&looping, n).await?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..repeat {
        without.push(once(&plain, n).await?);
        with.push(once(&looping, n).await?);
    }
    plain.shutdown().await;
    looping.shutdown().await;
    let (w0, c0, ok0, _) = median(without);
    let (w1, c1, ok1, failed) = median(with);
    let per_turn_us = (c1 - c0).max(0.0) * 1e6 / (n * turns.max(1)) as f64;
    crate::output::line(format_args!(
        "{}",
        json!({"case": "tool_loop", "n": n, "turns": turns, "repeat": repeat,
               "wall_s_without": w0.as_secs_f64(), "wall_s_with": w1.as_secs_f64(),
               "cpu_s_without": c0, "cpu_s_with": c1,
               "cpu_us_per_turn": per_turn_us, "ok": [ok0, ok1], "failed": failed})
    ))?;
    if ok1 < n || failed > 0 {
        anyhow::bail!("the tool loop case lost branches: {ok1} of {n} ok, {failed} failed");
    }
    Ok(())
}
