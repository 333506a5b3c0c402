//! The live page in a real browser (Debian's chromium, headless).

use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// Runs Debian's headless Chromium (or `$FANFARE_CHROMIUM`) on `url` with `extra`
/// flags and a fresh profile under `dir`, letting the page's script run for a while;
/// returns what it printed.
fn chromium(dir: &std::path::Path, url: &str, extra: &[String]) -> Vec<u8> {
    let chromium = std::env::var("FANFARE_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
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
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {chromium}: {e}"));
    assert!(
        out.status.success(),
        "{chromium}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The page's DOM after headless Chromium has run its script for a while.
fn rendered(url: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    String::from_utf8(chromium(dir.path(), url, &["--dump-dom".to_owned()])).unwrap()
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
    // Chromium dumps the DOM when its virtual-time budget is spent, which under load
    // (CI runs both page tests at once on two cores) can come before the page's first
    // fetch of the run has answered; the run stays live for a minute, so look again.
    let dom = tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        for _ in 0..5 {
            dom = rendered(&url);
            if !dom.contains(r#"<div id="run" data-status="">"#) {
                break;
            }
        }
        dom
    })
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

/// A screenshot of the page, as RGB(A) pixels, once its script has run.
fn screenshot(url: &str) -> (png::OutputInfo, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let flags = [
        "--hide-scrollbars".to_owned(),
        "--window-size=1200,800".to_owned(),
        format!("--screenshot={}", shot.display()),
    ];
    chromium(dir.path(), url, &flags);
    if let Ok(keep) = std::env::var("FANFARE_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info, pixels)
}

/// Pixels of about colour `rgb`.
fn count(info: &png::OutputInfo, pixels: &[u8], rgb: [u8; 3]) -> usize {
    let step = info.color_type.samples();
    pixels
        .chunks(step)
        .filter(|p| p.len() >= 3 && (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 6))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn a_screenshot_of_a_finished_run_shows_its_bars_in_the_colour_of_success() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "code"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let url = format!("{}/#{id}", s.base);
    let (info, pixels) = tokio::task::spawn_blocking(move || screenshot(&url))
        .await
        .unwrap();
    let ok = count(&info, &pixels, [0x2e, 0x8b, 0x57]);
    let running = count(&info, &pixels, [0x2e, 0x86, 0xc1]);
    // Two finished bars (and the run's badge) in green, hundreds of pixels each; no
    // bar left in the colour of a branch still running.
    assert!(ok > 2_000, "{ok} green pixels");
    assert_eq!(running, 0, "{running} pixels of a running bar");
    s.stop().await;
}

/// Serves `html` to every request on 127.0.0.2 (another origin than the server's,
/// on the same machine) until the task is dropped; returns its URL.
async fn attacker_page(html: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn regression_a_page_of_another_origin_cannot_start_runs_in_a_real_browser() {
    // The probe's page on 127.0.0.2 started a 200-branch run on a tokenless loopback
    // server with a `text/plain` POST, which needs no preflight.
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let target = s.base.clone();
    let html = format!(
        r#"<!doctype html><body><form id="f" method="post" action="{target}/v1/runs" enctype="text/plain">
<input name='{{"input": "form", "agents": ["fast"], "merge": "none", "x": "' value='"}}'></form>
<script>
const run = JSON.stringify({{input: "page", agents: ["fast"], merge: "none"}});
fetch("{target}/v1/runs", {{method: "POST", mode: "no-cors", headers: {{"Content-Type": "text/plain"}}, body: run}});
fetch("{target}/v1/runs", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: run}}).catch(() => {{}});
fetch("{target}/v1/runs/run-1/repair", {{method: "POST", mode: "no-cors"}});
setTimeout(() => document.getElementById("f").submit(), 500);
</script></body>"#
    );
    let (url, page) = attacker_page(html).await;
    let dom_dir = dir.path().to_owned();
    tokio::task::spawn_blocking(move || chromium(&dom_dir, &url, &["--dump-dom".to_owned()]))
        .await
        .unwrap();
    page.abort();
    let runs = get_json(format!("{}/v1/runs", s.base)).await;
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        0,
        "a page of another origin started runs: {runs}"
    );
    assert_eq!(s.fast.started.load(std::sync::atomic::Ordering::SeqCst), 0);
    s.stop().await;
}
