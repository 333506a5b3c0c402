//! [`Admission`]: a provider wrapper that decides when a call may go out.
//!
//! One `Admission` is shared by every agent that uses the provider (wrap once, hand
//! the same `Arc` to the runtime). Providers count their limits per model, so the gate
//! keeps one lane per model (the request's, or the provider's default), each with:
//!
//! - a **concurrency cap** (a tokio `Semaphore`): a call holds a permit while in
//!   flight; a cancelled or timed-out call drops it at once;
//! - an **adaptive window** on the cap (`window`, a pure state machine): it starts at
//!   `max_concurrency` (a server with room gets the whole fan-out at once; an
//!   `initial_concurrency` below it slow-starts from there instead); a pushback cuts
//!   the cap straight to what the server was carrying (the other calls still in
//!   flight), so first contact with a limited server costs one wave of 429s; then one
//!   more per `cap` successes, up to `max_concurrency`. What a lane learned
//!   ([`Learned`]) can be kept ([`Admission::learned`]) and given to the next gate for
//!   the same endpoint ([`Admission::remember`]), which starts there;
//! - **requests per minute** and **tokens per minute** budgets (`governor`, GCRA): a
//!   call waits for one request cell and for its estimated tokens (prompt words × 4/3 +
//!   `max_tokens`); after the answer, tokens used beyond the estimate are charged too;
//!   a call larger than the TPM limit is refused at once;
//! - the provider's **rate-limit headers** (`allowance`): once an answer has said
//!   how many requests are left until the reset, the lane lets out no more than that
//!   (less the calls already on their way) before it, and holds back when nothing or
//!   no token is left; a 429 that names a wait holds the whole lane until then.
//!
//! A call with a deadline that comes while it waits is refused with what it was
//! waiting for; one that could not start before its deadline (a server's hold, or
//! whole rounds of calls queued ahead of it at the pace calls have been taking:
//! `forecast`) is refused at once instead of queued. [`Admission::metrics`] sums the lanes (queue depth, in-flight count,
//! cap, 429s, permit waits); [`Admission::metrics_by_model`] gives each; each
//! completion carries its own permit wait.

mod allowance;
mod forecast;
mod lane;
mod lease;
mod window;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{
    BoxFuture, Completion, CompletionRequest, GaveUp, NotAdmitted, Provider, ProviderError,
    ProviderErrorKind,
};
use lane::Lane;
pub use lease::{CallEnd, Lease, RequestsLeft};
pub use window::Learned;

/// The default ceiling on calls in flight per model: a fan-out of up to this many
/// branches goes out whole to a server with room. Over HTTP/1.1 each call holds a
/// socket, so this is what bounds it: 10,000 sockets to one server fit the default
/// ephemeral port range (28,232 ports) twice over, with the ports of a previous run
/// still in TIME_WAIT. Why this figure and not 64: BENCHMARKS.md, "The user's path".
pub const DEFAULT_MAX_CONCURRENCY: usize = 10_000;

/// How long a kept [`Learned`] is worth starting from: a server whose limit was
/// raised (a new account tier, a bigger deployment) is held to the old one no
/// longer than this. Stores of learned limits (the CLI's cache file, `serve`'s
/// journal) forget entries older than this.
pub const LEARNED_KEEPS_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest the gate holds calls back on a server's say-so.
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// Limits of an [`Admission`], per model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdmissionConfig {
    /// Upper bound of calls in flight.
    pub max_concurrency: usize,
    /// Lower bound the adaptive cap never goes under.
    pub min_concurrency: usize,
    /// Where the adaptive cap starts, clamped to the bounds. `None` (the default):
    /// at `max_concurrency`, so nothing is assumed before the server has pushed back;
    /// `Some(n)`: slow start from `n`, doubling per round trip until the first 429.
    pub initial_concurrency: Option<usize>,
    /// Adapt the cap to 429s/529s; otherwise it stays at `max_concurrency`.
    pub adaptive: bool,
    /// Requests per minute, if limited.
    pub rpm: Option<u32>,
    /// Tokens per minute, if limited.
    pub tpm: Option<u32>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            min_concurrency: 1,
            initial_concurrency: None,
            adaptive: true,
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
    /// Calls refused at once because they could not have started before their
    /// deadline.
    #[serde(default)]
    pub refused_late: u64,
}

impl std::ops::AddAssign for AdmissionMetrics {
    fn add_assign(&mut self, o: Self) {
        self.queued += o.queued;
        self.in_flight += o.in_flight;
        self.cap += o.cap;
        self.max_in_flight += o.max_in_flight;
        self.admitted += o.admitted;
        self.rate_limited += o.rate_limited;
        self.overloaded += o.overloaded;
        self.decreases += o.decreases;
        self.permit_wait_ms += o.permit_wait_ms;
        self.refused_late += o.refused_late;
    }
}

/// Wraps a provider with admission control; see the module docs.
pub struct Admission<P> {
    inner: P,
    config: AdmissionConfig,
    lanes: DashMap<String, Arc<Lane>>,
}

