//! Event streams that end, and that a client cannot use to take the server's memory.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_resuming_a_finished_runs_stream_at_or_after_done_ends_it() {
    // A browser's EventSource reconnects with the last id it saw, `done`'s: the
    // stream sent keep-alives forever.
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "x", "agents": ["fast"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let all = events(&s.base, &id, None).await;
    let (done, kind, _) = all.last().unwrap().clone();
    assert_eq!(kind, "done");
    let before_done = (done.parse::<i64>().unwrap() - 1).to_string();
    for last in [done.as_str(), "1000000"] {
        let rest = tokio::time::timeout(Duration::from_secs(10), events(&s.base, &id, Some(last)))
            .await
            .unwrap_or_else(|_| panic!("resumed after {last}, the stream never ended"));
        assert!(rest.is_empty(), "{rest:?}");
    }
    let rest = events(&s.base, &id, Some(&before_done)).await;
    let kinds: Vec<&str> = rest.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(kinds, ["done"]);
    s.stop().await;
}
