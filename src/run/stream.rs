//! A run's answers as they stream: the `DeltaSink`s that turn a branch's or the
//! merge's streamed text into `RunEvent`s (each delta with the attempt it belongs to,
//! so that a retried call's earlier text can be told apart), and the one that
//! signals an answer's first text (the cache warm-up waits for it).

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::event::RunEvent;
use crate::agent::RunId;
use crate::provider::{Delta, DeltaSink};

/// A sink that sends each piece of text as the event `make(attempt, text)`, and
/// each other delta (a retry, a tool call) as `retrying(delta)` when that makes one.
fn events(
    events: &mpsc::UnboundedSender<RunEvent>,
    make: impl Fn(u32, String) -> RunEvent + Send + Sync + 'static,
    retrying: impl Fn(Delta) -> Option<RunEvent> + Send + Sync + 'static,
) -> DeltaSink {
    let events = events.clone();
    let attempt = AtomicU32::new(1);
    DeltaSink::new(move |delta| match delta {
        Delta::Restart { attempt: a } => attempt.store(a, Ordering::Relaxed),
        Delta::Text(text) => {
            let _ = events.send(make(attempt.load(Ordering::Relaxed), text));
        }
        other @ (Delta::Retrying { .. }
        | Delta::ToolStarted { .. }
        | Delta::Approval { .. }
        | Delta::ToolFinished { .. }) => {
            if let Some(event) = retrying(other) {
                let _ = events.send(event);
            }
        }
    })
}

/// A branch's streamed text as `BranchDelta` events.
pub(crate) fn branch(
    sink: &mpsc::UnboundedSender<RunEvent>,
    run: RunId,
    index: u32,
    item: Option<u32>,
    agent: String,
) -> DeltaSink {
    let named = agent.clone();
    events(
        sink,
        move |attempt, text| RunEvent::BranchDelta {
            run,
            index,
            item,
            agent: agent.clone(),
            attempt,
            text,
        },
        move |delta| match delta {
            Delta::Retrying {
                attempt,
                of,
                error,
                wait,
            } => Some(RunEvent::BranchRetrying {
                run,
                index,
                item,
                agent: named.clone(),
                attempt,
                of,
                error,
                wait,
            }),
            Delta::ToolStarted { call_id, tool } => Some(RunEvent::ToolStarted {
                run,
                index,
                item,
                agent: named.clone(),
                call_id,
                tool,
            }),
            Delta::Approval {
                id,
                call_id,
                tool,
                state,
            } => Some(RunEvent::Approval {
                run,
                index,
                item,
                agent: named.clone(),
                id,
                call_id,
                tool,
                state,
            }),
            Delta::ToolFinished {
                call_id,
                tool,
                took,
                error,
            } => Some(RunEvent::ToolFinished {
                run,
                index,
                item,
                agent: named.clone(),
                call_id,
                tool,
                took,
                error,
            }),
            _ => None,
        },
    )
}

/// The final merge's streamed text as `SynthesisDelta` events.
pub(crate) fn synthesis(sink: &mpsc::UnboundedSender<RunEvent>, run: RunId) -> DeltaSink {
    // The merge's retries are not events (yet): its row shows it running.
    events(
        sink,
        move |attempt, text| RunEvent::SynthesisDelta { run, attempt, text },
        |_| None,
    )
}

/// A sink that fires `tx` at the first text of an answer.
pub(crate) fn first_text(tx: oneshot::Sender<()>) -> DeltaSink {
    let tx = std::sync::Mutex::new(Some(tx));
    DeltaSink::new(move |delta| {
        if matches!(&delta, Delta::Text(t) if !t.is_empty()) {
            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                let _ = tx.send(());
            }
        }
    })
}

/// The text a branch's current attempt has streamed so far, kept for a branch that
/// times out mid-answer (its partial answer was paid for).
#[derive(Clone, Default)]
pub(crate) struct Partial(std::sync::Arc<std::sync::Mutex<String>>);

impl Partial {
    /// A sink that keeps the current attempt's text here.
    pub(crate) fn sink(&self) -> DeltaSink {
        let kept = self.0.clone();
        DeltaSink::new(move |delta| {
            let Ok(mut text) = kept.lock() else { return };
            match delta {
                Delta::Text(t) => text.push_str(&t),
                // A new attempt: the earlier one's text is not its answer.
                Delta::Restart { .. } => text.clear(),
                Delta::Retrying { .. }
                | Delta::ToolStarted { .. }
                | Delta::Approval { .. }
                | Delta::ToolFinished { .. } => {}
            }
        })
    }

    /// The text kept, if there is any.
    pub(crate) fn take(&self) -> Option<String> {
        let text = std::mem::take(&mut *self.0.lock().ok()?);
        (!text.trim().is_empty()).then_some(text)
    }
}

/// One sink that feeds both, or whichever there is.
pub(crate) fn both(a: Option<DeltaSink>, b: Option<DeltaSink>) -> Option<DeltaSink> {
    match (a, b) {
        (Some(a), Some(b)) => Some(DeltaSink::new(move |d| {
            b.send(d.clone());
            a.send(d);
        })),
        (a, b) => a.or(b),
    }
}
