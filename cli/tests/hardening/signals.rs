//! Stopping on a signal: what is in flight is cancelled, what ended is kept.

use super::*;

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn regression_ctrl_c_in_batch_cancels_the_calls_in_flight_and_keeps_what_finished() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency: Duration::from_secs(60),
            ..Default::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let docs = docs(dir.path(), 4);
    let out = dir.path().join("out.jsonl");
    let url = format!("{}/v1", mock.url());
    let child = batch(
        &agents,
        &docs,
        &out,
        &[
            "--provider",
            "openai",
            "--base-url",
            &url,
            "--concurrency",
            "2",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let t0 = Instant::now();
    while mock.stats().in_flight < 4 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        mock.stats().in_flight,
        4,
        "two documents × two agents in flight"
    );
    signal(&child, "-INT");
    let stopped = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "it did not wait for the calls"
    );
    assert!(stderr(&output).contains("resume"), "{}", stderr(&output));
    let t1 = Instant::now();
    while mock.stats().aborted < 4 && t1.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        mock.stats().aborted,
        4,
        "the calls in flight were cancelled, not billed"
    );
    drop(mock);
}

#[test]
fn regression_sigterm_cancels_a_run_and_exits_143() {
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 60_000);
    let child = fanfare()
        .args(["run", "--agents"])
        .arg(&agents)
        .arg("a task")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    signal(&child, "-TERM");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    assert!(stderr(&output).contains("cancelled"), "{}", stderr(&output));
}

#[test]
fn regression_ctrl_c_in_a_run_threw_away_the_branches_that_had_answered() {
    // Ctrl-C printed nothing: the answers already paid for were lost. Now the run
    // is stopped and its report printed, the quick branch's answer in it.
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    for (name, ms) in [("quick", 10), ("slow", 60_000)] {
        let spec = format!("name = \"{name}\"\nprompt = \"p\"\n[sim]\nlatency_ms = {ms}\n");
        std::fs::write(agents.join(format!("{name}.toml")), spec).unwrap();
    }
    let child = fanfare()
        .args(["run", "--json", "--agents"])
        .arg(&agents)
        .arg("a task")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Time enough to start and for `quick` (10 ms) to answer, even on a busy machine.
    std::thread::sleep(Duration::from_millis(3000));
    signal(&child, "-INT");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("a report on stdout ({e}): {}", stderr(&output)));
    let outcome = |step: &str| {
        report["branches"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["step"] == step)
            .map(|b| b["outcome"].clone())
            .unwrap()
    };
    assert_eq!(outcome("quick")["status"], "ok", "{report}");
    assert_eq!(outcome("slow")["reason"]["kind"], "stopped", "{report}");
    assert!(
        stderr(&output).contains("1 branch(es) that had answered"),
        "{}",
        stderr(&output)
    );
}

/// Whether process `pid` is gone (or a zombie no one has reaped yet).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[test]
fn regression_an_mcp_server_dies_with_a_fanfare_killed_by_sigkill() {
    // After `kill -9` of the process, its MCP server lived on (and finished the
    // call in flight, whose outcome the journal then called unknown).
    let dir = tempfile::tempdir().unwrap();
    let agents = agents(dir.path(), 1);
    let pid_file = dir.path().join("server.pid");
    // A server that never answers the handshake: the run waits for it.
    let server = format!(
        "slow=sh -c 'echo $$ > {}; exec sleep 600'",
        pid_file.display()
    );
    let mut child = fanfare()
        .args(["run", "--agents"])
        .arg(&agents)
        .args(["--mcp", &server, "a task"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let pid = loop {
        let pid = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if !pid.trim().is_empty() {
            break pid.trim().to_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the server never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!gone(&pid), "the server runs");
    signal(&child, "-KILL");
    child.wait().unwrap();
    let killed = Instant::now();
    while !gone(&pid) && killed.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive = !gone(&pid);
    if alive {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
    assert!(!alive, "the MCP server {pid} outlived fanfare");
}
