//! `POST /v1/runs`, `GET /v1/runs`, `GET /v1/runs/{id}`, `DELETE /v1/runs/{id}`.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, App};
use crate::journal::{RunRow, RunSummary, Status};
use crate::runs::{CancelError, SubmitError};
use crate::spec::RunSpec;

/// The longest idempotency key accepted.
const MAX_KEY: usize = 255;

/// `run-N` → N.
pub(super) fn run_id(text: &str) -> Result<i64, ApiError> {
    // One spelling per run: `run-01` is not `run-1`.
    text.strip_prefix("run-")
        .filter(|n| !n.starts_with('0') && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no run `{text}` (run ids look like run-42)"),
            )
        })
}

/// A run as the API lists it.
fn view(row: &RunRow) -> Value {
    head(
        row.id,
        row.status,
        row.created_ms,
        row.updated_ms,
        &row.error,
    )
}

/// What every view of a run starts with.
fn head(
    id: i64,
    status: Status,
    created_ms: i64,
    updated_ms: i64,
    error: &Option<String>,
) -> Value {
    json!({
        "id": format!("run-{id}"),
        "status": status,
        "created_at_ms": created_ms,
        "updated_at_ms": updated_ms,
        "error": error,
    })
}

/// A run as the run list shows it: the summary, what it was asked (the first
/// characters of its input, its workflow) and, once it has a report, its figures.
fn summary(row: &RunSummary) -> Value {
    let f = row.figures;
    let mut view = head(
        row.id,
        row.status,
        row.created_ms,
        row.updated_ms,
        &row.error,
    );
    let more = [
        ("input_head", json!(row.input_head)),
        ("workflow", json!(row.workflow)),
        ("branches", json!(f.map(|f| f.branches))),
        ("branches_ok", json!(f.map(|f| f.branches_ok))),
        ("tokens", json!(f.map(|f| f.tokens))),
        ("cost_usd", json!(f.and_then(|f| f.cost_usd))),
        ("wall_s", json!(f.map(|f| f.wall_ms as f64 / 1000.0))),
    ];
    if let Value::Object(fields) = &mut view {
        fields.extend(more.map(|(k, v)| (k.to_owned(), v)));
    }
    view
}

/// The client's Idempotency-Key, if it sent a usable one.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => match v.to_str() {
            // `to_str` lets a TAB through; a key is visible characters only.
            Ok(k)
                if !k.is_empty()
                    && k.len() <= MAX_KEY
                    && k.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(Some(k.to_owned()))
            }
            _ => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "the Idempotency-Key header must be 1 to {MAX_KEY} visible ASCII characters"
                ),
            )),
        },
    }
}

/// Submits `spec` and answers as `POST /v1/runs` does.
async fn accept(app: &App, spec: RunSpec, key: Option<String>) -> Result<Response, ApiError> {
    match app.runs.submit(spec, key).await {
        Ok(s) => {
            let code = if s.created {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            let body = json!({ "id": format!("run-{}", s.id), "status": s.status });
            Ok((code, Json(body)).into_response())
        }
        Err(SubmitError::Invalid(e)) => {
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.message).field(e.field))
        }
        Err(e @ SubmitError::Full { .. }) => {
            Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).retry_after(5))
        }
        Err(e @ SubmitError::Closing) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(5))
        }
        Err(e @ SubmitError::JournalUnavailable(_)) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(60))
        }
        Err(e @ SubmitError::KeyReused { .. }) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            e.to_string(),
        )),
        Err(SubmitError::Journal(e)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the run could not be journaled ({e}), so it was not accepted; try again when the journal can be written (GET /readyz)"),
        )
        .retry_after(5)),
    }
}

pub(super) async fn submit(
    State(app): State<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let key = idempotency_key(&headers)?;
    let spec = crate::spec::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.message).field(e.field))?;
    accept(&app, spec, key).await
}

