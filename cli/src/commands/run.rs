//! `fanfare run`: one task through every agent, then the merge.

use crate::args::RunArgs;
use crate::output;
use crate::plan::{items, request_for};
use crate::setup::{prepare, print_admission, read_input, Prepared};
use crate::signals::{stop_requested, Interrupted};

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
    let request = match request_for(&args.common, input, &plan, items) {
        Ok(r) => r,
        Err(e) => {
            fanfare.shutdown().await;
            return Err(e);
        }
    };
    let outcome = tokio::select! {
        r = fanfare.run(request) => Ok(r),
        signal = stop_requested() => Err(signal),
    };
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
    print_admission(gate.as_ref());
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}
