//! The OpenAI-compatible face: `GET /v1/models` lists each workflow as the model
//! `fanfare/<workflow>`, and `POST /v1/chat/completions` runs that workflow on the
//! conversation and answers with its merge — streamed as `chat.completion.chunk`s
//! when asked — with `usage` summed over every branch and the merge. Each such call
//! is an ordinary run: journaled, queued, listed in `/v1/runs`, cancellable there.
//!
//! - A client that goes away before the answer cancels the run (its model calls
//!   are aborted), unless it sent an `Idempotency-Key` (it means to come back: the
//!   same key answers from the same run, never a second one) or
//!   `X-Fanfare-Keep-Running: true`.
//! - A workflow with no merge answers with the output of its last steps (the ones
//!   nothing depends on; `fanfare workflows show` names them), one section each
//!   when there are several.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::events::Follow;
use super::{ApiError, App};
use crate::runs::SubmitError;
use crate::spec::RunSpec;

/// The prefix that marks a workflow as a model.
const PREFIX: &str = "fanfare/";

pub(super) async fn models(State(app): State<App>) -> Json<Value> {
    let data: Vec<Value> = app
        .runs
        .catalog()
        .workflows
        .iter()
        .map(|w| {
            json!({
                "id": format!("{PREFIX}{}", w.name),
                "object": "model",
                "created": 0,
                "owned_by": "fanfare",
                "description": w.description,
            })
        })
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// The parts of a chat request fanfare reads. Sampling settings (`temperature`,
/// `max_tokens`, …) must be well-formed but are not used: the workflow's agents
/// carry their own. What fanfare cannot do (`n` > 1, tools, a response format) is
/// refused rather than silently ignored.
#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    max_tokens: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    #[allow(dead_code)]
    temperature: Option<f32>,
}

impl ChatRequest {
    /// What it asks that fanfare cannot do: the parameter and why.
    fn unsupported(&self) -> Option<(&'static str, &'static str)> {
        if self.n.is_some_and(|n| n != 1) {
            return Some((
                "n",
                "fanfare answers with one choice (the workflow's merge)",
            ));
        }
        if self.tools.as_ref().is_some_and(|t| !t.is_empty()) {
            return Some(("tools", "a workflow served as a model takes no tools"));
        }
        if self
            .tool_choice
            .as_ref()
            .is_some_and(|c| c != &Value::from("none") && c != &Value::from("auto"))
        {
            return Some(("tool_choice", "a workflow served as a model takes no tools"));
        }
        if self
            .response_format
            .as_ref()
            .is_some_and(|f| f["type"] != "text")
        {
            return Some((
                "response_format",
                "a workflow's answer is its merge's text; shape a step with `schema` in the workflow instead",
            ));
        }
        None
    }
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Content,
}

/// A message's content: a string, or a list of parts of which the text ones count.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
    #[default]
    Null,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
            Content::Null => String::new(),
        }
    }
}

