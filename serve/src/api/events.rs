//! `GET /v1/runs/{id}/events`: a run's events as Server-Sent Events, read from the
//! journal. Each event's `id` is its number in the run; a client that reconnects
//! with `Last-Event-ID: N` gets every event after N. The stream ends after the
//! run's `done` event, or when the server shuts down (reconnect to the next one).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use tokio::sync::watch;

use super::runs::run_id;
use super::{ApiError, App};
use crate::journal::{EventRow, Journal};

/// Events read from the journal per query.
const PAGE: u32 = 256;

struct Cursor {
    journal: Journal,
    run: i64,
    last: i64,
    buffer: VecDeque<EventRow>,
    done: bool,
    changed: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
}

pub(super) async fn stream(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = run_id(&id)?;
    let journal = app.runs.journal().clone();
    if journal
        .get(run)
        .await
        .map_err(ApiError::internal)?
        .is_none()
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run `{id}`"),
        ));
    }
    let last = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Last-Event-ID must be an event number from this stream",
                )
            })?,
    };
    let cursor = Cursor {
        journal,
        run,
        last,
        buffer: VecDeque::new(),
        done: false,
        changed: app.runs.subscribe(),
        closing: app.runs.closing(),
    };
    Ok(Sse::new(events(cursor))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn events(cursor: Cursor) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(row) = c.buffer.pop_front() {
                let event = Event::default()
                    .id(row.seq.to_string())
                    .event(row.kind)
                    .data(row.data);
                return Some((Ok(event), c));
            }
            if c.done || *c.closing.borrow() {
                return None;
            }
            // Mark what is seen before reading, so that a commit after the read
            // wakes the wait below.
            c.changed.borrow_and_update();
            let rows = match c.journal.events_after(c.run, c.last, PAGE).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(run = c.run, error = %e, "event stream: journal read failed");
                    return None;
                }
            };
            if rows.is_empty() {
                tokio::select! {
                    r = c.changed.changed() => if r.is_err() { return None },
                    _ = c.closing.changed() => return None,
                }
                continue;
            }
            for row in rows {
                c.last = row.seq;
                c.done |= row.kind == "done";
                c.buffer.push_back(row);
            }
        }
    })
}
