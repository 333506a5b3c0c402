//! What the live view shows, read from the runtime's events or a server's event
//! stream: both become [`Progress`].

use std::time::Duration;

use fanfare::provider::Usage;
use fanfare::RunEvent;
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
    /// A branch's tool call began (`error: None`, `took: None`) or ended.
    Tool {
        key: String,
        label: String,
        tool: String,
        took: Option<Duration>,
        error: Option<String>,
    },
    /// A branch's tool call waits for approval (`state` pending) or was decided.
    Approval {
        key: String,
        label: String,
        id: String,
        tool: String,
        state: String,
    },
    /// A branch ended (`at`: as for `Started`), having used `usage` of `model`.
    Finished {
        key: String,
        label: String,
        outcome: String,
        late: bool,
        at: Option<Duration>,
        usage: Usage,
        model: Option<String>,
    },
    /// The merge began.
    MergeStarted { inputs: usize },
    /// More streamed text of the merge.
    MergeDelta { text: String },
    /// The merge ended.
    MergeFinished { ok: bool },
}

impl Progress {
    /// Its row's key and label, if it has a row.
    pub fn row_mut(&mut self) -> Option<(&str, &mut String)> {
        match self {
            Progress::Started { key, label, .. }
            | Progress::Delta { key, label, .. }
            | Progress::Retrying { key, label, .. }
            | Progress::Tool { key, label, .. }
            | Progress::Approval { key, label, .. }
            | Progress::Finished { key, label, .. } => Some((key.as_str(), label)),
            _ => None,
        }
    }
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
                    usage: outcome.output().map_or_else(Usage::default, |o| o.usage),
                    model: outcome.output().and_then(|o| o.model.clone()),
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
            RunEvent::ToolStarted {
                index,
                item,
                agent,
                tool,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Tool {
                    key,
                    label,
                    tool: tool.clone(),
                    took: None,
                    error: None,
                }
            }
            RunEvent::ToolFinished {
                index,
                item,
                agent,
                tool,
                took,
                error,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Tool {
                    key,
                    label,
                    tool: tool.clone(),
                    took: Some(*took),
                    error: error.clone(),
                }
            }
            RunEvent::Approval {
                index,
                item,
                agent,
                id,
                tool,
                state,
                ..
            } => {
                let (key, label) = key_label(*index, *item, agent);
                Progress::Approval {
                    key,
                    label,
                    id: id.clone(),
                    tool: tool.clone(),
                    state: serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
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
        // A server's words are shown on one line each, with no control character:
        // a hostile server's agent name cleared the screen and retitled it.
        let one_line = |text: &str| fanfare::report::one_line(text).into_owned();
        let line = |field: &str| one_line(v[field].as_str().unwrap_or("?"));
        let agent = line("agent");
        let branch = || index.map(|i| key_label(i, item, &agent));
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
                    text: fanfare::report::printable(v["text"].as_str()?).into_owned(),
                }
            }
            "branch_retrying" => {
                let (key, label) = branch()?;
                Progress::Retrying {
                    key,
                    label,
                    attempt: v["attempt"].as_u64()? as u32,
                    of: v["of"].as_u64().map(|n| n as u32),
                    error: line("error"),
                    wait: v["wait"]
                        .as_f64()
                        .and_then(|s| Duration::try_from_secs_f64(s).ok())
                        .unwrap_or_default(),
                }
            }
            "tool_started" | "tool_finished" => {
                let (key, label) = branch()?;
                Progress::Tool {
                    key,
                    label,
                    tool: line("tool"),
                    took: (kind == "tool_finished").then(|| {
                        v["took"]
                            .as_f64()
                            .and_then(|s| Duration::try_from_secs_f64(s).ok())
                            .unwrap_or_default()
                    }),
                    error: v["error"].as_str().map(one_line),
                }
            }
            "approval" => {
                let (key, label) = branch()?;
                Progress::Approval {
                    key,
                    label,
                    id: line("id"),
                    tool: line("tool"),
                    state: line("state"),
                }
            }
            "branch_finished" => {
                let (key, label) = branch()?;
                Progress::Finished {
                    key,
                    label,
                    outcome: one_line(v["outcome"]["status"].as_str().unwrap_or("?")),
                    late: v["late"].as_bool().unwrap_or(false),
                    at,
                    usage: serde_json::from_value(v["outcome"]["usage"].clone())
                        .unwrap_or_default(),
                    model: v["outcome"]["model"].as_str().map(one_line),
                }
            }
            "synthesis_started" => Progress::MergeStarted {
                inputs: v["branches_ok"].as_u64().unwrap_or(0) as usize,
            },
            "synthesis_delta" => Progress::MergeDelta {
                text: fanfare::report::printable(v["text"].as_str()?).into_owned(),
            },
            "synthesis_finished" => Progress::MergeFinished {
                ok: v["result"].get("text").or(v["result"].get("Ok")).is_some(),
            },
            _ => return None,
        })
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
                    usage: Usage::default(),
                    model: None,
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
    fn regression_a_hostile_servers_names_reach_the_terminal_without_control_characters() {
        // An agent name with an OSC title and a clear screen, and a tool name with a
        // newline that forged a line of the live view.
        let data =
            json!({"index": 0, "agent": "a\u{1b}]0;owned\u{7}\u{1b}[2J", "tool": "t\nFAKE LINE"});
        let Some(Progress::Tool { label, tool, .. }) = Progress::of_json("tool_started", &data)
        else {
            panic!("not a tool line")
        };
        for shown in [&label, &tool] {
            assert!(!shown.chars().any(char::is_control), "{shown:?}");
        }
    }
}
