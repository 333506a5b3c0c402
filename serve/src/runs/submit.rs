//! Submitting a run: checked, journaled, then started or queued — one repair of a
//! run at a time, and a retry with an idempotency key answered with the run it made.

use std::sync::Arc;

use fanfare::RunRequest;

use super::{repair, whole, Admit, How, Runs, SubmitError, Submitted};
use crate::journal::{Inserted, RunRow, Status};
use crate::spec::{FieldError, RunSpec};

impl Runs {
    /// Checks `spec`, journals it, and starts or queues it. With `key`, a retry of
    /// the same request returns the run it first made.
    pub async fn submit(
        self: &Arc<Self>,
        spec: RunSpec,
        key: Option<String>,
    ) -> Result<Submitted, SubmitError> {
        let mut request = spec.request(&self.catalog, &self.defaults)?;
        // One repair at a time, from reading the run it mends until it is journaled:
        // three repairs of one run at once started three runs, each paying for the
        // failed branches and the merge again. A repair already going (or done) is
        // the answer to another.
        let mut one_repair = None;
        let mut carried = Vec::new();
        if let Some(of) = &spec.repair_of {
            one_repair = Some(self.repairing.clone().acquire_owned().await);
            let repairing = self.repairable(of, &spec, &request).await?;
            if let Some(n) = repair::run_number(of) {
                if let Some((id, status)) = self.journal.live_repair(n).await? {
                    return Ok(Submitted {
                        id,
                        status,
                        created: false,
                    });
                }
            }
            request = request.reuse(repairing.reuse).replay(repairing.replay);
            carried = repairing.events;
        }
        self.fanfare.validate(&request).map_err(|e| {
            use fanfare::run::RequestError;
            let field = match e {
                // Regression: `partial:99999` was reported under `workflow`.
                RequestError::BadQuorum { .. } => "policy",
                RequestError::ZeroDeadline | RequestError::TooLong { .. } => "deadline",
                RequestError::SoftDeadlineUnused => "policy",
                RequestError::BadCostCap(_) => "budget",
                _ if spec.workflow.is_some() || spec.agents.is_none() => "workflow",
                _ => "agents",
            };
            FieldError {
                field: field.to_owned(),
                message: e.to_string(),
            }
        })?;
        let text = serde_json::to_string(&spec).map_err(|e| FieldError {
            field: String::new(),
            message: e.to_string(),
        })?;
        if let Some(key) = &key {
            if let Some(row) = self.journal.find_key(key.clone()).await? {
                return Self::same_request(row, &text);
            }
        }
        // Shed load before writing anything.
        if *self.closing.borrow() {
            return Err(SubmitError::Closing);
        }
        if let Some(why) = self.refuses_new_runs() {
            return Err(SubmitError::JournalUnavailable(why));
        }
        match self.queue(|q| (q.has_room(), q.running(), q.waiting())) {
            None => return Err(SubmitError::Closing),
            Some((false, running, waiting)) => return Err(SubmitError::Full { running, waiting }),
            Some((true, ..)) => {}
        }
        // From here to the end it runs whole even if the caller goes away (a client
        // that disconnects drops the request's future): stopped between the journal
        // and the queue, a run stayed `queued` with nothing to start it.
        let this = self.clone();
        whole(async move {
            let journaled = this.journal_and_admit(text, key, request, carried).await;
            drop(one_repair);
            journaled
        })
        .await
        .unwrap_or(Err(SubmitError::Closing))
    }

    /// [`Runs::submit`]'s second half: journals the run (with the `events` a
    /// repair carries over), then queues or starts it (or forgets it, refused
    /// after all).
    async fn journal_and_admit(
        self: &Arc<Self>,
        text: String,
        key: Option<String>,
        request: RunRequest,
        events: Vec<(String, String)>,
    ) -> Result<Submitted, SubmitError> {
        let id = match self
            .journal
            .insert_run_with(text.clone(), key, events)
            .await?
        {
            Inserted::Existing(row) => return Self::same_request(row, &text),
            Inserted::New(id) => id,
        };
        self.bump();
        match self.admit(id, request, How::Submit) {
            Admit::Start | Admit::Wait { .. } => {}
            admit @ (Admit::Full | Admit::Closing) => {
                // Refused after all (the queue filled, or shutdown began, since the
                // check): the run was never acknowledged, so it leaves no trace.
                self.journal.forget(id).await?;
                let (running, waiting) = self.load();
                return Err(if admit == Admit::Full {
                    SubmitError::Full { running, waiting }
                } else {
                    SubmitError::Closing
                });
            }
        }
        Ok(Submitted {
            id,
            status: Status::Queued,
            created: true,
        })
    }

    /// The answer to a submission whose idempotency key `row` already has.
    fn same_request(row: RunRow, text: &str) -> Result<Submitted, SubmitError> {
        if row.spec != text {
            return Err(SubmitError::KeyReused { run: row.id });
        }
        Ok(Submitted {
            id: row.id,
            status: row.status,
            created: false,
        })
    }
}
