//! `fanfare run`: one task through every agent, then the merge.

use std::path::Path;

use anyhow::{bail, Context as _};
use fanfare::run::Reuse;

use crate::args::RunArgs;
use crate::live::{Live, Progress};
use crate::output;
use crate::plan::{items, request_for, Plan};
use crate::setup::{finish_admission, prepare, read_input, Prepared};
use crate::signals::{stop_requested, Interrupted};

/// The run report at `path` (`--repair`).
fn read_report(path: &Path) -> anyhow::Result<fanfare::RunReport> {
    let text = std::fs::File::open(path)
        .map_err(anyhow::Error::from)
        // A report of a wide map is large, but not without end (`/dev/zero`).
        .and_then(|f| crate::input::read_bounded(f, &path.display().to_string(), 1 << 30))
        .with_context(|| format!("--repair: reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "--repair: {} is not a run report (`fanfare run --json` writes one)",
            path.display()
        )
    })
}

/// The task of a repair: the one `report` was asked, unless the command line gives
/// one, which must be the same (a repair with another task reused the old answers).
fn repair_task(args: &RunArgs, report: &fanfare::RunReport, path: &Path) -> anyhow::Result<String> {
    let given = args.text.is_some() || args.file.is_some();
    match (&report.asked, given) {
        (Some(asked), false) => asked.task.clone().with_context(|| {
            format!(
                "--repair: {} keeps only its task's digest (the task was over {} KiB); give the same task with --file",
                path.display(),
                fanfare::run::Asked::KEPT / 1024
            )
        }),
        (Some(asked), true) => {
            let task = read_input(args)?;
            if !asked.is(&task) {
                bail!(
                    "--repair: this task is not the one {} answered; a repair runs the same task again and reuses its answers (leave the task out to use the report's)",
                    path.display()
                );
            }
            Ok(task)
        }
        (None, true) => {
            eprintln!(
                "fanfare: warning: {} does not say which task it answered (an older report); its answers are reused for this one",
                path.display()
            );
            read_input(args)
        }
        (None, false) => bail!(
            "--repair: {} does not say which task it answered (an older report); give the same task again",
            path.display()
        ),
    }
}

