//! `GET /v1/runs/{id}/approvals` (the run's tool calls waiting for a decision) and
//! `POST /v1/runs/{id}/approvals/{approval}` (`{"decision": "approve"}`,
//! `{"decision": "reject", "reason": …}` or `{"decision": "edit", "input": {…}}`).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use fanfare::agent::tools::{ApprovalRequest, Decision, MAX_ARGUMENTS};
use serde_json::{json, Value};

use super::runs::run_id;
use super::{ApiError, App};
use crate::runs::Undecided;

/// A waiting request as the API shows it.
fn view(r: &ApprovalRequest) -> Value {
    json!({
        "id": r.id,
        "agent": r.agent,
        "index": r.branch.index,
        "item": r.branch.item,
        "turn": r.turn,
        "call_id": r.call_id,
        "tool": r.tool,
        "input": r.input,
        "why": r.why,
    })
}

/// 404 unless run `n` exists.
async fn exists(app: &App, n: i64, id: &str) -> Result<(), ApiError> {
    match app.runs.journal().get(n).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no run `{id}`"),
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

pub(super) async fn list(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let n = run_id(&id)?;
    exists(&app, n, &id).await?;
    let waiting: Vec<Value> = app.runs.approvals(n).iter().map(view).collect();
    Ok(Json(json!({ "approvals": waiting })).into_response())
}

pub(super) async fn decide(
    State(app): State<App>,
    Path((id, approval)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let n = run_id(&id)?;
    exists(&app, n, &id).await?;
    let decision: Decision = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a decision is {{\"decision\": \"approve\"}}, {{\"decision\": \"reject\", \"reason\": \"…\"}} or {{\"decision\": \"edit\", \"input\": {{…}}}}: {e}"
            ),
        )
    })?;
    if let Decision::Edit { input } = &decision {
        // Refused here, leaving the call waiting: taken, it was answered `edited`
        // and then turned into a rejection.
        let bytes = input.to_string().len();
        if bytes > MAX_ARGUMENTS {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the edited arguments have {bytes} bytes; at most {MAX_ARGUMENTS} are taken (the call still waits)"),
            ));
        }
    }
    let state = decision.state();
    match app.runs.decide(n, &approval, decision) {
        Ok(()) => Ok(Json(json!({ "id": approval, "state": state })).into_response()),
        Err(Undecided::NotWaiting) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no approval `{approval}` waits in {id} (decided already, or its branch stopped waiting; GET /v1/runs/{id}/approvals lists those that wait)"
            ),
        )),
    }
}
