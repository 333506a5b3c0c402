//! Taking back what an earlier attempt did: resuming the runs a stopped or crashed
//! process left, and repairing an ended run — both reuse the outputs of the
//! branches whose end is in the journal.

use std::sync::Arc;

use fanfare::run::Reuse;
use fanfare::{BranchOutcome, RunRequest};

use super::{Runs, SubmitError};
use crate::journal::{JournalError, RunRow, Status};
use crate::spec::{FieldError, RunSpec};

impl Runs {
    /// What a repair of run `of` reuses: its successful branches, once it has
    /// ended and if it ran the same request.
    pub(super) async fn repairable(
        &self,
        of: &str,
        spec: &RunSpec,
        request: &RunRequest,
    ) -> Result<Vec<Reuse>, SubmitError> {
        let bad = |message: String| {
            SubmitError::Invalid(FieldError {
                field: "repair_of".to_owned(),
                message,
            })
        };
        let id = of
            .strip_prefix("run-")
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(|| bad(format!("`{of}` is not a run id (run-N)")))?;
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
        // One repair's outputs are read at a time: each holds the whole run's answers
        // while it is read (30 repairs of a 100,000-item run at once took 2.3 GB).
        let _one = self.repairing.acquire().await;
        Ok(self.earlier_outputs(id, request).await?)
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
                let mut reuse = self.earlier_outputs(id, &r).await?;
                let repaired = crate::spec::parse(row.spec.as_bytes())
                    .ok()
                    .and_then(|s| s.repair_of)
                    .and_then(|of| of.strip_prefix("run-")?.parse::<i64>().ok());
                if let Some(of) = repaired {
                    // A set: a list was searched once per output (quadratic in a map).
                    let have: std::collections::HashSet<(u32, Option<u32>)> =
                        reuse.iter().map(|k| (k.index, k.item)).collect();
                    for earlier in self.earlier_outputs(of, &r).await? {
                        if !have.contains(&(earlier.index, earlier.item)) {
                            reuse.push(earlier);
                        }
                    }
                }
                r.reuse(reuse)
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
                })
            })
            .collect())
    }
}

/// Whether a report (its JSON) says every branch succeeded.
fn every_branch_ok(report: Option<&str>) -> bool {
    #[derive(serde::Deserialize)]
    struct Report {
        totals: Totals,
    }
    #[derive(serde::Deserialize)]
    struct Totals {
        failed: usize,
        timed_out: usize,
        cancelled: usize,
        refused: usize,
    }
    report
        .and_then(|r| serde_json::from_str::<Report>(r).ok())
        .is_some_and(|r| {
            let t = r.totals;
            t.failed + t.timed_out + t.cancelled + t.refused == 0
        })
}
