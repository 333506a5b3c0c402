//! `fanfare serve`: the long-lived orchestrator (see the `fanfare-serve` package).

use anyhow::{bail, Context as _};
use fanfare::agent::spec;
use fanfare_cluster::{read_cookie, Cluster, ClusterConfig, NodeConfig};
use fanfare_serve::{Catalog, Defaults, ServeConfig, Server, Token};

use crate::args::{OrchestratorArgs, ServeArgs};
use crate::plan::{load_specs, load_workflows};
use crate::setup::{runtime_builder, Admit, Gate};
use crate::signals::stop_requested;

pub async fn serve(args: ServeArgs) -> anyhow::Result<bool> {
    let options = spec::LoadOptions {
        allow_prompts_outside: args.runtime.allow_prompts_outside,
    };
    let (specs, source) = load_specs(args.runtime.agents.as_deref(), options)?;
    let (workflows, workflow_source) = load_workflows()?;
    if !workflows.iter().any(|w| w.name == args.workflow) {
        let known: Vec<&str> = workflows.iter().map(|w| w.name.as_str()).collect();
        bail!(
            "--workflow: no workflow `{}` in {workflow_source} (known: {})",
            args.workflow,
            known.join(", ")
        );
    }
    let token = match &args.token_file {
        Some(path) => Some(Token::from_file(path)?),
        None => None,
    };
    let agent_names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let ready = runtime_builder(&args.runtime, specs, false, Admit::Here)?;
    eprintln!(
        "fanfare: {}; agents from {source}, workflows from {workflow_source}",
        ready.described
    );
    let gate = ready.gate;
    let endpoint = ready.endpoint;
    let mut builder = ready.builder;
    let checks = WorkerChecks {
        fingerprints: ready.fingerprints,
        simulated: ready.simulated,
    };
    let cluster = match start_cluster(&args.cluster, agent_names, checks, gate.clone()).await? {
        Some(cluster) => {
            builder = builder.router(cluster.router());
            Some(cluster)
        }
        None => None,
    };
    let fanfare = match builder.start().await {
        Ok(f) => f,
        Err(e) => {
            if let Some(c) = &cluster {
                c.shutdown();
            }
            return Err(e.into());
        }
    };
    let catalog = Catalog {
        workflows,
        agents: fanfare.agents(),
    };
    let config = ServeConfig {
        listen: args.listen,
        db: args.db.clone(),
        token,
        max_running: args.max_runs,
        max_queued: args.max_queued,
        drain: args.drain,
        body_limit: args.max_body_kib.saturating_mul(1024),
        max_streams: args.max_event_streams,
        write_stall: std::time::Duration::from_secs(30),
        header_timeout: std::time::Duration::from_secs(30),
        max_connections: connections_within_files(args.max_connections),
        min_free_disk: args.min_free_disk_mb.saturating_mul(1 << 20),
        defaults: Defaults {
            deadline: args.deadline,
            branch_timeout: args.branch_timeout,
            crash_retries: args.crash_retries,
            workflow: args.workflow.clone(),
            max_branches: args.max_branches,
            approval_timeout: args.approval_timeout,
            approval_default: match args.approval_default {
                crate::args::ApprovalDefaultArg::Reject => fanfare_serve::ApprovalDefault::Reject,
                crate::args::ApprovalDefaultArg::Approve => fanfare_serve::ApprovalDefault::Approve,
            },
        },
        gate,
        endpoint,
        allow_hosts: args.allow_hosts.clone(),
        cluster: cluster.clone(),
    };
    let server = match Server::start(fanfare.clone(), catalog, config).await {
        Ok(s) => s,
        Err(e) => {
            if let Some(c) = &cluster {
                c.shutdown();
            }
            fanfare.shutdown().await;
            return Err(e).context("fanfare serve");
        }
    };
    eprintln!(
        "fanfare: serving on http://{} (journal {}); {} unfinished run(s) resumed",
        server.local_addr(),
        args.db.display(),
        server.resumed()
    );
    let stopped = server
        .run(async {
            let signal = stop_requested().await;
            eprintln!("fanfare: {signal}: no new runs; draining (a second signal exits at once)");
        })
        .await?;
    if let Some(c) = &cluster {
        c.shutdown();
    }
    eprintln!(
        "fanfare: stopped; {} run(s) interrupted, to resume at the next start",
        stopped.interrupted
    );
    Ok(true)
}

/// With `--cluster-listen`, starts accepting workers; their model calls lease from
/// `gate`.
/// What workers are checked against: this process's specs and provider.
struct WorkerChecks {
    fingerprints: std::collections::BTreeMap<String, String>,
    simulated: bool,
}

async fn start_cluster(
    args: &OrchestratorArgs,
    local_agents: Vec<String>,
    checks: WorkerChecks,
    gate: Option<Gate>,
) -> anyhow::Result<Option<Cluster>> {
    let Some(listen) = args.cluster_listen else {
        return Ok(None);
    };
    let Some(path) = &args.cookie_file else {
        bail!("--cluster-listen needs --cookie-file F (the cluster's shared secret)");
    };
    let cookie = read_cookie(path).context("--cookie-file")?;
    let mut config = ClusterConfig::new(NodeConfig {
        name: args.node_name.clone(),
        listen,
        cookie,
        tls: args.tls.files(),
        handshake_timeout: fanfare_cluster::HANDSHAKE_TIMEOUT,
    });
    config.local_agents = local_agents;
    config.local_capacity = args.local_capacity;
    config.heartbeat_timeout = args.heartbeat_timeout;
    config.fingerprints = checks.fingerprints;
    config.simulated = checks.simulated;
    let cluster = Cluster::start(config, gate)
        .await
        .context("--cluster-listen")?;
    if !listen.ip().is_loopback() && args.tls.files().is_none() {
        eprintln!(
            "fanfare: warning: cluster traffic on {listen} is authenticated by the cookie but not encrypted; keep it on a private network"
        );
    }
    eprintln!(
        "fanfare: accepting workers on {} as node `{}`{} (fanfare worker --join {} --cookie-file …)",
        cluster.address(),
        args.node_name,
        if args.tls.files().is_some() { " over mutual TLS" } else { "" },
        cluster.address()
    );
    Ok(Some(cluster))
}

/// `asked` client connections, or fewer when the open-file limit cannot hold them
/// beside the provider's calls and the journal (saying so): under `ulimit -n 200`
/// the server took 1,024 and new requests waited in the backlog until they gave up.
fn connections_within_files(asked: usize) -> usize {
    let Some(files) = crate::limits::raise_open_file_limit() else {
        return asked;
    };
    let room = usize::try_from(files.saturating_sub(crate::limits::RESERVED_FILES) / 2)
        .unwrap_or(usize::MAX)
        .max(16);
    if asked <= room {
        return asked;
    }
    eprintln!(
        "fanfare: at most {room} client connections (not {asked}): the open-file limit is {files}, and the provider's calls and the journal need files too (raise it with ulimit -n)"
    );
    room
}
