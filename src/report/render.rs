//! The human view of a [`RunReport`]: each branch's answer or failure, the merge, the
//! totals, and a text timeline on a common scale.

use std::fmt::Write as _;
use std::time::Duration;

use super::{BranchReport, RunReport, RunStatus};
use crate::run::{BranchOutcome, MergeTree, WindowSource};

/// `text` safe to print on a terminal: control characters other than newlines and
/// tabs (escape sequences could retitle, clear or rewrite the terminal) become `�`.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        text.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '\u{FFFD}'
                } else {
                    c
                }
            })
            .collect()
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// `text` on one line for a terminal: every control character, newlines and tabs
/// too, replaced (a name a hostile server sent forged lines of the report).
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars()
            .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
            .collect()
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// How the merge fitted, when there is anything to say: the levels of partial
/// merges, what was cut, and where the window came from.
fn merge_tree(out: &mut String, tree: &MergeTree) {
    if !tree.is_hierarchical() && tree.cut.is_empty() && tree.overflows == 0 {
        return;
    }
    let window = match (tree.window, tree.window_source) {
        (Some(w), Some(WindowSource::Setting)) => format!("a {w}-token window (as set)"),
        (Some(w), Some(WindowSource::Learned)) => {
            format!("a {w}-token window (learned from the server's overflow error)")
        }
        (Some(w), _) => format!("a {w}-token window (known for the model)"),
        (None, _) => "an unknown window".to_owned(),
    };
    let _ = writeln!(
        out,
        "merge tree: {} level(s) of partial merges to fit {window}",
        tree.levels.len()
    );
    for (i, level) in tree.levels.iter().enumerate() {
        let parts: Vec<String> = level
            .iter()
            .map(|n| format!("{} ← {}", n.label, n.inputs.join(", ")))
            .collect();
        let _ = writeln!(out, "  level {}: {}", i + 1, printable(&parts.join(" · ")));
    }
    if let Some(last) = tree.levels.last() {
        let labels: Vec<&str> = last.iter().map(|n| n.label.as_str()).collect();
        let _ = writeln!(out, "  final ← {}", labels.join(", "));
    }
    if !tree.cut.is_empty() {
        let _ = writeln!(out, "  cut to fit: {}", printable(&tree.cut.join(", ")));
    }
    if tree.overflows > 0 {
        let _ = writeln!(
            out,
            "  {} call(s) refused as too long, then planned again",
            tree.overflows
        );
    }
    out.push('\n');
}

impl BranchReport {
    /// How the branch is named to a reader: its step, and the agent or function
    /// behind it when that has another name (`summary (summariser)`).
    pub fn label(&self) -> String {
        if self.step == self.agent {
            one_line(&self.step).into_owned()
        } else {
            format!("{} ({})", one_line(&self.step), one_line(&self.agent))
        }
    }
}

impl RunReport {
    /// The branch that finished last (the straggler), if any ran.
    pub fn slowest(&self) -> Option<&BranchReport> {
        self.branches
            .iter()
            .filter(|b| b.start.is_some())
            .max_by_key(|b| b.end)
    }