/// `POST /v1/runs/{id}/repair`: the same request again, reusing what succeeded.
pub(super) async fn repair(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    // It runs the stored request again: a body asking for something else (another
    // deadline, say) would be silently ignored, so it is refused.
    let empty = body.trim_ascii().is_empty() || body.trim_ascii() == b"{}";
    if !empty {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "a repair takes no body: it runs the run's own request again (submit a new run to change it)",
        ));
    }
    let n = run_id(&id)?;
    let key = idempotency_key(&headers)?;
    let row = match app.runs.journal().get(n).await {
        Ok(Some(row)) => row,
        Ok(None) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no run `{id}`"),
            ))
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let mut spec = crate::spec::parse(row.spec.as_bytes()).map_err(ApiError::internal)?;
    spec.repair_of = Some(format!("run-{n}"));
    accept(&app, spec, key).await
}

pub(super) async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let n = run_id(&id)?;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no run `{id}`"));
    // Its share of the budget first: a row read and then refused costs its memory
    // while it waits its turn.
    let size = app
        .runs
        .journal()
        .stored_size(n)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(missing)?;
    let reserved = app.large.reserve(size + VIEW_HEAD)?;
    match app.runs.journal().get(n).await {
        Ok(Some(row)) => reserved.json(full_view(row, app.runs.journal().write_failure())),
        Ok(None) => Err(missing()),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// About what a run's full view adds to its request and report.
const VIEW_HEAD: usize = 512;

/// A run as `GET /v1/runs/{id}` shows it: [`view`]'s summary, its request and its
/// report, as parts sent one after another. The request and report go out as the
/// journal keeps them (not copied), checked to be JSON but not built into a tree (a
/// report of 10,000 branches is ~10 MB); one that is not JSON (a damaged row) shows
/// as `null`.
fn full_view(row: RunRow, journal_failure: Option<String>) -> Vec<Bytes> {
    let mut head = view(&row);
    if let (false, Some(why)) = (row.status.is_final(), journal_failure) {
        head["journal"] = Value::String(format!(
            "writes are failing ({why}): the run waits until the journal can keep its answers"
        ));
    }
    let raw = |text: Option<String>| match text {
        Some(t) if serde_json::from_str::<serde::de::IgnoredAny>(&t).is_ok() => Bytes::from(t),
        _ => Bytes::from_static(b"null"),
    };
    // The summary is an object with fields: reopen it to add the two.
    let mut summary = serde_json::to_vec(&head).unwrap_or_default();
    summary.pop();
    summary.extend_from_slice(b",\"request\":");
    vec![
        Bytes::from(summary),
        raw(Some(row.spec)),
        Bytes::from_static(b",\"report\":"),
        raw(row.report),
        Bytes::from_static(b"}"),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    status: Option<String>,
    limit: Option<u32>,
    before: Option<String>,
}

pub(super) async fn list(
    State(app): State<App>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            let known: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("`{s}` is not a status ({})", known.join(", ")),
            )
            .field("status")
        })?),
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(
            ApiError::new(StatusCode::BAD_REQUEST, "limit must be 1 to 500").field("limit"),
        );
    }
    let before = match &q.before {
        None => None,
        Some(b) => Some(run_id(b).map_err(|_| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("`{b}` is not a run id")).field("before")
        })?),
    };
    let rows = app
        .runs
        .journal()
        .list(status, before, limit)
        .await
        .map_err(ApiError::internal)?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| format!("run-{}", r.id)))
        .flatten();
    let runs: Vec<Value> = rows.iter().map(summary).collect();
    Ok(Json(json!({ "runs": runs, "next": next })))
}

pub(super) async fn cancel(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let n = run_id(&id)?;
    match app.runs.cancel(n).await {
        Ok(status) => Ok(Json(json!({ "id": id, "status": status }))),
        Err(CancelError::NotFound(_)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run `{id}`"),
        )),
        Err(e @ CancelError::Ended { .. }) => {
            Err(ApiError::new(StatusCode::CONFLICT, e.to_string()))
        }
        Err(CancelError::Journal(e)) => Err(ApiError::internal(e)),
        Err(e @ CancelError::Closing) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).retry_after(5))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_id_has_one_spelling() {
        for (text, id) in [
            ("run-1", Some(1)),
            ("run-42", Some(42)),
            ("run-01", None),
            ("run-0", None),
            ("run-+1", None),
            ("run--1", None),
            ("run-", None),
            ("1", None),
            ("run-99999999999999999999", None),
        ] {
            assert_eq!(run_id(text).ok(), id, "{text}");
        }
    }
}
