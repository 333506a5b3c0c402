//! The live page in a real browser (Debian's chromium, headless).

use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// The page's DOM after headless Chromium has run its script for a while.
fn rendered(url: &str) -> String {
    let chromium = std::env::var("FANFARE_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("timeout")
        .arg("120")
        .arg(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {chromium}: {e}"));
    assert!(
        out.status.success(),
        "{chromium}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn the_live_page_draws_a_bar_per_branch_with_its_streamed_text_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        &dir.path().join("j.db"),
        Options {
            slow: Duration::from_secs(60),
            drain: Duration::ZERO,
            ..Options::default()
        },
    )
    .await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_streamed(&s.base, &id, "event: branch_finished").await;
    let url = format!("{}/#{id}", s.base);
    let dom = tokio::task::spawn_blocking(move || rendered(&url))
        .await
        .unwrap();
    // The run is live: the fast branch is done, the slow one still running with the
    // first piece of its answer shown.
    assert!(
        dom.contains(r#"<div id="run" data-status="running">"#),
        "{dom}"
    );
    let fast = dom.split(r#"data-key="0""#).nth(1).unwrap();
    assert!(fast.starts_with(r#" data-outcome="ok">"#), "{fast}");
    assert!(
        fast.contains(r#"<div class="text">fast read: the plan</div>"#),
        "{fast}"
    );
    let slow = dom.split(r#"data-key="1""#).nth(1).unwrap();
    assert!(slow.starts_with(r#" data-outcome="running">"#), "{slow}");
    assert!(
        slow.contains(r#"<div class="text">slow read: </div>"#),
        "{slow}"
    );
    assert!(
        slow.contains(r#"class="bar" style="left: "#),
        "the bar is drawn: {slow}"
    );
    // The runs list shows it.
    assert!(dom.contains(&format!(r#"data-id="{id}""#)), "{dom}");
    s.stop().await;
}