    /// A text timeline: one bar per branch (and one for the merge) on a common scale
    /// of `width` columns.
    pub fn timeline(&self, width: usize) -> String {
        let width = width.max(10);
        let total = self.wall.as_secs_f64().max(1e-9);
        let col = |d: Duration| ((d.as_secs_f64() / total) * width as f64).round() as usize;
        let name_w = self
            .branches
            .iter()
            .map(|b| b.step.len())
            .chain([9])
            .max()
            .unwrap_or(9);
        let mut out = String::new();
        let mut bar = |label: &str, start: Option<Duration>, end: Duration, tail: String| {
            let (a, b) = match start {
                Some(s) => (col(s).min(width), col(end).min(width)),
                None => (width, width),
            };
            let b = b.max(a + usize::from(start.is_some() && a < width));
            let line: String = (0..width)
                .map(|i| if i >= a && i < b { '█' } else { '·' })
                .collect();
            let _ = writeln!(out, "  {label:<name_w$} |{line}| {tail}");
        };
        for br in &self.branches {
            let tail = format!(
                "{:<9} {:>7.2}s",
                br.outcome.label(),
                br.duration().as_secs_f64()
            );
            let mark = if br.critical && self.critical_path.len() > 1 {
                " ◆ critical path"
            } else {
                ""
            };
            bar(&br.step, br.start, br.end, format!("{tail}{mark}"));
        }
        if let Some(s) = &self.synthesis {
            let status = if s.error.is_some() { "failed" } else { "ok" };
            let tail = format!(
                "{:<9} {:>7.2}s",
                status,
                s.end.saturating_sub(s.start).as_secs_f64()
            );
            bar("synthesis", Some(s.start), s.end, tail);
        }
        out
    }

