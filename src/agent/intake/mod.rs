//! [`Intake`]: how a runtime agent's tasks are run — in the caller's own tokio task,
//! under the watch of the agent's actor.
//!
//! A branch used to send its task to the actor's mailbox; the actor spawned a task to
//! run it, which answered on a reply port: three tasks and three wake-ups per branch,
//! for work that only ever awaited the model. The intake lets the caller run
//! [`Agent::run`](super::Agent::run) itself, while the actor keeps what it is there
//! for: it decides whether a task may start (not while it retires), it can abort
//! every task it admitted (when it is stopped or killed, its state closes the intake),
//! and a panic still retires it. The branch that runs the work is the one that waits
//! for it, so a deadline or a cancelled run drops the work at once; no `Cancel`
//! message is needed.
//!
//! The decisions live in [`Book`], a plain state machine; [`Intake`] is the shell that
//! locks it, registers abort handles and sends the supervisor its notices.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::{AbortHandle, AbortRegistration, Abortable};
use futures::FutureExt;
use ractor::{ActorId, DerivedActorRef};

use super::{AgentError, AgentReply, Task};
use crate::provider::BoxFuture;

/// What an agent-backed specialist tells its supervisor about itself. The supervisor
/// hands each specialist a derived reference that accepts only these, so this module
/// needs nothing from the supervisor's.
#[derive(Debug)]
pub(crate) enum Notice {
    /// A task panicked: the actor takes no new work and finishes what it holds.
    Retiring {
        /// The retiring actor.
        actor: ActorId,
        /// The panic, attributed to the agent.
        panic: String,
    },
    /// The retiring actor holds no task any more; the supervisor may drain it.
    Retired {
        /// The retired actor.
        actor: ActorId,
    },
}

// A local message (never sent to another node): ractor's `cluster` feature asks
// every message type to say so.
impl ractor::Message for Notice {}

/// Runs one task of the agent (the agent and its context captured).
pub(crate) type RunFn = dyn Fn(Task) -> BoxFuture<'static, AgentReply> + Send + Sync;

/// Where an agent's intake stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Taking tasks.
    Serving,
    /// A task panicked: finishing the tasks it holds, taking no new ones.
    Retiring,
    /// Retired and idle, or its actor is gone: takes nothing.
    Closed,
}

/// What the shell must tell the supervisor after a step of the [`Book`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Say {
    Nothing,
    /// A task panicked: the actor retires (it takes no new work).
    Retiring,
    /// The retiring actor holds no task any more.
    Retired,
}

/// The intake's bookkeeping: its phase and the tasks it admitted. A ticket is the
/// index of its task's slot; a slot is reused once its task has left (every branch
/// enters and leaves once, so this is a slab, not a map: no hashing, no growth after
/// the busiest moment).
#[derive(Debug)]
struct Book<H> {
    phase: Phase,
    slots: Vec<Option<H>>,
    /// Empty slots, the last freed first.
    free: Vec<usize>,
    /// Tasks admitted and not yet left.
    held: usize,
    /// Whether a panic retires the actor (it has a supervisor to replace it).
    supervised: bool,
}

impl<H> Book<H> {
    fn new(supervised: bool) -> Self {
        Self {
            phase: Phase::Serving,
            slots: Vec::new(),
            free: Vec::new(),
            held: 0,
            supervised,
        }
    }

    /// A task asks to start, abortable through `handle`: its ticket, or `None` when
    /// the intake takes no new work.
    fn enter(&mut self, handle: H) -> Option<usize> {
        if self.phase != Phase::Serving {
            return None;
        }
        let ticket = match self.free.pop() {
            Some(free) => {
                self.slots[free] = Some(handle);
                free
            }
            None => {
                self.slots.push(Some(handle));
                self.slots.len() - 1
            }
        };
        self.held += 1;
        Some(ticket)
    }

    /// A task panicked (it has not left yet).
    fn panicked(&mut self) -> Say {
        if self.phase == Phase::Serving && self.supervised {
            self.phase = Phase::Retiring;
            Say::Retiring
        } else {
            Say::Nothing
        }
    }

    /// Ticket `ticket`'s task ended, however it ended.
    fn leave(&mut self, ticket: usize) -> Say {
        // Empty already: handed back by `close`.
        if let Some(slot @ Some(_)) = self.slots.get_mut(ticket) {
            *slot = None;
            self.free.push(ticket);
            self.held -= 1;
        }
        if self.phase == Phase::Retiring && self.held == 0 {
            self.phase = Phase::Closed;
            Say::Retired
        } else {
            Say::Nothing
        }
    }

    /// The actor is gone: nothing more starts; the tasks it admitted are handed back
    /// to be aborted.
    fn close(&mut self) -> Vec<H> {
        self.phase = Phase::Closed;
        self.held = 0;
        self.free.clear();
        std::mem::take(&mut self.slots)
            .into_iter()
            .flatten()
            .collect()
    }
}

/// How a task run through the intake ended.
#[derive(Debug)]
pub(crate) enum Ran {
    /// The agent answered (a panic is answered as [`AgentError::Panicked`]).
    Replied(AgentReply),
    /// The actor was stopped or killed under it: the work was dropped unfinished.
    Aborted,
}

/// The door to one agent actor's work, shared by the actor and its callers (through
/// the roster's slot). See the module docs.
pub(crate) struct Intake {
    run: Box<RunFn>,
    agent: String,
    /// The actor's id, once it has started (before any caller can reach it).
    actor: OnceLock<ActorId>,
    notices: Option<DerivedActorRef<Notice>>,
    book: Mutex<Book<AbortHandle>>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("agent", &self.agent)
            .field("actor", &self.actor.get())
            .finish_non_exhaustive()
    }
}