/// The task text of a conversation: a lone user message as it is; otherwise each
/// message under its role, in order.
fn task_of(messages: &[ChatMessage]) -> String {
    match messages {
        [only] if only.role == "user" => only.content.text(),
        _ => messages
            .iter()
            .map(|m| format!("{}: {}", m.role, m.content.text()))
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

fn openai_error(status: StatusCode, message: impl Into<String>, param: Option<&str>) -> Response {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    let body = json!({
        "error": { "message": message.into(), "type": kind, "param": param, "code": Value::Null }
    });
    (status, Json(body)).into_response()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) async fn chat(
    State(app): State<App>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let key = match super::runs::idempotency_key(&headers) {
        Ok(key) => key,
        Err(e) => return openai_error(StatusCode::BAD_REQUEST, e.message(), None),
    };
    let keep_running = key.is_some()
        || headers
            .get("x-fanfare-keep-running")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let body = match body {
        Ok(b) => b,
        Err(e) => return openai_error(e.status(), e.body_text(), None),
    };
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let request: ChatRequest = match serde_path_to_error::deserialize(de) {
        Ok(r) => r,
        Err(e) => {
            let param = e.path().to_string();
            return openai_error(
                StatusCode::BAD_REQUEST,
                e.into_inner().to_string(),
                Some(&param),
            );
        }
    };
    let Some(workflow) = request.model.strip_prefix(PREFIX) else {
        return openai_error(
            StatusCode::NOT_FOUND,
            format!("model `{}` is not served here: fanfare serves its workflows as `{PREFIX}<workflow>` (GET /v1/models)", request.model),
            Some("model"),
        );
    };
    if !app
        .runs
        .catalog()
        .workflows
        .iter()
        .any(|w| w.name == workflow)
    {
        return openai_error(
            StatusCode::NOT_FOUND,
            format!("no workflow `{workflow}` (GET /v1/models lists them)"),
            Some("model"),
        );
    }
    if let Some((param, why)) = request.unsupported() {
        return openai_error(StatusCode::BAD_REQUEST, why, Some(param));
    }
    let input = task_of(&request.messages);
    // A conversation whose messages carry no text (an image, a tool call) is no task.
    if request
        .messages
        .iter()
        .all(|m| m.content.text().trim().is_empty())
    {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "the conversation has no text",
            Some("messages"),
        );
    }
    let spec = RunSpec {
        input,
        workflow: Some(workflow.to_owned()),
        agents: None,
        items: None,
        policy: None,
        deadline: None,
        branch_timeout: None,
        budget: None,
        merge: None,
        crash_retries: None,
        cache_warm: None,
        repair_of: None,
    };
    let id = match app.runs.submit(spec, key).await {
        Ok(s) => s.id,
        Err(SubmitError::Invalid(e)) => {
            return openai_error(StatusCode::BAD_REQUEST, e.to_string(), None)
        }
        Err(e @ (SubmitError::Full { .. } | SubmitError::Closing)) => {
            let mut r = openai_error(StatusCode::TOO_MANY_REQUESTS, e.to_string(), None);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(5u64),
            );
            return r;
        }
        Err(e @ SubmitError::KeyReused { .. }) => {
            return openai_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None)
        }
        Err(e @ SubmitError::DiskLow(_)) => {
            let mut r = openai_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None);
            r.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(60u64),
            );
            return r;
        }
        Err(e) => return ApiError::internal(e).into_response(),
    };
    // Cancels the run if the client goes away first (the response is dropped).
    let leave = Leave {
        app: app.clone(),
        id,
        armed: !keep_running,
    };
    let answer = Answer {
        id: format!("chatcmpl-run-{id}"),
        model: request.model.clone(),
        created: now_s(),
    };
    if request.stream {
        stream(app, id, answer, leave).into_response()
    } else {
        whole(app, id, answer, leave).await
    }
}

/// Cancels run `id` when dropped while armed: its client went away before the
/// answer. Disarmed once the run has ended.
struct Leave {
    app: App,
    id: i64,
    armed: bool,
}

impl Drop for Leave {
    fn drop(&mut self) {
        if self.armed {
            let (runs, id) = (self.app.runs.clone(), self.id);
            tracing::info!(run = id, "the chat client went away: cancelling its run");
            tokio::spawn(async move {
                let _ = runs.cancel(id).await;
            });
        }
    }
}

/// What every chunk or answer of one call repeats.
#[derive(Clone)]
struct Answer {
    id: String,
    model: String,
    created: u64,
}

impl Answer {
    fn chunk(&self, delta: Value, finish: Option<&str>, usage: Option<Value>) -> Event {
        let mut v = json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        Event::default().data(v.to_string())
    }
}

