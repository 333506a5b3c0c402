//! `fanfare mock-llm`: serve the mock LLM until Ctrl-C.

use std::time::Duration;

use anyhow::Context as _;
use fanfare_mock::MockConfig;

use crate::args::MockArgs;

pub async fn mock_llm(args: MockArgs) -> anyhow::Result<bool> {
    let config = MockConfig {
        latency: Duration::from_millis(args.latency_ms),
        jitter: Duration::from_millis(args.jitter_ms),
        error_rate: args.error_rate,
        rate_429: args.rate_429,
        max_concurrency: args.max_concurrency,
        requests_per_window: args.requests_per_window,
        rate_window: args.rate_window,
        hang_rate: args.hang_rate,
        garbage_rate: args.garbage_rate,
        reset_rate: args.reset_rate,
        midstream_close_rate: args.midstream_close_rate,
        retry_after: Duration::from_millis(args.retry_after_ms),
        require_key: args.require_key,
        seed: args.seed,
        answer_model: args.answer_model,
        context_window: args.context_window,
    };
    let listener = fanfare_mock::bind(std::net::SocketAddr::new(args.host, args.port))
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    crate::output::line(format_args!("fanfare mock-llm listening on http://{addr}"))?;
    crate::output::line(format_args!("  ANTHROPIC_BASE_URL=http://{addr}    OPENAI_BASE_URL=http://{addr}/v1    stats: http://{addr}/stats"))?;
    fanfare_mock::serve(listener, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(true)
}
