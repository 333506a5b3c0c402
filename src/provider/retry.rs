//! [`Retry`]: a provider wrapper that retries what may succeed on a second try.
//!
//! *Whether* and *how long* are a [`RetryPolicy`]'s decision (tower's shape: the
//! wrapper loops, the policy decides). The default, [`ExponentialBackoff`], retries
//! 429, 529, 500–504 and transport errors — never 400/401/403/404/422, decode errors or
//! timeouts — and waits what the server asked (`retry-after-ms`, `retry-after`,
//! rate-limit reset headers, parsed into the error by the provider) or, without a
//! hint, an exponential backoff with full jitter, capped. The attempts made are
//! recorded on the completion or the final error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::{BoxFuture, Completion, CompletionRequest, GaveUp, Provider, ProviderError};

/// Decides whether a failed attempt is tried again, and after how long.
pub trait RetryPolicy: Send + Sync + 'static {
    /// Attempt number `attempt` (1-based) failed with `error`: the wait before the
    /// next attempt, or `None` to give up and return `error`.
    fn retry(&self, attempt: u32, error: &ProviderError) -> Option<Duration>;

    /// Attempts in all, when the policy has a fixed number (shown to a person
    /// watching: `attempt 3/10`).
    fn max_attempts(&self) -> Option<u32> {
        None
    }
}

/// The default [`RetryPolicy`]; see the module docs.
#[derive(Debug)]
pub struct ExponentialBackoff {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// First backoff ceiling; doubles each retry.
    pub base: Duration,
    /// Upper bound of any wait, server hints included.
    pub cap: Duration,
    seed: AtomicU64,
}

impl Default for ExponentialBackoff {
    fn default() -> Self {
        Self::new(10)
    }
}

impl Clone for ExponentialBackoff {
    fn clone(&self) -> Self {
        Self {
            seed: AtomicU64::new(self.seed.load(Ordering::Relaxed)),
            ..*self
        }
    }
}

impl ExponentialBackoff {
    /// Up to `max_attempts` attempts (at least 1), from 500 ms, capped at 30 s.
    pub fn new(max_attempts: u32) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self {
            max_attempts: max_attempts.max(1),
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            seed: AtomicU64::new(seed),
        }
    }

    /// Sets the first backoff ceiling (`base`, doubling each retry) and the cap on
    /// any wait.
    pub fn waits(mut self, base: Duration, cap: Duration) -> Self {
        self.base = base;
        self.cap = cap;
        self
    }

    fn roll(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough for jitter.
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The wait before retry number `retry` (1-based) after `error`, given `roll`.
    fn wait(&self, retry: u32, error: &ProviderError, roll: u64) -> Duration {
        if let Some(hint) = error.kind.retry_after() {
            return hint.min(self.cap);
        }
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.cap);
        // Full jitter: uniform in [0, ceiling].
        let nanos = ceiling.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { roll % (nanos + 1) })
    }
}

impl RetryPolicy for ExponentialBackoff {
    fn retry(&self, attempt: u32, error: &ProviderError) -> Option<Duration> {
        if !error.kind.is_retryable() || attempt >= self.max_attempts {
            return None;
        }
        // Nothing listens on this machine's port: once more (a server starting), not
        // ten times over most of a minute.
        if matches!(error.kind, super::ProviderErrorKind::NotListening { .. }) && attempt >= 2 {
            return None;
        }
        Some(self.wait(attempt, error, self.roll()))
    }

    fn max_attempts(&self) -> Option<u32> {
        Some(self.max_attempts)
    }
}

/// Wraps a provider with retries; see the module docs.
#[derive(Debug)]
pub struct Retry<P, R = ExponentialBackoff> {
    inner: P,
    policy: R,
}

impl<P: Provider, R: RetryPolicy> Retry<P, R> {
    /// Wraps `inner`, retrying as `policy` decides.
    pub fn new(inner: P, policy: R) -> Self {
        Self { inner, policy }
    }
}

