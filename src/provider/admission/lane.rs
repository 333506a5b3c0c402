//! One model's gate: the concurrency cap (a tokio `Semaphore` sized by the
//! [`Window`]), the RPM/TPM limiters, the server's holds, and the counters.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::allowance::{Allowance, Heard, Take};
use super::forecast::{self, Outlook};
use super::window::{Learned, Window};
use super::{AdmissionConfig, AdmissionMetrics, MAX_HOLD};
use crate::provider::{NotAdmitted, Wait};

/// The least a call waits for an answer's rate-limit headers after the reset has
/// used up the known limit, before it looks whether any call is on its way to say
/// them (twice the typical call's time, when that is longer).
const WORD_WAIT: Duration = Duration::from_secs(1);

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// One model's gate; see the module docs.
pub(super) struct Lane {
    window: Mutex<Window>,
    permits: Arc<Semaphore>,
    /// Permits owed by a cut: taken back as calls finish instead of returned.
    owed: AtomicUsize,
    hold_until: Mutex<Option<Instant>>,
    /// What the server's rate-limit headers say is left; `metered` once one has
    /// said anything (until then no call looks at it).
    allowance: Mutex<Allowance>,
    metered: AtomicBool,
    /// Told when an answer's headers have said something (calls waiting for word).
    word: tokio::sync::Notify,
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    admitted: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    decreases: AtomicU64,
    permit_wait_ms: AtomicU64,
    /// Calls refused at once because they could not start before their deadline.
    refused_late: AtomicU64,
    /// How long an answered call typically takes, in µs (0: none yet).
    typical_us: AtomicU64,
}

/// An admitted call's place: dropping it frees the slot (or pays a cut). It owns
/// its lane, so it can be held apart from the call (a lease for another node).
pub(super) struct Slot {
    lane: Arc<Lane>,
    permit: Option<OwnedSemaphorePermit>,
    /// When the call was let out.
    pub(super) since: Instant,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.lane.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.permit.take() {
            let owed = self
                .lane
                .owed
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
            if owed.is_ok() {
                // A cut is still owed: this permit pays it.
                p.forget();
            }
        }
    }
}

