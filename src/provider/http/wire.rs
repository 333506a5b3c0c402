//! One request/response path for every HTTP wire format: [`HttpProvider`] makes the
//! call (plain or streamed), bounds it, reads the answer and turns failures into typed
//! errors with the key taken out; a [`Wire`] says only what sets its format apart —
//! how a request is written and how an answer, and a stream's events, are read.

use std::future::Future;
use std::time::Duration;

use futures::FutureExt as _;
use reqwest::RequestBuilder;

use super::{ConfigError, Redactor};
use crate::provider::{
    BoxFuture, Completion, CompletionRequest, Delta, ProviderError, ProviderErrorKind,
};

/// What one stream event brought.
pub(crate) enum Streamed {
    /// Text to show as it arrives (possibly none); the answer is not whole yet.
    More(Vec<String>),
    /// The answer is whole.
    Done(Completion),
}

/// What sets one wire format apart; see the module docs.
pub(crate) trait Wire: std::fmt::Debug + Send + Sync + 'static {
    /// The provider's name in errors and reports.
    const NAME: &'static str;
    /// Where a 404 most likely comes from (the base URL's shape).
    const HINT_404: &'static str;
    /// What the event ending a stream is called, for the error when a stream ends
    /// without it.
    const STREAM_END: &'static str;
    /// Whether its servers may leave an answer's usage out (OpenAI-compatible ones
    /// do; Anthropic's always send it, and an answer without is refused): only then
    /// is the prompt counted before the call, for [`counted`].
    const USAGE_MAY_BE_MISSING: bool;
    /// What reading a stream keeps between events.
    type Stream: Send;

    /// `post` with the request's body for `model` (and the wire's headers: its key).
    fn request(
        &self,
        post: RequestBuilder,
        request: &CompletionRequest,
        model: &str,
        stream: bool,
    ) -> RequestBuilder;

    /// A plain answer's body, from `model`.
    fn decode(body: &str, model: &str) -> Result<Completion, ProviderErrorKind>;

    /// The state before a stream's first event, for an answer from `model`.
    fn stream_state(model: &str) -> Self::Stream;

    /// One stream event's data.
    fn on_event(state: &mut Self::Stream, data: &str) -> Result<Streamed, ProviderErrorKind>;
}

/// `c`, with a structured answer given as a call of its tool (`answer_tool`, the
/// request's schema) taken as its text.
fn structured(mut c: Completion, answer_tool: Option<&str>) -> Completion {
    if let Some(name) = answer_tool {
        c.answer_from_tool(name);
    }
    c
}

/// `c`, counted by the estimate when its server reported no usage at all (an
/// OpenAI-compatible server that leaves `usage` out, or ignores
/// `stream_options.include_usage`): counted as nothing, a budget never ran down
/// (seventh probe). `prompt_tokens` is the request's estimate.
fn counted(mut c: Completion, prompt_tokens: impl FnOnce() -> u64) -> Completion {
    if c.usage == crate::provider::Usage::default() {
        let calls: u64 = c
            .tool_calls
            .iter()
            .map(|t| crate::provider::estimate_tokens(&t.input.to_string()))
            .sum();
        c.usage.input_tokens = prompt_tokens();
        c.usage.output_tokens = crate::provider::estimate_tokens(&c.text) + calls;
        tracing::debug!(model = %c.model, ?c.usage, "the server reported no usage; estimated");
    }
    c
}

/// A provider speaking wire format `W` over HTTP.
#[derive(Clone, Debug)]
pub(crate) struct HttpProvider<W> {
    wire: W,
    url: reqwest::Url,
    default_model: String,
    /// Limit on one call, answer included.
    timeout: Duration,
    /// The most bytes an answer may have.
    max_response_bytes: u64,
    /// Takes the key out of what the server says back.
    redactor: Redactor,
    client: reqwest::Client,
}

/// Where and how an [`HttpProvider`] calls.
pub(crate) struct Endpoint<'a> {
    pub base_url: &'a str,
    /// Added to the base URL.
    pub path: &'a str,
    pub default_model: &'a str,
    pub timeout: Duration,
    pub max_response_bytes: u64,
    pub redactor: Redactor,
}

