//! A finished chat run's answer: the merge's text (or the last steps' outputs) and
//! the usage, read within the large-answer budget; or why there is none.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::super::App;

/// Why a chat call has no answer.
pub(super) enum NoAnswer {
    /// The run ended without one (it failed its policy, its merge failed, it was
    /// cancelled): not the server's fault, and the same request would fail again —
    /// 424, which the OpenAI clients do not retry (a 500 was retried twice, each
    /// retry a paid run).
    Failed(String),
    /// The run has not ended (the server is stopping): 503, try again.
    Unfinished(String),
    /// The journal could not be read.
    Journal(String),
    /// The server is busy with other large answers: 503, try again shortly.
    Busy(String),
}

impl NoAnswer {
    pub(super) fn message(&self) -> &str {
        match self {
            NoAnswer::Failed(m)
            | NoAnswer::Unfinished(m)
            | NoAnswer::Journal(m)
            | NoAnswer::Busy(m) => m,
        }
    }

    pub(super) fn status(&self) -> StatusCode {
        match self {
            NoAnswer::Failed(_) => StatusCode::FAILED_DEPENDENCY,
            NoAnswer::Unfinished(_) | NoAnswer::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            NoAnswer::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The merge's text and the usage, from a finished run's row; or why not.
pub(super) async fn outcome(app: &App, id: i64) -> Result<(String, Value), NoAnswer> {
    // The report is read and parsed whole: it takes its share of the large-answer
    // budget first (100 callers of one run with a 34 MB report held 800 MB).
    let size = match app.runs.journal().stored_size(id).await {
        Ok(size) => size.unwrap_or(0),
        Err(e) => return Err(NoAnswer::Journal(e.to_string())),
    };
    let _reserved = app
        .large
        .reserve(size)
        .map_err(|e| NoAnswer::Busy(e.message))?;
    let row = match app.runs.journal().get(id).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err(NoAnswer::Journal(format!("run-{id} vanished"))),
        Err(e) => return Err(NoAnswer::Journal(e.to_string())),
    };
    if !row.status.is_final() {
        return Err(NoAnswer::Unfinished(format!(
            "run-{id} has not ended ({}): the server is stopping; try again",
            row.status.as_str()
        )));
    }
    let report: Value = row
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .ok_or_else(|| {
            NoAnswer::Failed(format!(
                "run-{id} ended {}: {}",
                row.status.as_str(),
                row.error.clone().unwrap_or_default()
            ))
        })?;
    let text = match &report["synthesis"] {
        Value::Null => last_steps(&report),
        synthesis => synthesis["text"].as_str().map(str::to_owned),
    }
    .ok_or_else(|| {
        let why = row
            .error
            .clone()
            .or_else(|| report["synthesis"]["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "its last steps did not answer".to_owned());
        NoAnswer::Failed(format!("run-{id} has no merged answer: {why}"))
    })?;
    let u = &report["totals"]["usage"];
    let n = |k: &str| u[k].as_u64().unwrap_or(0);
    let prompt =
        n("input_tokens") + n("cache_read_input_tokens") + n("cache_creation_input_tokens");
    let completion = n("output_tokens");
    let usage = json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": n("cache_read_input_tokens") },
    });
    Ok((text, usage))
}

/// A run with no merge: the output of its last steps (those nothing depends on),
/// one section each under its step's name when there are several; `None` when one
/// of them has no output.
fn last_steps(report: &Value) -> Option<String> {
    let branches = report["branches"].as_array()?;
    let needed: std::collections::HashSet<u64> = branches
        .iter()
        .filter_map(|b| b["depends_on"].as_array())
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let ends: Vec<&Value> = branches
        .iter()
        .enumerate()
        .filter(|(i, _)| !needed.contains(&(*i as u64)))
        .map(|(_, b)| b)
        .collect();
    let text = |b: &Value| b["outcome"]["text"].as_str().map(str::to_owned);
    match ends.as_slice() {
        [only] => text(only),
        _ => ends
            .iter()
            .map(|b| Some(format!("## {}\n{}", b["step"].as_str()?, text(b)?)))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.join("\n\n")),
    }
}