/// Counts a queued call until it is admitted or dropped.
struct Queued<'a>(&'a AtomicUsize);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    pub(super) fn new(config: &AdmissionConfig) -> Self {
        let window = Window::new(config);
        Self {
            permits: Arc::new(Semaphore::new(window.cap())),
            window: Mutex::new(window),
            owed: AtomicUsize::new(0),
            hold_until: Mutex::new(None),
            allowance: Mutex::new(Allowance::default()),
            metered: AtomicBool::new(false),
            word: tokio::sync::Notify::new(),
            rpm: config.rpm.map(|n| RateLimiter::direct(per_minute(n))),
            tpm: config
                .tpm
                .map(|n| (RateLimiter::direct(per_minute(n)), n.max(1))),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
            decreases: AtomicU64::new(0),
            permit_wait_ms: AtomicU64::new(0),
            refused_late: AtomicU64::new(0),
            typical_us: AtomicU64::new(0),
        }
    }

    /// Waits until a call estimated at `tokens` may go out (server holds, RPM, TPM,
    /// then a slot), or until `deadline`. Returns its slot and how long it waited.
    ///
    /// A call that need not wait (no hold, no rate limit, a slot free) is let out
    /// without building the waiting future: with room for its timers and limiters,
    /// that future doubled the gate's part of every call (799 bytes on the heap per
    /// call with it, 376 without).
    pub(super) async fn admit(
        self: &Arc<Self>,
        tokens: u64,
        deadline: Option<Instant>,
    ) -> Result<(Slot, Duration), NotAdmitted> {
        match self.admit_now() {
            Some(slot) => Ok((slot, Duration::ZERO)),
            None => Box::pin(self.admit_waiting(tokens, deadline)).await,
        }
    }

    /// A slot at once, if nothing would make the call wait: the lane has no RPM or
    /// TPM limit and the server's headers have set no allowance (their counts are
    /// taken on the waiting path), the server holds nothing back, and a permit is
    /// free. A free permit means nobody is queued for one (the semaphore is fair),
    /// so this jumps no queue.
    fn admit_now(self: &Arc<Self>) -> Option<Slot> {
        if self.rpm.is_some()
            || self.tpm.is_some()
            || self.metered.load(Ordering::Relaxed)
            || self.held_until().is_some()
        {
            return None;
        }
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(self.seat(Some(permit), Duration::ZERO))
    }

    async fn admit_waiting(
        self: &Arc<Self>,
        tokens: u64,
        deadline: Option<Instant>,
    ) -> Result<(Slot, Duration), NotAdmitted> {
        if let Some((_, tpm)) = &self.tpm {
            if tokens > u64::from(*tpm) {
                // It would wait for minutes and then still not fit: say so now.
                return Err(NotAdmitted::LargerThanTpm { tokens, tpm: *tpm });
            }
        }
        let started = Instant::now();
        if let Some(deadline) = deadline {
            self.refuse_if_late(started, deadline)?;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let queued = Queued(&self.queued);
        // What the call is waiting for, for the error if its deadline comes first.
        let stage = AtomicU8::new(0);
        let admit = async {
            self.hold_back().await;
            stage.store(1, Ordering::Relaxed);
            if let Some(rpm) = &self.rpm {
                rpm.until_ready().await;
            }
            stage.store(2, Ordering::Relaxed);
            self.wait_tokens(tokens).await;
            stage.store(3, Ordering::Relaxed);
            let permit = self.permits.clone().acquire_owned().await.ok();
            // The server's count is taken last, holding the slot: from there to
            // `seat` nothing waits, so a call that took from it is in flight at once
            // (and counted as on its way when the next answer's headers are read).
            stage.store(4, Ordering::Relaxed);
            self.wait_allowance().await;
            permit
        };
        let permit = match deadline {
            None => admit.await,
            Some(deadline) => match tokio::time::timeout_at(deadline, admit).await {
                Ok(permit) => permit,
                Err(_) => {
                    let waiting_for = match stage.load(Ordering::Relaxed) {
                        0 => Wait::ServerHold,
                        1 => Wait::Rpm,
                        2 => Wait::Tpm,
                        3 => Wait::Concurrency,
                        _ => Wait::ServerLimit,
                    };
                    return Err(NotAdmitted::DeadlineWhileWaiting {
                        waited_ms: started.elapsed().as_millis() as u64,
                        waiting_for,
                    });
                }
            },
        };
        drop(queued);
        let waited = started.elapsed();
        Ok((self.seat(permit, waited), waited))
    }

    /// Refuses a call at once when it cannot start before `deadline` (see
    /// `forecast`): queued, it would only hold its place until then.
    fn refuse_if_late(&self, now: Instant, deadline: Instant) -> Result<(), NotAdmitted> {
        let typical = match self.typical_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        };
        let (held, spent) = (self.held_until(), self.allowance_spent_until(now));
        let hold = [held, spent].into_iter().flatten().max();
        // A hold from rate-limit headers saying none is left is not a retry-after.
        let by_headers = spent.is_some() && spent >= held;
        let (cap, growth, max) = match self.window.lock() {
            Ok(w) => (w.cap(), w.growth(), w.max()),
            Err(_) => return Ok(()),
        };
        let outlook = Outlook {
            hold: hold.map(|until| until - now),
            ahead: self.queued.load(Ordering::Relaxed),
            free: self.permits.available_permits(),
            cap,
            growth,
            max,
            typical,
        };
        let Some((wait, mut waiting_for)) = forecast::earliest_start(&outlook) else {
            return Ok(());
        };
        if waiting_for == Wait::ServerHold && by_headers {
            waiting_for = Wait::ServerLimit;
        }
        let left = deadline.saturating_duration_since(now);
        if wait <= left {
            return Ok(());
        }
        self.refused_late.fetch_add(1, Ordering::Relaxed);
        Err(NotAdmitted::WouldMissDeadline {
            wait_ms: wait.as_millis() as u64,
            left_ms: left.as_millis() as u64,
            ahead: outlook.ahead,
            waiting_for,
        })
    }

    /// Counts an admitted call and gives it its slot.
    fn seat(self: &Arc<Self>, permit: Option<OwnedSemaphorePermit>, waited: Duration) -> Slot {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Ordering::Relaxed);
        self.admitted.fetch_add(1, Ordering::Relaxed);
        self.permit_wait_ms
            .fetch_add(waited.as_millis() as u64, Ordering::Relaxed);
        Slot {
            lane: self.clone(),
            permit,
            since: Instant::now(),
        }
    }

    /// Whether this lane has a TPM limit (then overages are settled).
    pub(super) fn limits_tokens(&self) -> bool {
        self.tpm.is_some()
    }

    /// Takes `n` more tokens from the TPM budget, waiting for them.
    pub(super) async fn wait_tokens(&self, n: u64) {
        if let Some((limiter, burst)) = &self.tpm {
            let mut left = n;
            while left > 0 {
                let step = left.min(u64::from(*burst)) as u32;
                if let Some(cells) = NonZeroU32::new(step) {
                    let _ = limiter.until_n_ready(cells).await;
                }
                left -= u64::from(step);
            }
        }
    }

    /// Takes one call from what the server's headers say is left, waiting for
    /// their reset when nothing is, or for the next answer's word after it.
    async fn wait_allowance(&self) {
        if !self.metered.load(Ordering::Relaxed) {
            return;
        }
        loop {
            let take = match self.allowance.lock() {
                Ok(mut a) => a.take(Instant::now()),
                Err(_) => return,
            };
            match take {
                Take::Go => return,
                Take::WaitUntil(until) => tokio::time::sleep_until(until).await,
                Take::WaitForWord => {
                    // Word comes with the next answer. A word missed, or answers
                    // without headers, must not stall the lane: after a while with
                    // no call on its way, the count is forgotten and calls go.
                    let typical = Duration::from_micros(self.typical_us.load(Ordering::Relaxed));
                    let patience = WORD_WAIT.max(typical.saturating_mul(2));
                    let word = tokio::time::timeout(patience, self.word.notified()).await;
                    if word.is_err() && self.in_flight.load(Ordering::Relaxed) == 0 {
                        if let Ok(mut a) = self.allowance.lock() {
                            a.unknown();
                        }
                    }
                }
            }
        }
    }

    /// When the server's count resets, if its headers say nothing is left before.
    fn allowance_spent_until(&self, now: Instant) -> Option<Instant> {
        if !self.metered.load(Ordering::Relaxed) {
            return None;
        }
        let mut allowance = *self.allowance.lock().ok()?;
        match allowance.take(now) {
            Take::WaitUntil(until) => Some(until),
            Take::Go | Take::WaitForWord => None,
        }
    }

    /// An answer's rate-limit headers said `heard`.
    pub(super) fn heard(&self, heard: Heard) {
        let others = self.in_flight.load(Ordering::Relaxed);
        if let Ok(mut a) = self.allowance.lock() {
            a.heard(heard, others, Instant::now());
            self.metered.store(true, Ordering::Relaxed);
        }
        self.word.notify_waiters();
    }

    async fn hold_back(&self) {
        while let Some(until) = self.held_until() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// The end of the server's hold, if it is still on.
    fn held_until(&self) -> Option<Instant> {
        let until = self.hold_until.lock().ok().and_then(|h| *h)?;
        (until > Instant::now()).then_some(until)
    }

    /// Holds every new call back for `wait` (capped at [`MAX_HOLD`]): the server said
    /// so, for the whole gate, not just for the call that heard it.
    pub(super) fn hold(&self, wait: Duration) {
        // A server clock far off, or a silly header, must not stall every run.
        let wait = wait.min(MAX_HOLD);
        if let Ok(mut h) = self.hold_until.lock() {
            let until = Instant::now() + wait;
            if h.is_none_or(|t| t < until) {
                *h = Some(until);
            }
        }
    }

    /// Starts from what an earlier gate learned (see [`Window::resume`]).
    pub(super) fn resume(&self, learned: Learned) {
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        let before = w.cap();
        let after = w.resume(learned);
        self.resize(before, after);
    }

    /// What the window has learned, if anything.
    pub(super) fn learned(&self) -> Option<Learned> {
        self.window.lock().ok()?.learned()
    }

    /// A call succeeded after `took`.
    pub(super) fn on_success(&self, took: Duration) {
        let typical = self.typical_us.load(Ordering::Relaxed);
        self.typical_us
            .store(forecast::typical_after(typical, took), Ordering::Relaxed);
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        let before = w.cap();
        let after = w.on_success();
        self.resize(before, after);
    }

    /// A call came back 429 (`overloaded`: 529/503 overload).
    pub(super) fn on_pushback(&self, overloaded: bool) {
        let counter = if overloaded {
            &self.overloaded
        } else {
            &self.rate_limited
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        let before = w.cap();
        let after = w.on_pushback(self.in_flight.load(Ordering::Relaxed));
        if after < before {
            self.decreases.fetch_add(1, Ordering::Relaxed);
            tracing::info!(cap = after, "admission: 429/529 seen, concurrency cap cut");
        }
        self.resize(before, after);
    }

    /// Makes the semaphore match a cap that went from `before` to `after`.
    fn resize(&self, before: usize, after: usize) {
        if after > before {
            // Growing while a cut is still owed: forgive owed permits first.
            let mut grow = after - before;
            while grow > 0 {
                let forgiven = self
                    .owed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
                if forgiven.is_err() {
                    break;
                }
                grow -= 1;
            }
            self.permits.add_permits(grow);
        } else if after < before {
            // Take back what is free now; the rest is taken as calls finish.
            let cut = before - after;
            let mut taken = 0;
            while taken < cut {
                match self.permits.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        taken += 1;
                    }
                    Err(_) => break,
                }
            }
            self.owed.fetch_add(cut - taken, Ordering::Relaxed);
        }
    }

    pub(super) fn metrics(&self) -> AdmissionMetrics {
        AdmissionMetrics {
            queued: self.queued.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            cap: self.window.lock().map(|w| w.cap()).unwrap_or(0),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            admitted: self.admitted.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            decreases: self.decreases.load(Ordering::Relaxed),
            permit_wait_ms: self.permit_wait_ms.load(Ordering::Relaxed),
            refused_late: self.refused_late.load(Ordering::Relaxed),
        }
    }
}
