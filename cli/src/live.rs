//! A run shown live while it goes on: one line per branch with a spinner, its
//! elapsed time and (when the model streams) a growing token count, replaced by its
//! outcome the moment it ends; then the merge. When stdout or stderr is not a
//! terminal, one plain line per event instead. Either way on stderr, so that stdout
//! keeps only the report.
//!
//! Events come from the runtime (`fanfare run`) or from a server's event stream
//! (`fanfare submit`, `fanfare watch`); both become [`Progress`].

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use fanfare::RunEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::Value;

/// What the live view shows.
#[derive(Debug, PartialEq)]
pub enum Progress {
    /// A branch (or map item) was dispatched, `at` this long after the run began
    /// (when the event says).
    Started {
        key: String,
        label: String,
        at: Option<Duration>,
    },
    /// More streamed text of a branch, on attempt `attempt`.
    Delta {
        key: String,
        label: String,
        attempt: u32,
        text: String,
    },
    /// A branch's model call failed (`attempt` of `of`) and goes again after `wait`.
    Retrying {
        key: String,
        label: String,
        attempt: u32,
        of: Option<u32>,
        error: String,
        wait: Duration,
    },
    /// A branch ended (`at`: as for `Started`).
    Finished {
        key: String,
        label: String,
        outcome: String,
        late: bool,
        at: Option<Duration>,
    },
    /// The merge began.
    MergeStarted { inputs: usize },
    /// More streamed text of the merge.
    MergeDelta { text: String },
    /// The merge ended.
    MergeFinished { ok: bool },
}

fn key_label(index: u32, item: Option<u32>, agent: &str) -> (String, String) {
    match item {
        None => (index.to_string(), agent.to_owned()),
        // People count from 1, as the report's sections do; the JSON keeps `item` from 0.
        Some(k) => (format!("{index}.{k}"), format!("{agent} #{}", k + 1)),
    }
}

impl Progress {
    /// From the runtime's event.
    pub fn of_event(e: &RunEvent) -> Option<Progress> {
        Some(match e {
            RunEvent::BranchStarted {
                index,
                item,
                agent,
                at,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Started {
                    key,
                    label,
                    at: Some(*at),
                }
            }
            RunEvent::BranchDelta {
                index,
                item,
                agent,
                attempt,
                text,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Delta {
                    key,
                    label,
                    attempt: *attempt,
                    text: text.clone(),
                }
            }
            RunEvent::BranchFinished {
                index,
                item,
                agent,
                outcome,
                late,
                at,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Finished {
                    key,
                    label,
                    outcome: outcome.label().to_owned(),
                    late: *late,
                    at: Some(*at),
                }
            }
            RunEvent::BranchRetrying {
                index,
                item,
                agent,
                attempt,
                of,
                error,
                wait,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Retrying {
                    key,
                    label,
                    attempt: *attempt,
                    of: *of,
                    error: error.clone(),
                    wait: *wait,
                }
            }
            RunEvent::SynthesisStarted { branches_ok, .. } => Progress::MergeStarted {
                inputs: *branches_ok,
            },
            RunEvent::SynthesisDelta { text, .. } => Progress::MergeDelta { text: text.clone() },
            RunEvent::SynthesisFinished { result, .. } => {
                Progress::MergeFinished { ok: result.is_ok() }
            }
            _ => return None,
        })
    }

