//! A cluster of real processes on 127.0.0.1: `fanfare serve --cluster-listen` and
//! `fanfare worker --join`. Branches spread over the workers and name their node, one
//! admission gate holds for the whole cluster, and a worker killed (or frozen) mid-run
//! ends its branches `NodeDown`, which the run's policy then handles.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{http, status_of};
use serde_json::Value;

/// A process whose stderr is collected as it goes.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(args: &[String]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Proc { child, log }
    }

    /// The first line containing `text`, waiting for it.
    fn line(&mut self, text: &str) -> String {
        let started = Instant::now();
        loop {
            if let Some(l) = self.log.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!(
                    "exited ({exit}) before saying {text:?}: {:?}",
                    self.log.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never said {text:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An orchestrator with its files.
struct Orchestrator {
    _dir: tempfile::TempDir,
    _serve: Proc,
    /// Its HTTP address.
    addr: String,
    /// Its cluster address.
    cluster: String,
    cookie: PathBuf,
    agents: PathBuf,
    provider: Vec<String>,
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Agent `a` (simulated latency `ms`) in a spec directory.
fn agents(dir: &Path, ms: u64) -> PathBuf {
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    let spec = format!("name = \"a\"\nprompt = \"p\"\n[sim]\nlatency_ms = {ms}\n");
    std::fs::write(agents.join("a.toml"), spec).unwrap();
    agents
}

impl Orchestrator {
    /// `serve` with a cluster listener; `provider` flags are shared with the workers.
    fn start(provider: &[String], extra: &[&str]) -> Orchestrator {
        let dir = tempfile::tempdir().unwrap();
        let cookie = dir.path().join("cookie");
        std::fs::write(&cookie, "a shared secret, long enough\n").unwrap();
        let agents = agents(dir.path(), 50);
        let mut args = strings(&["serve", "--listen", "127.0.0.1:0", "--db"]);
        args.push(dir.path().join("runs.db").display().to_string());
        args.extend(strings(&[
            "--cluster-listen",
            "127.0.0.1:0",
            "--cookie-file",
        ]));
        args.push(cookie.display().to_string());
        args.push("--agents".into());
        args.push(agents.display().to_string());
        args.extend(provider.iter().cloned());
        args.extend(strings(extra));
        let mut serve = Proc::spawn(&args);
        let cluster = after(
            &serve.line("accepting workers on "),
            "accepting workers on ",
        );
        let addr = after(&serve.line("serving on http://"), "serving on http://");
        Orchestrator {
            _dir: dir,
            _serve: serve,
            addr,
            cluster,
            cookie,
            agents,
            provider: provider.to_vec(),
        }
    }

    /// A worker that has joined.
    fn worker(&self, name: &str) -> Proc {
        let mut worker = Proc::spawn(&self.worker_args(name, &[]));
        worker.line("joined");
        worker
    }

    /// Workers `w1` and `w2`, once the orchestrator lists both.
    fn two_workers(&self) -> [Proc; 2] {
        let workers = [self.worker("w1"), self.worker("w2")];
        self.until("both workers up", |s| {
            s["nodes"].as_array().unwrap().len() == 3
        });
        workers
    }

    fn worker_args(&self, name: &str, extra: &[String]) -> Vec<String> {
        let mut args = strings(&["worker", "--join", &self.cluster, "--name", name]);
        args.extend(extra.iter().cloned());
        args.push("--cookie-file".into());
        args.push(self.cookie.display().to_string());
        args.push("--agents".into());
        args.push(self.agents.display().to_string());
        args.extend(self.provider.iter().cloned());
        args
    }

    fn cluster_status(&self) -> Value {
        let (code, body) = http(&self.addr, "GET", "/v1/cluster", "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until `cond` holds of the cluster's status.
    fn until(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let status = self.cluster_status();
            if cond(&status) {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what}: {status:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn submit(&self, body: &str) -> String {
        let (code, answer) = http(&self.addr, "POST", "/v1/runs", body);
        assert_eq!(code, 202, "{answer}");
        let v: Value = serde_json::from_str(&answer).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// The run once it ended.
    fn ended(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let run = status_of(&self.addr, id);
            if run["status"] == "succeeded" || run["status"] == "failed" {
                return run;
            }
            assert!(started.elapsed() < Duration::from_secs(120), "{run}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, name: &str) -> f64 {
        let (_, text) = http(&self.addr, "GET", "/metrics", "");
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}

fn after(line: &str, marker: &str) -> String {
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A fan-out of `n` branches of agent `a`, no merge.
fn fan_out(n: usize, policy: &str) -> String {
    let agents = vec!["\"a\""; n].join(",");
    format!(r#"{{"input": "q", "agents": [{agents}], "merge": "none", "policy": "{policy}"}}"#)
}

/// Branches per node.
fn by_node(run: &Value) -> HashMap<String, usize> {
    let mut count = HashMap::new();
    for b in run["report"]["branches"].as_array().unwrap() {
        let node = b["node"].as_str().unwrap_or("(none)").to_owned();
        *count.entry(node).or_default() += 1;
    }
    count
}

fn failed(run: &Value) -> Vec<&Value> {
    run["report"]["branches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| !b["error"].is_null())
        .collect()
}

fn node(status: &Value, name: &str) -> Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|n| n["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn mock(
    latency: Duration,
    max_concurrency: Option<usize>,
) -> (tokio::runtime::Runtime, fanfare_mock::MockServer) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt
        .block_on(fanfare_mock::MockServer::start(fanfare_mock::MockConfig {
            latency,
            max_concurrency,
            ..Default::default()
        }))
        .unwrap();
    (rt, mock)
}

/// The provider flags for the mock, shared by the server and its workers (the gate's
/// limits go to the server alone); the key file lives in `dir`.
fn on_mock(mock: &fanfare_mock::MockServer, dir: &Path) -> Vec<String> {
    let key = dir.join("key");
    std::fs::write(&key, "test-key").unwrap();
    let mut flags = strings(&["--provider", "anthropic", "--base-url", &mock.url()]);
    flags.push("--api-key-file".into());
    flags.push(key.display().to_string());
    flags
}

#[test]
fn a_thousand_branches_spread_over_two_workers_and_each_names_its_node() {
    let o = Orchestrator::start(&[], &["--local-capacity", "0"]);
    let _workers = o.two_workers();
    let run = o.ended(&o.submit(&fan_out(1000, "fail-fast")));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(failed(&run).is_empty());
    let nodes = by_node(&run);
    assert_eq!(nodes.values().sum::<usize>(), 1000, "{nodes:?}");
    assert!(nodes.get("w1").copied().unwrap_or(0) >= 100, "{nodes:?}");
    assert!(nodes.get("w2").copied().unwrap_or(0) >= 100, "{nodes:?}");
}

#[test]
fn one_gate_for_the_cluster_a_50_in_flight_limit_stays_50_over_three_nodes() {
    let (_rt, mock) = mock(Duration::from_millis(100), Some(50));
    let dir = tempfile::tempdir().unwrap();
    let provider = on_mock(&mock, dir.path());
    let o = Orchestrator::start(
        &provider,
        &["--local-capacity", "100", "--max-concurrency", "50"],
    );
    let _workers = o.two_workers();
    let run = o.ended(&o.submit(&fan_out(1000, "fail-fast")));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(failed(&run).is_empty());
    let nodes = by_node(&run);
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let stats = mock.stats();
    assert!(stats.max_in_flight <= 50, "{stats:?}");
    assert_eq!(stats.by_status.get(&429), None, "{stats:?}");
    let status = o.until("leases returned", |s| s["leases_held"] == 0);
    assert_eq!(status["leases_held"], 0);
}

#[test]
fn a_worker_killed_mid_run_is_node_down_retried_elsewhere_under_partial_and_fails_a_fail_fast_run()
{
    let (_rt, mock) = mock(Duration::from_secs(2), None);
    let dir = tempfile::tempdir().unwrap();
    let provider = on_mock(&mock, dir.path());
    let o = Orchestrator::start(
        &provider,
        &["--local-capacity", "0", "--crash-retries", "1"],
    );
    let w1 = o.worker("w1");
    let _w2 = o.worker("w2");
    let id = o.submit(&fan_out(20, "partial:1"));
    o.until("both workers busy", |s| {
        node(s, "w1")["running"].as_u64() > Some(0) && node(s, "w2")["running"].as_u64() > Some(0)
    });
    w1.signal("-KILL");
    let run = o.ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(failed(&run).is_empty(), "{run:#}");
    let moved: Vec<&Value> = run["report"]["branches"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["retries"] == 1)
        .collect();
    assert!(!moved.is_empty(), "{run:#}");
    assert!(moved.iter().all(|b| b["node"] == "w2"), "{moved:?}");
    let status = o.until("w1 down, leases back", |s| {
        node(s, "w1")["state"]["state"] == "down" && s["leases_held"] == 0
    });
    assert!(
        node(&status, "w1")["state"]["reason"]
            .as_str()
            .unwrap()
            .contains("connection closed"),
        "{status:#}"
    );
    assert_eq!(o.metric("fanfare_admission_in_flight"), 0.0);

    // Fail-fast: the run fails with the lost node named.
    let _w3 = o.worker("w3");
    let body = fan_out(20, "fail-fast").replace("\"merge\"", "\"crash_retries\": 0, \"merge\"");
    let id = o.submit(&body);
    o.until("w2 busy", |s| node(s, "w2")["running"].as_u64() > Some(0));
    drop(_w2);
    let run = o.ended(&id);
    assert_eq!(run["status"], "failed", "{run:#}");
    // No branch waited for its deadline (the server's branch timeout, 60 s).
    for b in run["report"]["branches"].as_array().unwrap() {
        assert!(b["end_s"].as_f64().unwrap() < 30.0, "{b}");
    }
    let text = run.to_string();
    assert!(text.contains("node_down") && text.contains("w2"), "{run:#}");
    o.until("leases back", |s| s["leases_held"] == 0);
}

#[test]
fn a_frozen_worker_misses_the_heartbeat_is_lost_and_takes_work_again_once_it_rejoins() {
    let (_rt, mock) = mock(Duration::from_secs(2), None);
    let dir = tempfile::tempdir().unwrap();
    let provider = on_mock(&mock, dir.path());
    let o = Orchestrator::start(
        &provider,
        &[
            "--local-capacity",
            "0",
            "--crash-retries",
            "1",
            "--heartbeat-timeout",
            "1s",
        ],
    );
    let w1 = o.worker("w1");
    let _w2 = o.worker("w2");
    let id = o.submit(&fan_out(10, "partial:1"));
    o.until("w1 busy", |s| node(s, "w1")["running"].as_u64() > Some(0));
    // Stopped, its connection stays open: only the heartbeat can tell.
    w1.signal("-STOP");
    let run = o.ended(&id);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(failed(&run).is_empty(), "{run:#}");
    let status = o.cluster_status();
    let reason = node(&status, "w1")["state"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    assert!(reason.contains("heartbeat"), "{status:#}");
    w1.signal("-CONT");
    o.until("w1 back", |s| node(s, "w1")["state"]["state"] == "up");
    let run = o.ended(&o.submit(&fan_out(10, "fail-fast")));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(by_node(&run).get("w1").copied().unwrap_or(0) > 0, "{run:#}");
    drop(w1);
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`:
/// `[ca, cert, key]`.
fn certificates(dir: &Path, tag: &str) -> [String; 3] {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(format!("{tag}-{name}.pem"));
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    [
        write("ca", ca.pem()),
        write("cert", cert.pem()),
        write("key", key.serialize_pem()),
    ]
}

fn tls_flags([ca, cert, key]: &[String; 3]) -> Vec<String> {
    strings(&[
        "--cluster-tls-cert",
        cert,
        "--cluster-tls-key",
        key,
        "--cluster-tls-ca",
        ca,
    ])
}

#[test]
fn with_certificates_sessions_use_mutual_tls_and_nodes_without_the_cas_certificate_cannot_join() {
    let dir = tempfile::tempdir().unwrap();
    let ours = tls_flags(&certificates(dir.path(), "ours"));
    let theirs = tls_flags(&certificates(dir.path(), "theirs"));
    let mut serve_flags: Vec<&str> = ours.iter().map(String::as_str).collect();
    serve_flags.extend(["--local-capacity", "0"]);
    let o = Orchestrator::start(&[], &serve_flags);
    assert!(o
        ._serve
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("over mutual TLS")));
    let mut w1 = Proc::spawn(&o.worker_args("w1", &ours));
    w1.line("joined");
    let run = o.ended(&o.submit(&fan_out(10, "fail-fast")));
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(by_node(&run).get("w1"), Some(&10), "{run:#}");

    // In the clear, or with a certificate from another CA: refused.
    let quick = strings(&["--join-timeout", "2s"]);
    for (name, extra) in [
        ("plain", quick.clone()),
        ("stranger", [quick.clone(), theirs].concat()),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args(o.worker_args(name, &extra))
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} joined: {stderr}");
        assert!(
            stderr.contains("cannot join the orchestrator"),
            "{name}: {stderr}"
        );
    }
    let status = o.cluster_status();
    assert_eq!(status["nodes"].as_array().unwrap().len(), 2, "{status:#}");
}

#[test]
fn a_worker_refuses_admission_flags_that_only_the_orchestrators_gate_can_honour() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = dir.path().join("cookie");
    std::fs::write(&cookie, "a long enough shared secret").unwrap();
    for flag in [["--rpm", "10"], ["--max-concurrency", "8"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .args(["worker", "--join", "127.0.0.1:9", "--cookie-file"])
            .arg(&cookie)
            .args(flag)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("do nothing on a worker"), "{stderr}");
    }
}
