//! [`Timeout`]: a provider wrapper that bounds each call as a whole — connection,
//! headers and the whole body (every event of a stream) — so a limit of 3 s means 3 s.
//! A request with a deadline is also cut at its deadline, and then says so
//! ([`GaveUp::DeadlineReached`]), so the caller learns what the call was doing.

use std::time::Duration;

use tokio::time::Instant;

use super::{
    BoxFuture, Completion, CompletionRequest, GaveUp, Provider, ProviderError, ProviderErrorKind,
};

/// Limits every call to `limit`; see the module docs. Under [`Retry`](super::Retry)
/// it bounds each attempt; the error is a `Timeout`, which is not retried.
#[derive(Debug)]
pub struct Timeout<P> {
    inner: P,
    limit: Duration,
}

impl<P: Provider> Timeout<P> {
    /// Wraps `inner` with a limit of `limit` per call.
    pub fn new(inner: P, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<P: Provider> Provider for Timeout<P> {
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
            let started = Instant::now();
            let limit_at = started + self.limit;
            let (at, gave_up) = match request.deadline {
                Some(deadline) if deadline < limit_at => (deadline, Some(GaveUp::DeadlineReached)),
                _ => (limit_at, None),
            };
            let model = request
                .model
                .clone()
                .or_else(|| self.inner.default_model().map(str::to_owned))
                .unwrap_or_else(|| "default model".to_owned());
            let agent = request.agent.clone();
            match tokio::time::timeout_at(at, self.inner.complete(request)).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError {
                    provider: self.inner.name().to_owned(),
                    model,
                    agent,
                    attempts: 1,
                    kind: ProviderErrorKind::Timeout {
                        after_ms: at.saturating_duration_since(started).as_millis() as u64,
                    },
                    earlier: Vec::new(),
                    gave_up,
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Scripted;

    #[tokio::test(start_paused = true)]
    async fn a_call_longer_than_the_limit_is_a_timeout_error_at_the_limit() {
        let slow = Timeout::new(
            Scripted::new().with_latency(Duration::from_secs(5)),
            Duration::from_secs(3),
        );
        let t0 = tokio::time::Instant::now();
        let e = slow
            .complete(CompletionRequest::new("legal", "s", "u"))
            .await
            .unwrap_err();
        assert_eq!(t0.elapsed(), Duration::from_secs(3));
        assert_eq!(e.kind, ProviderErrorKind::Timeout { after_ms: 3000 });
        assert_eq!(e.agent, "legal");
        assert_eq!(e.gave_up, None);
        // A nearer deadline cuts the attempt there, and says it was the deadline.
        let mut r = CompletionRequest::new("legal", "s", "u");
        r.deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
        let e = slow.complete(r).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Timeout { after_ms: 1000 });
        assert_eq!(e.gave_up, Some(GaveUp::DeadlineReached));
        let fast = Timeout::new(Scripted::new(), Duration::from_secs(3));
        assert!(fast
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .is_ok());
    }
}
