//! [`Hedge`]: a provider wrapper that sends one duplicate of a slow call.
//!
//! When a call has run longer than the hedge delay — a fixed delay, or the observed
//! p95 latency of that model once there are enough samples — one duplicate goes out;
//! the first answer wins and the other request is dropped (aborted). Both count in
//! cost: the winner's usage is reported, plus the loser's prompt tokens (estimated,
//! since an aborted request reports nothing). Hedges are capped per run (by the
//! request's group, the run) so a slow provider cannot double a run's spend.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{BoxFuture, Completion, CompletionRequest, Provider, ProviderError};

/// When to hedge.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HedgeConfig {
    /// Hedge after this long — or after the observed p95, when `use_p95` and at least
    /// `min_samples` latencies of the model have been seen.
    pub delay: Duration,
    /// Use the observed p95 latency once known.
    pub use_p95: bool,
    /// Samples needed before the p95 is trusted.
    pub min_samples: usize,
    /// Most hedges per run.
    pub max_per_run: u32,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(10),
            use_p95: true,
            min_samples: 20,
            max_per_run: 2,
        }
    }
}

/// Wraps a provider with hedged requests; see the module docs.
#[derive(Debug)]
pub struct Hedge<P> {
    inner: P,
    config: HedgeConfig,
    latencies: Mutex<HashMap<String, VecDeque<Duration>>>,
    per_run: Mutex<HashMap<u64, u32>>,
    sent: std::sync::atomic::AtomicU64,
}

impl<P: Provider> Hedge<P> {
    /// Wraps `inner`.
    pub fn new(inner: P, config: HedgeConfig) -> Self {
        Self {
            inner,
            config,
            latencies: Mutex::default(),
            per_run: Mutex::default(),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Hedges sent so far.
    pub fn hedges_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn delay_for(&self, model: &str) -> Duration {
        if !self.config.use_p95 {
            return self.config.delay;
        }
        let Ok(map) = self.latencies.lock() else {
            return self.config.delay;
        };
        match map.get(model) {
            Some(samples) if samples.len() >= self.config.min_samples.max(1) => {
                let mut sorted: Vec<Duration> = samples.iter().copied().collect();
                sorted.sort_unstable();
                sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)]
            }
            _ => self.config.delay,
        }
    }

    fn record(&self, model: &str, latency: Duration) {
        if let Ok(mut map) = self.latencies.lock() {
            let samples = map.entry(model.to_owned()).or_default();
            samples.push_back(latency);
            if samples.len() > 256 {
                samples.pop_front();
            }
        }
    }

    /// Takes one hedge from the run's allowance.
    fn allow(&self, request: &CompletionRequest) -> bool {
        let Some(group) = request.group else {
            return true;
        };
        let Ok(mut runs) = self.per_run.lock() else {
            return false;
        };
        if runs.len() > 10_000 {
            // A long-lived process: forget old runs rather than grow without bound.
            runs.clear();
        }
        let used = runs.entry(group).or_default();
        if *used >= self.config.max_per_run {
            return false;
        }
        *used += 1;
        true
    }
}

impl<P: Provider> Provider for Hedge<P> {
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
            let model = request.model.clone().unwrap_or_default();
            let started = Instant::now();
            let delay = self.delay_for(&model);
            let first = self.inner.complete(request.clone());
            tokio::pin!(first);
            let result = tokio::select! {
                r = &mut first => r,
                () = tokio::time::sleep(delay) => {
                    if self.allow(&request) {
                        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::debug!(agent = %request.agent, ?delay, "hedging a slow call");
                        // The duplicate streams nowhere: one live preview per call.
                        let mut duplicate = request.clone();
                        duplicate.deltas = None;
                        let second = self.inner.complete(duplicate);
                        tokio::pin!(second);
                        // The first *answer* wins and the other future is dropped
                        // (aborted); an error from one copy waits for the other.
                        let mut r = tokio::select! {
                            r = &mut first => match r {
                                Ok(c) => Ok(c),
                                Err(_) => second.await,
                            },
                            r = &mut second => match r {
                                Ok(c) => Ok(c),
                                Err(_) => first.await,
                            },
                        };
                        if let Ok(c) = &mut r {
                            c.hedged = true;
                            c.usage.input_tokens += request.prompt_tokens();
                        }
                        r
                    } else {
                        first.await
                    }
                }
            };
            if result.is_ok() {
                self.record(&model, started.elapsed());
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ProviderErrorKind, Usage};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// The first call takes 10 s, later ones 100 ms; counts calls dropped unfinished.
    #[derive(Default)]
    struct SlowFirst {
        calls: AtomicU32,
        dropped: Arc<AtomicU32>,
    }

