//! Taking back what an earlier attempt did: resuming the runs a stopped or crashed
//! process left, and repairing an ended run — both reuse the outputs of the
//! branches whose end is in the journal.

use std::sync::Arc;

use fanfare::run::Reuse;
use fanfare::BranchOutcome;

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
        Ok(self.earlier_outputs(id).await?)
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
                let mut reuse = self.earlier_outputs(id).await?;
                let repaired = crate::spec::parse(row.spec.as_bytes())
                    .ok()
                    .and_then(|s| s.repair_of)
                    .and_then(|of| of.strip_prefix("run-")?.parse::<i64>().ok());
                if let Some(of) = repaired {
                    for r in self.earlier_outputs(of).await? {
                        if !reuse.iter().any(|k| k.index == r.index && k.item == r.item) {
                            reuse.push(r);
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
    async fn earlier_outputs(&self, id: i64) -> Result<Vec<Reuse>, JournalError> {
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
