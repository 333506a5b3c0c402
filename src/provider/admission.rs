//! [`Admission`]: a provider wrapper that decides when a call may go out.
//!
//! One `Admission` is shared by every agent that uses the provider (wrap once, hand
//! the same `Arc` to the runtime), so the limits are per provider, not per agent:
//!
//! - a **concurrency cap** (tokio `Semaphore`): a call holds a permit while in flight;
//!   a cancelled or timed-out call drops it at once;
//! - **AIMD** on the cap: it starts at `initial_concurrency` and grows by one per
//!   success (slow start, doubling per round trip) until the first 429 or 529; then a
//!   pushback multiplies it by `decrease_factor` — once per round, i.e. only for calls
//!   admitted under the current cap, so a burst of 429s is one signal — and every `cap`
//!   successes add one, up to `max_concurrency`;
//! - **requests per minute** and **tokens per minute** budgets (`governor`, GCRA): a
//!   call waits for one request cell and for its estimated tokens (prompt words × 4/3 +
//!   `max_tokens`); after the answer, tokens used beyond the estimate are charged too;
//! - the provider's **rate-limit headers**: when they say no requests are left, or a
//!   429 names a wait, new calls hold back until the reset.
//!
//! [`Admission::metrics`] snapshots queue depth, in-flight count, the adaptive cap,
//! 429s and permit waits; each completion carries its own permit wait.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::{
    BoxFuture, Completion, CompletionRequest, GaveUp, NotAdmitted, Provider, ProviderError,
    ProviderErrorKind, Wait,
};

/// The longest the gate holds calls back on a server's say-so.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// Limits of an [`Admission`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdmissionConfig {
    /// Upper bound of calls in flight.
    pub max_concurrency: usize,
    /// Lower bound the adaptive cap never goes under.
    pub min_concurrency: usize,
    /// Start the adaptive cap here (≤ max).
    pub initial_concurrency: usize,
    /// Adapt the cap to 429s/529s (AIMD); otherwise it stays at `max_concurrency`.
    pub adaptive: bool,
    /// What a pushback multiplies the cap by (in `(0, 1)`).
    pub decrease_factor: f64,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u32>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_concurrency: 64,
            min_concurrency: 1,
            initial_concurrency: 64,
            adaptive: true,
            decrease_factor: 0.75,
            rpm: None,
            tpm: None,
        }
    }
}

/// A snapshot of an [`Admission`]'s state and counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionMetrics {
    /// Calls waiting for admission now.
    pub queued: usize,
    /// Calls in flight now.
    pub in_flight: usize,
    /// The current (adaptive) concurrency cap.
    pub cap: usize,
    /// The most ever in flight at once.
    pub max_in_flight: usize,
    /// Calls admitted so far.
    pub admitted: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// 529 / overloaded answers seen.
    pub overloaded: u64,
    /// Times the cap was cut.
    pub decreases: u64,
    /// Total time calls spent waiting for admission, in milliseconds.
    pub permit_wait_ms: u64,
}

struct Shared {
    config: AdmissionConfig,
    permits: Semaphore,
    cap: AtomicUsize,
    queued: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    admitted: AtomicU64,
    rate_limited: AtomicU64,
    overloaded: AtomicU64,
    decreases: AtomicU64,
    permit_wait_ms: AtomicU64,
    successes: AtomicUsize,
    /// Permits owed by a decrease, taken back as calls finish.
    owed: AtomicUsize,
    /// Bumped at each decrease; a pushback counts only for calls admitted in the
    /// current epoch.
    epoch: AtomicU64,
    slow_start: std::sync::atomic::AtomicBool,
    hold_until: Mutex<Option<Instant>>,
    rpm: Option<DefaultDirectRateLimiter>,
    tpm: Option<(DefaultDirectRateLimiter, u32)>,
}

/// Wraps a provider with admission control; see the module docs.
pub struct Admission<P> {
    inner: P,
    shared: Arc<Shared>,
}