impl<P> std::fmt::Debug for Admission<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("metrics", &self.metrics())
            .finish()
    }
}

impl<P: Provider> Admission<P> {
    /// Wraps `inner` with `config` (applied to each model).
    pub fn new(inner: P, config: AdmissionConfig) -> Self {
        let max = config.max_concurrency.max(1);
        Self {
            inner,
            config: AdmissionConfig {
                max_concurrency: max,
                min_concurrency: config.min_concurrency.clamp(1, max),
                ..config
            },
            lanes: DashMap::new(),
        }
    }

    fn lane(&self, model: Option<&str>) -> Arc<Lane> {
        let model = model.or(self.inner.default_model()).unwrap_or_default();
        if let Some(lane) = self.lanes.get(model) {
            return lane.clone();
        }
        self.lanes
            .entry(model.to_owned())
            .or_insert_with(|| Arc::new(Lane::new(&self.config)))
            .clone()
    }

    /// Starts `model`'s lane (`None`: the provider's default model) where an earlier
    /// gate for the same endpoint stood (its [`Admission::learned`]), instead of at
    /// the maximum: the next run against a limited server does not pay the first
    /// wave of 429s again. Call it before the lane's first call; later it moves the
    /// cap too, as a pushback would.
    pub fn remember(&self, model: Option<&str>, learned: Learned) {
        self.lane(model).resume(learned);
    }
}

impl<P> Admission<P> {
    /// A snapshot of the counters, summed over the models.
    pub fn metrics(&self) -> AdmissionMetrics {
        let mut total = AdmissionMetrics::default();
        for lane in self.lanes.iter() {
            total += lane.metrics();
        }
        total
    }

