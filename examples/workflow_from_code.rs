//! Run with `cargo run --example workflow_from_code`: workflows from a program, two
//! ways, with a code function of its own. On the simulated provider, offline.
//!
//! 1. A workflow written in TOML (as in `agents/workflows/`), parsed from a string
//!    with [`Workflow::parse`] — [`Workflow::load`] reads a file — and turned into a
//!    request with [`Workflow::request`]. Every problem names the file, the line and
//!    the step.
//! 2. The same graph built in code with [`RunRequest::graph`], its steps wired by
//!    name.
//!
//! Both end in `word-count`, a code function registered with
//! [`FanfareBuilder::code`](fanfare::FanfareBuilder::code): it runs on the blocking
//! pool with the upstream steps' outputs and the step's options.

use std::path::Path;
use std::sync::Arc;

use fanfare::provider::{SimProfile, SimProvider};
use fanfare::run::workflow::Workflow;
use fanfare::run::{CodeError, CodeInput, CodeOutput, Template};
use fanfare::{Fanfare, RunRequest, Step};

const REVIEW: &str = r#"
name = "review"
description = "Two reviewers, then their words counted"
merge = "none"

[[steps]]
name = "legal"
agent = "legal"

[[steps]]
name = "security"
agent = "security"
input = "From the attacker's side: {{task}}"

[[steps]]
name = "count"
code = "word-count"
after = ["legal", "security"]
options = { min_length = 5 }
"#;

/// Counts each upstream output's words of at least `min_length` letters.
fn word_count(input: &CodeInput<'_>) -> Result<CodeOutput, CodeError> {
    let min = input
        .options
        .get("min_length")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1) as usize;
    let lines: Vec<String> = input
        .upstream
        .iter()
        .map(|u| {
            let n = u
                .text
                .split_whitespace()
                .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= min)
                .count();
            format!("{}: {n} words of {min}+ letters", u.agent)
        })
        .collect();
    Ok(CodeOutput {
        text: lines.join("\n"),
        conflicts: Vec::new(),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agents_from(fanfare_agents::perspectives()?)
        .code("word-count", word_count)
        .start()
        .await?;
    let task = "Should we log every user query in plain text?";

    // 1. From TOML.
    let workflow = Workflow::parse(Path::new("review.toml"), REVIEW)?;
    let report = fanfare.run(workflow.request(task, None)?).await?;
    println!("── from TOML ──\n{}", report.render());

    // 2. In code, wired by name.
    let request = RunRequest::graph(task)
        .step(Step::agent("legal"))
        .step(Step::agent("security").input(Template::parse("From the attacker's side: {{task}}")?))
        .step_after(
            Step::code("word-count", serde_json::json!({ "min_length": 5 })).named("count"),
            ["legal", "security"],
        )
        .build()?;
    let report = fanfare.run(request).await?;
    println!("── in code ──\n{}", report.render());
    fanfare.shutdown().await;
    Ok(())
}
