//! `fanfare batch`: many documents, each a fan-out, at most N at once; resumable.
//!
//! A batch is one run with one map step over the documents whose step runs the
//! workflow whole ([`Step::workflow`]): the same map every workflow uses, so the
//! documents share the runtime's admission and cancellation, and each document's
//! run ends with a report of its own, carried by its item's event.
//!
//! - The request is checked once before any document runs: a configuration error
//!   (say `--policy partial:99`) exits 2 and writes nothing.
//! - Every document is read before the first one runs; one that cannot be read (or
//!   is empty) gets its failed line at once and the others run.
//! - Each document is named by the path given and identified by its canonical path,
//!   so `docs/x` and `./docs/x` run once; `--out` may not be one of the inputs. A
//!   rerun skips a document whose last line has the same content digest (an edited
//!   document runs again; lines written before digests were kept match by path).
//! - Each document's answer (or why it failed) is printed on stdout as it finishes;
//!   `--show` prints what a results file holds the same way.
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
use fanfare::run::{Map, MapSource};
use fanfare::{Policy, RunEvent, RunReport, RunRequest, Step};

use crate::args::BatchArgs;
use crate::plan::{request_for, Plan};
use crate::setup::{finish_admission, prepare, Prepared};
use crate::signals::{stop_requested, Interrupted};

/// Cuts `file` (at `path`) back to its last complete line; answers how many bytes
/// of a torn last line were cut, if any.
fn cut_torn_tail(file: &std::fs::File, path: &std::path::Path) -> anyhow::Result<Option<u64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.last().is_none_or(|b| *b == b'\n') {
        return Ok(None);
    }
    let keep = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    file.set_len(keep as u64)
        .with_context(|| format!("cutting the torn last line of {}", path.display()))?;
    Ok(Some((bytes.len() - keep) as u64))
}

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
    /// The SHA-256 of its text, when it could be read: what a rerun compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
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
    /// Its text's digest, once it has been read.
    sha256: Option<String>,
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
            sha256: None,
        });
    }
    out
}

/// The last line of each document in `out`, by key, in the order first seen.
/// Unreadable lines (an interrupted write) are ignored, so their documents run again.
fn last_lines(out: &Path) -> anyhow::Result<Vec<(String, BatchLine)>> {
    use std::io::BufRead as _;
    let file = match std::fs::File::open(out) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        bail!("{} is not a regular file", out.display());
    }
    let mut order: Vec<String> = Vec::new();
    let mut last: HashMap<String, BatchLine> = HashMap::new();
    // Line by line: a results file holds every document's report.
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.unwrap_or_default();
        match serde_json::from_str::<BatchLine>(&line) {
            Ok(l) => {
                let key = l.path.clone().unwrap_or_else(|| l.document.clone());
                if last.insert(key.clone(), l).is_none() {
                    order.push(key);
                }
            }
            Err(_) => eprintln!(
                "fanfare: {}:{}: unreadable line ignored (its document runs again)",
                out.display(),
                n + 1
            ),
        }
    }
    Ok(order
        .into_iter()
        .filter_map(|k| last.remove(&k).map(|l| (k, l)))
        .collect())
}

/// Whether `doc`, whose text now digests to `sha256` (`None`: unreadable), is done
/// by its last line: it ended (succeeded, or failed without --retry-failed) on the
/// same content.
fn is_done(line: Option<&BatchLine>, sha256: Option<&str>, retry_failed: bool) -> bool {
    let Some(line) = line else { return false };
    let ended = line.status == "succeeded" || !retry_failed;
    let same = match (&line.sha256, sha256) {
        (Some(was), Some(now)) => was == now,
        // Written before digests were kept, or unreadable then: by path.
        (None, _) => true,
        (Some(_), None) => false,
    };
    ended && same
}

/// What a finished document shows on stdout: its answer, or why there is none.
fn shown(line: &BatchLine) -> String {
    let what = match (
        &line.reason,
        line.report.as_ref().and_then(RunReport::answer),
    ) {
        (None, Some(answer)) => answer.trim().to_owned(),
        (None, None) => "(no single answer: see the report in the results file)".to_owned(),
        (Some(reason), _) => format!("({reason})"),
    };
    let verdict = if line.reason.is_none() {
        "ok"
    } else {
        "FAILED"
    };
    format!(
        "── {} · {verdict} ──\n{}\n\n",
        line.document,
        fanfare::report::printable(&what)
    )
}

