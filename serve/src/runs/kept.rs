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
use fanfare::provider::ToolResult;
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
    ) -> BoxFuture<'static, Result<(), String>> {
        let row = StartedRow {
            index: branch.index,
            item: branch.item,
            turn,
            call_id,
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

/// Run `run`'s kept tool turns, by branch, each turn's results filled in.
pub(crate) async fn replay(journal: &Journal, run: i64) -> Result<Vec<Replay>, JournalError> {
    let mut by_branch: BTreeMap<(u32, Option<u32>), Vec<ToolTurn>> = BTreeMap::new();
    for row in journal.events_of_kind(run, TURN).await? {
        let Ok(t) = serde_json::from_str::<TurnRow>(&row.data) else {
            continue;
        };
        let turns = by_branch.entry((t.index, t.item)).or_default();
        // A turn asked again (a restart between its ask and the next) replaces
        // what came after it.
        turns.retain(|k| k.turn < t.turn.turn);
        turns.push(t.turn);
    }
    for row in journal.events_of_kind(run, STARTED).await? {
        let Ok(r) = serde_json::from_str::<StartedRow>(&row.data) else {
            continue;
        };
        if let Some(turn) = by_branch
            .get_mut(&(r.index, r.item))
            .and_then(|turns| turns.iter_mut().find(|t| t.turn == r.turn))
        {
            if !turn.began(&r.call_id) {
                turn.started.push(r.call_id);
            }
        }
    }
    for row in journal.events_of_kind(run, RESULT).await? {
        let Ok(r) = serde_json::from_str::<ResultRow>(&row.data) else {
            continue;
        };
        if let Some(turn) = by_branch
            .get_mut(&(r.index, r.item))
            .and_then(|turns| turns.iter_mut().find(|t| t.turn == r.turn))
        {
            if turn.result(&r.result.call_id).is_none() {
                turn.results.push(r.result);
            }
        }
    }
    Ok(by_branch
        .into_iter()
        // Turns must follow one another from the first: a gap is not replayed.
        .filter(|(_, turns)| turns.iter().zip(1..).all(|(t, n)| t.turn == n))
        .map(|((index, item), turns)| Replay { index, item, turns })
        .collect())
}
