//! Tool loops' turns in the journal, so that a run resumed after a crash does not
//! run a finished tool call again ([`fanfare::agent::tools::durable`]). Each turn's
//! calls (`kept_tool_turn`), each call's start (`kept_tool_started`) and result
//! (`kept_tool_result`) are events
//! of the run, committed before the loop goes on; clients do not see them (the event
//! streams leave out every `kept_` kind). At a resume they are read back into each
//! unfinished branch's [`Replay`].

use std::collections::BTreeMap;

use fanfare::agent::tools::{Replay, ToolJournal, ToolTurn};
use fanfare::agent::BranchId;
use fanfare::provider::{ToolResult, Usage};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::journal::{Journal, JournalError};

/// The event kind of a turn's calls.
pub(crate) const TURN: &str = "kept_tool_turn";
/// The event kind of one call's start.
pub(crate) const STARTED: &str = "kept_tool_started";
/// The event kind of one call's result.
pub(crate) const RESULT: &str = "kept_tool_result";

/// Run `run`'s tool turns, kept in `journal`.
pub(crate) struct Kept {
    pub(crate) journal: Journal,
    pub(crate) run: i64,
}

#[derive(Serialize, Deserialize)]
struct TurnRow {
    index: u32,
    #[serde(default)]
    item: Option<u32>,
    turn: ToolTurn,
}

#[derive(Serialize, Deserialize)]
struct StartedRow {
    index: u32,
    #[serde(default)]
    item: Option<u32>,
    turn: u32,
    call_id: String,
    /// The arguments a person gave in place of the model's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edited: Option<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct ResultRow {
    index: u32,
    #[serde(default)]
    item: Option<u32>,
    turn: u32,
    result: ToolResult,
}

