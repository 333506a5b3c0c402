//! [`Stack`]: composes the wrappers around a wire provider in the one order that is
//! right, so that no caller has to know it:
//!
//! ```text
//! Retry → Hedge → Admission → Timeout → Streamed → the wire provider
//! ```
//!
//! - `Retry` is outermost: every attempt goes through the gate again (and is counted);
//! - `Hedge` sits above `Admission`, so a duplicate waits for a permit like any call;
//! - `Admission` sits above `Timeout`, so waiting for a permit is not call time;
//! - `Timeout` bounds one attempt as a whole (headers and body, streamed or not);
//! - `Streamed` asks the wire provider for server-sent events.
//!
//! Every layer is optional except the wire provider. [`Stack::build`] returns the
//! provider and, when there is one, the admission gate (for its metrics).

use std::sync::Arc;
use std::time::Duration;

use super::{
    Admission, AdmissionConfig, ExponentialBackoff, Hedge, HedgeConfig, Provider, Retry,
    RetryPolicy, Streamed, Timeout,
};

/// The admission gate of a built stack, for its metrics.
pub type Gate = Admission<Arc<dyn Provider>>;

/// A gate of the caller's own, in the admission layer's place.
type GateLayer = Box<dyn FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send>;

/// A provider stack under construction; see the module docs.
pub struct Stack<R = ExponentialBackoff> {
    stream: bool,
    timeout: Option<Duration>,
    admission: Option<AdmissionConfig>,
    gate: Option<GateLayer>,
    hedge: Option<HedgeConfig>,
    retry: Option<R>,
}

impl<R: std::fmt::Debug> std::fmt::Debug for Stack<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("stream", &self.stream)
            .field("timeout", &self.timeout)
            .field("admission", &self.admission)
            .field("own_gate", &self.gate.is_some())
            .field("hedge", &self.hedge)
            .field("retry", &self.retry)
            .finish()
    }
}

impl Default for Stack {
    fn default() -> Self {
        Self::new()
    }
}

impl Stack {
    /// No layer yet: `build` returns the wire provider as it is.
    pub fn new() -> Self {
        Self {
            stream: false,
            timeout: None,
            admission: None,
            gate: None,
            hedge: None,
            retry: None,
        }
    }
}

impl<R: RetryPolicy> Stack<R> {
    /// Ask for streamed answers (SSE).
    pub fn stream(mut self, stream: bool) -> Self {
        self.stream = stream;
        self
    }

    /// Bound each attempt to `limit`, headers and body together.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// Admit calls through one shared gate with `config`.
    pub fn admission(mut self, config: AdmissionConfig) -> Self {
        self.admission = Some(config);
        self
    }

    /// Admit calls through a gate of the caller's own instead of a local one: one
    /// held on another node, say (a cluster's orchestrator leases permits to its
    /// workers). `layer` wraps what lies below the admission layer; it replaces
    /// [`Stack::admission`].
    pub fn gate_with(
        mut self,
        layer: impl FnOnce(Arc<dyn Provider>) -> Arc<dyn Provider> + Send + 'static,
    ) -> Self {
        self.admission = None;
        self.gate = Some(Box::new(layer));
        self
    }

    /// Hedge slow calls with `config`.
    pub fn hedge(mut self, config: HedgeConfig) -> Self {
        self.hedge = Some(config);
        self
    }

    /// Retry failed attempts as `policy` decides.
    pub fn retry<Q: RetryPolicy>(self, policy: Q) -> Stack<Q> {
        Stack {
            stream: self.stream,
            timeout: self.timeout,
            admission: self.admission,
            gate: self.gate,
            hedge: self.hedge,
            retry: Some(policy),
        }
    }

    /// Wraps `wire` in the chosen layers; returns the stack and its gate, if any.
    pub fn build(self, wire: impl Provider) -> (Arc<dyn Provider>, Option<Arc<Gate>>) {
        let mut p: Arc<dyn Provider> = Arc::new(wire);
        if self.stream {
            p = Arc::new(Streamed(p));
        }
        if let Some(limit) = self.timeout {
            p = Arc::new(Timeout::new(p, limit));
        }
        let mut gate = None;
        if let Some(layer) = self.gate {
            p = layer(p);
        } else if let Some(config) = self.admission {
            let g = Arc::new(Admission::new(p, config));
            gate = Some(g.clone());
            p = g;
        }
        if let Some(config) = self.hedge {
            p = Arc::new(Hedge::new(p, config));
        }
        if let Some(policy) = self.retry {
            p = Arc::new(Retry::new(p, policy));
        }
        (p, gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{CompletionRequest, ProviderErrorKind, Scripted};

    #[tokio::test(start_paused = true)]
    async fn the_gate_sees_every_attempt_and_the_timeout_bounds_each_one() {
        let wire = Scripted::new().with_latency(Duration::from_secs(2));
        wire.push_error(ProviderErrorKind::Status {
            status: 503,
            retry_after_ms: Some(100),
            excerpt: String::new(),
        });
        let (provider, gate) = Stack::new()
            .timeout(Duration::from_secs(5))
            .admission(AdmissionConfig::default())
            .retry(ExponentialBackoff::new(3))
            .build(wire.clone());
        let c = provider
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap();
        assert_eq!(c.attempts, 2);
        assert_eq!(
            gate.unwrap().metrics().admitted,
            2,
            "each attempt is admitted"
        );
        assert_eq!(wire.requests().len(), 2);
        // A timeout is not retried: one attempt, cut at the limit.
        let (provider, _) = Stack::new()
            .timeout(Duration::from_secs(1))
            .retry(ExponentialBackoff::new(3))
            .build(Scripted::new().with_latency(Duration::from_secs(2)));
        let e = provider
            .complete(CompletionRequest::new("a", "s", "u"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.attempts, e.kind),
            (1, ProviderErrorKind::Timeout { after_ms: 1000 })
        );
    }
}