/// `request` reusing the successful branches of `report` (read from `path`).
fn repairing(
    request: fanfare::RunRequest,
    report: &fanfare::RunReport,
    path: &Path,
    simulated: bool,
) -> anyhow::Result<fanfare::RunRequest> {
    // A repair mixes the report's answers into this run's: simulated ones with a
    // real model's made a report that said `simulated: false` (seventh probe).
    if report.simulated != simulated {
        let (was, now) = if report.simulated {
            ("the simulator", "a real model")
        } else {
            ("a real model", "the simulator")
        };
        bail!(
            "--repair: {} was answered by {was} (`{}`) and this run would use {now}; a repair reuses its answers, so run it again without --repair",
            path.display(),
            report.provider
        );
    }
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
                from: fanfare::run::Reused::EarlierRun,
            });
        }
        for item in &b.items {
            if let Some(output) = item.outcome.output() {
                reuse.push(Reuse {
                    index: i as u32,
                    item: Some(item.item as u32),
                    output: output.clone(),
                    from: fanfare::run::Reused::EarlierRun,
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

/// How long a stopped run has to hand over its report (it stops at once: its calls
/// in flight are dropped, not awaited).
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let repair = match &args.repair {
        Some(path) => Some((read_report(path)?, path.as_path())),
        None => None,
    };
    let input = match &repair {
        Some((report, path)) => repair_task(&args, report, path)?,
        None => read_input(&args)?,
    };
    let items = items(&args.each)?;
    if args.dry_run {
        return crate::commands::dry_run::dry_run(&args, &input, items).map(|()| true);
    }
    let Prepared {
        fanfare,
        plan,
        gate,
        default_model,
        simulated,
    } = prepare(&args.common).await?;
    let request = match request_for(&args.common, input, &plan, items).and_then(|r| match &repair {
        Some((report, path)) => repairing(r, report, path, simulated),
        None => Ok(r),
    }) {
        Ok(r) => r,
        Err(e) => {
            fanfare.shutdown().await;
            return Err(e);
        }
    };
    let mut handle = fanfare.start_run(request);
    let mut live = Live::new(fanfare.prices().clone());
    // The map over --each's files shows each item by its file.
    if let (Plan::Workflow(w), false) = (&plan, args.each.is_empty()) {
        let given = w.steps.iter().find(|s| {
            s.map
                .as_ref()
                .is_some_and(|m| m.over == fanfare::run::workflow::MapOver::Given)
        });
        if let (Some(step), Ok(files)) = (given, crate::plan::each_files(&args.each)) {
            let names = files.iter().map(|p| p.display().to_string()).collect();
            live.name_items(step.name.clone(), names);
        }
    }
    let mut events_open = true;
    let outcome = tokio::select! {
        r = async {
            while let Some(event) = handle.events.recv().await {
                if let Some(p) = Progress::of_event(&event) {
                    live.show(p);
                }
            }
            events_open = false;
            handle.report().await
        } => Ok(r),
        signal = stop_requested() => Err(signal),
    };
    let report = match outcome {
        Ok(report) => {
            live.finish();
            drop(handle);
            // What supervision did, before the specialists stop.
            let supervision = supervision_lines(&fanfare.status().await);
            fanfare.shutdown().await;
            let report = report?;
            print_report(&args, &report)?;
            for line in supervision {
                eprintln!("{line}");
            }
            report
        }
        Err(signal) => {
            // Stop the run but keep what had ended: its report is printed as usual
            // (a second signal exits at once).
            handle.stop();
            let partial = tokio::time::timeout(STOP_GRACE, async {
                while events_open {
                    match handle.events.recv().await {
                        Some(event) => {
                            if let Some(p) = Progress::of_event(&event) {
                                live.show(p);
                            }
                        }
                        None => events_open = false,
                    }
                }
                handle.report().await
            })
            .await;
            live.finish();
            drop(handle);
            fanfare.shutdown_with_drain(std::time::Duration::ZERO).await;
            finish_admission(gate.as_ref());
            let what = match partial {
                Ok(Ok(report)) => {
                    print_report(&args, &report)?;
                    let ended = report.branches.iter().filter(|b| b.outcome.is_ok()).count();
                    format!(
                        "the run was stopped: the report above keeps the {ended} branch(es) that had answered; the rest were cancelled"
                    )
                }
                _ => "in-flight branches were cancelled".to_owned(),
            };
            return Err(Interrupted { signal, what }.into());
        }
    };
    finish_admission(gate.as_ref());
    if let Some(note) = crate::setup::answered_as(default_model.as_deref(), &report) {
        eprintln!("{note}");
    }
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        if let Some(status) = refused_key(&report) {
            // Not a run that failed its policy: the configuration is wrong (exit 2).
            bail!(
                "the provider refused the API key (HTTP {status}): check ANTHROPIC_API_KEY / OPENAI_API_KEY or --api-key-file, and --base-url ({reason})"
            );
        }
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}

/// A line for each specialist supervision had to act on during the run: its
/// restarts, the times its circuit opened, and why it is down, if it is.
fn supervision_lines(status: &[fanfare::supervision::SpecialistStatus]) -> Vec<String> {
    status
        .iter()
        .filter(|s| s.restarts > 0 || s.escalations > 0 || s.down.is_some())
        .map(|s| {
            let mut line = format!("supervision: `{}` restarted {}×", s.name, s.restarts);
            if s.escalations > 0 {
                line.push_str(&format!(", its circuit opened {}×", s.escalations));
            }
            match &s.down {
                Some(why) => line.push_str(&format!("; down: {why}")),
                None => line.push_str("; up (circuit closed)"),
            }
            line
        })
        .collect()
}

/// Prints the report on stdout: Markdown, or JSON with `--json`.
fn print_report(args: &RunArgs, report: &fanfare::RunReport) -> anyhow::Result<()> {
    if args.json {
        output::stdout(&format!("{}\n", serde_json::to_string_pretty(report)?))?;
    } else {
        output::stdout(&report.render())?;
    }
    Ok(())
}

/// The status of a refused key (401 or 403), when that is why every branch that
/// called the model failed.
fn refused_key(report: &fanfare::RunReport) -> Option<u16> {
    use fanfare::agent::AgentError;
    use fanfare::provider::ProviderErrorKind;
    use fanfare::run::BranchError;
    let mut refused = None;
    for b in &report.branches {
        match &b.outcome {
            fanfare::BranchOutcome::Failed {
                error: BranchError::Agent(AgentError::Provider(e)),
            } => match e.kind {
                ProviderErrorKind::Status {
                    status: status @ (401 | 403),
                    ..
                } => refused = Some(status),
                _ => return None,
            },
            fanfare::BranchOutcome::Ok(_) => return None,
            _ => {}
        }
    }
    refused
}