    /// What each model's lane has learned from the server's pushback, sorted by
    /// model; lanes that have met none are left out. Keep it per endpoint and hand
    /// it to the next gate with [`Admission::remember`].
    pub fn learned(&self) -> Vec<(String, Learned)> {
        let mut all: Vec<(String, Learned)> = self
            .lanes
            .iter()
            .filter_map(|l| Some((l.key().clone(), l.learned()?)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Each model's counters, sorted by model.
    pub fn metrics_by_model(&self) -> Vec<(String, AdmissionMetrics)> {
        let mut all: Vec<(String, AdmissionMetrics)> = self
            .lanes
            .iter()
            .map(|l| (l.key().clone(), l.metrics()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

impl<P: Provider> Admission<P> {
    /// Tokens the gate expects `request` to use: its prompt (≈ 4 tokens per 3 words)
    /// plus `max_tokens`. This is what [`Admission::lease`] is given for it.
    pub fn estimate(request: &CompletionRequest) -> u64 {
        request.prompt_tokens() + u64::from(request.max_tokens)
    }

    /// Waits for admission of one call to `model` (`None`: the provider's default)
    /// estimated at `estimate` tokens, as the gate's own calls do, and returns the
    /// permit apart from any call: settle it with how the call went. A cluster's
    /// orchestrator leases permits this way to calls made on worker nodes.
    pub async fn lease(
        &self,
        model: Option<&str>,
        estimate: u64,
        deadline: Option<Instant>,
    ) -> Result<Lease, NotAdmitted> {
        let (lease, _) = self.lease_with(model, || estimate, deadline).await?;
        Ok(lease)
    }

    /// [`Admission::lease`], working out the estimate only on a lane that uses it (one
    /// with a TPM limit; elsewhere it is 0): counting a prompt's words was the
    /// costliest thing the gate did per call. Returns the lease and the estimate.
    async fn lease_with(
        &self,
        model: Option<&str>,
        estimate: impl FnOnce() -> u64,
        deadline: Option<Instant>,
    ) -> Result<(Lease, u64), NotAdmitted> {
        let lane = self.lane(model);
        let estimate = if lane.limits_tokens() { estimate() } else { 0 };
        let (slot, waited) = lane.admit(estimate, deadline).await?;
        Ok((Lease { slot, lane, waited }, estimate))
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
            let model = request.model.as_deref();
            let estimate = || Self::estimate(&request);
            let (lease, estimate) = match self.lease_with(model, estimate, request.deadline).await {
                Ok(leased) => leased,
                Err(reason) => return Err(not_admitted(&self.inner, &request, reason)),
            };
            let waited = lease.waited();
            let result = self.inner.complete(request).await;
            lease.settle(CallEnd::of(&result, estimate));
            result.map(|mut completion| {
                completion.permit_wait_ms += waited.as_millis() as u64;
                completion
            })
        })
    }
}

/// The error for a call the gate did not let out: the deadline came while it waited
/// (a give-up at the deadline), or it could never fit.
pub fn not_admitted(
    inner: &dyn Provider,
    request: &CompletionRequest,
    reason: NotAdmitted,
) -> ProviderError {
    let model = request
        .model
        .clone()
        .or_else(|| inner.default_model().map(str::to_owned))
        .unwrap_or_else(|| "default model".to_owned());
    let gave_up = match &reason {
        NotAdmitted::DeadlineWhileWaiting { .. } => Some(GaveUp::DeadlineReached),
        NotAdmitted::WouldMissDeadline {
            wait_ms, left_ms, ..
        } => Some(GaveUp::WaitPastDeadline {
            wait_ms: *wait_ms,
            left_ms: *left_ms,
        }),
        _ => None,
    };
    let kind = ProviderErrorKind::NotAdmitted { reason };
    let mut error = ProviderError::new(inner.name(), &model, request, kind);
    error.gave_up = gave_up;
    error
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
    async fn a_call_that_finds_a_slot_free_still_waits_behind_the_queue_and_a_hold() {
        use futures::FutureExt;
        let a = Admission::new(
            SimProvider::with_profile(SimProfile::instant()),
            AdmissionConfig {
                max_concurrency: 1,
                adaptive: false,
                ..AdmissionConfig::default()
            },
        );
        let first = a.lease(None, 0, None).await.unwrap();
        let mut waiting = Box::pin(a.lease(None, 0, None));
        assert!(futures::poll!(&mut waiting).is_pending());
        drop(first);
        assert!(
            a.lease(None, 0, None).now_or_never().is_none(),
            "a new call took the slot the waiting one was owed"
        );
        let second = waiting.await.unwrap();
        // A 429 that says "retry after 1 s" holds the whole gate back: the next
        // call finds the slot free and still waits.
        second.settle(CallEnd::RateLimited {
            hold_ms: Some(1000),
        });
        let asked = Instant::now();
        let third = a.lease(None, 0, None).await.unwrap();
        assert!(asked.elapsed() >= Duration::from_millis(1000));
        assert_eq!(third.waited(), asked.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cannot_start_before_its_deadline_is_refused_at_once_not_queued() {
        // One slot, calls of 1 s: with three calls queued, a call whose deadline is
        // 1.5 s away would wait at least 3 s. Queued, it held its place until its
        // deadline, and once demand outran the cap every call behind it was late too.
        let a = Arc::new(Admission::new(
            SimProvider::with_profile(SimProfile::fixed(Duration::from_secs(1))),
            AdmissionConfig {
                max_concurrency: 1,
                adaptive: false,
                ..AdmissionConfig::default()
            },
        ));
        let request = |deadline: Option<Duration>| {
            let mut r = CompletionRequest::new("a", "s", "u");
            r.deadline = deadline.map(|d| Instant::now() + d);
            r
        };
        // Before any call has ended the gate knows no pace, and queues.
        a.complete(request(None)).await.unwrap();
        let queued: Vec<_> = (0..4)
            .map(|_| {
                let a = a.clone();
                tokio::spawn(async move { a.complete(request(None)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!((a.metrics().in_flight, a.metrics().queued), (1, 3));
        let asked = Instant::now();
        let e = a
            .complete(request(Some(Duration::from_millis(1_500))))
            .await
            .unwrap_err();
        assert_eq!(asked.elapsed(), Duration::ZERO, "refused at once");
        assert_eq!(
            e.gave_up,
            Some(GaveUp::WaitPastDeadline {
                wait_ms: 3_000,
                left_ms: 1_500
            })
        );
        let text = e.to_string();
        assert!(
            text.contains("could not start before its deadline")
                && text.contains("3 calls queued ahead"),
            "{text}"
        );
        assert_eq!(a.metrics().refused_late, 1);
        // A deadline the queue can meet is queued and served.
        let late_enough = {
            let a = a.clone();
            tokio::spawn(async move { a.complete(request(Some(Duration::from_secs(10)))).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(a.metrics().queued, 4);
        for q in queued {
            assert!(q.await.unwrap().is_ok());
        }
        assert!(late_enough.await.unwrap().is_ok());
        // A server's hold longer than what is left is refused at once too.
        let lease = a.lease(None, 0, None).await.unwrap();
        lease.settle(CallEnd::RateLimited {
            hold_ms: Some(5_000),
        });
        let e = a
            .complete(request(Some(Duration::from_secs(2))))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("retry-after hold"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_lane_with_a_tpm_limit_counts_the_prompt_and_there_it_does() {
        // 150 words (about 200 tokens) and 10 tokens of answer: over a TPM of 100
        // only if the gate counts the prompt's words.
        let mut r = CompletionRequest::new("a", "s", "word ".repeat(150));
        r.max_tokens = 10;
        let sim = SimProvider::with_profile(SimProfile::instant());
        let limited = Admission::new(
            sim.clone(),
            AdmissionConfig {
                tpm: Some(100),
                ..AdmissionConfig::default()
            },
        );
        let e = limited.complete(r.clone()).await.unwrap_err();
        assert!(
            e.to_string().contains("the limit is 100 tokens per minute"),
            "{e}"
        );
        let unlimited = Admission::new(sim, AdmissionConfig::default());
        assert!(unlimited.complete(r).await.is_ok());
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
        r.deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
        let e = a.complete(r).await.unwrap_err();
        assert_eq!(e.gave_up, Some(GaveUp::DeadlineReached));
        assert!(
            e.to_string()
                .contains("waiting for the requests-per-minute limit"),
            "{e}"
        );
    }
}
