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

/// Events read from the journal per query, and the most bytes of them: what one
/// stream holds while its client reads.
const PAGE: u32 = 256;
const PAGE_BYTES: usize = 256 * 1024;

/// The event streams open at once, up to a limit; a slot is held by its stream.
#[derive(Debug)]
pub(crate) struct Streams {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl Streams {
    pub(crate) fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            open: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// A slot, if fewer than the limit are open.
    fn take(self: &std::sync::Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }
}

/// One open stream's place; freed when the stream is dropped.
pub(super) struct Slot(std::sync::Arc<Streams>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Follows one run's events in the journal, from after event `last`, waiting for
/// new ones as they are committed. Ends after the run's `done` event, or when the
/// server shuts down.
pub(super) struct Follow {
    journal: Journal,
    run: i64,
    last: i64,
    buffer: VecDeque<EventRow>,
    done: bool,
    changed: watch::Receiver<u64>,
    closing: watch::Receiver<bool>,
    /// Resumed after some event (`Last-Event-ID`): perhaps after `done` itself, so
    /// when nothing follows, the run's status says whether anything will.
    resumed: bool,
    /// The run was seen ended: one more read, for what its end wrote, then stop.
    ending: bool,
    /// Its place among the open streams.
    _slot: Option<Slot>,
}

impl Follow {
    pub(super) fn new(app: &App, run: i64, last: i64) -> Self {
        Self {
            journal: app.runs.journal().clone(),
            run,
            last,
            buffer: VecDeque::new(),
            done: false,
            changed: app.runs.subscribe(),
            closing: app.runs.closing(),
            resumed: last > 0,
            ending: false,
            _slot: None,
        }
    }

    /// Whether the run has ended (its `done` event is then written, with the status).
    async fn ended(&self) -> bool {
        match self.journal.get(self.run).await {
            Ok(Some(row)) => row.status.is_final(),
            Ok(None) | Err(_) => true,
        }
    }

    /// The next event, or `None` once the run is done (or the server closing).
    pub(super) async fn next(&mut self) -> Option<EventRow> {
        loop {
            if let Some(row) = self.buffer.pop_front() {
                return Some(row);
            }
            if self.done || *self.closing.borrow() {
                return None;
            }
            // Mark what is seen before reading, so that a commit after the read
            // wakes the wait below.
            self.changed.borrow_and_update();
            let rows = match self
                .journal
                .events_after(self.run, self.last, PAGE, PAGE_BYTES)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(run = self.run, error = %e, "event stream: journal read failed");
                    return None;
                }
            };
            if rows.is_empty() {
                // Resumed at or after `done` (a browser's EventSource reconnects with
                // the last id it saw): nothing will follow, so end rather than send
                // keep-alives forever.
                if self.ending {
                    return None;
                }
                if self.resumed && self.ended().await {
                    // Its end is committed with its last events: read once more.
                    self.ending = true;
                    continue;
                }
                tokio::select! {
                    r = self.changed.changed() => if r.is_err() { return None },
                    _ = self.closing.changed() => return None,
                }
                continue;
            }
            for row in rows {
                self.last = row.seq;
                self.done |= row.kind == "done";
                self.buffer.push_back(row);
            }
        }
    }
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
    let Some(slot) = app.streams.take() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open, the most this server keeps; close one or try again later",
                app.streams.max
            ),
        )
        .retry_after(5));
    };
    let mut follow = Follow::new(&app, run, last);
    follow._slot = Some(slot);
    Ok(Sse::new(events(follow))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn events(follow: Follow) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(follow, |mut f| async move {
        let row = f.next().await?;
        let event = Event::default()
            .id(row.seq.to_string())
            .event(row.kind)
            .data(row.data);
        Some((Ok(event), f))
    })
}
