//! Request bodies: one that says it is over the limit is refused before a byte of
//! it is read (413, and no `100 Continue`), and one that is sent must arrive whole
//! within [`BODY_TIMEOUT`] (a client that declared a megabyte and sent nothing held
//! its connection for as long as it liked).

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;

use super::ApiError;

/// How long a request body may take to arrive.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// The middleware; `limit` is the largest body, bytes.
pub(crate) async fn check(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is {} bytes; this server takes at most {limit} (--max-body-kib)",
                declared.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let sends_body =
        declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    if !sends_body {
        return next.run(request).await;
    }
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    let request = request.map(|body| {
        let data = body.into_data_stream();
        let timed = futures::stream::unfold(Some(data), move |data| async move {
            let mut data = data?;
            match tokio::time::timeout_at(deadline, data.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(data))),
                Ok(None) => None,
                Err(_late) => Some((
                    Err(axum::Error::new(format!(
                        "the request body did not arrive within {BODY_TIMEOUT:?}"
                    ))),
                    None,
                )),
            }
        });
        Body::from_stream(timed)
    });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::routing::post;
    use axum::Router;
    use tower::ServiceExt as _;

    use super::*;

    fn app() -> Router {
        Router::new()
            .route(
                "/",
                post(|body: axum::body::Bytes| async move { body.len().to_string() }),
            )
            .layer(axum::middleware::from_fn_with_state(16usize, check))
    }

    fn post_body(length: &str, body: Body) -> Request {
        Request::post("/")
            .header(header::CONTENT_LENGTH, length)
            .body(body)
            .unwrap()
    }

    #[tokio::test]
    async fn a_body_declared_over_the_limit_is_refused_unread() {
        let r = app().oneshot(post_body("17", Body::empty())).await.unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = app()
            .oneshot(post_body("5", Body::from("hello")))
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn regression_a_body_that_never_came_held_its_connection() {
        let never =
            Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        let r = app().oneshot(post_body("10", never)).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::BAD_REQUEST,
            "ended at the body timeout"
        );
    }
}