    /// The human view: each branch's answer or failure, the merge, and the timeline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.simulated {
            let _ = writeln!(
                out,
                "NOTE: provider `{}` is simulated; the text below is generated without a model.\n",
                self.provider
            );
        }
        for b in &self.branches {
            let _ = write!(out, "── {} · {}", b.label(), b.outcome.label());
            if b.start.is_some() {
                let _ = write!(out, " · {:.2}s", b.duration().as_secs_f64());
            }
            if b.usage.total() > 0 {
                let _ = write!(out, " · {} tokens", b.usage.total());
            }
            if b.late {
                let _ = write!(out, " · late (after the merge)");
            }
            if let Some(o) = b.outcome.output().filter(|o| o.tool_calls > 0) {
                let calls = if o.tool_calls == 1 { "call" } else { "calls" };
                let _ = write!(out, " · {} tool {calls}", o.tool_calls);
                if o.tool_errors > 0 {
                    let _ = write!(out, " ({} failed)", o.tool_errors);
                }
            }
            if b.outcome.output().is_some_and(|o| o.truncated) {
                let _ = write!(out, " · cut at max_tokens");
            }
            match b.reused {
                Some(crate::run::Reused::BeforeResume) => {
                    let _ = write!(out, " · answered before the run resumed");
                }
                Some(crate::run::Reused::EarlierRun) => {
                    let _ = write!(out, " · reused from the run it repairs");
                }
                None => {}
            }
            if let Some(node) = &b.node {
                let _ = write!(out, " · on {}", one_line(node));
            }
            let _ = writeln!(out, " ──");
            for call in b.outcome.output().map_or(&[][..], |o| &o.tool_log[..]) {
                let _ = write!(
                    out,
                    "  ⚙ {} · turn {} · {} ms · {} bytes · args {}",
                    one_line(&call.tool),
                    call.turn,
                    call.took_ms,
                    call.bytes,
                    one_line(&call.input_digest)
                );
                match &call.error {
                    Some(e) => {
                        let first: String = e.chars().take(120).collect();
                        let _ = writeln!(out, " · failed: {}", one_line(&first));
                    }
                    None => {
                        let _ = writeln!(out);
                    }
                }
            }
            for sub in &b.delegated {
                let ended = match &sub.status {
                    super::RunStatus::Succeeded => "succeeded".to_owned(),
                    super::RunStatus::Failed { reason } => {
                        let why: String = reason.to_string().chars().take(120).collect();
                        format!("failed: {}", printable(&why))
                    }
                };
                let agents: Vec<&str> = sub.branches.iter().map(|b| b.agent.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  ↳ run_workflow → {} ({}) · {ended} · {} tokens",
                    sub.run_id,
                    one_line(&agents.join(", ")),
                    sub.totals.usage.total()
                );
            }
            match (&b.outcome, &b.error) {
                (BranchOutcome::Ok(o), _) => {
                    let _ = writeln!(out, "{}\n", printable(o.text.trim()));
                }
                (_, Some(e)) => {
                    let _ = writeln!(out, "({})", printable(e));
                    if let BranchOutcome::TimedOut {
                        partial: Some(text),
                        ..
                    } = &b.outcome
                    {
                        let _ = writeln!(
                            out,
                            "partial, cut by the deadline:\n{}…",
                            printable(text.trim())
                        );
                    }
                    out.push('\n');
                }
                _ => {}
            }
            for c in &b.conflicts {
                let how = c.resolved.as_deref().unwrap_or("unresolved");
                let _ = writeln!(out, "conflict {} → {how}", printable(&c.to_string()));
            }
            if !b.conflicts.is_empty() {
                out.push('\n');
            }
        }
        if let Some(s) = &self.synthesis {
            let _ = writeln!(out, "══ synthesis ({} merge) ══", s.strategy);
            if let Some(agent) = &s.chosen {
                let _ = writeln!(out, "(selected: {agent})");
            }
            match (&s.text, &s.error) {
                (Some(t), _) => {
                    let _ = writeln!(out, "{}\n", printable(t.trim()));
                }
                (None, Some(e)) => {
                    let _ = writeln!(out, "({})\n", printable(e));
                }
                _ => {}
            }
            if let Some(tree) = &s.tree {
                merge_tree(&mut out, tree);
            }
        }
        let _ = writeln!(
            out,
            "{} · {} · {} · wall {:.2}s",
            self.run_id,
            self.policy,
            match &self.status {
                RunStatus::Succeeded => "succeeded".to_owned(),
                RunStatus::Failed { reason } => format!("FAILED: {reason}"),
            },
            self.wall.as_secs_f64()
        );
        let t = &self.totals;
        let _ = writeln!(
            out,
            "branches: {} ok, {} failed, {} timed out, {} cancelled, {} refused · tokens: {} in / {} out",
            t.ok,
            t.failed,
            t.timed_out,
            t.cancelled,
            t.refused,
            t.usage.input_tokens,
            t.usage.output_tokens
        );
        match (t.cost_usd, t.unpriced_calls) {
            (Some(c), 0) => {
                let _ = writeln!(out, "cost: ${c:.4}");
            }
            (Some(c), n) => {
                let _ = writeln!(
                    out,
                    "cost: ${c:.4} + {n} calls on models with no known price"
                );
            }
            (None, n) if n > 0 => {
                let _ = writeln!(
                    out,
                    "cost: unknown ({n} calls on models with no known price)"
                );
            }
            _ => {}
        }
        if t.usage.cache_read_input_tokens > 0 {
            let saved = t
                .cache_saved_usd
                .map(|s| format!(" (saved ${s:.4})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "prompt cache: {} input tokens read from the cache{saved}",
                t.usage.cache_read_input_tokens
            );
        }
        if t.wasted_calls > 0 {
            let _ = writeln!(
                out,
                "wasted calls: {} ({} refused for load: 429/529) — calls whose answer was not used",
                t.wasted_calls, t.rate_limited
            );
        }
        out.push_str(&self.timeline(40));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regression_model_output_cannot_send_escape_sequences_to_the_terminal() {
        let hostile = "fine\u{1b}]0;pwned\u{7}\u{1b}[2J text\nnext\tline";
        assert_eq!(
            printable(hostile),
            "fine\u{FFFD}]0;pwned\u{FFFD}\u{FFFD}[2J text\nnext\tline"
        );
        assert!(matches!(printable("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn regression_a_name_from_a_hostile_server_stays_on_its_line() {
        // A step name with a newline and ESC forged lines of `watch`'s final report.
        assert_eq!(
            one_line("step\nFAKE LINE\u{1b}[2J\u{9b}"),
            "step\u{FFFD}FAKE LINE\u{FFFD}[2J\u{FFFD}"
        );
        assert!(matches!(one_line("plain"), std::borrow::Cow::Borrowed(_)));
    }
}
