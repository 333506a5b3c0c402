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
use serde_json::{json, Value};

mod answer;
mod request;

use answer::{outcome, NoAnswer};
use request::{task_of, ChatRequest};

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

/// `response` with `Retry-After: secs`.
fn retry_after(mut response: Response, secs: u64) -> Response {
    response.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(secs),
    );
    response
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
    if !request.has_text() {
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
        answer_tokens: request.answer_tokens(),
    };
    let id = match app.runs.submit(spec, key).await {
        Ok(s) => s.id,
        Err(SubmitError::Invalid(e)) if e.field == "answer_tokens" => {
            return openai_error(StatusCode::BAD_REQUEST, e.message, Some("max_tokens"))
        }
        Err(SubmitError::Invalid(e)) => {
            return openai_error(StatusCode::BAD_REQUEST, e.to_string(), None)
        }
        Err(e @ (SubmitError::Full { .. } | SubmitError::Closing)) => {
            let r = openai_error(StatusCode::TOO_MANY_REQUESTS, e.to_string(), None);
            return retry_after(r, 5);
        }
        Err(e @ SubmitError::KeyReused { .. }) => {
            return openai_error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string(), None)
        }
        Err(e @ SubmitError::JournalUnavailable(_)) => {
            let r = openai_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None);
            return retry_after(r, 60);
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
            let r = openai_error(why.status(), why.message().to_owned(), None);
            match why {
                NoAnswer::Unfinished(_) | NoAnswer::Busy(_) => retry_after(r, 5),
                _ => r,
            }
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
