use super::*;

#[tokio::test(start_paused = true)]
async fn same_seed_same_text_and_latency() {
    let a = SimProvider::with_profile(SimProfile::default());
    let b = SimProvider::with_profile(SimProfile::default());
    let req = CompletionRequest::new(
        "legal",
        "You are a lawyer.",
        "Store all user queries in plain text logs",
    );
    let t0 = tokio::time::Instant::now();
    let ca = a.complete(req.clone()).await.unwrap();
    let da = t0.elapsed();
    let t1 = tokio::time::Instant::now();
    let cb = b.complete(req).await.unwrap();
    assert_eq!(ca.text, cb.text);
    assert_eq!(da, t1.elapsed());
    assert!(ca.usage.input_tokens > 0 && ca.usage.output_tokens > 0);
    assert!(ca.text.starts_with("[simulated legal]"), "{}", ca.text);
}

/// A fan-out branch's task travels as the shared prefix; the simulator left it out
/// of the input tokens, so every report on it under-counted what branches read.
#[tokio::test(start_paused = true)]
async fn the_shared_prefix_counts_in_the_input_tokens() {
    let p = SimProvider::with_profile(SimProfile::fixed(Duration::ZERO));
    let plain = CompletionRequest::new("a", "one two three", "");
    let mut with_document = plain.clone();
    with_document.shared_prefix = Some(" word".repeat(300).into());
    let plain = p.complete(plain).await.unwrap().usage.input_tokens;
    let read = p.complete(with_document).await.unwrap().usage.input_tokens;
    // 303 words at 4 tokens per 3 words, against the system prompt's 3 alone.
    assert_eq!((plain, read), (4, 404));
}

#[tokio::test(start_paused = true)]
async fn dropped_call_counts_as_aborted() {
    let p = SimProvider::with_profile(SimProfile::fixed(Duration::from_secs(5)));
    let fut = p.complete(CompletionRequest::new("a", "s", "u"));
    let _ = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert_eq!(
        p.stats(),
        SimStats {
            started: 1,
            completed: 0,
            failed: 0,
            aborted: 1
        }
    );
}

#[tokio::test(start_paused = true)]
async fn failure_rate_one_always_fails() {
    let p = SimProvider::with_profile(SimProfile {
        failure_rate: 1.0,
        ..SimProfile::instant()
    });
    let err = p
        .complete(CompletionRequest::new("a", "s", "u"))
        .await
        .unwrap_err();
    assert!(matches!(
        err.kind,
        ProviderErrorKind::Status { status: 500, .. }
    ));
    assert_eq!(p.stats().failed, 1);
}

#[tokio::test(start_paused = true)]
async fn regression_a_huge_word_in_the_task_is_not_quoted_in_the_answer() {
    // One 100,000-letter word was quoted whole in every answer: a 1 MB input made
    // ~95 MB of a server's journal.
    let p = SimProvider::with_profile(SimProfile::instant());
    let task = format!("Consider {} carefully", "w".repeat(100_000));
    let c = p
        .complete(CompletionRequest::new("legal", "s", task))
        .await
        .unwrap();
    assert!(c.text.len() < 2_000, "{} bytes", c.text.len());
    assert!(
        c.text.contains("consider") || c.text.contains("carefully"),
        "{}",
        c.text
    );
}
