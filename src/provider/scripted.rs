//! [`Scripted`]: a test model that answers from a script and records every request
//! it got. Built with the `testing` feature (and in this crate's own unit tests), so
//! that tests can drive the runtime without a network or a simulated latency model.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    BoxFuture, Completion, CompletionRequest, Provider, ProviderError, ProviderErrorKind, Usage,
};

type Answer = dyn Fn(&CompletionRequest) -> Completion + Send + Sync;

/// Answers queued replies first (errors or completions, in order), then the default
/// answer; records every request. Cheap to clone; clones share the script and the
/// record.
#[derive(Clone)]
pub struct Scripted {
    queued: Arc<Mutex<VecDeque<Result<Completion, ProviderErrorKind>>>>,
    answer: Arc<Answer>,
    requests: Arc<Mutex<Vec<CompletionRequest>>>,
    latency: Duration,
}

impl std::fmt::Debug for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripted")
            .field("requests", &self.requests().len())
            .finish()
    }
}

impl Default for Scripted {
    fn default() -> Self {
        Self::new()
    }
}

impl Scripted {
    /// Answers `"{agent} answered"` with model `scripted-1` and 10 + 3 tokens.
    pub fn new() -> Self {
        Self::answering(|request| Completion {
            text: format!("{} answered", request.agent),
            model: "scripted-1".to_owned(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 3,
                ..Usage::default()
            },
            attempts: 1,
            ..Completion::default()
        })
    }

    /// Answers with `answer(request)` once the queue is empty.
    pub fn answering(
        answer: impl Fn(&CompletionRequest) -> Completion + Send + Sync + 'static,
    ) -> Self {
        Self {
            queued: Arc::default(),
            answer: Arc::new(answer),
            requests: Arc::default(),
            latency: Duration::ZERO,
        }
    }

    /// Waits `latency` (on tokio's clock) before every answer.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Queues an error for the next call that finds no earlier queued reply.
    pub fn push_error(&self, kind: ProviderErrorKind) {
        if let Ok(mut q) = self.queued.lock() {
            q.push_back(Err(kind));
        }
    }

    /// Queues a completion, likewise.
    pub fn push_completion(&self, completion: Completion) {
        if let Ok(mut q) = self.queued.lock() {
            q.push_back(Ok(completion));
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<CompletionRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Provider for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn default_model(&self) -> Option<&str> {
        Some("scripted-1")
    }

    fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        if let Ok(mut r) = self.requests.lock() {
            r.push(request.clone());
        }
        let next = self.queued.lock().ok().and_then(|mut q| q.pop_front());
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            match next {
                Some(Err(kind)) => {
                    Err(ProviderError::new("scripted", "scripted-1", &request, kind))
                }
                Some(Ok(c)) => Ok(c),
                None => Ok((self.answer)(&request)),
            }
        })
    }
}