impl<P> std::fmt::Debug for Admission<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("metrics", &self.metrics())
            .finish()
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).unwrap_or(NonZeroU32::MIN))
}

impl<P: Provider> Admission<P> {
    /// Wraps `inner` with `config`.
    pub fn new(inner: P, config: AdmissionConfig) -> Self {
        let max = config.max_concurrency.max(1);
        let min = config.min_concurrency.clamp(1, max);
        let initial = if config.adaptive {
            config.initial_concurrency.clamp(min, max)
        } else {
            max
        };
        Self {
            inner,
            shared: Arc::new(Shared {
                config: AdmissionConfig {
                    max_concurrency: max,
                    min_concurrency: min,
                    ..config
                },
                permits: Semaphore::new(initial),
                cap: AtomicUsize::new(initial),
                queued: AtomicUsize::new(0),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                admitted: AtomicU64::new(0),
                rate_limited: AtomicU64::new(0),
                overloaded: AtomicU64::new(0),
                decreases: AtomicU64::new(0),
                permit_wait_ms: AtomicU64::new(0),
                successes: AtomicUsize::new(0),
                owed: AtomicUsize::new(0),
                epoch: AtomicU64::new(0),
                slow_start: std::sync::atomic::AtomicBool::new(true),
                hold_until: Mutex::new(None),
                rpm: config.rpm.map(|n| RateLimiter::direct(per_minute(n))),
                tpm: config
                    .tpm
                    .map(|n| (RateLimiter::direct(per_minute(n)), n.max(1))),
            }),
        }
    }
}

impl<P> Admission<P> {
    /// A snapshot of the counters.
    pub fn metrics(&self) -> AdmissionMetrics {
        let s = &self.shared;
        AdmissionMetrics {
            queued: s.queued.load(Ordering::Relaxed),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            cap: s.cap.load(Ordering::Relaxed),
            max_in_flight: s.max_in_flight.load(Ordering::Relaxed),
            admitted: s.admitted.load(Ordering::Relaxed),
            rate_limited: s.rate_limited.load(Ordering::Relaxed),
            overloaded: s.overloaded.load(Ordering::Relaxed),
            decreases: s.decreases.load(Ordering::Relaxed),
            permit_wait_ms: s.permit_wait_ms.load(Ordering::Relaxed),
        }
    }
}

/// Tokens a request may use: its prompt (≈ 4 tokens per 3 words) plus `max_tokens`.
fn estimate_tokens(request: &CompletionRequest) -> u64 {
    request.prompt_tokens() + u64::from(request.max_tokens)
}

impl Shared {
    async fn wait_tokens(&self, n: u64) {
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

    async fn hold_back(&self) {
        loop {
            let until = self.hold_until.lock().ok().and_then(|h| *h);
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }

    fn hold(&self, wait: Duration) {
        // A server clock far off, or a silly header, must not stall every run.
        let wait = wait.min(MAX_HOLD);
        if let Ok(mut h) = self.hold_until.lock() {
            let until = Instant::now() + wait;
            if h.is_none_or(|t| t < until) {
                *h = Some(until);
            }
        }
    }

    fn on_success(&self) {
        if !self.config.adaptive {
            return;
        }
        let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
        let cap = self.cap.load(Ordering::Relaxed);
        let grow = self.slow_start.load(Ordering::Relaxed) || n >= cap;
        if grow && cap < self.config.max_concurrency {
            self.successes.store(0, Ordering::Relaxed);
            let max = self.config.max_concurrency;
            if self
                .cap
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                    (c < max).then_some(c + 1)
                })
                .is_ok()
            {
                // Growing while a cut is still owed: forgive one owed permit instead.
                let forgiven = self
                    .owed
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |o| o.checked_sub(1));
                if forgiven.is_err() {
                    self.permits.add_permits(1);
                }
            }
        }
    }

    fn on_pushback(&self, admitted_in: u64) {
        if !self.config.adaptive {
            return;
        }
        // One decrease per round: calls admitted before the last cut say nothing new.
        if self
            .epoch
            .compare_exchange(
                admitted_in,
                admitted_in + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        self.slow_start.store(false, Ordering::Relaxed);
        self.successes.store(0, Ordering::Relaxed);
        let factor = self.config.decrease_factor.clamp(0.05, 0.95);
        let min = self.config.min_concurrency;
        // We won this round's epoch, so the cut must happen even if a concurrent
        // success just raised the cap: retry the update until it lands.
        let cut = self
            .cap
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cap| {
                let target = ((cap as f64 * factor) as usize).max(min);
                (target < cap).then_some(target)
            });
        if let Ok(cap) = cut {
            let target = ((cap as f64 * factor) as usize).max(min);
            self.decreases.fetch_add(1, Ordering::Relaxed);
            // Take back what is free now; the rest is taken as calls finish.
            let cut = cap - target;
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
            tracing::info!(cap = target, "admission: 429/529 seen, concurrency cap cut");
        }
    }
}

