//! `fanfare approvals list|approve|reject|edit`: a `fanfare serve` run's tool calls
//! waiting for a person, decided from the terminal (the server's
//! `/v1/runs/{id}/approvals` routes).

use anyhow::Context as _;
use serde_json::{json, Value};

use super::submit::Server;
use crate::args::ApprovalsCommand;

pub async fn approvals(command: ApprovalsCommand) -> anyhow::Result<bool> {
    // Both go into URLs: a `../` in either was sent as a path of its own.
    let (run, approval) = match &command {
        ApprovalsCommand::List { run, .. } => (run, None),
        ApprovalsCommand::Approve { run, approval, .. }
        | ApprovalsCommand::Reject { run, approval, .. }
        | ApprovalsCommand::Edit { run, approval, .. } => (run, Some(approval)),
    };
    if !super::submit::is_run_id(run) {
        anyhow::bail!("`{run}` is not a run id (run ids look like run-42)");
    }
    if let Some(a) = approval.filter(|a| !is_approval_id(a)) {
        anyhow::bail!(
            "`{a}` is not an approval id (they look like 0-1-0 or 2.7-1-0: `fanfare approvals list {run}` shows them)"
        );
    }
    match command {
        ApprovalsCommand::List { run, json, client } => {
            let server = Server::new(&client)?;
            let body = server
                .json(server.request(reqwest::Method::GET, &format!("/v1/runs/{run}/approvals")))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", listed(&run, &body));
            }
            Ok(true)
        }
        ApprovalsCommand::Approve {
            run,
            approval,
            client,
        } => decide(&client, &run, &approval, json!({"decision": "approve"})).await,
        ApprovalsCommand::Reject {
            run,
            approval,
            reason,
            client,
        } => {
            decide(
                &client,
                &run,
                &approval,
                json!({"decision": "reject", "reason": reason}),
            )
            .await
        }
        ApprovalsCommand::Edit {
            run,
            approval,
            input,
            client,
        } => {
            let input: Value = serde_json::from_str(&input).context("--input is not JSON")?;
            decide(
                &client,
                &run,
                &approval,
                json!({"decision": "edit", "input": input}),
            )
            .await
        }
    }
}

async fn decide(
    client: &crate::args::ClientArgs,
    run: &str,
    approval: &str,
    body: Value,
) -> anyhow::Result<bool> {
    let server = Server::new(client)?;
    let answer = server
        .json(
            server
                .request(
                    reqwest::Method::POST,
                    &format!("/v1/runs/{run}/approvals/{approval}"),
                )
                .json(&body),
        )
        .await?;
    println!(
        "{run}: approval {approval} {}",
        answer["state"].as_str().unwrap_or("decided")
    );
    Ok(true)
}

/// Whether `id` has an approval id's shape: `INDEX[.ITEM]-TURN-K`.
fn is_approval_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    let number = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    match parts.as_slice() {
        [branch, turn, k] => {
            let mut at = branch.splitn(2, '.');
            at.all(number) && number(turn) && number(k)
        }
        _ => false,
    }
}

/// The list as lines: one per waiting call.
fn listed(run: &str, body: &Value) -> String {
    let waiting = body["approvals"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if waiting.is_empty() {
        return format!("{run}: no tool call waits for approval\n");
    }
    let mut out = String::new();
    for a in waiting {
        // The arguments whole: what is approved is what runs (a cut list hid the
        // end of a call's arguments from the person approving it).
        let input = serde_json::to_string_pretty(&a["input"]).unwrap_or_default();
        out.push_str(&format!(
            "{}  {} · {} · turn {}\n{}\n",
            fanfare::report::one_line(a["id"].as_str().unwrap_or("?")),
            fanfare::report::one_line(a["agent"].as_str().unwrap_or("?")),
            fanfare::report::one_line(a["tool"].as_str().unwrap_or("?")),
            fanfare::report::one_line(&a["turn"].to_string()),
            indented(&fanfare::report::printable(&input))
        ));
        if let Some(why) = a["why"].as_str() {
            out.push_str(&format!(
                "    (asked because {})\n",
                fanfare::report::one_line(why)
            ));
        }
    }
    out
}

/// `text` with every line indented, so the arguments stand under their call.
fn indented(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
