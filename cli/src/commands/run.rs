//! `fanfare run`: one task through every agent, then the merge.

use anyhow::bail;

use crate::args::RunArgs;
use crate::setup::{prepare, print_admission, read_input, request_for, Prepared};

pub async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let input = read_input(&args)?;
    let Prepared {
        fanfare,
        names,
        gate,
    } = prepare(&args.common).await?;
    let request = request_for(&args.common, input, &names);
    let outcome = tokio::select! {
        r = fanfare.run(request) => Some(r),
        _ = tokio::signal::ctrl_c() => None,
    };
    fanfare.shutdown().await;
    let Some(report) = outcome else {
        bail!("interrupted; in-flight branches were cancelled");
    };
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    print_admission(gate.as_ref());
    if let fanfare::RunStatus::Failed { reason } = &report.status {
        eprintln!("fanfare: run failed: {reason}");
        return Ok(false);
    }
    Ok(true)
}
