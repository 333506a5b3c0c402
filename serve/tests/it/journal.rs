//! A journal that cannot be written (a full disk): runs wait, `/readyz` says why,
//! new runs are refused, and once it can be written again every run ends with
//! every answer kept — the probe's runs stayed queued or running until a restart,
//! which then paid for their branches again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Holds the journal at its present size (SQLite's `max_page_count`: a write that
/// needs a new page fails with "database or disk is full"), or frees it.
async fn hold_size(journal: &fanfare_serve::Journal, full: bool) {
    journal
        .call(move |c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            let max = if full { pages } else { 1 << 30 };
            c.query_row(&format!("PRAGMA max_page_count = {max}"), [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
        .unwrap();
}

async fn readyz(base: &str) -> (u16, String) {
    let r = client().get(format!("{base}/readyz")).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_full_journal_holds_runs_visibly_and_they_end_once_it_has_room() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            slow: Duration::from_millis(800),
            ..Options::default()
        },
    )
    .await;
    // Events of a few KB (the tests' body limit is 4 KiB), which need new pages.
    let input = "word ".repeat(700);
    let (_, body) = submit(
        &s.base,
        json!({"input": input, "agents": ["fast", "slow"], "merge": "code"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "running").await;
    hold_size(&s.journal, true).await;
    // The branches answer; their events cannot be journaled.
    tokio::time::timeout(Duration::from_secs(20), async {
        while s.journal.write_failure().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the journal never refused a write");
    let (code, why) = readyz(&s.base).await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("journal cannot be written"), "{why}");
    let run = get(&s.base, &id).await;
    assert_eq!(run["status"], "running", "{run}");
    assert!(
        run["journal"]
            .as_str()
            .unwrap_or("")
            .contains("writes are failing"),
        "{run}"
    );
    let (code, refused) = submit(
        &s.base,
        json!({"input": input, "agents": ["fast"], "merge": "none"}),
    )
    .await;
    assert_eq!(code, 503, "{refused}");
    // Room again: the run ends, with every answer journaled once.
    hold_size(&s.journal, false).await;
    let run = until_status(&s.base, &id, "succeeded").await;
    assert_eq!(run["report"]["branches"].as_array().unwrap().len(), 2);
    let finished: Vec<_> = events(&s.base, &id, None)
        .await
        .into_iter()
        .filter(|e| e.1 == "branch_finished")
        .collect();
    assert_eq!(finished.len(), 2, "{finished:?}");
    assert_eq!(readyz(&s.base).await.0, 200);
    assert_eq!(
        s.slow.started.load(Ordering::SeqCst),
        1,
        "no branch was called twice"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_journal_deleted_under_the_server_is_not_ready() {
    // Deleting the journal's directory went unnoticed: /readyz said ready while what
    // runs wrote went to a file no restart would find.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub").join("j.db");
    std::fs::create_dir(db.parent().unwrap()).unwrap();
    let s = start(&db, Options::default()).await;
    assert_eq!(readyz(&s.base).await.0, 200);
    std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    let (code, why) = readyz(&s.base).await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("is gone"), "{why}");
    // And a new run is refused, not accepted into a journal no restart would find
    // (the seventh probe: 202 while /readyz said 503).
    let (status, body) = submit(&s.base, json!({"input": "x", "agents": ["fast"]})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is gone"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_new_runs_are_refused_while_the_disk_is_under_its_floor() {
    // A stranger's 120 runs of a 1 MiB input filled 11 GB and the disk in two
    // minutes: below the floor new runs are refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            min_free_disk: u64::MAX,
            ..Options::default()
        },
    )
    .await;
    let (status, body) = submit(&s.base, json!({"input": "x", "agents": ["fast"]})).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--min-free-disk-mb"),
        "{body}"
    );
    let (status, why) = readyz(&s.base).await;
    assert_eq!(status, 503);
    assert!(why.contains("free"), "{why}");
    let listed = get_json(format!("{}/v1/runs", s.base)).await;
    assert_eq!(
        listed["runs"].as_array().unwrap().len(),
        0,
        "nothing written"
    );
    s.stop().await;
}
