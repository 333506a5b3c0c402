//! `fanfare worker`: a node that hosts specialists for a cluster's orchestrator.

use anyhow::{bail, Context as _};
use fanfare::agent::spec;
use fanfare_cluster::{read_cookie, NodeConfig, Worker, WorkerConfig};

use crate::args::WorkerArgs;
use crate::plan::load_specs;
use crate::setup::{runtime_builder, Admit};
use crate::signals::stop_requested;

pub async fn worker(args: WorkerArgs) -> anyhow::Result<bool> {
    let r = &args.runtime;
    if r.rpm.is_some() || r.tpm.is_some() || r.max_concurrency.is_some() {
        bail!(
            "--max-concurrency, --rpm and --tpm do nothing on a worker: its model calls are \
admitted by the orchestrator's gate, so give them to `fanfare serve`"
        );
    }
    let cookie = read_cookie(&args.cookie_file).context("--cookie-file")?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let options = spec::LoadOptions {
        allow_prompts_outside: args.runtime.allow_prompts_outside,
    };
    let (specs, source) = load_specs(args.runtime.agents.as_deref(), options)?;
    let ready = runtime_builder(&args.runtime, specs, false, Admit::Leased(name.clone()))?;
    eprintln!(
        "fanfare worker {name}: {}; agents from {source}; admission leased from the orchestrator",
        ready.described
    );
    let fanfare = ready.builder.start().await?;
    let mut config = WorkerConfig::new(
        NodeConfig {
            name: name.clone(),
            listen: args.listen,
            cookie,
            tls: args.tls.files(),
            handshake_timeout: fanfare_cluster::HANDSHAKE_TIMEOUT,
        },
        args.join.clone(),
    );
    config.capacity = args.capacity;
    config.join_timeout = args.join_timeout;
    config.fingerprints = ready.fingerprints;
    config.simulated = ready.simulated;
    let worker = match Worker::join(config, fanfare.clone()).await {
        Ok(worker) => worker,
        Err(e) => {
            fanfare.shutdown().await;
            return Err(e).context("fanfare worker");
        }
    };
    eprintln!(
        "fanfare worker {name}: joined {}; hosting {}",
        args.join,
        fanfare.agents().join(", ")
    );
    let signal = stop_requested().await;
    eprintln!(
        "fanfare worker {name}: {signal}: leaving the cluster ({} branch(es) stopped)",
        worker.running()
    );
    worker.shutdown();
    fanfare.shutdown().await;
    Ok(true)
}