impl<P: Provider, R: RetryPolicy> Provider for Retry<P, R> {
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
            let mut tries = Tries {
                attempt: 1,
                earlier: Vec::new(),
                refused: 0,
            };
            loop {
                // The error is handed on before the wait, so that this future keeps no
                // room for it while it sleeps (it held both, 744 bytes in all).
                let then = {
                    let error = match self.inner.complete(request.clone()).await {
                        Ok(mut completion) => {
                            completion.attempts = tries.attempt;
                            completion.rate_limited = tries.refused;
                            return Ok(completion);
                        }
                        Err(error) => error,
                    };
                    self.after(&mut tries, error, &request)
                };
                match then {
                    Then::GiveUp(error) => return Err(error),
                    Then::Wait(wait, why) => {
                        if let Some(sink) = &request.deltas {
                            sink.send(super::Delta::Retrying {
                                attempt: tries.attempt,
                                of: self.policy.max_attempts(),
                                error: why,
                                wait,
                            });
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
                tries.attempt += 1;
                if let Some(sink) = &request.deltas {
                    sink.send(super::Delta::Restart {
                        attempt: tries.attempt,
                    });
                }
            }
        })
    }
}

/// One call's attempts so far.
struct Tries {
    /// The attempt being made (1-based).
    attempt: u32,
    /// The kinds of the failed attempts' errors, oldest first.
    earlier: Vec<super::ProviderErrorKind>,
    /// Attempts refused with a 429.
    refused: u32,
}

/// What follows a failed attempt.
enum Then {
    /// Another attempt, after this wait; the last one failed with this (in a few
    /// words).
    Wait(Duration, String),
    /// None: the call fails with this.
    GiveUp(ProviderError),
}

impl<P, R: RetryPolicy> Retry<P, R> {
    /// Attempt `tries.attempt` failed with `error`: wait and try again, or give up.
    fn after(
        &self,
        tries: &mut Tries,
        mut error: ProviderError,
        request: &CompletionRequest,
    ) -> Then {
        error.attempts = tries.attempt;
        error.earlier = std::mem::take(&mut tries.earlier);
        let Some(wait) = self.policy.retry(tries.attempt, &error) else {
            return Then::GiveUp(error);
        };
        if error.gave_up.is_some() {
            return Then::GiveUp(error);
        }
        // A wait that would pass the caller's deadline is not waited out: fail now,
        // saying why.
        if let Some(deadline) = request.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            // The server's own hint counts, not the policy's cap on it: a
            // `retry-after` of days was waited as 30 s, then failed at the deadline.
            let wait = error.kind.retry_after().map_or(wait, |hint| hint.max(wait));
            if wait >= left {
                error.gave_up = Some(GaveUp::WaitPastDeadline {
                    wait_ms: wait.as_millis() as u64,
                    left_ms: left.as_millis() as u64,
                });
                return Then::GiveUp(error);
            }
        }
        tracing::debug!(agent = %request.agent, attempt = tries.attempt, ?wait, error = %error.kind, "retrying");
        if error.kind.is_rate_limit() {
            tries.refused += 1;
        }
        let why = error.kind.short();
        tries.earlier = std::mem::take(&mut error.earlier);
        if tries.earlier.len() < ProviderError::EARLIER_KEPT {
            tries.earlier.push(error.kind);
        }
        Then::Wait(wait, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ProviderErrorKind, Scripted};

    /// Fails with `kinds` in order, then answers.
    fn script(kinds: Vec<ProviderErrorKind>) -> Scripted {
        let s = Scripted::new();
        for kind in kinds {
            s.push_error(kind);
        }
        s
    }

