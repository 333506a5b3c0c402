//! The server under load: a submission past the queue is shed with `retry-after`, and
//! of a thousand submitted at once each is accepted or shed and none is lost.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_queue_a_submission_is_shed_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_running: 1,
            max_queued: 1,
            slow: Duration::from_secs(30),
            drain: Duration::ZERO,
            ..Options::default()
        },
    )
    .await;
    let body = json!({"input": "x", "agents": ["slow"], "merge": "none"});
    assert_eq!(submit(&s.base, body.clone()).await.0, 202);
    assert_eq!(submit(&s.base, body.clone()).await.0, 202);
    let r = client()
        .post(format!("{}/v1/runs", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let list: Value = get_json(format!("{}/v1/runs", s.base)).await;
    assert_eq!(
        list["runs"].as_array().unwrap().len(),
        2,
        "a shed run leaves no row"
    );
    let stopped = s.stop().await;
    assert_eq!(stopped.interrupted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_submissions_are_each_accepted_or_shed_and_none_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            max_running: 16,
            max_queued: 300,
            slow: Duration::from_millis(1),
            ..Options::default()
        },
    )
    .await;
    let base = s.base.clone();
    // One client for all (as a load generator would be), patient: on a loaded
    // machine a debug build takes its time, and this test is about none being lost.
    tls();
    let patient = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let base = base.clone();
        let patient = patient.clone();
        tasks.spawn(async move {
            let body = json!({"input": format!("q{i}"), "agents": ["fast"], "merge": "none"});
            let r = patient
                .post(format!("{base}/v1/runs"))
                .json(&body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (code, v["id"].as_str().map(str::to_owned))
        });
    }
    let mut accepted = Vec::new();
    let mut shed = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (202, Some(id)) => accepted.push(id),
            (429, None) => shed += 1,
            other => panic!("neither accepted nor shed: {other:?}"),
        }
    }
    assert_eq!(accepted.len() + shed, 1000);
    assert!(
        accepted.len() >= 316,
        "at least the slots and the queue: {}",
        accepted.len()
    );
    for id in &accepted {
        until_status(&base, id, "succeeded").await;
    }
    let listed: Value = get_json(format!("{base}/v1/runs?limit=500&status=succeeded")).await;
    let mut count = listed["runs"].as_array().unwrap().len();
    let mut next = listed["next"].as_str().map(str::to_owned);
    while let Some(before) = next {
        let page: Value = get_json(format!(
            "{base}/v1/runs?limit=500&status=succeeded&before={before}"
        ))
        .await;
        count += page["runs"].as_array().unwrap().len();
        next = page["next"].as_str().map(str::to_owned);
    }
    assert_eq!(
        count,
        accepted.len(),
        "every accepted run is in the journal, ended"
    );
    assert_eq!(
        s.fast.finished.load(Ordering::SeqCst),
        accepted.len(),
        "each ran once"
    );
    s.stop().await;
}
