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

use fanfare::provider::PriceTable;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub mod console;
mod progress;

pub use progress::Progress;

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
    /// The overall line under the rows (a terminal only): `3/4 · 6.4s · 812 tok ·
    /// $0.0040`.
    overall: Option<ProgressBar>,
    /// ✓ green and ✗ red: a terminal, and `NO_COLOR` not set.
    colour: bool,
    started: Instant,
    rows: HashMap<String, Row>,
    /// Branches started and ended, and the tokens the ended ones used.
    dispatched: usize,
    ended: usize,
    tokens: u64,
    /// What the ended ones cost, at `prices`; whether one's model had no price.
    prices: PriceTable,
    cost: f64,
    unpriced: bool,
    /// The step whose map runs over given items, and each item's name (its file).
    items: Option<(String, Vec<String>)>,
    /// Rows drawn as spinners now (at most [`MAX_SPINNERS`]).
    spinning: usize,
}

/// The most rows followed at once: a server naming new branches without end took
/// `watch` to 1.9 GB in a minute. Branches beyond it are counted, not shown.
const MAX_ROWS: usize = 10_000;

/// The most spinners drawn at once; the other rows show as lines when they end.
const MAX_SPINNERS: usize = 40;

impl Live {
    /// Spinners when stderr, where they are drawn, is a terminal (stdout may go to a
    /// file: `fanfare run … > report.md` still shows the run live, as cargo does);
    /// plain lines otherwise. Calls are costed at `prices` (a server's own may
    /// differ: its report's cost is the one that counts).
    pub fn new(prices: PriceTable) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let multi = terminal.then(MultiProgress::new);
        if let Some(view) = &multi {
            console::attach(view);
        }
        let overall = multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            if let Ok(style) = ProgressStyle::with_template("{msg}") {
                bar.set_style(style);
            }
            bar
        });
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Self {
            multi,
            overall,
            colour: terminal && !no_colour,
            started: Instant::now(),
            rows: HashMap::new(),
            dispatched: 0,
            ended: 0,
            tokens: 0,
            prices,
            cost: 0.0,
            unpriced: false,
            items: None,
            spinning: 0,
        }
    }

    /// Writes a line above the rows (or to stderr without a view).
    fn line(&self, text: String) {
        match &self.multi {
            Some(_) => console::write(format!("{text}\n").as_bytes()),
            None => eprintln!("{text}"),
        }
    }

    /// Names the items of `step`'s map (`--each`'s files) by `names`, in item
    /// order, rather than by number.
    pub fn name_items(&mut self, step: String, names: Vec<String>) {
        self.items = Some((step, names));
    }

    /// `label` of the row `key`, with its item's name when it has one.
    fn relabel(&self, key: &str, label: &mut String) {
        let Some((step, names)) = &self.items else {
            return;
        };
        let Some(k) = key
            .split_once('.')
            .and_then(|(_, k)| k.parse::<usize>().ok())
        else {
            return;
        };
        if let Some(name) = names.get(k) {
            if *label == format!("{step} #{}", k + 1) {
                *label = format!("{step} · {name}");
            }
        }
    }

    /// The overall line: branches ended of started, time, tokens, cost.
    fn overall_line(&self) -> String {
        let mut line = format!(
            "{}/{} · {:.1}s · {} tok",
            self.ended,
            self.dispatched,
            self.at(),
            self.tokens
        );
        if self.cost > 0.0 || self.unpriced {
            // `+`: some calls used a model with no known price.
            let more = if self.unpriced { "+" } else { "" };
            line.push_str(&format!(" · ${:.4}{more}", self.cost));
        }
        line
    }

    fn update_overall(&self) {
        if let Some(bar) = &self.overall {
            bar.set_message(self.overall_line());
        }
    }

    /// `mark` in green (ok) or red, when colours are on.
    fn paint(&self, mark: &str, ok: bool) -> String {
        match (self.colour, ok) {
            (false, _) => mark.to_owned(),
            (true, true) => format!("\x1b[32m{mark}\x1b[0m"),
            (true, false) => format!("\x1b[31m{mark}\x1b[0m"),
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
        let spinner = ProgressBar::new_spinner().with_elapsed(since.elapsed());
        // Rows above the overall line.
        let bar = match &self.overall {
            Some(overall) => multi.insert_before(overall, spinner),
            None => multi.add(spinner),
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(label.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Shows one event.
    pub fn show(&mut self, mut p: Progress) {
        if let Some((key, label)) = p.row_mut() {
            let key = key.to_owned();
            self.relabel(&key, label);
        }
        match p {
            Progress::Started { key, label, at } => {
                let since = self.anchor(at);
                self.dispatched += 1;
                self.update_overall();
                if self.rows.len() >= MAX_ROWS && !self.rows.contains_key(&key) {
                    return;
                }
                let bar = if self.spinning < MAX_SPINNERS {
                    self.spinner(&label, since)
                } else {
                    None
                };
                match &bar {
                    Some(_) => self.spinning += 1,
                    None if self.multi.is_none() => {
                        eprintln!("[{:7.2}s] {label}: started", self.seconds(since));
                    }
                    None => {}
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
            Progress::Approval {
                key,
                label,
                id,
                tool,
                state,
            } => {
                let tool = fanfare::report::printable(&tool);
                let note = match state.as_str() {
                    "pending" => format!("⏸ {tool} waits for approval {id}"),
                    other => format!("⏸ {tool} {other}"),
                };
                match self.rows.get(&key).and_then(|r| r.bar.as_ref()) {
                    Some(bar) => bar.set_message(format!("{label} · {note}")),
                    None => eprintln!("[{:7.2}s] {label}: {note}", self.at()),
                }
            }
            Progress::Tool {
                key,
                label,
                tool,
                took,
                error,
            } => {
                // The tool's name and error are the model's and a server's words:
                // no escape sequence of theirs reaches the terminal.
                let tool = fanfare::report::printable(&tool);
                let note = match (took, error) {
                    (None, _) => format!("⚙ {tool}…"),
                    (Some(took), None) => format!("⚙ {tool} ✓ {:.2}s", took.as_secs_f64()),
                    (Some(_), Some(e)) => {
                        let first: String = e.chars().take(60).collect();
                        format!("⚙ {tool} ✗ {}", fanfare::report::printable(&first))
                    }
                };
                match self.rows.get(&key).and_then(|r| r.bar.as_ref()) {
                    Some(bar) => bar.set_message(format!("{label} · {note}")),
                    // Without a live view, a line per call that ended.
                    None if took.is_some() => eprintln!("[{:7.2}s] {label}: {note}", self.at()),
                    None => {}
                }
            }
            Progress::Finished {
                key,
                label,
                outcome,
                late,
                at,
                usage,
                model,
            } => {
                let ended = self.anchor(at);
                if key != "merge" {
                    self.ended += 1;
                }
                self.tokens += usage.total();
                if usage.total() > 0 {
                    match model.and_then(|m| self.prices.cost(&m, &usage)) {
                        Some(usd) => self.cost += usd,
                        None => self.unpriced = true,
                    }
                }
                self.update_overall();
                let late = if late { " (late, after the merge)" } else { "" };
                let mark = if outcome == "ok" {
                    self.paint("✓", true)
                } else {
                    self.paint("✗", false)
                };
                match self.rows.remove(&key) {
                    Some(Row {
                        bar: Some(bar),
                        since,
                        ..
                    }) => {
                        self.spinning = self.spinning.saturating_sub(1);
                        if let Ok(style) = ProgressStyle::with_template("{msg}") {
                            bar.set_style(style);
                        }
                        bar.finish_with_message(format!(
                            "{mark} {label} · {outcome} · {:.2}s{late}",
                            ended.saturating_duration_since(since).as_secs_f64()
                        ));
                    }
                    Some(Row { since, .. }) if self.multi.is_some() => self.line(format!(
                        "{mark} {label} · {outcome} · {:.2}s{late}",
                        ended.saturating_duration_since(since).as_secs_f64()
                    )),
                    _ => self.line(format!(
                        "[{:7.2}s] {label}: {outcome}{late}",
                        self.seconds(ended)
                    )),
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
                    // The merge event carries no usage: the report counts it.
                    usage: fanfare::provider::Usage::default(),
                    model: None,
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
        // The overall line stays, as cargo's last line does.
        self.update_overall();
        if let Some(bar) = self.overall.take() {
            bar.finish();
        }
        console::detach();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if self.multi.is_some() {
            console::detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanfare::provider::Usage;

    fn plain(colour: bool) -> Live {
        Live {
            multi: None,
            overall: None,
            colour,
            started: Instant::now(),
            rows: HashMap::new(),
            dispatched: 0,
            ended: 0,
            tokens: 0,
            prices: PriceTable::default(),
            cost: 0.0,
            unpriced: false,
            items: None,
            spinning: 0,
        }
    }

    #[test]
    fn regression_a_server_naming_branches_without_end_is_followed_in_bounded_rows() {
        let mut live = plain(false);
        for i in 0..(MAX_ROWS + 500) {
            live.show(Progress::Started {
                key: i.to_string(),
                label: format!("agent{i}"),
                at: None,
            });
        }
        assert_eq!(live.rows.len(), MAX_ROWS);
        assert_eq!(live.dispatched, MAX_ROWS + 500, "all counted");
    }

    #[test]
    fn items_of_the_map_over_given_files_are_named_by_their_files() {
        let mut live = plain(false);
        live.name_items("documents".into(), vec!["a.md".into(), "b.md".into()]);
        let mut label = "documents #2".to_owned();
        live.relabel("0.1", &mut label);
        assert_eq!(label, "documents · b.md");
        // Another step's items, and steps, keep their labels.
        let mut other = "split #2".to_owned();
        live.relabel("1.1", &mut other);
        assert_eq!(other, "split #2");
        let mut step = "documents".to_owned();
        live.relabel("0", &mut step);
        assert_eq!(step, "documents");
    }

    #[test]
    fn marks_are_coloured_only_when_asked_and_the_overall_counts_follow_the_events() {
        assert_eq!(plain(true).paint("✓", true), "\x1b[32m✓\x1b[0m");
        assert_eq!(plain(true).paint("✗", false), "\x1b[31m✗\x1b[0m");
        assert_eq!(
            plain(false).paint("✓", true),
            "✓",
            "NO_COLOR or not a terminal"
        );
        let mut live = plain(false);
        for key in ["0", "1"] {
            live.show(Progress::Started {
                key: key.into(),
                label: key.into(),
                at: None,
            });
        }
        live.show(Progress::Finished {
            key: "0".into(),
            label: "0".into(),
            outcome: "ok".into(),
            late: false,
            at: None,
            usage: Usage {
                input_tokens: 800,
                output_tokens: 12,
                ..Usage::default()
            },
            model: Some("claude-haiku-4-5".into()),
        });
        assert_eq!((live.ended, live.dispatched, live.tokens), (1, 2, 812));
        // 800 × $1/M + 12 × $5/M.
        assert!(
            live.overall_line().ends_with("812 tok · $0.0009"),
            "{}",
            live.overall_line()
        );
        live.show(Progress::Finished {
            key: "1".into(),
            label: "1".into(),
            outcome: "ok".into(),
            late: false,
            at: None,
            usage: Usage {
                input_tokens: 10,
                ..Usage::default()
            },
            model: Some("a-model-of-no-known-price".into()),
        });
        assert!(
            live.overall_line().ends_with("822 tok · $0.0009+"),
            "{}",
            live.overall_line()
        );
    }

    #[test]
    fn a_watcher_joining_late_times_events_from_the_runs_start() {
        // Regression: `watch` timed events from when it started.
        let mut live = plain(false);
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
