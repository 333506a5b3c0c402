//! The HTTP API: routes, the bearer-token check, and errors as JSON.
//!
//! Every error is `{"error": {"message": …, "field": …}}` with a 4xx naming what
//! was wrong (the field, when one is), or a 5xx when the server itself failed.
//! With a token configured, every route but `/healthz` and `/readyz` needs
//! `Authorization: Bearer <token>`, compared in constant time. Before any route,
//! `origin` refuses what a web page of another origin could send (a body not
//! declared JSON, another `Origin`, and on a loopback bind another `Host`).

mod approvals;
pub(crate) mod body;
pub(crate) mod connections;
pub(crate) mod events;
pub(crate) mod large;
mod openai;
pub(crate) mod origin;
mod runs;
pub(crate) mod stall;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use subtle::ConstantTimeEq as _;

use crate::runs::Runs;
use crate::Token;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub runs: Arc<Runs>,
    pub token: Option<Arc<Token>>,
    pub gate: Option<Arc<fanfare::provider::Gate>>,
    pub cluster: Option<fanfare_cluster::Cluster>,
    /// The event streams open, and their limit.
    pub streams: Arc<events::Streams>,
    /// The memory budget of large answers.
    pub large: Arc<large::Large>,
}

/// The routes, with the origin and token checks and the body limit.
pub(crate) fn router(app: App, body_limit: usize, guard: origin::Guard) -> Router {
    let guarded = Router::new()
        .route("/v1/runs", get(runs::list).post(runs::submit))
        .route("/v1/runs/{id}", get(runs::get).delete(runs::cancel))
        .route("/v1/runs/{id}/events", get(events::stream))
        .route("/v1/runs/{id}/repair", axum::routing::post(runs::repair))
        .route("/v1/runs/{id}/approvals", get(approvals::list))
        .route(
            "/v1/runs/{id}/approvals/{approval}",
            axum::routing::post(approvals::decide),
        )
        .route("/v1/models", get(openai::models))
        .route("/metrics", get(metrics))
        .route("/v1/cluster", get(cluster))
        .route("/v1/chat/completions", axum::routing::post(openai::chat))
        .route_layer(middleware::from_fn_with_state(app.clone(), authorise));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .merge(guarded)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(body_limit, body::check))
        .layer(middleware::from_fn_with_state(guard, origin::check))
        .with_state(app)
}

/// The live page: recent runs, and a run's branches as bars that grow from its
/// event stream with their text as it streams. Plain HTML and JS in the binary; it
/// holds no data itself (it asks the API, with the token the user types).
async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            // No other site may frame the page (and dress it up to be clicked).
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("frame-ancestors 'none'"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        include_str!("page.html"),
    )
        .into_response()
}

/// Ready while the journal answers and takes writes, and the server is not
/// shutting down.
async fn ready(State(app): State<App>) -> Response {
    if *app.runs.closing().borrow() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if let Some(why) = app.runs.refuses_new_runs() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    }
    // A tool server whose restart failed: the agents that name it fail their
    // calls until it is back (it answered `ready` meanwhile).
    if let Some((name, why)) = app.runs.fanfare().tool_servers_down().into_iter().next() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the MCP server `{name}` is not connected: {why}"),
        )
        .into_response();
    }
    match app
        .runs
        .journal()
        .call(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        .await
    {
        Ok(_) => "ready\n".into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

/// The Prometheus text (behind the token like the API: it names agents and models;
/// Prometheus sends a bearer token with `authorization` in its scrape config).
async fn metrics(State(app): State<App>) -> Response {
    let counts = match app.runs.journal().status_counts().await {
        Ok(c) => c,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let admission = app.gate.as_ref().map(|g| g.metrics());
    let text = app
        .runs
        .metrics()
        .render(&counts, app.runs.load(), admission);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

/// The cluster's nodes, their state and load (`fanfare cluster status`).
async fn cluster(State(app): State<App>) -> Response {
    match &app.cluster {
        Some(cluster) => Json(cluster.status()).into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "this server orchestrates no cluster (start it with --cluster-listen ADDR --cookie-file F)",
        )
        .into_response(),
    }
}

/// The bearer-token check.
async fn authorise(State(app): State<App>, request: Request, next: Next) -> Response {
    let Some(token) = &app.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110); `bearer x` was refused.
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.expose().as_bytes())));
    if ok {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer …)",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
    retry_after: Option<u64>,
}

impl ApiError {
    /// What it says.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "message": self.message, "field": self.field }
        });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}