/// `batch --show`: each document's last line in `out`, readably.
fn show(out: &Path) -> anyhow::Result<bool> {
    let lines = last_lines(out)?;
    if lines.is_empty() {
        bail!("{} holds no results", out.display());
    }
    let failed = lines
        .iter()
        .filter(|(_, l)| l.status != "succeeded")
        .count();
    for (_, line) in &lines {
        crate::output::stdout(&shown(line))?;
    }
    eprintln!(
        "{}: {} ok, {failed} failed",
        out.display(),
        lines.len() - failed
    );
    Ok(failed == 0)
}

/// The line of a document that ended, with or without a report of its run.
fn line_for(doc: &Document, outcome: Result<RunReport, String>) -> BatchLine {
    let (status, reason, report) = match outcome {
        Ok(report) => match &report.status {
            fanfare::RunStatus::Succeeded => ("succeeded", None, Some(report)),
            fanfare::RunStatus::Failed { reason } => {
                ("failed", Some(reason.to_string()), Some(report))
            }
        },
        Err(reason) => ("failed", Some(reason), None),
    };
    BatchLine {
        document: doc.shown.clone(),
        path: Some(doc.key.clone()),
        index: doc.index,
        sha256: doc.sha256.clone(),
        status: status.to_owned(),
        reason,
        report,
    }
}

/// The batch as one run: a map step over `texts`, each item running `template`
/// whole within `--deadline`, `concurrency` at once, every item let to finish.
fn batch_request(
    template: RunRequest,
    name: String,
    texts: Vec<String>,
    concurrency: usize,
) -> RunRequest {
    let per_document = template.deadline;
    let crash_retries = template.crash_retries;
    let mut step = Step::workflow(template.into_workflow(name))
        .named("documents")
        .map(Map {
            over: MapSource::Items(texts),
            concurrency,
            policy: Policy::TolerantPartial { quorum: 1 },
        });
    step.timeout = Some(per_document);
    let mut request = RunRequest::fan_out(String::new(), Vec::<String>::new())
        .deadline(RunRequest::LONGEST)
        .branch_timeout(per_document)
        .crash_retries(crash_retries);
    request.steps = vec![step];
    request
}

/// Where the lines go: the output file, and what has been written so far.
struct Output<'a> {
    file: std::fs::File,
    path: &'a Path,
    bar: Option<indicatif::ProgressBar>,
    ok: usize,
    failed: usize,
    finished: usize,
    total: usize,
    usage: fanfare::provider::Usage,
    cost: f64,
}

impl Output<'_> {
    /// Appends `line` in one `write`, so a line is either whole or (after a kill)
    /// the last, partial one, which a rerun ignores.
    fn write(&mut self, line: &BatchLine) -> anyhow::Result<()> {
        self.finished += 1;
        if let Some(report) = &line.report {
            self.usage += report.totals.usage;
            self.cost += report.totals.cost_usd.unwrap_or(0.0);
        }
        if line.status == "succeeded" {
            self.ok += 1
        } else {
            self.failed += 1
        }
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        let answer = shown(line);
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| crate::output::stdout(&answer))?;
                bar.set_message(format!("{} ok, {} failed", self.ok, self.failed));
                bar.inc(1);
            }
            None => {
                let verdict = match &line.reason {
                    None => "ok".to_owned(),
                    Some(r) => format!("FAILED: {r}"),
                };
                eprintln!(
                    "fanfare: [{}/{}] {}: {verdict}",
                    self.finished, self.total, line.document
                );
                crate::output::stdout(&answer)?;
            }
        }
        Ok(())
    }
}