impl Intake {
    /// An intake for `agent`'s tasks, run by `run`; a panic retires the actor and
    /// tells `notices` (`None`: unsupervised, a panic is only logged).
    pub(crate) fn new(
        agent: impl Into<String>,
        run: Box<RunFn>,
        notices: Option<DerivedActorRef<Notice>>,
    ) -> Self {
        Self {
            run,
            agent: agent.into(),
            actor: OnceLock::new(),
            book: Mutex::new(Book::new(notices.is_some())),
            notices,
        }
    }

    /// Names the actor behind it (in its `pre_start`).
    pub(crate) fn bind(&self, actor: ActorId) {
        let _ = self.actor.set(actor);
    }

    /// The book, even if a panic poisoned its lock (no step leaves it half-done).
    fn book(&self) -> std::sync::MutexGuard<'_, Book<AbortHandle>> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A ticket to run one task, or `None` when the actor takes no new work (it is
    /// retiring, or gone): the caller waits for its replacement.
    pub(crate) fn enter(self: &Arc<Self>) -> Option<Ticket> {
        let (handle, registration) = AbortHandle::new_pair();
        let id = self.book().enter(handle)?;
        Some(Ticket {
            intake: self.clone(),
            id,
            registration: Some(registration),
        })
    }

    /// The actor is gone: nothing more starts, and the work it admitted is aborted.
    pub(crate) fn close(&self) {
        let handles = self.book().close();
        for handle in handles {
            handle.abort();
        }
    }

    /// Tells the supervisor, under the book's lock (so `Retiring` always reaches it
    /// before `Retired`, whichever thread sees which).
    fn say(&self, say: Say, panic: Option<String>) {
        let (Some(notices), Some(actor)) = (&self.notices, self.actor.get()) else {
            return;
        };
        let notice = match say {
            Say::Nothing => return,
            Say::Retiring => Notice::Retiring {
                actor: *actor,
                panic: panic.unwrap_or_default(),
            },
            Say::Retired => Notice::Retired { actor: *actor },
        };
        let _ = notices.send_message(notice);
    }

    fn panicked(&self, message: &str) {
        let panic = format!("agent `{}` panicked: {message}", self.agent);
        let mut book = self.book();
        let say = book.panicked();
        match (say, book.supervised) {
            (Say::Retiring, _) => {
                tracing::warn!(agent = %self.agent, %panic, "retiring after a panic")
            }
            (_, true) => tracing::warn!(agent = %self.agent, %panic, "panicked while retiring"),
            (_, false) => tracing::warn!(agent = %self.agent, %panic, "unsupervised; carrying on"),
        }
        self.say(say, Some(panic));
        drop(book);
    }

    /// Tasks admitted and not yet ended.
    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.book().held
    }

    fn leave(&self, ticket: usize) {
        let mut book = self.book();
        let say = book.leave(ticket);
        self.say(say, None);
        drop(book);
    }
}

/// Leave to run one task; leaving the intake when dropped, however the task ends.
pub(crate) struct Ticket {
    intake: Arc<Intake>,
    id: usize,
    registration: Option<AbortRegistration>,
}

impl Ticket {
    /// Runs `task` here: a panic is caught and answered as [`AgentError::Panicked`]
    /// (and retires the actor); the actor's end aborts it.
    ///
    /// The agent's future is made at once and the task moved into it, so the
    /// returned future holds only the ticket and that (boxed) work: an `async fn`
    /// would keep its own copy of the task beside it in every branch's future.
    pub(crate) fn run(mut self, task: Task) -> impl Future<Output = Ran> + Send {
        let work = self.registration.take().map(|registration| {
            let span =
                tracing::debug_span!("branch", branch = %task.branch, agent = %self.intake.agent);
            let work = AssertUnwindSafe((self.intake.run)(task)).catch_unwind();
            let work = caught(work);
            tracing::Instrument::instrument(Abortable::new(work, registration), span)
        });
        async move {
            let Some(work) = work else {
                return Ran::Aborted;
            };
            match work.await {
                Err(_aborted) => Ran::Aborted,
                Ok(Ok(reply)) => Ran::Replied(reply),
                Ok(Err(payload)) => {
                    let message = panic_message(payload.as_ref());
                    self.intake.panicked(&message);
                    Ran::Replied(Err(AgentError::Panicked { message }))
                }
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.intake.leave(self.id);
    }
}

tokio::task_local! {
    /// Set while an agent's work is polled: a panic there is caught and answered.
    static CAUGHT: ();
}

/// `work`, marked as work whose panics fanfare catches (see [`panic_is_caught`]).
pub(crate) fn caught<F: Future>(work: F) -> impl Future<Output = F::Output> {
    CAUGHT.scope((), work)
}

/// `work`, run now, marked as [`caught`] marks a future.
pub(crate) fn caught_now<R>(work: impl FnOnce() -> R) -> R {
    CAUGHT.sync_scope((), work)
}

/// True when a panic raised here now will be caught by fanfare and recorded as the
/// branch's failure (the agent's own work is running on this thread): a process's
/// panic hook can leave such panics to the report instead of printing them.
pub fn panic_is_caught() -> bool {
    CAUGHT.try_with(|_| ()).is_ok()
}

/// A panic's payload as text.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
