//! `bench serve`: N runs submitted at once to `fanfare serve` (in process, on
//! 127.0.0.1, with a journal on disk) over HTTP; each run is a fan-out of the four
//! perspectives on the zero-latency simulated model, merged. Measures what the
//! server adds: submit latency (p50, p99, max), and runs per second from the first
//! submission to the last run journaled as ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fanfare::provider::{SimProfile, SimProvider};
use fanfare::Fanfare;
use fanfare_serve::{Catalog, ServeConfig, Server};
use serde_json::json;

pub async fn serve(n: usize, max_runs: usize, max_queued: Option<usize>) -> anyhow::Result<()> {
    if n == 0 {
        bail!("--n takes a count of at least 1");
    }
    let dir = tempfile_dir()?;
    let provider = Arc::new(SimProvider::with_profile(SimProfile::instant()));
    let fanfare = Fanfare::builder(provider)
        .agents_from(fanfare_agents::perspectives()?)
        .start()
        .await?;
    let catalog = Catalog {
        workflows: fanfare_agents::workflows()?,
        agents: fanfare.agents(),
    };
    let mut config = ServeConfig::new(dir.join("bench.db"));
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.max_running = max_runs;
    config.max_queued = max_queued.unwrap_or(n);
    let server = Server::start(fanfare, catalog, config).await?;
    let base = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // The workspace builds reqwest without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(n)
        .build()
        .context("building the HTTP client")?;
    let started = Instant::now();
    let mut submits = tokio::task::JoinSet::new();
    for i in 0..n {
        let client = client.clone();
        let url = format!("{base}/v1/runs");
        submits.spawn(async move {
            let body = json!({"input": format!("Question {i}: should we adopt a four-day week?")});
            let t = Instant::now();
            let status = client
                .post(url)
                .json(&body)
                .send()
                .await
                .map(|r| r.status().as_u16());
            (status, t.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(n);
    let (mut accepted, mut shed) = (0usize, 0usize);
    while let Some(done) = submits.join_next().await {
        let (status, took) = done?;
        match status.context("a submission failed")? {
            202 => accepted += 1,
            429 => shed += 1,
            other => bail!("a submission answered HTTP {other}"),
        }
        latencies.push(took);
    }
    // Until every accepted run has ended (nothing queued or running).
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let busy: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("fanfare_runs{status=\"queued\"}")
                    || l.starts_with("fanfare_runs{status=\"running\"}")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if busy == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{}",
        json!({
            "case": "serve-submit",
            "n": n,
            "max_runs": max_runs,
            "accepted": accepted,
            "shed_429": shed,
            "submit_p50_ms": pct(0.50),
            "submit_p99_ms": pct(0.99),
            "submit_max_ms": pct(1.0),
            "wall_s": wall.as_secs_f64(),
            "runs_per_s": accepted as f64 / wall.as_secs_f64(),
        })
    );
    let _ = stop.send(());
    serving.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh directory for the bench's journal.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("fanfare-bench-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
