//! Taking back what an earlier attempt did: resuming the runs a stopped or crashed
//! process left, and repairing an ended run — both reuse the outputs of the
//! branches whose end is in the journal.

use std::sync::Arc;

use fanfare::run::{Reuse, Reused};
use fanfare::{BranchOutcome, RunRequest};

use super::{Runs, SubmitError};
use crate::journal::{JournalError, RunRow, Status};
use crate::spec::{FieldError, RunSpec};

impl Runs {
    /// What a repair of run `of` reuses: its successful branches, once it has
    /// ended and if it ran the same request; and what it carries over of the
    /// others' tool turns ([`super::kept::carried`]). Called with the
    /// one-repair-at-a-time permit held (see `Runs::submit`).
    pub(super) async fn repairable(
        &self,
        of: &str,
        spec: &RunSpec,
        request: &RunRequest,
    ) -> Result<Repairing, SubmitError> {
        let bad = |message: String| {
            SubmitError::Invalid(FieldError {
                field: "repair_of".to_owned(),
                message,
            })
        };
        let id = run_number(of).ok_or_else(|| bad(format!("`{of}` is not a run id (run-N)")))?;
        // The caller holds the one-repair-at-a-time permit: one repair reads the run
        // it mends (its row, with the report, and then its answers) at a time — 30
        // repairs at once of a 100,000-item run held each of those whole (2.3 GB).
        let row = self
            .journal
            .get(id)
            .await?
            .ok_or_else(|| bad(format!("no run `{of}`")))?;
        if !row.status.is_final() {
            return Err(bad(format!(
                "{of} has not ended ({}); repair it once it has",
                row.status.as_str()
            )));
        }
        // A repair of a run whose every branch succeeded would only pay for its
        // merge again.
        if row.status == Status::Succeeded && every_branch_ok(row.report.as_deref()) {
            return Err(bad(format!(
                "{of} succeeded with every branch: there is nothing to repair"
            )));
        }
        let earlier = crate::spec::parse(row.spec.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let same = RunSpec {
            repair_of: None,
            ..earlier
        } == RunSpec {
            repair_of: None,
            ..spec.clone()
        };
        if !same {
            return Err(bad(format!(
                "{of} ran a different request; a repair runs the same one again"
            )));
        }
        let reuse = self
            .chain_outputs(id, &row, request, Reused::EarlierRun)
            .await?;
        let reused: std::collections::HashSet<(u32, Option<u32>)> =
            reuse.iter().map(|r| (r.index, r.item)).collect();
        let mut kept = super::kept::replay(&self.journal, id).await?;
        kept.retain(|r| !reused.contains(&(r.index, r.item)));
        let (replay, events) = super::kept::carried(kept);
        Ok(Repairing {
            reuse,
            replay,
            events,
        })
    }

    /// The outputs run `id` (its journal row `row`) answered, `first` (run `id`
    /// resuming itself, or repaired by another), and those of the runs it repaired,
    /// nearest first: a repair cancelled before it started answered nothing, and a
    /// repair of it called every branch again (paid twice).
    async fn chain_outputs(
        &self,
        id: i64,
        row: &RunRow,
        request: &RunRequest,
        first: Reused,
    ) -> Result<Vec<Reuse>, JournalError> {
        let mut reuse = self.earlier_outputs(id, request, first).await?;
        // A set: a list was searched once per output (quadratic in a map).
        let mut have: std::collections::HashSet<(u32, Option<u32>)> =
            reuse.iter().map(|k| (k.index, k.item)).collect();
        let mut parent = repair_of(&row.spec);
        // A chain is short in practice; a bound keeps a loop in bad data finite.
        for _ in 0..MAX_CHAIN {
            let Some(of) = parent else { break };
            for earlier in self
                .earlier_outputs(of, request, Reused::EarlierRun)
                .await?
            {
                if have.insert((earlier.index, earlier.item)) {
                    reuse.push(earlier);
                }
            }
            parent = match self.journal.get(of).await? {
                Some(row) => repair_of(&row.spec),
                None => None,
            };
        }
        Ok(reuse)
    }

    /// Takes back the runs an earlier process left unfinished: each is checked
    /// again and started or queued (never refused).
    pub async fn resume(self: &Arc<Self>) -> Result<usize, JournalError> {
        let rows = self.journal.unfinished().await?;
        let count = rows.len();
        for row in rows {
            self.resume_one(row).await?;
        }
        Ok(count)
    }

    async fn resume_one(self: &Arc<Self>, row: RunRow) -> Result<(), JournalError> {
        let id = row.id;
        let request = crate::spec::parse(row.spec.as_bytes())
            .and_then(|spec| spec.request(&self.catalog, &self.defaults))
            .and_then(|r| {
                self.fanfare
                    .validate(&r)
                    .map(|()| r)
                    .map_err(|e| FieldError {
                        field: String::new(),
                        message: e.to_string(),
                    })
            });
        let request = match request {
            Ok(r) => {
                let reuse = self
                    .chain_outputs(id, &row, &r, Reused::BeforeResume)
                    .await?;
                let replay = super::kept::replay(&self.journal, id).await?;
                r.reuse(reuse).replay(replay)
            }
            Err(e) => {
                let why =
                    format!("could not resume: {e} (the server's agents or workflows changed)");
                self.journal
                    .finish(id, Status::Failed, None, Some(why))
                    .await?;
                self.bump();
                return Ok(());
            }
        };
        self.journal
            .set_status(
                id,
                Status::Queued,
                Some(format!("resumed after {}", row.status.as_str())),
            )
            .await?;
        self.bump();
        self.admit(id, request, super::How::Resume);
        Ok(())
    }

    /// What run `id`'s branches answered before it was interrupted: each
    /// successful `branch_finished` event in the journal.
    /// The successful outputs run `id` journaled that fit `request`: a map step's
    /// items, not the map step's own joined output (reusing that was refused, so no
    /// run with a map could be repaired), and no step the request lacks.
    async fn earlier_outputs(
        &self,
        id: i64,
        request: &RunRequest,
        from: Reused,
    ) -> Result<Vec<Reuse>, JournalError> {
        #[derive(serde::Deserialize)]
        struct Finished {
            index: u32,
            item: Option<u32>,
            outcome: BranchOutcome,
        }
        let rows = self.journal.events_of_kind(id, "branch_finished").await?;
        Ok(rows
            .iter()
            .filter_map(|row| serde_json::from_str::<Finished>(&row.data).ok())
            .filter(|f| {
                request
                    .steps
                    .get(f.index as usize)
                    .is_some_and(|s| s.map.is_some() == f.item.is_some())
            })
            .filter_map(|f| {
                let output = f.outcome.output()?.clone();
                Some(Reuse {
                    index: f.index,
                    item: f.item,
                    output,
                    from,
                })
            })
            .collect())
    }
}

/// What a repair takes from the run it mends.
pub(super) struct Repairing {
    /// The outputs it reuses.
    pub(super) reuse: Vec<Reuse>,
    /// The tool turns of the branches it runs again.
    pub(super) replay: Vec<fanfare::agent::tools::Replay>,
    /// The journal events that keep `replay` in the repair's own journal.
    pub(super) events: Vec<(String, String)>,
}

/// The most runs a repair looks back through for answers.
const MAX_CHAIN: usize = 16;

/// `run-N` → N.
pub(super) fn run_number(id: &str) -> Option<i64> {
    id.strip_prefix("run-")?.parse().ok()
}

/// The run a run's request repaired, if it was a repair.
fn repair_of(spec: &str) -> Option<i64> {
    run_number(&crate::spec::parse(spec.as_bytes()).ok()?.repair_of?)
}

/// Whether a report (its JSON) says every branch succeeded, each map item included
/// (a map under a partial policy succeeds with items lost: those are worth a repair).
fn every_branch_ok(report: Option<&str>) -> bool {
    #[derive(serde::Deserialize)]
    struct Report {
        branches: Vec<Branch>,
    }
    #[derive(serde::Deserialize)]
    struct Branch {
        outcome: Outcome,
        #[serde(default)]
        items: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        outcome: Outcome,
    }
    #[derive(serde::Deserialize)]
    struct Outcome {
        status: String,
    }
    report
        .and_then(|r| serde_json::from_str::<Report>(r).ok())
        .is_some_and(|r| {
            r.branches.iter().all(|b| {
                b.outcome.status == "ok" && b.items.iter().all(|i| i.outcome.status == "ok")
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_whole_only_when_every_branch_and_item_succeeded() {
        // Regression: a map that lost items under a partial policy counted as a
        // success "with every branch", and its repair was refused.
        let cases = [
            (r#"{"branches": [{"outcome": {"status": "ok"}}]}"#, true),
            (
                r#"{"branches": [{"outcome": {"status": "ok"}, "items": [{"outcome": {"status": "ok"}}, {"outcome": {"status": "failed"}}]}]}"#,
                false,
            ),
            (
                r#"{"branches": [{"outcome": {"status": "timed_out"}}]}"#,
                false,
            ),
            ("not json", false),
        ];
        for (report, whole) in cases {
            assert_eq!(every_branch_ok(Some(report)), whole, "{report}");
        }
        assert!(!every_branch_ok(None));
    }
}