/// Releases an admitted call's slot: returns the permit, unless a cap cut is owed.
struct Slot<'a> {
    shared: &'a Shared,
    permit: Option<tokio::sync::SemaphorePermit<'a>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(p) = self.permit.take() {
            let owed = self
                .shared
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

impl<P: Provider> Provider for Admission<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }

    fn default_model(&self) -> Option<&str> {
        self.inner.default_model()
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let s = &*self.shared;
            let estimate = estimate_tokens(&request);
            let refuse = |reason| {
                let model = request
                    .model
                    .clone()
                    .or_else(|| self.inner.default_model().map(str::to_owned))
                    .unwrap_or_else(|| "default model".to_owned());
                ProviderError::new(
                    self.inner.name(),
                    &model,
                    &request,
                    ProviderErrorKind::NotAdmitted { reason },
                )
            };
            if let Some((_, tpm)) = &s.tpm {
                if estimate > u64::from(*tpm) {
                    // It would wait for minutes and then still not fit: say so now.
                    return Err(refuse(NotAdmitted::LargerThanTpm {
                        tokens: estimate,
                        tpm: *tpm,
                    }));
                }
            }
            let started = Instant::now();
            s.queued.fetch_add(1, Ordering::Relaxed);
            let queued = Queued(&s.queued);
            // What the call is waiting for, for the error if its deadline comes first.
            let stage = AtomicU8::new(0);
            let admit = async {
                s.hold_back().await;
                stage.store(1, Ordering::Relaxed);
                if let Some(rpm) = &s.rpm {
                    rpm.until_ready().await;
                }
                stage.store(2, Ordering::Relaxed);
                s.wait_tokens(estimate).await;
                stage.store(3, Ordering::Relaxed);
                s.permits.acquire().await.ok()
            };
            let permit = match request.deadline {
                None => admit.await,
                Some(deadline) => match tokio::time::timeout_at(deadline, admit).await {
                    Ok(permit) => permit,
                    Err(_) => {
                        let waiting_for = match stage.load(Ordering::Relaxed) {
                            0 => Wait::ServerHold,
                            1 => Wait::Rpm,
                            2 => Wait::Tpm,
                            _ => Wait::Concurrency,
                        };
                        let mut error = refuse(NotAdmitted::DeadlineWhileWaiting {
                            waited_ms: started.elapsed().as_millis() as u64,
                            waiting_for,
                        });
                        error.gave_up = Some(GaveUp::DeadlineReached);
                        return Err(error);
                    }
                },
            };
            drop(queued);
            let wait = started.elapsed();
            let epoch = s.epoch.load(Ordering::Relaxed);
            let now = s.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            s.max_in_flight.fetch_max(now, Ordering::Relaxed);
            s.admitted.fetch_add(1, Ordering::Relaxed);
            s.permit_wait_ms
                .fetch_add(wait.as_millis() as u64, Ordering::Relaxed);
            let slot = Slot { shared: s, permit };
            let result = self.inner.complete(request).await;
            drop(slot);
            match result {
                Ok(mut completion) => {
                    s.on_success();
                    let used = completion.usage.total();
                    if used > estimate && s.tpm.is_some() {
                        // Settle the overage without holding back this answer: later
                        // calls wait for it instead.
                        let shared = self.shared.clone();
                        tokio::spawn(async move { shared.wait_tokens(used - estimate).await });
                    }
                    if let Some(info) = completion.rate_limit {
                        if info.requests_remaining == Some(0) {
                            s.hold(Duration::from_millis(info.reset_ms.unwrap_or(1000)));
                        }
                    }
                    completion.permit_wait_ms += wait.as_millis() as u64;
                    Ok(completion)
                }
                Err(error) => {
                    match &error.kind {
                        ProviderErrorKind::RateLimited { .. } => {
                            s.rate_limited.fetch_add(1, Ordering::Relaxed);
                            s.on_pushback(epoch);
                        }
                        ProviderErrorKind::Overloaded { .. } => {
                            s.overloaded.fetch_add(1, Ordering::Relaxed);
                            s.on_pushback(epoch);
                        }
                        _ => {}
                    }
                    if let Some(wait) = error.kind.retry_after() {
                        if matches!(error.kind, ProviderErrorKind::RateLimited { .. }) {
                            s.hold(wait);
                        }
                    }
                    Err(error)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{SimProfile, SimProvider};

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_calls_in_flight_and_a_dropped_call_frees_its_permit() {
        let sim = SimProvider::with_profile(SimProfile::fixed(Duration::from_millis(100)));
        let a = Arc::new(Admission::new(
            sim,
            AdmissionConfig {
                max_concurrency: 3,
                adaptive: false,
                ..AdmissionConfig::default()
            },
        ));
        let calls: Vec<_> = (0..9)
            .map(|i| {
                let a = a.clone();
                tokio::spawn(async move {
                    a.complete(CompletionRequest::new(format!("a{i}"), "s", "u"))
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(a.metrics().in_flight, 3);
        assert_eq!(a.metrics().queued, 6);
        calls[0].abort();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            a.metrics().in_flight,
            3,
            "the aborted call's permit went to a queued one"
        );
        for c in calls.into_iter().skip(1) {
            assert!(c.await.unwrap().is_ok());
        }
        assert_eq!(a.metrics().max_in_flight, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn regression_rate_limits_that_cannot_admit_a_call_say_so() {
        // Once, a TPM below one request's size waited for the branch timeout and
        // then said "timed out", with no word of the rate limit.
        let sim = SimProvider::with_profile(SimProfile::instant());
        let a = Admission::new(
            sim.clone(),
            AdmissionConfig {
                tpm: Some(100),
                ..AdmissionConfig::default()
            },
        );
        let mut r = CompletionRequest::new("a", "s", "u");
        r.max_tokens = 500;
        let e = a.complete(r).await.unwrap_err();
        assert!(
            e.to_string().contains("the limit is 100 tokens per minute"),
            "{e}"
        );
        // One request per minute: the second call's deadline comes while it waits.
        let a = Admission::new(
            sim,
            AdmissionConfig {
                rpm: Some(1),
                ..AdmissionConfig::default()
            },
        );
        a.complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap();
        let mut r = CompletionRequest::new("a", "s", "u");
        r.deadline = Some(Instant::now() + Duration::from_secs(5));
        let e = a.complete(r).await.unwrap_err();
        assert_eq!(e.gave_up, Some(GaveUp::DeadlineReached));
        assert!(
            e.to_string()
                .contains("waiting for the requests-per-minute limit"),
            "{e}"
        );
    }
}
