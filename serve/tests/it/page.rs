//! The live page in a real browser (Debian's chromium, headless).

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
    let s = start(&dir.path().join("j.db"), Options::held()).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_streamed(&s.base, &id, "event: branch_finished").await;
    let url = format!("{}/#{id}", s.base);
    // Chromium dumps the DOM when its virtual-time budget is spent, which under load
    // (CI runs the page tests two at a time on two cores) can come before the page
    // has read the run's events; the run stays live for a minute, so look again.
    let (dom, (info, pixels)) = tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        for _ in 0..5 {
            dom = rendered(&url);
            if dom.contains(r#"data-key="1""#) {
                break;
            }
        }
        (dom, screenshot(&url, "running"))
    })
    .await
    .unwrap();
    // The slow branch's bar grows in the colour of a running branch.
    let running = count(&info, &pixels, [0x2e, 0x86, 0xc1]);
    assert!(running > 2_000, "{running} pixels of a running bar");
    // The run is live: the fast branch is done, the slow one still running with the
    // first piece of its answer shown.
    assert!(
        dom.contains(r#"<div id="run" data-status="running">"#),
        "{dom}"
    );
    let fast = row(&dom, "0");
    assert!(fast.starts_with(r#" data-outcome="ok">"#), "{fast}");
    assert!(
        fast.contains(r#"<div class="text">fast read: the plan</div>"#),
        "{fast}"
    );
    let slow = row(&dom, "1");
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
    // The header counts as the branches end; a running run can be cancelled, not
    // repaired; the bars stand on a time axis.
    assert_eq!(fact(&dom, "branches"), "1 of 2 ok (1 running)");
    assert!(shown(&dom, "cancel"), "{dom}");
    assert!(!shown(&dom, "repair"), "{dom}");
    assert!(dom.contains(r#"class="tick""#), "no time axis: {dom}");
    s.stop().await;
}

/// The text of the header's fact `name` (`branches`, `tokens`, `cost`, …).
fn fact(dom: &str, name: &str) -> String {
    let after = dom
        .split(&format!(r#"data-fact="{name}""#))
        .nth(1)
        .unwrap_or_else(|| panic!("no fact `{name}`: {dom}"));
    let text = &after[after.find('>').unwrap() + 1..];
    text[..text.find("</dd>").unwrap()].to_owned()
}

/// The markup of the row `key` (`0`, `1.2` for a map's item, `merge`).
fn row<'a>(dom: &'a str, key: &str) -> &'a str {
    let after = dom
        .split(&format!(r#"data-key="{key}""#))
        .nth(1)
        .unwrap_or_else(|| panic!("no row `{key}`: {dom}"));
    &after[..after.find("data-key=").unwrap_or(after.len())]
}

/// The page of run `id` once its script has run: its DOM and a screenshot.
async fn page(base: &str, id: &str, name: &'static str) -> (String, (png::OutputInfo, Vec<u8>)) {
    let url = format!("{base}/#{id}");
    tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        // See the live page test: under load the first dump can come too early.
        for _ in 0..5 {
            dom = rendered(&url);
            if dom.contains(r#"class="tick""#) {
                break;
            }
        }
        (dom, screenshot(&url, name))
    })
    .await
    .unwrap()
}

/// Submits `body`, waits until the run is `status`, and shows its page.
async fn ended(
    s: &Running,
    body: serde_json::Value,
    status: &str,
    name: &'static str,
) -> (String, (png::OutputInfo, Vec<u8>)) {
    let (_, answer) = submit(&s.base, body).await;
    let id = answer["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, status).await;
    page(&s.base, &id, name).await
}

/// Whether the button `id` is shown.
fn shown(dom: &str, id: &str) -> bool {
    let tag = dom
        .split(&format!(r#"<button id="{id}""#))
        .nth(1)
        .unwrap_or_else(|| panic!("no button `{id}`: {dom}"));
    !tag[..tag.find('>').unwrap()].contains("hidden")
}

/// Cost as the page writes it.
fn money(usd: f64) -> String {
    if usd < 0.01 {
        format!("${usd:.4}")
    } else {
        format!("${usd:.2}")
    }
}

/// A screenshot of the page, as RGB(A) pixels, once its script has run; kept as
/// `$FANFARE_KEEP_SCREENSHOTS/NAME.png` when that is set, to be looked at.
fn screenshot(url: &str, name: &str) -> (png::OutputInfo, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("page.png");
    let flags = [
        "--hide-scrollbars".to_owned(),
        "--window-size=1200,800".to_owned(),
        format!("--screenshot={}", shot.display()),
    ];
    chromium(dir.path(), url, &flags);
    if let Ok(keep) = std::env::var("FANFARE_KEEP_SCREENSHOTS") {
        std::fs::copy(
            &shot,
            std::path::Path::new(&keep).join(format!("{name}.png")),
        )
        .unwrap();
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
async fn a_finished_run_shows_its_reports_numbers_bars_in_the_colour_of_success_and_its_merge() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "the plan", "agents": ["fast", "slow"], "merge": "code"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_status(&s.base, &id, "succeeded").await;
    let report = get(&s.base, &id).await["report"].clone();
    let (dom, (info, pixels)) = page(&s.base, &id, "finished").await;
    // The header's figures are the report's.
    let usage = &report["totals"]["usage"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(fact(&dom, "branches"), "2 of 2 ok");
    assert_eq!(
        fact(&dom, "tokens"),
        format!("{} ({input} in, {output} out)", input + output)
    );
    let cost = report["totals"]["cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0);
    assert_eq!(fact(&dom, "cost"), money(cost));
    assert_eq!(fact(&dom, "workflow"), "fan-out to fast, slow");
    // The policy the run ran under (the server's default: none was asked for).
    let policy = match report["policy"]["kind"].as_str() {
        Some("fail_fast") => "fail-fast",
        _ => "partial",
    };
    assert!(fact(&dom, "policy").starts_with(policy), "{dom}");
    // Each branch: its duration, tokens, cost and attempts.
    let fast = &report["branches"][0];
    let tok = fast["usage"]["input_tokens"].as_u64().unwrap()
        + fast["usage"]["output_tokens"].as_u64().unwrap();
    let stats = row(&dom, "0");
    assert!(
        stats.contains(&format!(
            "{tok} tok · {} · 1 attempt",
            money(fast["cost_usd"].as_f64().unwrap())
        )),
        "{stats}"
    );
    // The merge has its row; nothing to cancel or repair.
    assert!(row(&dom, "merge").contains("merge (code)"), "{dom}");
    assert!(!shown(&dom, "cancel"), "{dom}");
    assert!(!shown(&dom, "repair"), "{dom}");
    // The run list: what it was asked, how it went.
    let listed = dom.split(&format!(r#"data-id="{id}""#)).nth(1).unwrap();
    assert!(
        listed.contains("the plan") && listed.contains("2/2 ok"),
        "{listed}"
    );
    let ok = count(&info, &pixels, [0x2e, 0x8b, 0x57]);
    let running = count(&info, &pixels, [0x2e, 0x86, 0xc1]);
    // Two finished bars (and the run's badges) in green, hundreds of pixels each; no
    // bar left in the colour of a branch still running (the legend's swatch is
    // ~120 pixels).
    assert!(ok > 2_000, "{ok} green pixels");
    assert!(running < 300, "{running} pixels of a running bar");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn a_run_that_missed_its_quorum_shows_why_each_branch_failed_and_offers_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let body = json!({"input": "slow fails", "agents": ["fast", "slow"], "policy": "partial:2", "merge": "none"});
    let (dom, (info, pixels)) = ended(&s, body, "failed", "failed-partial").await;
    assert_eq!(fact(&dom, "branches"), "1 of 2 ok");
    assert!(fact(&dom, "policy").contains("quorum 2"), "{dom}");
    assert!(fact(&dom, "why").contains("quorum"), "{dom}");
    let slow = row(&dom, "1");
    assert!(slow.starts_with(r#" data-outcome="failed">"#), "{slow}");
    assert!(
        slow.contains("asked to fail"),
        "the error text is shown: {slow}"
    );
    assert!(row(&dom, "0").contains("fast read: slow fails"), "{dom}");
    assert!(shown(&dom, "repair"), "{dom}");
    assert!(!shown(&dom, "cancel"), "{dom}");
    // `fast` took a millisecond of the run's ~50: a sliver of green beside the
    // legend's swatch (~120 pixels); `slow`'s bar is red, the whole width.
    let ok = count(&info, &pixels, [0x2e, 0x8b, 0x57]);
    let failed = count(&info, &pixels, [0xc0, 0x39, 0x2b]);
    assert!(
        ok > 150 && failed > 3_000,
        "{ok} green, {failed} red pixels"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn a_fail_fast_run_shows_the_branch_that_ended_it_and_the_ones_it_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::held()).await;
    let body = json!({"input": "fast fails", "agents": ["fast", "slow"], "policy": "fail-fast", "merge": "none"});
    let (dom, (info, pixels)) = ended(&s, body, "failed", "fail-fast").await;
    assert!(fact(&dom, "policy").starts_with("fail-fast"), "{dom}");
    assert_eq!(fact(&dom, "branches"), "0 of 2 ok");
    assert!(
        row(&dom, "0").starts_with(r#" data-outcome="failed">"#),
        "{dom}"
    );
    let slow = row(&dom, "1");
    assert!(slow.starts_with(r#" data-outcome="cancelled">"#), "{slow}");
    assert!(slow.contains("fail-fast"), "why it was cancelled: {slow}");
    assert!(shown(&dom, "repair"), "{dom}");
    let failed = count(&info, &pixels, [0xc0, 0x39, 0x2b]);
    let cancelled = count(&info, &pixels, [0x7f, 0x8c, 0x8d]);
    assert!(
        failed > 300 && cancelled > 1_000,
        "{failed} red, {cancelled} grey pixels"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn a_map_run_shows_a_row_per_item_then_the_step_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("j.db"), Options::default()).await;
    let (dom, (info, pixels)) = ended(
        &s,
        json!({"input": "the plan", "workflow": "each", "items": ["one", "fast fails", "three"]}),
        "succeeded",
        "map",
    )
    .await;
    assert_eq!(fact(&dom, "workflow"), "each");
    assert_eq!(fact(&dom, "items"), "3 given");
    assert_eq!(fact(&dom, "branches"), "3 of 4 ok");
    for (key, label, outcome) in [
        ("0.0", "per #1 · one", "ok"),
        ("0.1", "per #2 · fast fails", "failed"),
        ("0.2", "per #3 · three", "ok"),
        ("1", "all", "ok"),
    ] {
        let r = row(&dom, key);
        assert!(
            r.starts_with(&format!(r#" data-outcome="{outcome}">"#)),
            "{key}: {r}"
        );
        assert!(r.contains(&format!(r#"title="{label}""#)), "{key}: {r}");
    }
    let ok = count(&info, &pixels, [0x2e, 0x8b, 0x57]);
    assert!(ok > 3_000, "{ok} green pixels");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium: cargo test -p fanfare-serve --test it -- --ignored (CI runs it)"]
async fn a_tool_call_waiting_for_approval_shows_approve_and_reject_buttons_then_its_decision() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    // Its model holds its answer a minute after the tool answered: the run is
    // still live when the page looks again.
    let (fanfare, _) = crate::tools::counting_with(std::time::Duration::from_secs(60), true).await;
    let options = Options {
        drain: std::time::Duration::ZERO,
        ..Options::default()
    };
    let s = start_on(&db, options, fanfare).await;
    let (_, body) = submit(
        &s.base,
        json!({"input": "approve-me", "agents": ["counter"], "merge": "none"}),
    )
    .await;
    let id = body["id"].as_str().unwrap().to_owned();
    until_streamed(&s.base, &id, "event: approval").await;
    let url = format!("{}/#{id}", s.base);
    let waiting_url = url.clone();
    let dom = tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        for _ in 0..5 {
            dom = rendered(&waiting_url);
            if dom.contains(r#""key": "approve-me""#) {
                break;
            }
        }
        dom
    })
    .await
    .unwrap();
    let at = dom
        .find(r#"class="approval""#)
        .unwrap_or_else(|| panic!("no approval line: {dom}"));
    let line = &dom[at..dom[at..].find("</div>").map_or(dom.len(), |e| at + e)];
    assert!(line.contains(r#"data-state="pending""#), "{line}");
    assert!(
        line.contains("count · approval 0-1-0 · waits for you"),
        "{line}"
    );
    // The arguments whole, then the buttons (enabled once the arguments are shown).
    assert!(
        line.contains(r#"<pre class="args">{"#) && line.contains(r#""key": "approve-me""#),
        "{line}"
    );
    assert!(
        line.contains(r#"data-decision="approve">Approve</button>"#)
            && line.contains(r#"data-decision="reject">Reject</button>"#),
        "{line}"
    );
    // Decided (as the button would), the page shows the decision and no buttons.
    let r = client()
        .post(format!("{}/v1/runs/{id}/approvals/0-1-0", s.base))
        .json(&json!({"decision": "approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    until_streamed(&s.base, &id, "event: tool_finished").await;
    let dom = tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        for _ in 0..5 {
            dom = rendered(&url);
            if dom.contains(r#"data-state="approved""#) {
                break;
            }
        }
        dom
    })
    .await
    .unwrap();
    let at = dom.find(r#"class="approval""#).expect(&dom);
    let line = &dom[at..dom[at..].find("</div>").map_or(dom.len(), |e| at + e)];
    assert!(
        line.contains(r#"data-state="approved""#) && !line.contains("<button"),
        "{line}"
    );
    s.stop().await;
}