impl<W: Wire> HttpProvider<W> {
    /// A provider of `wire` calling `at`; checks the URL first.
    pub(crate) fn new(wire: W, at: Endpoint<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            wire,
            url: super::endpoint(at.base_url, at.path)?,
            default_model: at.default_model.to_owned(),
            timeout: at.timeout,
            max_response_bytes: at.max_response_bytes,
            redactor: at.redactor,
            client: super::client(Duration::from_secs(10))?,
        })
    }

    /// The model used when a request names none.
    pub(crate) fn default_model(&self) -> &str {
        &self.default_model
    }

    fn model<'a>(&'a self, request: &'a CompletionRequest) -> &'a str {
        request.model.as_deref().unwrap_or(&self.default_model)
    }

    /// The call `request` makes, not sent yet.
    pub(crate) fn post(&self, request: &CompletionRequest, stream: bool) -> RequestBuilder {
        let post = self.client.post(self.url.clone());
        self.wire
            .request(post, request, self.model(request), stream)
    }

    /// A plain call. A plain function's future, not an `async fn`'s: it holds each
    /// stage once (see [`super::call`]).
    fn complete_once(
        &self,
        mut request: CompletionRequest,
    ) -> impl Future<Output = Result<Completion, ProviderError>> + '_ {
        let model = self.model(&request).to_owned();
        let call = super::call(
            self.post(&request, false),
            W::HINT_404,
            self.timeout,
            self.max_response_bytes,
        );
        // Counted now (a scan of the prompt, which the request is not kept for), and
        // only for a wire whose servers may say no usage: not on every call.
        let prompt_tokens = W::USAGE_MAY_BE_MISSING.then(|| request.prompt_tokens());
        // The rest of the request is freed now, while it is fresh, not after the answer.
        let agent = std::mem::take(&mut request.agent);
        let answer_tool = request.schema.as_ref().map(|s| s.name.clone());
        super::answer(
            W::NAME,
            model,
            agent,
            call,
            W::decode,
            self.redactor.clone(),
        )
        .map(
            #[expect(
                clippy::result_large_err,
                reason = "the Provider trait's own error, handed on as it is"
            )]
            move |answered| {
                answered.map(|c| {
                    let c = structured(c, answer_tool.as_deref());
                    match prompt_tokens {
                        Some(prompt) => counted(c, || prompt),
                        None => c,
                    }
                })
            },
        )
    }

    /// Asks for a streamed answer (SSE), sends each text delta to `deltas` as it
    /// arrives (if given), and returns the assembled completion.
    pub(crate) async fn complete_streaming(
        &self,
        request: CompletionRequest,
        deltas: Option<&tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Completion, ProviderError> {
        self.stream(request, |text| {
            if let Some(d) = deltas {
                let _ = d.send(text);
            }
        })
        .await
    }

    /// Asks for a streamed answer (SSE) and hands each text delta to `on_text`.
    pub(crate) async fn stream(
        &self,
        request: CompletionRequest,
        on_text: impl Fn(String),
    ) -> Result<Completion, ProviderError> {
        let model = self.model(&request).to_owned();
        let err = |kind| {
            self.redactor
                .error(ProviderError::new(W::NAME, &model, &request, kind))
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let builder = self.post(&request, true);
        let (rate_limit, response) =
            super::open_stream(builder, W::HINT_404, deadline, self.timeout)
                .await
                .map_err(err)?;
        let events = super::sse_events(response, self.max_response_bytes);
        futures::pin_mut!(events);
        let mut state = W::stream_state(&model);
        loop {
            let event = super::next_event(&mut events, deadline, self.timeout, W::STREAM_END)
                .await
                .map_err(err)?;
            match W::on_event(&mut state, &event.data).map_err(err)? {
                Streamed::More(texts) => texts.into_iter().for_each(&on_text),
                Streamed::Done(c) => {
                    let answer_tool = request.schema.as_ref().map(|s| s.name.as_str());
                    let c = structured(Completion { rate_limit, ..c }, answer_tool);
                    return Ok(if W::USAGE_MAY_BE_MISSING {
                        counted(c, || request.prompt_tokens())
                    } else {
                        c
                    });
                }
            }
        }
    }

    /// The call `request` asks for: streamed (its deltas to the request's sink) or
    /// plain.
    pub(crate) fn complete(
        &self,
        request: CompletionRequest,
    ) -> BoxFuture<'_, Result<Completion, ProviderError>> {
        // Each way boxed on its own: a streamed call's future is three times the size
        // of a plain one's, and one future holding either took the larger room (and
        // its copy) for every call.
        if request.stream {
            Box::pin(async move {
                let sink = request.deltas.clone();
                self.stream(request, |text| {
                    if let Some(sink) = &sink {
                        sink.send(Delta::Text(text));
                    }
                })
                .await
            })
        } else {
            Box::pin(self.complete_once(request))
        }
    }
}