/// The merge's text and the usage, from a finished run's row; or why not.
/// Why a chat call has no answer.
enum NoAnswer {
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
    fn message(&self) -> &str {
        match self {
            NoAnswer::Failed(m)
            | NoAnswer::Unfinished(m)
            | NoAnswer::Journal(m)
            | NoAnswer::Busy(m) => m,
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            NoAnswer::Failed(_) => StatusCode::FAILED_DEPENDENCY,
            NoAnswer::Unfinished(_) | NoAnswer::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            NoAnswer::Journal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

async fn outcome(app: &App, id: i64) -> Result<(String, Value), NoAnswer> {
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

async fn whole(app: App, id: i64, answer: Answer, mut leave: Leave) -> Response {
    let mut follow = Follow::new(&app, id, 0);
    while follow.next().await.is_some() {}
    let outcome = outcome(&app, id).await;
    // Unfinished (the server is stopping): its client is told to try again, so a run
    // it did not say it would come back for is cancelled (`leave`), not resumed at
    // the next start for nobody.
    if !matches!(outcome, Err(NoAnswer::Unfinished(_))) {
        leave.armed = false;
    }
    match outcome {
        Ok((text, usage)) => Json(json!({
            "id": answer.id, "object": "chat.completion", "created": answer.created,
            "model": answer.model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "stop",
            }],
            "usage": usage,
        }))
        .into_response(),
        Err(why) => {
            let mut r = openai_error(why.status(), why.message().to_owned(), None);
            if let NoAnswer::Unfinished(_) | NoAnswer::Busy(_) = why {
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(5u64),
                );
            }
            r
        }
    }
}

/// What a streamed answer has sent so far.
struct Streaming {
    /// Cancels the run if the stream is dropped before the end.
    leave: Leave,
    app: App,
    follow: Follow,
    answer: Answer,
    id: i64,
    sent: String,
    attempt: u64,
    broken: bool,
    phase: Phase,
}

#[derive(PartialEq)]
enum Phase {
    Role,
    Text,
    Finished,
}

fn stream(app: App, id: i64, answer: Answer, leave: Leave) -> Response {
    let state = Streaming {
        leave,
        follow: Follow::new(&app, id, 0),
        app,
        answer,
        id,
        sent: String::new(),
        attempt: 1,
        broken: false,
        phase: Phase::Role,
    };
    let events = futures::stream::unfold(state, |mut s| async move {
        let event = match s.phase {
            Phase::Role => {
                s.phase = Phase::Text;
                s.answer
                    .chunk(json!({ "role": "assistant", "content": "" }), None, None)
            }
            Phase::Finished => return None,
            Phase::Text => loop {
                match s.follow.next().await {
                    Some(row) if row.kind == "synthesis_delta" => {
                        let v: Value = serde_json::from_str(&row.data).unwrap_or(Value::Null);
                        let attempt = v["attempt"].as_u64().unwrap_or(1);
                        let text = v["text"].as_str().unwrap_or("");
                        if attempt != s.attempt {
                            if s.sent.is_empty() {
                                s.attempt = attempt;
                            } else {
                                // What an earlier attempt sent cannot be taken back:
                                // stop streaming; the end sends the answer in full.
                                s.broken = true;
                            }
                        }
                        if s.broken || text.is_empty() {
                            continue;
                        }
                        s.sent.push_str(text);
                        break s.answer.chunk(json!({ "content": text }), None, None);
                    }
                    Some(_) => continue,
                    None => {
                        s.phase = Phase::Finished;
                        let outcome = outcome(&s.app, s.id).await;
                        // As in `whole`: an unfinished run stays armed to be cancelled.
                        if !matches!(outcome, Err(NoAnswer::Unfinished(_))) {
                            s.leave.armed = false;
                        }
                        break match outcome {
                            Ok((text, usage)) => {
                                let rest = match text.strip_prefix(s.sent.as_str()) {
                                    Some(rest) => rest.to_owned(),
                                    None => format!("\n\n[the merge was retried; its answer in full:]\n\n{text}"),
                                };
                                s.answer.chunk(
                                    json!({ "content": rest }),
                                    Some("stop"),
                                    Some(usage),
                                )
                            }
                            Err(why) => Event::default().data(
                                json!({ "error": {
                                    "message": why.message(),
                                    "type": "server_error",
                                    "code": why.status().as_u16(),
                                } })
                                .to_string(),
                            ),
                        };
                    }
                }
            },
        };
        Some((Ok::<_, std::convert::Infallible>(event), s))
    });
    let done = futures::stream::once(async { Ok(Event::default().data("[DONE]")) });
    Sse::new(futures::StreamExt::chain(events, done)).into_response()
}