    /// From a server's event (`kind`, its JSON data).
    pub fn of_json(kind: &str, v: &Value) -> Option<Progress> {
        let index = v["index"].as_u64().map(|n| n as u32);
        let item = v["item"].as_u64().map(|n| n as u32);
        let agent = v["agent"].as_str().unwrap_or("?");
        let branch = || index.map(|i| key_label(i, item, agent));
        // Since the run began (a watcher may join a run long after).
        let at = v["at"]
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        Some(match kind {
            "branch_started" => {
                let (key, label) = branch()?;
                Progress::Started { key, label, at }
            }
            "branch_delta" => {
                let (key, label) = branch()?;
                Progress::Delta {
                    key,
                    label,
                    attempt: v["attempt"].as_u64().unwrap_or(1) as u32,
                    text: v["text"].as_str()?.to_owned(),
                }
            }
            "branch_retrying" => {
                let (key, label) = branch()?;
                Progress::Retrying {
                    key,
                    label,
                    attempt: v["attempt"].as_u64()? as u32,
                    of: v["of"].as_u64().map(|n| n as u32),
                    error: v["error"].as_str().unwrap_or("?").to_owned(),
                    wait: v["wait"]
                        .as_f64()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .unwrap_or_default(),
                }
            }
            "branch_finished" => {
                let (key, label) = branch()?;
                Progress::Finished {
                    key,
                    label,
                    outcome: v["outcome"]["status"].as_str().unwrap_or("?").to_owned(),
                    late: v["late"].as_bool().unwrap_or(false),
                    at,
                }
            }
            "synthesis_started" => Progress::MergeStarted {
                inputs: v["branches_ok"].as_u64().unwrap_or(0) as usize,
            },
            "synthesis_delta" => Progress::MergeDelta {
                text: v["text"].as_str()?.to_owned(),
            },
            "synthesis_finished" => Progress::MergeFinished {
                ok: v["result"].get("text").or(v["result"].get("Ok")).is_some(),
            },
            _ => return None,
        })
    }
}

/// One branch's line.
struct Row {
    bar: Option<ProgressBar>,
    label: String,
    since: Instant,
    attempt: u32,
    chars: usize,
}

/// The live view of one run.
pub struct Live {
    multi: Option<MultiProgress>,
    started: Instant,
    rows: HashMap<String, Row>,
}

impl Live {
    /// Spinners when stderr, where they are drawn, is a terminal (stdout may go to a
    /// file: `fanfare run … > report.md` still shows the run live, as cargo does);
    /// plain lines otherwise.
    pub fn new() -> Self {
        let terminal = std::io::stderr().is_terminal();
        Self {
            multi: terminal.then(MultiProgress::new),
            started: Instant::now(),
            rows: HashMap::new(),
        }
    }

    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// `when`, in seconds since the run began.
    fn seconds(&self, when: Instant) -> f64 {
        when.saturating_duration_since(self.started).as_secs_f64()
    }

    /// Takes an event's time since the run began: the view's clock starts when the
    /// run did, not when the view did (`watch` of a run under way). Returns when, on
    /// this clock, the event happened.
    fn anchor(&mut self, at: Option<Duration>) -> Instant {
        let now = Instant::now();
        let Some(at) = at else {
            return now;
        };
        if let Some(began) = now.checked_sub(at) {
            self.started = self.started.min(began);
        }
        self.started + at
    }

