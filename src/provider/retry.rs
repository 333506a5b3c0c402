//! [`Retry`]: a provider wrapper that retries what may succeed on a second try.
//!
//! Retries 429, 529, 500–504 and transport errors; never 400/401/403/404/422, decode
//! errors or timeouts. Waits what the server asked (`retry-after-ms`, `retry-after`,
//! rate-limit reset headers — parsed into the error by the provider) or, without a
//! hint, an exponential backoff with full jitter, capped. The attempts made are
//! recorded on the completion or the final error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{BoxFuture, Completion, CompletionRequest, Provider, ProviderError};

/// When and how long to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// First backoff ceiling; doubles each retry.
    pub base: Duration,
    /// Upper bound of any wait, server hints included.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1-based) after `error`.
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

/// Wraps a provider with retries; see the module docs.
#[derive(Debug)]
pub struct Retry<P> {
    inner: P,
    policy: RetryPolicy,
    seed: AtomicU64,
}

impl<P: Provider> Retry<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Self {
            inner,
            policy,
            seed: AtomicU64::new(seed),
        }
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
}

impl<P: Provider> Provider for Retry<P> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn is_simulated(&self) -> bool {
        self.inner.is_simulated()
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                match self.inner.complete(request.clone()).await {
                    Ok(mut completion) => {
                        completion.attempts = attempt;
                        return Ok(completion);
                    }
                    Err(mut error) => {
                        error.attempts = attempt;
                        if !error.kind.is_retryable() || attempt >= self.policy.max_attempts {
                            return Err(error);
                        }
                        let wait = self.policy.wait(attempt, &error, self.roll());
                        tracing::debug!(agent = %request.agent, attempt, ?wait, error = %error.kind, "retrying");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ProviderErrorKind, Usage};
    use std::sync::Mutex;

    /// Fails with the scripted kinds in order, then succeeds.
    struct Script(Mutex<Vec<ProviderErrorKind>>);

    impl Provider for Script {
        fn name(&self) -> &str {
            "script"
        }

        fn complete(
            &self,
            request: CompletionRequest,
        ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
            let next = self.0.lock().unwrap().pop();
            Box::pin(async move {
                match next {
                    Some(kind) => Err(ProviderError::new("script", "m", &request, kind)),
                    None => Ok(Completion {
                        text: "ok".into(),
                        model: "m".into(),
                        usage: Usage::default(),
                        stop_reason: None,
                        attempts: 1,
                        ..Completion::default()
                    }),
                }
            })
        }
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
            status(503, None),
            ProviderErrorKind::RateLimited {
                retry_after_ms: Some(2000),
                excerpt: String::new(),
            },
        ];
        let retry = Retry::new(Script(Mutex::new(kinds)), RetryPolicy::default());
        let t0 = tokio::time::Instant::now();
        let c = retry
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap();
        assert_eq!(c.attempts, 3);
        // 2 s from the 429's hint, plus at most 1 s of jittered backoff after the 503.
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_secs(2) && waited <= Duration::from_secs(3),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_retries_client_errors() {
        for code in [400, 401, 403, 404, 422] {
            let retry = Retry::new(
                Script(Mutex::new(vec![status(code, None)])),
                RetryPolicy::default(),
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
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let retry = Retry::new(Script(Mutex::new(kinds)), policy);
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

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = RetryPolicy::default();
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
