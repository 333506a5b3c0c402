//! Large answers (a run's full view: its report of 10,000 branches is ~10 MB) share
//! one memory budget. A client that asks and then reads slowly keeps its answer in
//! the server until it has read it (or the write stall closes it): without a
//! budget, a few hundred such clients held gigabytes.
//!
//! An answer over [`SMALL`] takes its size from the budget for as long as its body
//! is being sent; when the budget is spent it is refused (503, `Retry-After`), not
//! queued.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::ApiError;

/// Answers up to this size are sent without the budget.
pub(crate) const SMALL: usize = 64 << 10;

/// The budget's default: bytes of large answers being sent at once.
pub(crate) const BUDGET: usize = 64 << 20;

/// Bytes a body hands the connection at a time.
const CHUNK: usize = 64 << 10;

/// The budget, in KiB.
#[derive(Debug)]
pub(crate) struct Large {
    free: Arc<Semaphore>,
    total: usize,
}

impl Large {
    /// A budget of `bytes` (at least [`SMALL`]).
    pub(crate) fn new(bytes: usize) -> Arc<Large> {
        let total = bytes.max(SMALL) >> 10;
        Arc::new(Large {
            free: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    /// A JSON answer of `body`, within the budget or refused.
    pub(crate) fn json(&self, body: Vec<u8>) -> Result<Response, ApiError> {
        let json = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )];
        if body.len() <= SMALL {
            return Ok((json, body).into_response());
        }
        // A body larger than the whole budget takes all of it and goes alone.
        let kib = u32::try_from((body.len() >> 10).min(self.total)).unwrap_or(u32::MAX);
        let Ok(permit) = self.free.clone().try_acquire_many_owned(kib) else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "this answer is {} KiB and the server is busy sending other large answers; try again shortly",
                    body.len() >> 10
                ),
            )
            .retry_after(2));
        };
        let bytes = Bytes::from(body);
        let bytes_len = bytes.len();
        let ends: Vec<usize> = (0..bytes.len()).step_by(CHUNK).collect();
        // The stream owns the permit: it is given back once the last chunk has been
        // taken, or when the connection drops the body.
        let chunks = ends.into_iter().map(move |from| {
            let _held = &permit;
            let to = (from + CHUNK).min(bytes.len());
            Ok::<_, Infallible>(bytes.slice(from..to))
        });
        // Its length is known: say so (a stream would otherwise go out chunked).
        let length = [(header::CONTENT_LENGTH, HeaderValue::from(bytes_len))];
        Ok((
            json,
            length,
            Body::from_stream(futures::stream::iter(chunks)),
        )
            .into_response())
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    #[tokio::test]
    async fn large_answers_share_the_budget_and_give_it_back_when_sent() {
        let large = Large::new(256 << 10);
        let small = large
            .json(vec![b'1'; SMALL])
            .expect("small answers always go");
        let first = large
            .json(vec![b'1'; 200 << 10])
            .expect("within the budget");
        let refused = large
            .json(vec![b'1'; 100 << 10])
            .expect_err("the budget is spent");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        // Sending the first answer whole gives its share back.
        assert_eq!(
            first.headers()[header::CONTENT_LENGTH],
            (200 << 10).to_string().as_str(),
            "sent with its length, not chunked"
        );
        let body = to_bytes(first.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body.len(), 200 << 10, "every byte sent");
        large
            .json(vec![b'1'; 100 << 10])
            .expect("room again once sent");
        drop(small);
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_budget_goes_alone() {
        let large = Large::new(128 << 10);
        let huge = large.json(vec![b'1'; 1 << 20]).expect("goes alone");
        assert!(large.json(vec![b'1'; 65 << 10]).is_err());
        // A client that leaves drops the body, and its share with it.
        drop(huge);
        assert!(large.json(vec![b'1'; 65 << 10]).is_ok());
    }
}