    fn spinner(&self, label: &str, since: Instant) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.add(ProgressBar::new_spinner().with_elapsed(since.elapsed()));
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Shows one event.
    pub fn show(&mut self, p: Progress) {
        match p {
            Progress::Started { key, label, at } => {
                let since = self.anchor(at);
                let bar = self.spinner(&label, since);
                if bar.is_none() {
                    eprintln!("[{:7.2}s] {label}: started", self.seconds(since));
                }
                self.rows.insert(
                    key,
                    Row {
                        bar,
                        label,
                        since,
                        attempt: 1,
                        chars: 0,
                    },
                );
            }
            Progress::Delta {
                key, attempt, text, ..
            } => {
                let Some(row) = self.rows.get_mut(&key) else {
                    return;
                };
                if attempt != row.attempt {
                    row.attempt = attempt;
                    row.chars = 0;
                }
                row.chars += text.chars().count();
                if let Some(bar) = &row.bar {
                    bar.set_message(format!("{} · ~{} tokens", row.label, row.chars.div_ceil(4)));
                }
            }
            Progress::Retrying {
                key,
                label,
                attempt,
                of,
                error,
                wait,
            } => {
                let of = of.map(|n| format!("/{n}")).unwrap_or_default();
                let note = format!(
                    "↻ attempt {attempt}{of} failed: {error}; next in {:.1}s",
                    wait.as_secs_f64()
                );
                match self.rows.get(&key).and_then(|r| r.bar.as_ref()) {
                    Some(bar) => bar.set_message(format!("{label} · {note}")),
                    None => eprintln!("[{:7.2}s] {label}: {note}", self.at()),
                }
            }
            Progress::Finished {
                key,
                label,
                outcome,
                late,
                at,
            } => {
                let ended = self.anchor(at);
                let late = if late { " (late, after the merge)" } else { "" };
                let mark = if outcome == "ok" { "✓" } else { "✗" };
                match self.rows.remove(&key) {
                    Some(Row {
                        bar: Some(bar),
                        since,
                        ..
                    }) => {
                        if let Ok(style) = ProgressStyle::with_template("{msg}") {
                            bar.set_style(style);
                        }
                        bar.finish_with_message(format!(
                            "{mark} {label} · {outcome} · {:.2}s{late}",
                            ended.saturating_duration_since(since).as_secs_f64()
                        ));
                    }
                    _ => eprintln!("[{:7.2}s] {label}: {outcome}{late}", self.seconds(ended)),
                }
            }
            Progress::MergeStarted { inputs } => {
                let label = format!("merge of {inputs}");
                let bar = self.spinner(&label, Instant::now());
                if bar.is_none() {
                    eprintln!("[{:7.2}s] {label}: started", self.at());
                }
                self.rows.insert(
                    "merge".to_owned(),
                    Row {
                        bar,
                        label,
                        since: Instant::now(),
                        attempt: 1,
                        chars: 0,
                    },
                );
            }
            Progress::MergeDelta { text } => self.show(Progress::Delta {
                key: "merge".to_owned(),
                label: String::new(),
                attempt: 1,
                text,
            }),
            Progress::MergeFinished { ok } => {
                let label = self
                    .rows
                    .get("merge")
                    .map(|r| r.label.clone())
                    .unwrap_or_else(|| "merge".to_owned());
                self.show(Progress::Finished {
                    key: "merge".to_owned(),
                    label,
                    outcome: if ok { "ok" } else { "failed" }.to_owned(),
                    late: false,
                    at: None,
                });
            }
        }
    }

    /// Clears what is still spinning (the run ended without their events).
    pub fn finish(&mut self) {
        for (_, row) in self.rows.drain() {
            if let Some(bar) = row.bar {
                bar.finish_and_clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_servers_events_read_as_the_runtimes_do() {
        let table = [
            (
                "branch_started",
                json!({"index": 2, "item": null, "agent": "legal", "at": 0.1}),
                Some(Progress::Started {
                    key: "2".into(),
                    label: "legal".into(),
                    at: Some(Duration::from_millis(100)),
                }),
            ),
            (
                "branch_finished",
                json!({"index": 1, "item": 3, "agent": "each", "late": true, "outcome": {"status": "timed_out"}}),
                Some(Progress::Finished {
                    key: "1.3".into(),
                    label: "each #4".into(),
                    outcome: "timed_out".into(),
                    late: true,
                    at: None,
                }),
            ),
            (
                "synthesis_finished",
                json!({"result": {"text": "merged"}}),
                Some(Progress::MergeFinished { ok: true }),
            ),
            (
                "branch_retrying",
                json!({"index": 0, "agent": "legal", "attempt": 2, "of": 10, "error": "HTTP 500", "wait": 1.5}),
                Some(Progress::Retrying {
                    key: "0".into(),
                    label: "legal".into(),
                    attempt: 2,
                    of: Some(10),
                    error: "HTTP 500".into(),
                    wait: Duration::from_millis(1500),
                }),
            ),
            ("status", json!({"status": "running"}), None),
            ("branch_started", json!({"agent": "no index"}), None),
        ];
        for (kind, data, want) in table {
            assert_eq!(Progress::of_json(kind, &data), want, "{kind} {data}");
        }
    }

    #[test]
    fn a_watcher_joining_late_times_events_from_the_runs_start() {
        // Regression: `watch` timed events from when it started.
        let mut live = Live {
            multi: None,
            started: Instant::now(),
            rows: HashMap::new(),
        };
        let began = live.anchor(Some(Duration::from_secs(30)));
        assert!(
            live.at() >= 30.0,
            "the clock starts at the run's start: {}",
            live.at()
        );
        assert!((live.seconds(began) - 30.0).abs() < 0.001);
        // An event without a time is now.
        let now = live.anchor(None);
        assert!(live.seconds(now) >= 30.0);
    }
}