impl Kept {
    fn append(
        &self,
        kind: &str,
        data: Result<String, serde_json::Error>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let (journal, run, kind) = (self.journal.clone(), self.run, kind.to_owned());
        Box::pin(async move {
            let data = data.map_err(|e| e.to_string())?;
            journal
                .append_events(run, vec![(kind, data)])
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl ToolJournal for Kept {
    fn asked(&self, branch: BranchId, turn: ToolTurn) -> BoxFuture<'static, Result<(), String>> {
        let row = TurnRow {
            index: branch.index,
            item: branch.item,
            turn,
        };
        self.append(TURN, serde_json::to_string(&row))
    }

    fn started(
        &self,
        branch: BranchId,
        turn: u32,
        call_id: String,
        edited: Option<serde_json::Value>,
    ) -> BoxFuture<'static, Result<(), String>> {
        let row = StartedRow {
            index: branch.index,
            item: branch.item,
            turn,
            call_id,
            edited,
        };
        self.append(STARTED, serde_json::to_string(&row))
    }

    fn answered(
        &self,
        branch: BranchId,
        turn: u32,
        result: ToolResult,
    ) -> BoxFuture<'static, Result<(), String>> {
        let row = ResultRow {
            index: branch.index,
            item: branch.item,
            turn,
            result,
        };
        self.append(RESULT, serde_json::to_string(&row))
    }
}

/// Run `run`'s kept tool turns, by branch, each turn's results filled in. Read in
/// the order they were written: a turn asked again (by a step's retry, or after a
/// restart between its ask and the next) replaces it and what came after it, and
/// what was kept of the replaced turns stays with them (a retry's call took the
/// result of an earlier attempt's call of the same id).
pub(crate) async fn replay(journal: &Journal, run: i64) -> Result<Vec<Replay>, JournalError> {
    let mut by_branch: BTreeMap<(u32, Option<u32>), Vec<ToolTurn>> = BTreeMap::new();
    // What the turns a later ask replaced had used: paid for all the same.
    let mut replaced: BTreeMap<(u32, Option<u32>), (u32, Usage)> = BTreeMap::new();
    for row in journal
        .events_of_kinds(run, &[TURN, STARTED, RESULT])
        .await?
    {
        match row.kind.as_str() {
            TURN => {
                let Ok(t) = serde_json::from_str::<TurnRow>(&row.data) else {
                    continue;
                };
                let turns = by_branch.entry((t.index, t.item)).or_default();
                let spent = replaced.entry((t.index, t.item)).or_default();
                for gone in turns.iter().filter(|k| k.turn >= t.turn.turn) {
                    spent.0 = spent.0.saturating_add(gone.attempts);
                    spent.1 += gone.usage;
                }
                turns.retain(|k| k.turn < t.turn.turn);
                turns.push(t.turn);
            }
            STARTED => {
                let Ok(r) = serde_json::from_str::<StartedRow>(&row.data) else {
                    continue;
                };
                if let Some(turn) = turn_of(&mut by_branch, r.index, r.item, r.turn) {
                    if !turn.began(&r.call_id) {
                        if let Some(input) = r.edited {
                            turn.edits.push((r.call_id.clone(), input));
                        }
                        turn.started.push(r.call_id);
                    }
                }
            }
            _ => {
                let Ok(r) = serde_json::from_str::<ResultRow>(&row.data) else {
                    continue;
                };
                if let Some(turn) = turn_of(&mut by_branch, r.index, r.item, r.turn) {
                    if turn.result(&r.result.call_id).is_none() {
                        turn.results.push(r.result);
                    }
                }
            }
        }
    }
    Ok(by_branch
        .into_iter()
        // Turns must follow one another from the first: a gap is not replayed.
        .filter(|(_, turns)| turns.iter().zip(1..).all(|(t, n)| t.turn == n))
        .map(|((index, item), turns)| Replay {
            index,
            item,
            turns,
            earlier: replaced.get(&(index, item)).copied().unwrap_or_default(),
        })
        .collect())
}

/// What a repair carries over of the run it mends, for the branches it runs
/// again: their kept turns as a repair finds them ([`ToolTurn::for_repair`]), and
/// the events that keep them in the repair's own journal (so that a resume of the
/// repair replays them too). A repair ran a finished call again from scratch, and
/// the call in flight at the crash without asking.
pub(crate) fn carried(kept: Vec<Replay>) -> (Vec<Replay>, Vec<(String, String)>) {
    let mut rows = Vec::new();
    let replay = kept
        .into_iter()
        .map(|r| {
            let turns: Vec<ToolTurn> = r.turns.into_iter().map(ToolTurn::for_repair).collect();
            for turn in &turns {
                let row = TurnRow {
                    index: r.index,
                    item: r.item,
                    turn: turn.clone(),
                };
                if let Ok(data) = serde_json::to_string(&row) {
                    rows.push((TURN.to_owned(), data));
                }
            }
            Replay {
                turns,
                // The run it repairs counted them.
                earlier: Default::default(),
                ..r
            }
        })
        .collect();
    (replay, rows)
}

/// Kept turn `turn` of branch `(index, item)`.
fn turn_of(
    by_branch: &mut BTreeMap<(u32, Option<u32>), Vec<ToolTurn>>,
    index: u32,
    item: Option<u32>,
    turn: u32,
) -> Option<&mut ToolTurn> {
    by_branch
        .get_mut(&(index, item))
        .and_then(|turns| turns.iter_mut().find(|t| t.turn == turn))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Inserted;
    use fanfare::agent::RunId;
    use fanfare::provider::{ToolCall, Usage};

    fn turn(n: u32) -> ToolTurn {
        ToolTurn {
            turn: n,
            model: "m".into(),
            text: String::new(),
            calls: vec![ToolCall::from_raw("tu_0", "charge", "{}")],
            usage: Usage {
                input_tokens: 1_000,
                output_tokens: 500,
                ..Usage::default()
            },
            attempts: 1,
            results: Vec::new(),
            started: Vec::new(),
            unsure: Vec::new(),
            edits: Vec::new(),
        }
    }

    fn result(text: &str) -> ToolResult {
        ToolResult {
            call_id: "tu_0".into(),
            content: text.into(),
            is_error: false,
        }
    }

    #[tokio::test]
    async fn regression_a_retried_steps_call_in_flight_is_not_answered_by_the_earlier_attempts_result(
    ) {
        // Call ids repeat across attempts (a local server's `tu_0`): the kept result
        // of attempt 1 stood in for attempt 2's call, in flight at the crash.
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("j.db")).unwrap();
        let Inserted::New(run) = journal.insert_run("{}".into(), None).await.unwrap() else {
            panic!("not new")
        };
        let kept = Kept {
            journal: journal.clone(),
            run,
        };
        let branch = BranchId {
            run: RunId(run as u64),
            index: 0,
            item: None,
        };
        // Attempt 1: turn 1's call ran and answered; turn 2 asked again.
        kept.asked(branch, turn(1)).await.unwrap();
        kept.started(branch, 1, "tu_0".into(), None).await.unwrap();
        kept.answered(branch, 1, result("charged, attempt 1"))
            .await
            .unwrap();
        kept.asked(branch, turn(2)).await.unwrap();
        // Attempt 2: turn 1 again, its call started, then the crash.
        kept.asked(branch, turn(1)).await.unwrap();
        kept.started(branch, 1, "tu_0".into(), None).await.unwrap();
        let replay = super::replay(&journal, run).await.unwrap();
        assert_eq!(replay.len(), 1);
        let turns = &replay[0].turns;
        assert_eq!(
            turns.len(),
            1,
            "attempt 2's turn 1 replaced attempt 1's turns"
        );
        assert!(turns[0].began("tu_0"));
        assert_eq!(turns[0].result("tu_0"), None, "in flight, not answered");
        // Attempt 1's two turns were paid for: their spend goes with the replay
        // (probe 10, D5: it was lost from the report).
        assert_eq!(replay[0].earlier.0, 2);
        assert_eq!(replay[0].earlier.1.total(), 3_000);
        // Its own answer, once kept, is what a resume finds.
        kept.answered(branch, 1, result("charged, attempt 2"))
            .await
            .unwrap();
        let replay = super::replay(&journal, run).await.unwrap();
        assert_eq!(
            replay[0].turns[0]
                .result("tu_0")
                .map(|r| r.content.as_str()),
            Some("charged, attempt 2")
        );
    }
}
