//! [`Streamed`]: a wrapper that asks for streamed answers.

use super::{BoxFuture, Completion, CompletionRequest, Provider, ProviderError};

/// Wraps a provider so that every request asks for a streamed answer.
#[derive(Debug)]
pub struct Streamed<P>(pub P);

impl<P: Provider> Provider for Streamed<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn is_simulated(&self) -> bool {
        self.0.is_simulated()
    }

    fn default_model(&self) -> Option<&str> {
        self.0.default_model()
    }

    fn complete(
        &self,
        mut request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        request.stream = true;
        self.0.complete(request)
    }
}
