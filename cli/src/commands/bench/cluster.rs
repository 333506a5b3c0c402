//! `bench cluster`: one fan-out of N branches of one specialist on the simulated model
//! (latency L), run three ways side by side: on this process's own specialist; on one
//! worker node (a `fanfare worker` process on 127.0.0.1, the orchestrator keeping no
//! branch for itself); on two. Branches per second, the time a branch costs beyond
//! the model's latency, and the remote-to-local ratio. Medians over `repeat` rounds,
//! the three cases interleaved.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::{self, AgentSpec};
use fanfare::provider::{SimConfig, SimProvider};
use fanfare::{Fanfare, RunRequest};
use fanfare_cluster::{Cluster, ClusterConfig, NodeConfig, NodeState};
use serde_json::json;

/// Kills the worker processes however the bench ends.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.0 {
            let _ = w.kill();
            let _ = w.wait();
        }
    }
}

pub async fn cluster(n: usize, latency: Duration, repeat: usize) -> anyhow::Result<()> {
    if n == 0 || repeat == 0 {
        bail!("--n and --repeat take counts of at least 1");
    }
    let dir = std::env::temp_dir().join(format!("fanfare-bench-cluster-{}", std::process::id()));
    let agents = dir.join("agents");
    std::fs::create_dir_all(&agents).with_context(|| format!("creating {}", agents.display()))?;
    let spec_text = format!(
        "name = \"a\"\nprompt = \"Answer.\"\n[sim]\nlatency_ms = {}\n",
        latency.as_millis()
    );
    std::fs::write(agents.join("a.toml"), spec_text)?;
    let cookie = dir.join("cookie");
    std::fs::write(
        &cookie,
        format!("bench-cluster-cookie-{}", std::process::id()),
    )?;
    let specs = spec::load_dir(&agents)?;

    let local = runtime(&specs, None).await?;
    let mut config = ClusterConfig::new(NodeConfig {
        name: "orchestrator".into(),
        listen: ([127, 0, 0, 1], 0).into(),
        cookie: std::fs::read_to_string(&cookie)?,
        tls: None,
        handshake_timeout: fanfare_cluster::HANDSHAKE_TIMEOUT,
    });
    config.local_capacity = 0;
    config.local_agents = vec!["a".into()];
    let cluster = Cluster::start(config, None).await?;
    let remote = runtime(&specs, Some(&cluster)).await?;
    let join = cluster.address().to_string();
    let mut workers = Workers(vec![spawn_worker("b1", &join, &cookie, &agents, n)?]);
    until_up(&cluster, 1).await?;

    let mut walls: [Vec<Duration>; 3] = Default::default();
    for round in 0..repeat + 1 {
        for (case, walls) in walls.iter_mut().enumerate() {
            if case == 2 && workers.0.len() == 1 {
                workers
                    .0
                    .push(spawn_worker("b2", &join, &cookie, &agents, n)?);
                until_up(&cluster, 2).await?;
            }
            if case == 1 && workers.0.len() == 2 {
                // One worker: stop the second (it rejoins for the next round).
                let mut w = workers.0.remove(1);
                let _ = w.kill();
                let _ = w.wait();
                until_up(&cluster, 1).await?;
            }
            let fanfare = if case == 0 { &local } else { &remote };
            let t = Instant::now();
            let report = fanfare
                .run(RunRequest::fan_out("q", vec!["a"; n]))
                .await
                .context("a benchmark run")?;
            let wall = t.elapsed();
            if !report.status.is_success() {
                bail!("case {case}: the run failed: {:?}", report.status);
            }
            if round > 0 {
                walls.push(wall);
            }
        }
    }
    let names = ["local", "1 worker", "2 workers"];
    let medians: Vec<Duration> = walls.iter_mut().map(|w| median(w)).collect();
    for (name, wall) in names.iter().zip(&medians) {
        let beyond = wall.saturating_sub(latency);
        println!(
            "{}",
            json!({
                "case": format!("cluster {name}"),
                "n": n,
                "latency_ms": latency.as_millis() as u64,
                "wall_s": wall.as_secs_f64(),
                "branches_per_s": n as f64 / wall.as_secs_f64(),
                "overhead_per_branch_us": beyond.as_secs_f64() * 1e6 / n as f64,
            })
        );
    }
    println!(
        "{}",
        json!({
            "remote_vs_local_wall": medians[1].as_secs_f64() / medians[0].as_secs_f64(),
            "two_vs_one_worker_wall": medians[2].as_secs_f64() / medians[1].as_secs_f64(),
            "repeat": repeat,
        })
    );
    drop(workers);
    cluster.shutdown();
    local.shutdown().await;
    remote.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn runtime(specs: &[AgentSpec], cluster: Option<&Cluster>) -> anyhow::Result<Fanfare> {
    let sim = SimProvider::new(SimConfig {
        per_agent: spec::sim_profiles(specs),
        ..SimConfig::default()
    });
    let mut builder = Fanfare::builder(Arc::new(sim)).agents_from(specs.iter().cloned());
    if let Some(c) = cluster {
        builder = builder.router(c.router());
    }
    Ok(builder.start().await?)
}

fn spawn_worker(
    name: &str,
    join: &str,
    cookie: &Path,
    agents: &Path,
    n: usize,
) -> anyhow::Result<Child> {
    Command::new(std::env::current_exe()?)
        .args([
            "worker",
            "--join",
            join,
            "--name",
            name,
            "--provider",
            "sim",
        ])
        .arg("--cookie-file")
        .arg(cookie)
        .arg("--agents")
        .arg(agents)
        .args(["--capacity", &n.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a worker process")
}

/// Waits until `count` workers are up.
async fn until_up(cluster: &Cluster, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let status = cluster.status();
        let up = status
            .nodes
            .iter()
            .skip(1)
            .filter(|n| n.state == NodeState::Up)
            .count();
        if up == count {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("{count} worker(s) did not join: {status}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}