    struct Dropped(Arc<AtomicU32>, bool);

    impl Drop for Dropped {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    impl Provider for SlowFirst {
        fn name(&self) -> &str {
            "slow-first"
        }

        fn complete(
            &self,
            request: CompletionRequest,
        ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let dropped = self.dropped.clone();
            Box::pin(async move {
                let mut guard = Dropped(dropped, false);
                let wait = if n == 0 { 10_000 } else { 100 };
                tokio::time::sleep(Duration::from_millis(wait)).await;
                guard.1 = true;
                if request.agent == "fail" || (request.agent == "fail-after-first" && n > 0) {
                    let kind = ProviderErrorKind::Status {
                        status: 500,
                        retry_after_ms: None,
                        excerpt: String::new(),
                    };
                    return Err(ProviderError::new("slow-first", "m", &request, kind));
                }
                Ok(Completion {
                    text: format!("answer {n}"),
                    usage: Usage {
                        input_tokens: 10,
                        output_tokens: 5,
                        ..Usage::default()
                    },
                    ..Completion::default()
                })
            })
        }
    }

    fn request(run: u64) -> CompletionRequest {
        let mut r = CompletionRequest::new("a", "one two three", "four five six");
        r.group = Some(run);
        r
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_hedged_the_first_answer_wins_and_the_loser_is_aborted() {
        let inner = SlowFirst::default();
        let dropped = inner.dropped.clone();
        let hedge = Hedge::new(
            inner,
            HedgeConfig {
                delay: Duration::from_millis(500),
                use_p95: false,
                ..HedgeConfig::default()
            },
        );
        let t0 = Instant::now();
        let c = hedge.complete(request(1)).await.unwrap();
        assert_eq!(c.text, "answer 1", "the hedge answered");
        assert!(c.hedged);
        assert_eq!(t0.elapsed(), Duration::from_millis(600));
        assert_eq!(
            c.usage.input_tokens,
            10 + 8,
            "the loser's prompt counts too"
        );
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the slow original was aborted"
        );
        assert_eq!(hedge.hedges_sent(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_failing_hedge_does_not_beat_a_healthy_original() {
        // The original takes 10 s and succeeds; the hedge fails fast. The answer must
        // be the original's, not the hedge's error.
        let inner = SlowFirst::default();
        let hedge = Hedge::new(
            inner,
            HedgeConfig {
                delay: Duration::from_millis(500),
                use_p95: false,
                ..HedgeConfig::default()
            },
        );
        let mut r = request(3);
        r.agent = "fail-after-first".into();
        let c = hedge.complete(r).await.unwrap();
        assert_eq!(c.text, "answer 0");
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_per_run_are_capped() {
        let hedge = Hedge::new(
            SlowFirst {
                calls: AtomicU32::new(0),
                dropped: Arc::default(),
            },
            HedgeConfig {
                delay: Duration::from_millis(50),
                use_p95: false,
                max_per_run: 1,
                ..HedgeConfig::default()
            },
        );
        // Every call after the first takes 100 ms > 50 ms: each would hedge.
        hedge.complete(request(7)).await.unwrap();
        hedge.complete(request(7)).await.unwrap();
        hedge.complete(request(7)).await.unwrap();
        assert_eq!(hedge.hedges_sent(), 1);
        hedge.complete(request(8)).await.unwrap();
        assert_eq!(hedge.hedges_sent(), 2, "another run has its own allowance");
    }
}
