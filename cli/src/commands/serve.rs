//! `fanfare serve`: the long-lived orchestrator (see the `fanfare-serve` package).

use anyhow::{bail, Context as _};
use fanfare::agent::spec;
use fanfare_serve::{Catalog, Defaults, ServeConfig, Server, Token};

use crate::args::ServeArgs;
use crate::plan::{load_specs, load_workflows};
use crate::setup::start_runtime;
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
    let (fanfare, gate) = start_runtime(&args.runtime, specs, false, |described| {
        eprintln!("fanfare: {described}; agents from {source}, workflows from {workflow_source}");
    })
    .await?;
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
        defaults: Defaults {
            deadline: args.deadline,
            branch_timeout: args.branch_timeout,
            crash_retries: args.crash_retries,
            workflow: args.workflow.clone(),
        },
        gate,
    };
    let server = match Server::start(fanfare.clone(), catalog, config).await {
        Ok(s) => s,
        Err(e) => {
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
    eprintln!(
        "fanfare: stopped; {} run(s) interrupted, to resume at the next start",
        stopped.interrupted
    );
    Ok(true)
}
