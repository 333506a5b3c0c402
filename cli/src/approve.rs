//! Who decides, in `fanfare run` and `batch`, the tool calls that need approval:
//! everyone (`--approve-all`), else the person at the terminal (one question at a
//! time, written above the live view, answered on standard input), else nobody —
//! the runtime then rejects such calls, saying how to approve them.

use std::io::IsTerminal as _;
use std::sync::Arc;

use fanfare::agent::tools::{ApprovalRequest, Approvals, Approver, Decision};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, Mutex};

/// The approver `approve_all` and the terminal allow, if any.
pub fn approver(approve_all: bool) -> Option<Approvals> {
    if approve_all {
        return Some(Approvals::approve_all());
    }
    let asked = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    asked.then(|| Approvals::new(Terminal::new()))
}

/// Asks at the terminal. One thread reads standard input, line by line, for the
/// whole process: a question given up (its branch's deadline passed) leaves no
/// reader behind to take the answer to the next one.
struct Terminal {
    lines: Arc<Mutex<mpsc::UnboundedReceiver<String>>>,
}

impl Terminal {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                if tx.send(std::mem::take(&mut line)).is_err() {
                    break;
                }
            }
        });
        Self {
            lines: Arc::new(Mutex::new(rx)),
        }
    }
}

impl Approver for Terminal {
    fn decide(&self, request: ApprovalRequest) -> BoxFuture<'static, Decision> {
        let lines = self.lines.clone();
        Box::pin(async move {
            // One question at a time; what was typed before it was asked is not
            // its answer.
            let mut lines = lines.lock().await;
            while lines.try_recv().is_ok() {}
            // The arguments whole: what is approved is what runs (a cut prompt hid
            // the end of a call's arguments from the person approving it).
            let input = serde_json::to_string_pretty(&request.input).unwrap_or_default();
            let why = request
                .why
                .as_deref()
                .map(|why| format!("  (asked because {})\n", fanfare::report::one_line(why)))
                .unwrap_or_default();
            say(&format!(
                "fanfare: {} wants to call `{}` (approval {}) with:\n{}\n{why}  approve? [y]es, [n]o, or [e]dit the arguments: ",
                request.agent,
                request.tool,
                request.id,
                fanfare::report::printable(&input)
            ));
            loop {
                let Some(answer) = lines.recv().await else {
                    return Decision::Reject {
                        reason: Some("standard input closed before an answer".to_owned()),
                    };
                };
                match answer.trim().to_ascii_lowercase().as_str() {
                    "y" | "yes" => return Decision::Approve,
                    "n" | "no" => {
                        return Decision::Reject {
                            reason: Some("rejected at the terminal".to_owned()),
                        }
                    }
                    "e" | "edit" => {
                        say("  the arguments, as JSON on one line: ");
                        let Some(json) = lines.recv().await else {
                            continue;
                        };
                        match serde_json::from_str::<serde_json::Value>(&json) {
                            Ok(input) => return Decision::Edit { input },
                            Err(e) => say(&format!(
                                "  not JSON ({e}); approve? [y]es, [n]o, or [e]dit: "
                            )),
                        }
                    }
                    _ => say("  y, n or e: "),
                }
            }
        })
    }
}

/// Writes above the live view, if one is drawn.
fn say(text: &str) {
    let mut text = text.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    crate::live::console::write(text.as_bytes());
}