    fn status(status: u16, retry_after_ms: Option<u64>) -> ProviderErrorKind {
        ProviderErrorKind::Status {
            status,
            retry_after_ms,
            excerpt: String::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_5xx_and_429_honouring_retry_after() {
        let kinds = vec![
            ProviderErrorKind::RateLimited {
                retry_after_ms: Some(2000),
                excerpt: String::new(),
            },
            status(503, None),
        ];
        let retry = Retry::new(script(kinds), ExponentialBackoff::default());
        let t0 = tokio::time::Instant::now();
        let c = retry
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap();
        assert_eq!(c.attempts, 3);
        assert_eq!(c.rate_limited, 1, "the 429, not the 503");
        // 2 s from the 429's hint, plus at most 1 s of jittered backoff after the 503.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited <= Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_tells_the_delta_sink_why_how_long_and_that_a_new_attempt_begins() {
        let kinds = vec![status(503, None), status(503, None)];
        let retry = Retry::new(script(kinds), ExponentialBackoff::default());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut request = CompletionRequest::new("a", "s", "u");
        let log = seen.clone();
        request.deltas = Some(crate::provider::DeltaSink::new(move |d| {
            log.lock().unwrap().push(d);
        }));
        retry.complete(request).await.unwrap();
        use crate::provider::Delta;
        // The waits are jittered: compare without them.
        let seen: Vec<Delta> = seen
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .map(|d| match d {
                Delta::Retrying { wait, .. } if wait > Duration::from_secs(1) => {
                    panic!("the first two backoffs are under a second: {wait:?}")
                }
                Delta::Retrying {
                    attempt, of, error, ..
                } => Delta::Retrying {
                    attempt,
                    of,
                    error,
                    wait: Duration::ZERO,
                },
                other => other,
            })
            .collect();
        let retrying = |attempt| Delta::Retrying {
            attempt,
            of: Some(10),
            error: "HTTP 503".into(),
            wait: Duration::ZERO,
        };
        // Each retry says why and how long, before it waits; each new attempt says
        // it begins.
        assert_eq!(
            seen,
            [
                retrying(1),
                Delta::Restart { attempt: 2 },
                retrying(2),
                Delta::Restart { attempt: 3 }
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_client_errors() {
        for code in [400, 401, 403, 404, 422] {
            let retry = Retry::new(
                script(vec![status(code, None)]),
                ExponentialBackoff::default(),
            );
            let e = retry
                .complete(CompletionRequest::new("a", "s", "u"))
                .await
                .unwrap_err();
            assert_eq!(e.attempts, 1, "{code}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_says_so() {
        let kinds = vec![status(500, None); 10];
        let retry = Retry::new(script(kinds), ExponentialBackoff::new(3));
        let e = retry
            .complete(CompletionRequest::new("legal", "s", "u"))
            .await
            .unwrap_err();
        assert_eq!(e.attempts, 3);
        assert!(
            e.to_string().contains("after 3 attempts") && e.to_string().contains("`legal`"),
            "{e}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_retry_after_longer_than_the_cap_and_the_time_left_fails_at_once() {
        // The sixth probe: a `retry-after` of 10^12 s was capped to 30 s before it
        // was held against the deadline, waited, and the call failed 30 s later.
        let retry = Retry::new(
            script(vec![ProviderErrorKind::RateLimited {
                retry_after_ms: Some(1_000_000_000_000_000),
                excerpt: String::new(),
            }]),
            ExponentialBackoff::default(),
        );
        let mut r = CompletionRequest::new("a", "s", "u");
        let t0 = tokio::time::Instant::now();
        r.deadline = Some(t0 + Duration::from_secs(120));
        let e = retry.complete(r).await.unwrap_err();
        assert_eq!(t0.elapsed(), Duration::ZERO, "nothing was waited");
        assert!(
            matches!(
                e.gave_up,
                Some(GaveUp::WaitPastDeadline {
                    left_ms: 120_000,
                    ..
                })
            ),
            "{:?}",
            e.gave_up
        );
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_retry_after_past_the_deadline_fails_at_once_with_the_history() {
        // Once, a 529 storm was retried until the branch timeout fired, and the
        // report said `attempts: 0`, "timed out", with no 529 in sight.
        let overloaded = |ms| ProviderErrorKind::Overloaded {
            status: 529,
            retry_after_ms: Some(ms),
            excerpt: String::new(),
        };
        let retry = Retry::new(
            script(vec![
                overloaded(1_000),
                overloaded(1_000),
                overloaded(30_000),
            ]),
            ExponentialBackoff::default(),
        );
        let mut r = CompletionRequest::new("a", "s", "u");
        let t0 = tokio::time::Instant::now();
        r.deadline = Some(t0 + Duration::from_secs(10));
        let e = retry.complete(r).await.unwrap_err();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(2),
            "did not wait out the 30 s hint"
        );
        assert_eq!(e.attempts, 3);
        assert_eq!(e.earlier.len(), 2);
        assert_eq!(
            e.gave_up,
            Some(GaveUp::WaitPastDeadline {
                wait_ms: 30_000,
                left_ms: 8_000
            })
        );
        let shown = e.to_string();
        assert!(
            shown.contains("after 3 attempts; earlier: 2 × HTTP 529")
                && shown.contains("only 8000 ms were left"),
            "{shown}"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = ExponentialBackoff::default();
        let e = ProviderError::new(
            "p",
            "m",
            &CompletionRequest::new("a", "s", "u"),
            status(500, None),
        );
        for retry in 1..30 {
            assert!(policy.wait(retry, &e, u64::MAX) <= policy.cap);
        }
        assert_eq!(policy.wait(1, &e, 0), Duration::ZERO);
    }
}
