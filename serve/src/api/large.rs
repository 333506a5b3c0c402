//! Large answers (a run's full view: its report of 10,000 branches is ~10 MB) share
//! one memory budget. A client that asks and then reads slowly keeps its answer in
//! the server until it has read it (or the write stall closes it): without a
//! budget, a few hundred such clients held gigabytes.
//!
//! An answer reserves its size ([`Large::reserve`]) *before* it is read from the
//! journal — a row read and then refused still took its memory while it waited its
//! turn — and keeps it for as long as its body is being sent. When the budget is
//! spent it is refused (503, `Retry-After`), not queued. Answers up to [`SMALL`] go
//! without it.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    total: u32,
}

/// A share of the budget, taken for an answer of about `bytes`.
#[derive(Debug)]
pub(crate) struct Reserved {
    budget: Arc<Large>,
    kib: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl Large {
    /// A budget of `bytes` (at least [`SMALL`]).
    pub(crate) fn new(bytes: usize) -> Arc<Large> {
        let total = u32::try_from(bytes.max(SMALL) >> 10).unwrap_or(u32::MAX);
        Arc::new(Large {
            free: Arc::new(Semaphore::new(total as usize)),
            total,
        })
    }

    /// Takes the share of an answer of about `bytes`, or refuses it while the
    /// budget is spent. An answer larger than the whole budget takes all of it and
    /// goes alone.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reserved, ApiError> {
        let mut reserved = Reserved {
            budget: self.clone(),
            kib: 0,
            permit: None,
        };
        reserved.grow_to(bytes)?;
        Ok(reserved)
    }

    fn kib_of(&self, bytes: usize) -> u32 {
        if bytes <= SMALL {
            return 0;
        }
        u32::try_from(bytes.div_ceil(1 << 10))
            .unwrap_or(u32::MAX)
            .min(self.total)
    }
}

impl Reserved {
    /// Makes the share cover `bytes` (an answer found larger than reserved: its
    /// run ended between the estimate and the read), or refuses.
    fn grow_to(&mut self, bytes: usize) -> Result<(), ApiError> {
        let want = self.budget.kib_of(bytes);
        if want <= self.kib {
            return Ok(());
        }
        let more = self
            .budget
            .free
            .clone()
            .try_acquire_many_owned(want - self.kib)
            .map_err(|_| busy(bytes))?;
        match &mut self.permit {
            Some(held) => held.merge(more),
            None => self.permit = Some(more),
        }
        self.kib = want;
        Ok(())
    }

    /// The JSON answer made of `parts` (sent one after another, none copied), or a
    /// refusal if they turn out larger than reserved and the budget has no room.
    pub(crate) fn json(mut self, parts: Vec<Bytes>) -> Result<Response, ApiError> {
        let len: usize = parts.iter().map(Bytes::len).sum();
        self.grow_to(len)?;
        let chunks = parts
            .into_iter()
            .flat_map(|part| {
                (0..part.len())
                    .step_by(CHUNK)
                    .map(move |from| part.slice(from..(from + CHUNK).min(part.len())))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>();
        // The stream owns the share: it is given back once the last chunk has been
        // taken, or when the connection drops the body.
        let share = self;
        let stream = chunks.into_iter().map(move |chunk| {
            let _held = &share;
            Ok::<_, Infallible>(chunk)
        });
        Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                // Its length is known: say so (a stream would otherwise go out chunked).
                (header::CONTENT_LENGTH, HeaderValue::from(len)),
            ],
            Body::from_stream(futures::stream::iter(stream)),
        )
            .into_response())
    }
}

fn busy(bytes: usize) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "this answer is {} KiB and the server is busy sending other large answers; try again shortly",
            bytes >> 10
        ),
    )
    .retry_after(2)
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    fn answer(large: &Arc<Large>, bytes: usize) -> Result<Response, ApiError> {
        large
            .reserve(bytes)?
            .json(vec![Bytes::from(vec![b'1'; bytes])])
    }

    #[tokio::test]
    async fn large_answers_share_the_budget_and_give_it_back_when_sent() {
        let large = Large::new(256 << 10);
        let small = answer(&large, SMALL).expect("small answers always go");
        let first = answer(&large, 200 << 10).expect("within the budget");
        let refused = answer(&large, 100 << 10).expect_err("the budget is spent");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        // Sending the first answer whole gives its share back.
        assert_eq!(
            first.headers()[header::CONTENT_LENGTH],
            (200 << 10).to_string().as_str(),
            "sent with its length, not chunked"
        );
        let body = to_bytes(first.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body.len(), 200 << 10, "every byte sent");
        answer(&large, 100 << 10).expect("room again once sent");
        drop(small);
    }

    #[tokio::test]
    async fn an_answer_larger_than_the_budget_goes_alone() {
        let large = Large::new(128 << 10);
        let huge = answer(&large, 1 << 20).expect("goes alone");
        assert!(answer(&large, 65 << 10).is_err());
        // A client that leaves drops the body, and its share with it.
        drop(huge);
        assert!(answer(&large, 65 << 10).is_ok());
    }

    #[tokio::test]
    async fn the_share_is_taken_before_the_answer_is_read() {
        // Regression: the share was taken once the answer had been read from the
        // journal, so 300 readers of a 9 MB report had their rows in memory while
        // they waited to be refused (386 MB).
        let large = Large::new(256 << 10);
        let first = large.reserve(200 << 10).expect("room");
        assert!(
            large.reserve(100 << 10).is_err(),
            "refused before anything is read"
        );
        drop(first);
        // An answer found larger than its estimate takes the rest of the budget...
        let estimate = large.reserve(100 << 10).expect("room");
        let grown = estimate
            .json(vec![Bytes::from(vec![b'1'; 200 << 10])])
            .expect("the rest of the budget covers it");
        drop(grown);
        // ...or is refused when the rest is not enough.
        let estimate = large.reserve(100 << 10).expect("room");
        let _other = large.reserve(100 << 10).expect("room");
        assert!(estimate
            .json(vec![Bytes::from(vec![b'1'; 200 << 10])])
            .is_err());
    }

    #[tokio::test]
    async fn parts_go_out_in_order_and_whole() {
        let large = Large::new(1 << 20);
        let parts = vec![
            Bytes::from_static(b"{\"a\":"),
            Bytes::from(vec![b'7'; 200 << 10]),
            Bytes::from_static(b"}"),
        ];
        let answer = large.reserve(200 << 10).unwrap().json(parts).unwrap();
        let body = to_bytes(answer.into_body(), usize::MAX).await.unwrap();
        assert_eq!(body.len(), (200 << 10) + 6);
        assert!(body.starts_with(b"{\"a\":7") && body.ends_with(b"7}"));
    }
}
