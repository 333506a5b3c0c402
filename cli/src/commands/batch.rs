//! `fanfare batch`: many documents, each a fan-out, at most N at once; resumable.
//!
//! - The request is checked once before any document runs: a configuration error
//!   (say `--policy partial:99`) exits 2 and writes nothing.
//! - Each document is named by the path given and identified by its canonical path,
//!   so `docs/x` and `./docs/x` run once; `--out` may not be one of the inputs.
//! - Results are written as documents finish (completion order; each line carries its
//!   input `index`), one `write` per line on a file opened for appending and locked for
//!   the batch's lifetime, so a second batch on the same file is refused and a kill
//!   leaves at most one partial last line, which a rerun ignores.
//! - Ctrl-C or SIGTERM cancels the runs in flight (their model calls are aborted),
//!   keeps what was written, and exits 130 or 143; a second one exits at once.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::args::BatchArgs;
use crate::plan::request_for;
use crate::setup::{prepare, print_admission, Prepared};
use crate::signals::{stop_requested, Interrupted};

/// One line of a batch's output file.
#[derive(serde::Serialize, serde::Deserialize)]
struct BatchLine {
    /// The path as given on the command line.
    document: String,
    /// Its canonical path: what a rerun matches on.
    #[serde(default)]
    path: Option<String>,
    /// Its position among the inputs.
    #[serde(default)]
    index: usize,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<fanfare::RunReport>,
}

/// One input document.
struct Document {
    index: usize,
    /// As given.
    shown: String,
    /// Canonical (or, if it cannot be resolved, as given: reading it will fail and
    /// say why).
    key: String,
    path: PathBuf,
}

/// The inputs in order, each once (by canonical path).
fn documents(files: &[PathBuf]) -> Vec<Document> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let key = std::fs::canonicalize(path)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| path.display().to_string());
        if !seen.insert(key.clone()) {
            eprintln!(
                "fanfare: {} is given more than once; it runs once",
                path.display()
            );
            continue;
        }
        out.push(Document {
            index,
            shown: path.display().to_string(),
            key,
            path: path.clone(),
        });
    }
    out
}

/// Documents already in `out`, by key (so a rerun skips them). The last line for a
/// document is the one that counts; unreadable lines (an interrupted write) are
/// ignored, so their documents run again.
fn already_done(out: &Path, retry_failed: bool) -> anyhow::Result<HashSet<String>> {
    let text = match std::fs::read_to_string(out) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    let mut last: HashMap<String, bool> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        match serde_json::from_str::<BatchLine>(line) {
            Ok(l) => {
                let key = l.path.unwrap_or(l.document);
                last.insert(key, l.status == "succeeded");
            }
            Err(_) => eprintln!(
                "fanfare: {}:{}: unreadable line ignored (its document runs again)",
                out.display(),
                n + 1
            ),
        }
    }
    Ok(last
        .into_iter()
        .filter(|(_, ok)| *ok || !retry_failed)
        .map(|(key, _)| key)
        .collect())
}

pub async fn batch(args: BatchArgs) -> anyhow::Result<bool> {
    use futures::StreamExt;
    use std::io::IsTerminal;
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let documents = documents(&args.files);
    if let Ok(out) = std::fs::canonicalize(&args.out) {
        let out = out.display().to_string();
        if documents.iter().any(|d| d.key == out) {
            bail!(
                "--out {} is one of the input documents; results would overwrite it",
                args.out.display()
            );
        }
    }
    let Prepared {
        fanfare,
        plan,
        gate,
    } = prepare(&args.common).await?;
    // A configuration error fails every document the same way: say so once, run none.
    let checked = request_for(&args.common, "check".to_owned(), &plan, None)
        .and_then(|r| fanfare.validate(&r).map_err(anyhow::Error::from));
    if let Err(e) = checked {
        fanfare.shutdown().await;
        return Err(e);
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    match out.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is being written by another batch; wait for it or choose another --out",
            args.out.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", args.out.display()))
        }
    }
    let done = already_done(&args.out, args.retry_failed)?;
    let todo: Vec<Document> = documents
        .into_iter()
        .filter(|d| !done.contains(&d.key))
        .collect();
    let skipped = args.files.len() - todo.len();
    let started = std::time::Instant::now();
    let total = todo.len();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} documents · {elapsed} · {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let common = &args.common;
    let plan = &plan;
    let runs = futures::stream::iter(todo)
        .map(|doc| {
            let fanfare = fanfare.clone();
            async move {
                let result = match std::fs::read_to_string(&doc.path) {
                    Err(e) => Err(format!("cannot read {}: {e}", doc.shown)),
                    Ok(text) if text.trim().is_empty() => Err(format!("{} is empty", doc.shown)),
                    Ok(text) => match request_for(common, text, plan, None) {
                        Ok(request) => fanfare.run(request).await.map_err(|e| e.to_string()),
                        Err(e) => Err(format!("{e:#}")),
                    },
                };
                (doc, result)
            }
        })
        .buffer_unordered(args.concurrency);
    let mut runs = Box::pin(runs);
    let (mut ok, mut failed, mut usage, mut cost) =
        (0usize, 0usize, fanfare::provider::Usage::default(), 0.0f64);
    let mut finished = 0usize;
    let stop = stop_requested();
    tokio::pin!(stop);
    let mut interrupted = None;
    loop {
        let next = tokio::select! {
            n = runs.next() => n,
            signal = &mut stop => { interrupted = Some(signal); None }
        };
        let Some((doc, result)) = next else { break };
        finished += 1;
        let line = match result {
            Ok(report) => {
                usage += report.totals.usage;
                cost += report.totals.cost_usd.unwrap_or(0.0);
                let (status, reason) = match &report.status {
                    fanfare::RunStatus::Succeeded => ("succeeded", None),
                    fanfare::RunStatus::Failed { reason } => ("failed", Some(reason.to_string())),
                };
                BatchLine {
                    document: doc.shown.clone(),
                    path: Some(doc.key.clone()),
                    index: doc.index,
                    status: status.to_owned(),
                    reason,
                    report: Some(report),
                }
            }
            Err(reason) => BatchLine {
                document: doc.shown.clone(),
                path: Some(doc.key.clone()),
                index: doc.index,
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
        // One write per line, so a line is either whole or (after a kill) the last,
        // partial one, which a rerun ignores.
        let mut bytes = serde_json::to_vec(&line)?;
        bytes.push(b'\n');
        out.write_all(&bytes)
            .and_then(|()| out.flush())
            .with_context(|| format!("writing {}", args.out.display()))?;
        match &bar {
            Some(bar) => {
                bar.set_message(format!("{ok} ok, {failed} failed"));
                bar.inc(1);
            }
            None => eprintln!("fanfare: [{finished}/{total}] {}: {verdict}", doc.shown),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // Dropping the runs still in flight cancels them (and aborts their model calls).
    drop(runs);
    let drain = if interrupted.is_some() {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs(10)
    };
    fanfare.clone().shutdown_with_drain(drain).await;
    eprintln!(
        "batch: {ok} ok, {failed} failed, {skipped} skipped (already in {}) · tokens {} in / {} out · cost ${cost:.4} · {:.1}s",
        args.out.display(),
        usage.input_tokens,
        usage.output_tokens,
        started.elapsed().as_secs_f64()
    );
    print_admission(gate.as_ref());
    if let Some(signal) = interrupted {
        return Err(Interrupted {
            signal,
            what: format!(
                "{finished} of {total} documents finished and were written; the rest were cancelled. Run the same command again to resume"
            ),
        }
        .into());
    }
    Ok(failed == 0)
}
