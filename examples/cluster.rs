//! Run with `cargo run --release --example cluster`: a supervision experiment across
//! nodes. This process is the orchestrator of a cluster on 127.0.0.1 (ractor_cluster
//! underneath); it starts two worker processes (itself again, as `cluster worker NAME
//! ADDR`), which host the `analyst` specialist on a simulated model answering in 1.5 s.
//!
//! For each policy it runs a 12-branch fan-out that the workers share, kills one
//! worker with SIGKILL 400 ms in, and prints what followed: the run's outcome, the
//! branches that ended ok or `NodeDown`, how many were placed again on the other
//! worker, and how long the loss took to notice. The killed worker is started again
//! (and rejoins) before the next case.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanfare::provider::{CompletionRequest, SimProfile, SimProvider};
use fanfare::run::BranchError;
use fanfare::{
    Agent, AgentContext, AgentOutput, AgentReply, BranchOutcome, Fanfare, Policy, RunRequest, Task,
};
use fanfare_cluster::{Cluster, ClusterConfig, NodeConfig, NodeState, Worker, WorkerConfig};

const COOKIE: &str = "an example cookie; use a long random secret in earnest";

/// Asks the model once.
struct Analyst;

impl Agent for Analyst {
    fn name(&self) -> &str {
        "analyst"
    }

    async fn run(&self, ctx: &AgentContext, task: Task) -> AgentReply {
        let request = CompletionRequest::new("analyst", "You analyse.", task.prompt().to_string());
        Ok(AgentOutput::from(ctx.provider.complete(request).await?))
    }
}

fn runtime_builder() -> fanfare::FanfareBuilder {
    let sim = SimProvider::with_profile(SimProfile::fixed(Duration::from_millis(1500)));
    Fanfare::builder(Arc::new(sim)).agent(Analyst)
}

fn node(name: &str) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: COOKIE.to_owned(),
        tls: None,
        handshake_timeout: fanfare_cluster::HANDSHAKE_TIMEOUT,
    }
}

/// The worker process: hosts `analyst` until it is killed.
async fn worker(name: &str, join: &str) -> Result<(), Box<dyn std::error::Error>> {
    let fanfare = runtime_builder().start().await?;
    let _worker = Worker::join(WorkerConfig::new(node(name), join), fanfare).await?;
    std::future::pending::<()>().await;
    Ok(())
}

fn spawn_worker(name: &str, join: &str) -> std::io::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args(["worker", name, join])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// Waits until exactly these workers are up.
async fn until_up(cluster: &Cluster, names: &[&str]) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let status = cluster.status();
        let up = |n: &str| {
            status
                .nodes
                .iter()
                .any(|s| s.name == n && s.state == NodeState::Up)
        };
        if names.iter().all(|n| up(n)) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(format!("workers {names:?} did not join: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One row of the table.
struct Row {
    case: &'static str,
    outcome: String,
    ok: usize,
    node_down: usize,
    other: usize,
    placed_again: u32,
    detected_ms: u128,
    wall: Duration,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        let (Some(name), Some(join)) = (args.get(2), args.get(3)) else {
            return Err("usage: cluster worker NAME HOST:PORT".into());
        };
        return worker(name, join).await;
    }

    let mut config = ClusterConfig::new(node("orchestrator"));
    // The orchestrator keeps no branch for itself: the workers take them all.
    config.local_capacity = 0;
    let cluster = Cluster::start(config, None).await?;
    let join = cluster.address().to_string();
    let fanfare = runtime_builder().router(cluster.router()).start().await?;
    let mut workers = vec![
        ("w1", spawn_worker("w1", &join)?),
        ("w2", spawn_worker("w2", &join)?),
    ];
    println!("orchestrator on {join}; workers w1 and w2 joining…");

    let cases = [
        ("fail-fast", Policy::FailFast, 0),
        (
            "partial:1, no crash retries",
            Policy::TolerantPartial { quorum: 1 },
            0,
        ),
        (
            "partial:1, crash retries 1",
            Policy::TolerantPartial { quorum: 1 },
            1,
        ),
    ];
    let mut rows = Vec::new();
    for (case, policy, crash_retries) in cases {
        until_up(&cluster, &["w1", "w2"]).await?;
        let request = RunRequest::fan_out("Where will demand be in 2030?", vec!["analyst"; 12])
            .policy(policy)
            .crash_retries(crash_retries);
        let started = Instant::now();
        let mut run = fanfare.start_run(request);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, victim) = &mut workers[0];
        victim.kill()?;
        let killed = Instant::now();
        let detected = loop {
            let status = cluster.status();
            let down = status
                .nodes
                .iter()
                .rev()
                .find(|n| n.name == "w1")
                .is_some_and(|n| matches!(n.state, NodeState::Down { .. }));
            if down || killed.elapsed() > Duration::from_secs(10) {
                break killed.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let report = run.report().await?;
        let wall = started.elapsed();
        victim.wait()?;
        workers[0].1 = spawn_worker("w1", &join)?;
        let node_down = |b: &&fanfare::report::BranchReport| {
            matches!(
                b.outcome,
                BranchOutcome::Failed {
                    error: BranchError::NodeDown { .. }
                }
            )
        };
        let ok = report.branches.iter().filter(|b| b.outcome.is_ok()).count();
        let down = report.branches.iter().filter(node_down).count();
        rows.push(Row {
            case,
            outcome: if report.status.is_success() {
                "succeeded".into()
            } else {
                "failed".into()
            },
            ok,
            node_down: down,
            other: report.branches.len() - ok - down,
            placed_again: report.branches.iter().map(|b| b.retries).sum(),
            detected_ms: detected.as_millis(),
            wall,
        });
    }

    println!(
        "\n{:<30} {:<10} {:>3} {:>9} {:>6} {:>12} {:>11} {:>7}",
        "policy", "run", "ok", "NodeDown", "other", "placed again", "noticed in", "wall"
    );
    for r in &rows {
        println!(
            "{:<30} {:<10} {:>3} {:>9} {:>6} {:>12} {:>8} ms {:>6.2}s",
            r.case,
            r.outcome,
            r.ok,
            r.node_down,
            r.other,
            r.placed_again,
            r.detected_ms,
            r.wall.as_secs_f64()
        );
    }
    println!(
        "\nw1 was killed with SIGKILL 400 ms into each run; its connection closing is how \
the loss was noticed (a worker that stops answering without closing is lost after the \
heartbeat timeout, 3 s by default). `other` counts branches cancelled when a fail-fast \
run ended."
    );
    for (_, mut w) in workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    cluster.shutdown();
    fanfare.shutdown().await;
    Ok(())
}
