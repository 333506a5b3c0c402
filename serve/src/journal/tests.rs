use super::*;

fn open() -> (tempfile::TempDir, Journal) {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    (dir, j)
}

#[tokio::test]
async fn a_run_and_its_events_survive_reopening_the_file() {
    let (dir, j) = open();
    let Inserted::New(id) = j.insert_run("{}".into(), None).await.unwrap() else {
        panic!("not new")
    };
    j.set_status(id, Status::Running, None).await.unwrap();
    j.append_events(id, vec![("branch_finished".into(), "{\"a\":1}".into())])
        .await
        .unwrap();
    let report = StoredReport {
        json: "{\"r\":1}".into(),
        figures: Figures::default(),
    };
    j.finish(id, Status::Succeeded, Some(report), None)
        .await
        .unwrap();
    drop(j);
    let j = Journal::open(&dir.path().join("j.db")).unwrap();
    let row = j.get(id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Succeeded);
    assert_eq!(row.report.as_deref(), Some("{\"r\":1}"));
    let events = j.events_after(id, 0, 100, usize::MAX).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["status", "status", "branch_finished", "done"]);
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    // A byte budget stops the page early, but always gives the first event.
    assert_eq!(j.events_after(id, 0, 100, 1).await.unwrap().len(), 1);
    assert_eq!(seqs, [1, 2, 3, 4]);
    assert_eq!(
        j.events_after(id, 2, 100, usize::MAX).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn an_idempotency_key_returns_the_run_it_first_made() {
    let (_dir, j) = open();
    let first = j
        .insert_run("{\"a\":1}".into(), Some("k1".into()))
        .await
        .unwrap();
    let Inserted::New(id) = first else {
        panic!("not new")
    };
    match j
        .insert_run("{\"a\":1}".into(), Some("k1".into()))
        .await
        .unwrap()
    {
        Inserted::Existing(row) => assert_eq!(row.id, id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        j.insert_run("{\"a\":1}".into(), Some("k2".into()))
            .await
            .unwrap(),
        Inserted::New(_)
    ));
}

#[tokio::test]
async fn unfinished_runs_are_the_queued_running_and_interrupted_ones() {
    let (_dir, j) = open();
    let mut ids = Vec::new();
    for _ in 0..4 {
        let Inserted::New(id) = j.insert_run("{}".into(), None).await.unwrap() else {
            panic!()
        };
        ids.push(id);
    }
    j.set_status(ids[1], Status::Running, None).await.unwrap();
    j.set_status(ids[2], Status::Interrupted, None)
        .await
        .unwrap();
    j.finish(ids[3], Status::Cancelled, None, Some("by a client".into()))
        .await
        .unwrap();
    let left: Vec<i64> = j.unfinished().await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(left, ids[..3]);
}

#[tokio::test]
async fn listing_pages_newest_first_and_filters_by_status() {
    let (_dir, j) = open();
    for _ in 0..5 {
        j.insert_run("{}".into(), None).await.unwrap();
    }
    j.set_status(2, Status::Running, None).await.unwrap();
    let page: Vec<i64> = j
        .list(None, None, 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(page, [5, 4]);
    let next: Vec<i64> = j
        .list(None, Some(4), 2)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(next, [3, 2]);
    let running: Vec<i64> = j
        .list(Some(Status::Running), None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(running, [2]);
}

#[tokio::test]
async fn a_status_this_build_does_not_know_is_an_error_naming_the_run() {
    let (_dir, j) = open();
    j.insert_run("{}".into(), None).await.unwrap();
    j.call(|c| Ok(c.execute("UPDATE runs SET status = 'paused'", [])?))
        .await
        .unwrap();
    let e = j.get(1).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "journal: run 1 has an unknown status `paused`"
    );
}

#[tokio::test]
async fn learned_limits_are_kept_per_endpoint_and_model_and_forgotten_after_a_day() {
    use fanfare::provider::{Learned, LEARNED_KEEPS_FOR};
    use std::time::{Duration, SystemTime};
    let (_dir, j) = open();
    let now = SystemTime::now();
    let l = |cap| Learned {
        cap,
        refused_at: cap + 1,
    };
    j.keep_limits(
        "a".into(),
        vec![("m1".into(), l(50)), ("m2".into(), l(8))],
        now,
    )
    .await
    .unwrap();
    j.keep_limits("a".into(), vec![("m1".into(), l(52))], now)
        .await
        .unwrap();
    assert_eq!(
        j.learned_limits("a".into(), now).await.unwrap(),
        [("m1".to_owned(), l(52)), ("m2".to_owned(), l(8))]
    );
    assert!(j.learned_limits("b".into(), now).await.unwrap().is_empty());
    let later = now + LEARNED_KEEPS_FOR + Duration::from_secs(1);
    assert!(j
        .learned_limits("a".into(), later)
        .await
        .unwrap()
        .is_empty());
    // The next write drops what is stale.
    j.keep_limits("b".into(), vec![("m".into(), l(3))], later)
        .await
        .unwrap();
    let rows: i64 = j
        .call(|c| Ok(c.query_row("SELECT COUNT(*) FROM learned_limits", [], |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn regression_a_row_that_cannot_be_read_is_left_out_of_the_list_not_fatal_to_it() {
    let (_dir, j) = open();
    for _ in 0..3 {
        j.insert_run("{}".into(), None).await.unwrap();
    }
    j.call(|c| {
        c.execute("UPDATE runs SET status = 'bogus' WHERE id = 2", [])?;
        Ok(())
    })
    .await
    .unwrap();
    let ids: Vec<i64> = j
        .list(None, None, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [3, 1]);
}

#[tokio::test]
async fn regression_listing_by_status_uses_the_status_index() {
    let (_dir, j) = open();
    let plan: Vec<String> = j
        .call(|c| {
            let mut stmt = c.prepare(&format!(
                "EXPLAIN QUERY PLAN SELECT {RUN_COLUMNS} FROM runs WHERE status = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(rusqlite::params!["queued", i64::MAX, 10], |r| r.get::<_, String>(3))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("runs_by_status")),
        "{plan:?}"
    );
    // The listing itself answers by status.
    j.insert_run("{}".into(), None).await.unwrap();
    assert_eq!(
        j.list(Some(Status::Queued), None, 10).await.unwrap().len(),
        1
    );
    assert!(j
        .list(Some(Status::Running), None, 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_list_shows_what_a_run_was_asked_and_its_figures_without_reading_request_or_report() {
    let (_dir, j) = open();
    let long = "é".repeat(500);
    let spec = serde_json::json!({"input": long, "workflow": "review"}).to_string();
    let Inserted::New(id) = j.insert_run(spec, None).await.unwrap() else {
        panic!("not new")
    };
    // A request that is not JSON (only tests write one) has no summary, and no error.
    j.insert_run("not json".into(), None).await.unwrap();
    let figures = Figures {
        branches: 4,
        branches_ok: 2,
        tokens: 812,
        cost_usd: Some(0.004),
        wall_ms: 6_400,
    };
    let report = StoredReport {
        json: "{}".into(),
        figures,
    };
    j.finish(id, Status::Failed, Some(report), Some("why".into()))
        .await
        .unwrap();
    let list = j.list(None, None, 10).await.unwrap();
    let run = list.iter().find(|r| r.id == id).unwrap();
    assert_eq!(run.input_head.as_deref(), Some(&"é".repeat(INPUT_HEAD)[..]));
    assert_eq!(run.workflow.as_deref(), Some("review"));
    assert_eq!(run.figures, Some(figures));
    assert_eq!(run.error.as_deref(), Some("why"));
    let other = list.iter().find(|r| r.id != id).unwrap();
    assert_eq!((other.input_head.as_deref(), other.figures), (None, None));
}

#[tokio::test]
async fn regression_a_journal_of_schema_2_gets_the_list_figures_of_its_runs_filled_in() {
    // Migration 3 added the list's columns; runs journaled before it show their
    // input, workflow and report figures all the same.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for m in &migrations::MIGRATIONS[..2] {
            tx.execute_batch(m).unwrap();
        }
        tx.pragma_update(None, "user_version", 2).unwrap();
        tx.commit().unwrap();
        // Three branches, the second a map step of three items: five rows, three ok.
        let ok = serde_json::json!({"status": "ok"});
        let failed = serde_json::json!({"status": "failed"});
        let report = serde_json::json!({
            "wall_s": 1.25,
            "branches": [
                {"outcome": ok},
                {"outcome": failed, "items": [{"outcome": ok}, {"outcome": failed}, {"outcome": ok}]},
                {"outcome": failed},
            ],
            "totals": {"usage": {"input_tokens": 100, "output_tokens": 20}, "cost_usd": 0.5}
        });
        conn.execute(
            "INSERT INTO runs (status, spec, created_ms, updated_ms, report) VALUES ('failed', ?1, 1, 2, ?2)",
            rusqlite::params![r#"{"input": "the plan", "agents": ["a"]}"#, report.to_string()],
        )
        .unwrap();
    }
    let j = Journal::open(&path).unwrap();
    let list = j.list(None, None, 10).await.unwrap();
    assert_eq!(list[0].input_head.as_deref(), Some("the plan"));
    assert_eq!(list[0].workflow, None);
    assert_eq!(
        list[0].figures,
        Some(Figures {
            branches: 5,
            branches_ok: 3,
            tokens: 120,
            cost_usd: Some(0.5),
            wall_ms: 1_250,
        })
    );
}

#[test]
fn regression_a_journal_path_that_is_not_a_regular_file_is_refused() {
    // The sixth probe: `--db /dev/null` was opened, and left files in /dev.
    let dir = tempfile::tempdir().unwrap();
    for path in [std::path::Path::new("/dev/null"), dir.path()] {
        assert!(matches!(
            Journal::open(path),
            Err(JournalError::NotAFile { .. })
        ));
    }
}
