//! MCP servers as tools, against servers nobody on this project wrote: the reference
//! servers `server-everything` and `server-filesystem` from the npm registry, over
//! stdio and streamable HTTP, and `tests/mcp/probe-server.mjs` (on the official
//! TypeScript SDK), which logs what happened to it. Those tests are ignored by
//! default because they need Node and the packages; CI runs them with
//! `FANFARE_MCP_SERVERS=$(scripts/mcp-servers install) cargo test --test it -- --ignored mcp_`.
//! The ones that need nothing but `/bin/sh` always run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fanfare::agent::spec::AgentSpec;
use fanfare::agent::tools::mcp::McpServer;
use fanfare::provider::{Completion, Scripted, ToolCall};
use fanfare::supervision::{RestartIntensity, SupervisorEvent};
use fanfare::{Fanfare, RunRequest};

fn servers() -> PathBuf {
    PathBuf::from(std::env::var("FANFARE_MCP_SERVERS").expect(
        "FANFARE_MCP_SERVERS must name the directory `scripts/mcp-servers install` printed",
    ))
}

fn everything() -> McpServer {
    let bin = servers().join("node_modules/.bin/mcp-server-everything");
    McpServer::stdio("everything", bin.display().to_string(), ["stdio"]).unwrap()
}

/// The probe server, logging to `log`.
fn probe(log: &std::path::Path) -> McpServer {
    let script = servers().join("probe-server.mjs");
    McpServer::stdio(
        "probe",
        "node",
        [script.display().to_string(), log.display().to_string()],
    )
    .unwrap()
}

/// `e` and its sources, as a user reads them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A model turn that calls `calls` (id, tool, arguments).
fn calling(calls: &[(&str, &str, &str)]) -> Completion {
    Completion {
        model: "scripted-1".into(),
        attempts: 1,
        tool_calls: calls
            .iter()
            .map(|(id, name, args)| ToolCall::from_raw(*id, *name, args))
            .collect(),
        ..Completion::default()
    }
}

fn agent(tools: &[&str]) -> AgentSpec {
    let mut spec = AgentSpec::new("worker", "You use the tools you are given.");
    spec.tools = tools.iter().map(|t| t.to_string()).collect();
    spec
}

