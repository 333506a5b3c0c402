//! `fanfare batch`: many documents, each a fan-out, at most N at once; resumable.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::args::BatchArgs;
use crate::setup::{prepare, print_admission, request_for, Prepared};

/// One line of a batch's output file.
#[derive(serde::Serialize, serde::Deserialize)]
struct BatchLine {
    document: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<fanfare::RunReport>,
}

/// Documents already in `out` (so a rerun skips them).
fn already_done(
    out: &Path,
    retry_failed: bool,
) -> anyhow::Result<std::collections::HashSet<String>> {
    let mut done = std::collections::HashSet::new();
    let text = match std::fs::read_to_string(out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    for (n, line) in text.lines().enumerate() {
        match serde_json::from_str::<BatchLine>(line) {
            Ok(l) if retry_failed && l.status != "succeeded" => {
                done.remove(&l.document);
            }
            Ok(l) => {
                done.insert(l.document);
            }
            // An interrupted write leaves a partial last line: redo that document.
            Err(_) => eprintln!(
                "fanfare: {}:{}: unreadable line ignored",
                out.display(),
                n + 1
            ),
        }
    }
    Ok(done)
}

pub async fn batch(args: BatchArgs) -> anyhow::Result<bool> {
    use futures::StreamExt;
    use std::io::{IsTerminal, Write};
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let done = already_done(&args.out, args.retry_failed)?;
    let todo: Vec<PathBuf> = args
        .files
        .iter()
        .filter(|f| !done.contains(&f.display().to_string()))
        .cloned()
        .collect();
    let skipped = args.files.len() - todo.len();
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let Prepared {
        fanfare,
        names,
        gate,
    } = prepare(&args.common).await?;
    let started = std::time::Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(todo.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents · {elapsed} · {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let total = todo.len();
    let common = &args.common;
    let names = &names;
    let runs = futures::stream::iter(todo)
        .map(|path| {
            let fanfare = fanfare.clone();
            async move {
                let result = match std::fs::read_to_string(&path) {
                    Err(e) => Err(format!("cannot read {}: {e}", path.display())),
                    Ok(text) if text.trim().is_empty() => {
                        Err(format!("{} is empty", path.display()))
                    }
                    Ok(text) => fanfare
                        .run(request_for(common, text, names))
                        .await
                        .map_err(|e| e.to_string()),
                };
                (path, result)
            }
        })
        .buffered(args.concurrency);
    futures::pin_mut!(runs);
    let (mut ok, mut failed, mut usage, mut cost) =
        (0usize, 0usize, fanfare::provider::Usage::default(), 0.0f64);
    let mut finished = 0usize;
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            n = runs.next() => n,
            _ = tokio::signal::ctrl_c() => { interrupted = true; None }
        };
        let Some((path, result)) = next else { break };
        finished += 1;
        let document = path.display().to_string();
        let line = match result {
            Ok(report) => {
                usage += report.totals.usage;
                cost += report.totals.cost_usd.unwrap_or(0.0);
                let (status, reason) = match &report.status {
                    fanfare::RunStatus::Succeeded => ("succeeded", None),
                    fanfare::RunStatus::Failed { reason } => ("failed", Some(reason.to_string())),
                };
                BatchLine {
                    document: document.clone(),
                    status: status.to_owned(),
                    reason,
                    report: Some(report),
                }
            }
            Err(reason) => BatchLine {
                document: document.clone(),
                status: "failed".to_owned(),
                reason: Some(reason),
                report: None,
            },
        };
        if line.status == "succeeded" {
            ok += 1
        } else {
            failed += 1
        }
        let verdict = match &line.reason {
            None => "ok".to_owned(),
            Some(r) => format!("FAILED: {r}"),
        };
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        out.flush()?;
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{ok} ok, {failed} failed"));
                bar.inc(1);
            }
            None => eprintln!("fanfare: [{finished}/{total}] {document}: {verdict}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    fanfare.clone().shutdown().await;
    eprintln!(
        "batch: {ok} ok, {failed} failed, {skipped} skipped (already in {}) · tokens {} in / {} out · cost ${cost:.4} · {:.1}s",
        args.out.display(),
        usage.input_tokens,
        usage.output_tokens,
        started.elapsed().as_secs_f64()
    );
    print_admission(gate.as_ref());
    if interrupted {
        bail!("interrupted after {finished} of {total} documents; run the same command again to resume");
    }
    Ok(failed == 0)
}
