//! `fanfare run`: one task through every agent, then the merge.

use std::path::Path;

use anyhow::{bail, Context as _};
use fanfare::run::Reuse;

use crate::args::RunArgs;
use crate::live::{Live, Progress};
use crate::output;
use crate::plan::{items, request_for};
use crate::setup::{finish_admission, prepare, read_input, Prepared};
use crate::signals::{stop_requested, Interrupted};

/// `request` reusing the successful branches of the report at `path`.
fn repairing(request: fanfare::RunRequest, path: &Path) -> anyhow::Result<fanfare::RunRequest> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--repair: reading {}", path.display()))?;
    let report: fanfare::RunReport = serde_json::from_str(&text).with_context(|| {
        format!(
            "--repair: {} is not a run report (`fanfare run --json` writes one)",
            path.display()
        )
    })?;
    if report.branches.len() != request.steps.len() {
        bail!(
            "--repair: {} has {} branches, this run has {} steps; repair with the same workflow and agents",
            path.display(),
            report.branches.len(),
            request.steps.len()
        );
    }
    let mut reuse = Vec::new();
    for (i, (b, step)) in report.branches.iter().zip(&request.steps).enumerate() {
        if b.step != step.name {
            bail!(
                "--repair: branch {i} of {} is `{}`, this run's step {i} is `{}`; repair with the same workflow and agents",
                path.display(),
                b.step,
                step.name
            );
        }
        // A map step is mended item by item.
        if let Some(output) = b.outcome.output().filter(|_| b.items.is_empty()) {
            reuse.push(Reuse {
                index: i as u32,
                item: None,
                output: output.clone(),
            });
        }
        for item in &b.items {
            if let Some(output) = item.outcome.output() {
                reuse.push(Reuse {
                    index: i as u32,
                    item: Some(item.item as u32),
                    output: output.clone(),
                });
            }
        }
    }
    eprintln!(
        "fanfare: repairing {}: {} answer(s) reused, the rest run again",
        path.display(),
        reuse.len()
    );
    Ok(request.reuse(reuse))
}

pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let input = read_input(&args)?;
    let items = items(&args.each)?;
    if args.dry_run {
        return crate::commands::dry_run::dry_run(&args, &input, items).map(|()| true);
    }
    let Prepared {
        fanfare,
        plan,
        gate,
    } = prepare(&args.common).await?;
    let request =
        match request_for(&args.common, input, &plan, items).and_then(|r| match &args.repair {
            Some(path) => repairing(r, path),
            None => Ok(r),
        }) {
            Ok(r) => r,
            Err(e) => {
                fanfare.shutdown().await;
                return Err(e);
            }
        };
    let mut handle = fanfare.start_run(request);
    let mut live = Live::new();
    let outcome = tokio::select! {
        r = async {
            while let Some(event) = handle.events.recv().await {
                if let Some(p) = Progress::of_event(&event) {
                    live.show(p);
                }
            }
            handle.report().await
        } => Ok(r),
        signal = stop_requested() => Err(signal),
    };
    live.finish();
    // Dropping the handle cancels a run the signal interrupted.
    drop(handle);
    let report = match outcome {
        Ok(report) => {
            fanfare.shutdown().await;
            report?
        }
        Err(signal) => {
            // The run future is gone, so the run is cancelled; nothing to drain.
            fanfare.shutdown_with_drain(std::time::Duration::ZERO).await;
            return Err(Interrupted {
                signal,
                what: "in-flight branches were cancelled".to_owned(),
            }
            .into());
        }
    };
    if args.json {
        output::stdout(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        output::stdout(&report.render())?;
    }
    finish_admission(gate.as_ref());
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}