/// Runs `task` once on a runtime of `script`, `server` and the agent offering
/// `tools`, then shuts it down.
async fn run_once(
    script: &Scripted,
    server: McpServer,
    tools: &[&str],
    task: &str,
) -> fanfare::RunReport {
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .mcp(server)
        .agent(agent(tools))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out(task, ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    report
}

/// What the model was sent back for its first turn's calls.
fn results_sent(script: &Scripted) -> Vec<(String, bool)> {
    let asked = script.requests();
    let second = asked.get(1).expect("a second turn");
    second
        .messages
        .last()
        .unwrap()
        .tool_results
        .iter()
        .map(|r| (r.content.clone(), r.is_error))
        .collect()
}

/// The probe's log, once it holds `line` (it is written after the fact).
async fn log_with(log: &std::path::Path, line: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| l == line) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the probe never logged `{line}`:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_everything_over_stdio_offers_its_tools_and_answers_a_call() {
    let script = Scripted::new();
    script.push_completion(calling(&[(
        "c1",
        "everything__get-sum",
        r#"{"a": 2, "b": 3}"#,
    )]));
    let report = run_once(&script, everything(), &["everything.*"], "What is 2 + 3?").await;
    assert!(report.status.is_success(), "{}", report.render());
    let offered: Vec<String> = script.requests()[0]
        .tools
        .iter()
        .map(|t| t.name.clone())
        .collect();
    assert!(
        offered.contains(&"everything__get-sum".to_owned())
            && offered.contains(&"everything__echo".to_owned()),
        "{offered:?}"
    );
    assert_eq!(
        results_sent(&script),
        [("The sum of 2 and 3 is 5.".to_owned(), false)]
    );
    let out = report.branches[0].outcome.output().unwrap();
    assert_eq!((out.tool_calls, out.tool_errors), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_filesystem_reads_inside_its_root_and_refuses_outside() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("notes.md"), "the launch is on Tuesday").unwrap();
    let bin = servers().join("node_modules/.bin/mcp-server-filesystem");
    let fs = McpServer::stdio(
        "fs",
        bin.display().to_string(),
        [root.path().display().to_string()],
    )
    .unwrap();
    let inside = serde_json::json!({ "path": root.path().join("notes.md") }).to_string();
    let script = Scripted::new();
    script.push_completion(calling(&[
        ("c1", "fs__read_text_file", &inside),
        ("c2", "fs__read_text_file", r#"{"path": "/etc/hostname"}"#),
    ]));
    let report = run_once(&script, fs, &["fs.read_text_file"], "When is the launch?").await;
    let sent = results_sent(&script);
    assert_eq!(sent[0], ("the launch is on Tuesday".to_owned(), false));
    assert!(sent[1].1, "outside the root is an error: {sent:?}");
    assert!(sent[1].0.contains("denied"), "{sent:?}");
    assert_eq!(script.requests()[0].tools.len(), 1, "one tool named");
    let out = report.branches[0].outcome.output().unwrap();
    assert_eq!((out.tool_calls, out.tool_errors), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_parallel_calls_of_one_turn_are_in_flight_together() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    let calls: Vec<(String, String)> = (1..=5)
        .map(|i| (format!("c{i}"), r#"{"ms": 500}"#.to_owned()))
        .collect();
    let calls: Vec<(&str, &str, &str)> = calls
        .iter()
        .map(|(id, args)| (id.as_str(), "probe__sleep", args.as_str()))
        .collect();
    script.push_completion(calling(&calls));
    let report = run_once(&script, probe(&log), &["probe.sleep"], "Wait.").await;
    assert!(report.status.is_success(), "{}", report.render());
    // The server itself saw five calls in flight at once.
    log_with(&log, "start 5").await;
    assert!(results_sent(&script)
        .iter()
        .all(|(text, err)| text == "done" && !err));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_a_branch_deadline_cancels_a_long_tool_and_the_server_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    script.push_completion(calling(&[("c1", "probe__sleep", r#"{"ms": 10000}"#)]));
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .mcp(probe(&log))
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    let request =
        RunRequest::fan_out("Wait long.", ["worker"]).branch_timeout(Duration::from_secs(2));
    let started = std::time::Instant::now();
    let report = fanfare.run(request).await.unwrap();
    let took = started.elapsed();
    let text = log_with(&log, "cancelled").await;
    fanfare.shutdown().await;
    assert!(!text.contains("finished"), "{text}");
    assert!(
        took < Duration::from_secs(9),
        "{took:?}: {}",
        report.render()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_a_server_that_dies_mid_call_fails_that_call_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    script.push_completion(calling(&[("c1", "probe__crash", "{}")]));
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .mcp(probe(&log))
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    let mut events = fanfare.supervision_events();
    let first = fanfare
        .run(RunRequest::fan_out("Crash it.", ["worker"]))
        .await
        .unwrap();
    let sent = results_sent(&script);
    assert!(sent[0].1, "the call that killed it is an error: {sent:?}");
    assert!(sent[0].0.contains("probe"), "{sent:?}");
    assert!(
        first.status.is_success(),
        "the branch goes on: {}",
        first.render()
    );
    // Wait for the restart, then the server answers again.
    let restarted = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(SupervisorEvent::Restarted { agent, .. }) = events.recv().await {
                if agent == "mcp:probe" {
                    break;
                }
            }
        }
    })
    .await;
    assert!(restarted.is_ok(), "mcp:probe was not restarted");
    script.push_completion(calling(&[("c2", "probe__count", "{}")]));
    let second = fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(second.status.is_success(), "{}", second.render());
    let asked = script.requests();
    let answered = asked.last().unwrap().messages.last().unwrap().tool_results[0].clone();
    assert_eq!((answered.content.as_str(), answered.is_error), ("1", false));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("started")).count(),
        2,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_a_server_that_keeps_dying_opens_its_circuit() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .restart_intensity(RestartIntensity {
            max_restarts: 1,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(60),
        })
        .mcp(probe(&log))
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    // The first crash is restarted; the second is one more than the intensity allows.
    let mut events = fanfare.supervision_events();
    for round in 0..2u32 {
        script.push_completion(calling(&[("c", "probe__crash", "{}")]));
        fanfare
            .run(RunRequest::fan_out("Crash it.", ["worker"]))
            .await
            .unwrap();
        let settled = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match events.recv().await {
                    Ok(SupervisorEvent::Restarted { agent, .. })
                        if round == 0 && agent == "mcp:probe" =>
                    {
                        break
                    }
                    Ok(SupervisorEvent::Escalated { agent, .. })
                        if round == 1 && agent == "mcp:probe" =>
                    {
                        break
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    _ => {}
                }
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "round {round}: {:?}\n{}",
            fanfare.status().await,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let status = fanfare.status().await;
    let probe = status.iter().find(|s| s.name == "mcp:probe").unwrap();
    assert!(probe.down.is_some(), "{probe:?}");
    assert_eq!(probe.escalations, 1, "{probe:?}");
    // While its circuit is open a call fails at once, saying why.
    script.push_completion(calling(&[("c", "probe__count", "{}")]));
    fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    let asked = script.requests();
    let answered = asked.last().unwrap().messages.last().unwrap().tool_results[0].clone();
    assert!(answered.is_error, "{answered:?}");
    assert!(answered.content.contains("not connected"), "{answered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_regression_a_server_whose_restart_fails_is_tried_again_until_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let refuse = dir.path().join("refuse");
    // It will not start while `refuse` exists.
    let script_path = servers().join("probe-server.mjs");
    let server = McpServer::stdio(
        "probe",
        "sh",
        [
            "-c".to_owned(),
            format!(
                "test -e '{}' && exit 3; exec node '{}' '{}'",
                refuse.display(),
                script_path.display(),
                log.display()
            ),
        ],
    )
    .unwrap();
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .restart_intensity(RestartIntensity {
            max_restarts: 50,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(1),
        })
        .mcp(server)
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    let mut events = fanfare.supervision_events();
    std::fs::write(&refuse, "").unwrap();
    script.push_completion(calling(&[("c1", "probe__crash", "{}")]));
    fanfare
        .run(RunRequest::fan_out("Crash it.", ["worker"]))
        .await
        .unwrap();
    // Its restarts fail for a while: it says it is down and why (it said "it is
    // restarting"), and a call fails at once instead of waiting on a restart that
    // is not under way.
    let down = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(down) = fanfare.tool_servers_down().into_iter().next() {
                break down;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("never said to be down");
    assert_eq!(down.0, "probe");
    assert!(down.1.contains("its restart failed"), "{}", down.1);
    script.push_completion(calling(&[("c1b", "probe__count", "{}")]));
    let report = fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    let told = script
        .requests()
        .last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .tool_results[0]
        .clone();
    assert!(told.is_error, "{told:?}");
    assert!(
        told.content.contains("is down") && !told.content.contains("restarting"),
        "{}: {}",
        told.content,
        report.render()
    );
    std::fs::remove_file(&refuse).unwrap();
    let restarted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(SupervisorEvent::Restarted { agent, .. }) = events.recv().await {
                if agent == "mcp:probe" {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        restarted.is_ok(),
        "never up again: {:?}",
        fanfare.status().await
    );
    assert_eq!(fanfare.tool_servers_down(), []);
    script.push_completion(calling(&[("c2", "probe__count", "{}")]));
    let report = fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let asked = script.requests();
    let answered = asked.last().unwrap().messages.last().unwrap().tool_results[0].clone();
    assert_eq!((answered.content.as_str(), answered.is_error), ("1", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_regression_a_call_made_while_its_server_restarts_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .mcp(probe(&log))
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    // The crash, then at once a call: it waits for the restart instead of failing
    // (a model told "not connected" spent its turns on instant errors).
    script.push_completion(calling(&[("c1", "probe__crash", "{}")]));
    script.push_completion(Completion {
        text: "crashed".into(),
        model: "m".into(),
        attempts: 1,
        ..Completion::default()
    });
    script.push_completion(calling(&[("c2", "probe__count", "{}")]));
    let first = fanfare
        .run(RunRequest::fan_out("Crash it.", ["worker"]))
        .await
        .unwrap();
    assert!(first.status.is_success(), "{}", first.render());
    let second = fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(second.status.is_success(), "{}", second.render());
    let asked = script.requests();
    let answered = asked.last().unwrap().messages.last().unwrap().tool_results[0].clone();
    assert_eq!(
        (answered.content.as_str(), answered.is_error),
        ("1", false),
        "{answered:?}"
    );
}

/// `server-everything` over streamable HTTP, on a port of its own.
struct HttpEverything(std::process::Child);

impl Drop for HttpEverything {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_regression_an_answer_too_long_to_read_fails_its_call_at_once() {
    // rmcp drops a message of 16 MiB or more and keeps the connection: the call
    // waited for the branch's deadline and was said to be cut by it (probe 9, M5).
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("probe.log");
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .mcp(probe(&log))
        .agent(agent(&["probe.*"]))
        .start()
        .await
        .unwrap();
    script.push_completion(calling(&[(
        "c1",
        "probe__big",
        &format!(r#"{{"bytes": {}}}"#, 17 * 1024 * 1024),
    )]));
    let request =
        RunRequest::fan_out("Read it.", ["worker"]).branch_timeout(Duration::from_secs(600));
    let report = fanfare.run(request).await.unwrap();
    assert!(report.status.is_success(), "{}", report.render());
    let told = script
        .requests()
        .last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .tool_results[0]
        .clone();
    assert!(told.is_error, "{told:?}");
    assert!(
        told.content.contains("more than 16777216 bytes"),
        "{}",
        told.content
    );
    // The connection goes on.
    script.push_completion(calling(&[("c2", "probe__count", "{}")]));
    let report = fanfare
        .run(RunRequest::fan_out("Count.", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    assert!(report.status.is_success(), "{}", report.render());
    let told = script
        .requests()
        .last()
        .unwrap()
        .messages
        .last()
        .unwrap()
        .tool_results[0]
        .clone();
    assert_eq!((told.content.as_str(), told.is_error), ("1", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the MCP servers: FANFARE_MCP_SERVERS=$(scripts/mcp-servers install)"]
async fn mcp_everything_over_streamable_http_answers_a_call() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = servers().join("node_modules/.bin/mcp-server-everything");
    let _server = HttpEverything(
        std::process::Command::new(bin)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = Scripted::new();
    script.push_completion(calling(&[(
        "c1",
        "web__echo",
        r#"{"message": "over http"}"#,
    )]));
    let report = run_once(
        &script,
        McpServer::http("web", format!("http://127.0.0.1:{port}/mcp")).unwrap(),
        &["web.echo"],
        "Echo.",
    )
    .await;
    assert!(report.status.is_success(), "{}", report.render());
    let sent = results_sent(&script);
    assert!(!sent[0].1 && sent[0].0.contains("over http"), "{sent:?}");
}

#[tokio::test]
async fn mcp_a_server_that_does_not_start_fails_start_naming_it_and_why() {
    // (server, what the error must say besides its name)
    let cases = [
        (
            McpServer::stdio("tools", "/nonexistent/mcp-server", ["--x"]).unwrap(),
            "/nonexistent/mcp-server",
        ),
        (
            McpServer::stdio(
                "broken",
                "/bin/sh",
                ["-c", "echo 'config file missing' >&2; exit 1"],
            )
            .unwrap()
            .handshake_timeout(Duration::from_secs(10)),
            "config file missing",
        ),
        // It sees none of this process's environment but what programs need (the
        // API keys are here), and what it is given.
        (
            McpServer::stdio(
                "envcheck",
                "/bin/sh",
                [
                    "-c",
                    "echo \"[${CARGO_MANIFEST_DIR:-unset}][${GIVEN:-unset}][${PATH:+path}]\" >&2; exit 1",
                ],
            )
            .unwrap()
            .env("GIVEN", "given")
            .handshake_timeout(Duration::from_secs(10)),
            "[unset][given][path]",
        ),
    ];
    assert!(
        std::env::var_os("CARGO_MANIFEST_DIR").is_some(),
        "cargo sets it for tests: the check below needs a variable this process has"
    );
    for (server, why) in cases {
        let name = format!("MCP server `{}`", server.name());
        let Err(e) = Fanfare::builder(Arc::new(Scripted::new()))
            .mcp(server)
            .start()
            .await
        else {
            panic!("start fails")
        };
        let text = chain(&e);
        assert!(text.contains(&name) && text.contains(why), "{text}");
    }
}

#[tokio::test]
async fn mcp_a_spec_naming_an_unknown_server_or_tool_is_refused_with_what_there_is() {
    let script = Scripted::new();
    let fanfare = Fanfare::builder(Arc::new(script.clone()))
        .agent(agent(&["fs.*"]))
        .start()
        .await
        .unwrap();
    let report = fanfare
        .run(RunRequest::fan_out("x", ["worker"]))
        .await
        .unwrap();
    fanfare.shutdown().await;
    let text = report.render();
    assert!(text.contains("MCP server `fs`"), "{text}");
    assert!(script.requests().is_empty(), "no model call");
}