pub async fn batch(args: BatchArgs) -> anyhow::Result<bool> {
    use std::io::IsTerminal;
    if args.show {
        return show(&args.out);
    }
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
        ..
    } = prepare(&args.common).await?;
    // A configuration error fails every document the same way: say so once, run none.
    let checked = request_for(&args.common, "check".to_owned(), &plan, None).and_then(|r| {
        fanfare.validate(&r)?;
        Ok(r)
    });
    let template = match checked {
        Ok(r) => r,
        Err(e) => {
            fanfare.shutdown().await;
            return Err(e);
        }
    };
    let name = match &plan {
        Plan::FanOut(_) => "fan-out".to_owned(),
        Plan::Workflow(w) => w.name.clone(),
    };
    // A results file is a regular file: `--out /dev/full` was read without end.
    if let Ok(meta) = std::fs::metadata(&args.out) {
        if !meta.is_file() {
            bail!("--out {} is not a regular file", args.out.display());
        }
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{} is being written by another batch; wait for it or choose another --out",
            args.out.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", args.out.display()))
        }
    }
    // A batch killed mid-write leaves a torn last line; appending after it would
    // glue the next record onto it and lose both (seventh probe, H3).
    if let Some(cut) = cut_torn_tail(&file, &args.out)? {
        eprintln!(
            "warning: {} ended in a torn line ({cut} bytes, from an interrupted batch); it was cut, and its document runs again",
            args.out.display()
        );
    }
    // Every document is read (its digest says whether it changed since its line).
    let last: HashMap<String, BatchLine> = last_lines(&args.out)?.into_iter().collect();
    let mut todo: Vec<(Document, anyhow::Result<String>)> = Vec::new();
    let mut skipped = args.files.len() - documents.len();
    for mut doc in documents {
        let text = crate::input::read_document(&doc.path);
        doc.sha256 = text.as_deref().ok().map(fanfare::run::Asked::digest);
        if is_done(last.get(&doc.key), doc.sha256.as_deref(), args.retry_failed) {
            skipped += 1;
        } else {
            todo.push((doc, text));
        }
    }
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
    let mut out = Output {
        file,
        path: &args.out,
        bar,
        ok: 0,
        failed: 0,
        finished: 0,
        total: todo.len(),
        usage: fanfare::provider::Usage::default(),
        cost: 0.0,
    };
    // Documents that cannot run are written now; the rest are the map's items.
    let mut runnable = Vec::new();
    let mut texts = Vec::new();
    for (doc, text) in todo {
        match text {
            Err(e) => out.write(&line_for(&doc, Err(format!("cannot read it: {e:#}"))))?,
            Ok(text) if text.trim().is_empty() => {
                out.write(&line_for(&doc, Err(format!("{} is empty", doc.shown))))?
            }
            Ok(text) => {
                runnable.push(doc);
                texts.push(text);
            }
        }
    }
    let stop = stop_requested();
    tokio::pin!(stop);
    let mut interrupted = None;
    if !runnable.is_empty() {
        let request = batch_request(template, name, texts, args.concurrency);
        let mut run = fanfare.start_run(request);
        loop {
            let event = tokio::select! {
                e = run.events.recv() => e,
                signal = &mut stop => { interrupted = Some(signal); None }
            };
            let Some(event) = event else { break };
            let RunEvent::BranchFinished {
                item: Some(k),
                outcome,
                sub_run,
                ..
            } = event
            else {
                continue;
            };
            let Some(doc) = runnable.get(k as usize) else {
                continue;
            };
            let result = match sub_run {
                Some(sub) => Ok(sub.report()),
                None => Err(outcome
                    .problem()
                    .unwrap_or_else(|| "ended without running".to_owned())),
            };
            out.write(&line_for(doc, result))?;
        }
        // Dropping the run cancels the documents still in flight (and aborts their
        // model calls).
        drop(run);
    }
    if let Some(bar) = out.bar.take() {
        bar.finish_and_clear();
    }
    let drain = if interrupted.is_some() {
        std::time::Duration::ZERO
    } else {
        std::time::Duration::from_secs(10)
    };
    fanfare.clone().shutdown_with_drain(drain).await;
    eprintln!(
        "batch: {} ok, {} failed, {skipped} skipped (already in {}) · tokens {} in / {} out · cost ${:.4} · {:.1}s",
        out.ok,
        out.failed,
        args.out.display(),
        out.usage.input_tokens,
        out.usage.output_tokens,
        out.cost,
        started.elapsed().as_secs_f64()
    );
    finish_admission(gate.as_ref());
    if let Some(signal) = interrupted {
        return Err(Interrupted {
            signal,
            what: format!(
                "{} of {} documents finished and were written; the rest were cancelled. Run the same command again to resume",
                out.finished, out.total
            ),
        }
        .into());
    }
    Ok(out.failed == 0)
}
