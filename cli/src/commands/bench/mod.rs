//! `fanfare bench`: measured side by side in one run, so ratios survive a noisy machine.
//!
//! - `bench run` (`run.rs`): the path a user types — specs on disk, `fanfare run`
//!   as a process with its defaults — beside the bare client; with `--limit`, first
//!   contact with a limited server and the run after it.
//! - `bench submit` (`submit.rs`): runs submitted at once to `fanfare serve` started
//!   as a process with its defaults.
//! - `bench fanout` (`fanout.rs`): N branches over HTTP against an in-process mock,
//!   fanfare beside its own provider stack in a bare `JoinSet` and bare reqwest
//!   (`reference.rs`, the same request bodies), and `asyncio.gather` with `--python`.
//! - `bench inproc`: the simulated provider at zero latency: orchestration overhead
//!   per branch, runs per second, memory per idle specialist, the cost of a restart.
//! - `bench serve` (`serve.rs`): N runs submitted at once to `fanfare serve`.
//! - `bench cache` (`cache.rs`): against a real server (llama.cpp), four specialists
//!   over one document: cached prompt tokens per call, instructions-first vs
//!   document-first layouts vs a run with `--cache-warm`.
//! - `bench cluster` (`cluster.rs`): one fan-out on this process's specialist, on
//!   one worker node, on two: branches per second and the cost per branch.
//! - `bench admission` (`admission.rs`): the cap starting at N against a server that
//!   allows fewer in flight: 429s, wasted calls, wall against the floor.
//! - `bench tools` (`tools.rs`): the tool loop's CPU per turn.

mod admission;
mod cache;
mod cluster;
mod fanout;
mod inproc;
mod measure;
mod reference;
mod run;
mod serve;
mod submit;
mod tools;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use fanfare::agent::spec::{AgentSpec, FAN_OUT_ASK};
use fanfare::provider::{AdmissionConfig, CompletionRequest, ExponentialBackoff, Provider, Stack};

use crate::args::BenchCommand;
use fanout::{fanout, task_text, FanoutArgs};
use inproc::inproc;

pub async fn bench(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Fanout {
            sizes,
            latency_ms,
            base_url,
            concurrency,
            warmup,
            python,
            repeat,
            document_bytes,
        } => {
            if sizes.is_empty() || sizes.contains(&0) {
                bail!("--n takes branch counts of at least 1");
            }
            if python.is_some() && document_bytes > 0 {
                bail!("--python runs the asyncio baseline on the one-line task only; leave out --document-bytes");
            }
            fanout(FanoutArgs {
                sizes,
                latency: Duration::from_millis(latency_ms),
                base_url,
                concurrency,
                warmup,
                python,
                perspectives: fanfare_agents::perspectives()?,
                repeat,
                task: task_text(document_bytes),
            })
            .await
        }
        BenchCommand::Run {
            sizes,
            latency_ms,
            repeat,
            limit,
        } => {
            run::run(run::RunBench {
                sizes,
                latency: Duration::from_millis(latency_ms),
                repeat,
                limit,
            })
            .await
        }
        BenchCommand::Submit {
            runs,
            n,
            latency_ms,
            repeat,
        } => submit::submit(runs, n, Duration::from_millis(latency_ms), repeat).await,
        BenchCommand::Inproc { sizes } => inproc(&sizes).await,
        BenchCommand::Tools { n, turns, repeat } => tools::tools(n, turns as usize, repeat).await,
        BenchCommand::Admission {
            n,
            limit,
            latency_ms,
            initial,
        } => admission::admission(n, limit, Duration::from_millis(latency_ms), initial).await,
        BenchCommand::Serve {
            n,
            max_runs,
            max_queued,
        } => serve::serve(n, max_runs, max_queued).await,
        BenchCommand::Cache {
            base_url,
            wire,
            model,
            words,
        } => cache::cache(wire, &base_url, &model, words).await,
        BenchCommand::Cluster {
            n,
            latency_ms,
            repeat,
        } => cluster::cluster(n, Duration::from_millis(latency_ms), repeat).await,
    }
}

/// The provider stack every fanfare case runs on (and `parked_branch` beside it):
/// retries over the admission gate with its defaults (starting at its ceiling),
/// the ceiling set to `cap`.
fn capped_stack(wire: impl Provider, cap: usize) -> Arc<dyn Provider> {
    let (provider, _gate) = Stack::new()
        .admission(AdmissionConfig {
            max_concurrency: cap,
            ..AdmissionConfig::default()
        })
        .retry(ExponentialBackoff::default())
        .build(wire);
    provider
}

/// The request a spec agent makes for one branch of a fan-out over `task`: the task
/// as the shared prefix, the agent's instructions after it. The cases that call the
/// provider stack without fanfare send this, so they send what fanfare sends.
fn fan_out_request(spec: &AgentSpec, task: Arc<str>) -> CompletionRequest {
    let mut request = CompletionRequest::new(spec.name.clone(), spec.prompt.clone(), FAN_OUT_ASK);
    request.shared_prefix = Some(task);
    request.max_tokens = spec.max_tokens;
    request.model = spec.model.clone();
    request.temperature = spec.temperature;
    request
}

const TASK: &str =
    "Our new API will process 1M requests/day, storing all user queries in plain text logs.";
