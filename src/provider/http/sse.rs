//! A minimal server-sent-events reader: splits a body into events, tolerating `\r\n`,
//! comments and events split across chunks.

use std::time::Duration;

use futures::{Stream, StreamExt};

use super::transport_error;
use crate::provider::ProviderErrorKind;

/// The next event of a stream before `deadline` (which ends a call that began
/// `timeout` earlier). The stream ending is an error: it should have ended with `end`.
pub(crate) async fn next_event<S>(
    events: &mut S,
    deadline: tokio::time::Instant,
    timeout: Duration,
    end: &str,
) -> Result<SseEvent, ProviderErrorKind>
where
    S: Stream<Item = Result<SseEvent, reqwest::Error>> + Unpin,
{
    match tokio::time::timeout_at(deadline, events.next()).await {
        Err(_) => Err(ProviderErrorKind::Timeout {
            after_ms: timeout.as_millis() as u64,
        }),
        Ok(None) => Err(ProviderErrorKind::Decode {
            message: format!("the stream ended before {end}"),
        }),
        Ok(Some(Err(e))) => Err(transport_error(&e)),
        Ok(Some(Ok(event))) => Ok(event),
    }
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Splits a response body into server-sent events. Tolerates `\r\n`, comments and
/// events split across chunks; an error mid-stream ends it with that error.
pub(crate) fn sse_events(
    response: reqwest::Response,
) -> impl Stream<Item = Result<SseEvent, reqwest::Error>> + Send {
    let bytes = response.bytes_stream();
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buf, mut done)| async move {
            loop {
                if let Some(event) = take_event(&mut buf, done) {
                    return Some((Ok(event), (bytes, buf, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (bytes, Vec::new(), true))),
                    None => done = true,
                }
            }
        },
    )
}

/// Takes one complete event off the front of `buf` (or the remainder, at the end).
fn take_event(buf: &mut Vec<u8>, at_end: bool) -> Option<SseEvent> {
    loop {
        let text = String::from_utf8_lossy(buf).replace("\r\n", "\n");
        let (block, rest) = match text.find("\n\n") {
            Some(at) => (text[..at].to_owned(), text[at + 2..].to_owned()),
            None if at_end && !text.trim().is_empty() => (text.clone(), String::new()),
            None => return None,
        };
        *buf = rest.into_bytes();
        let mut event = SseEvent::default();
        let mut has_data = false;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event.event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                has_data = true;
            }
        }
        if has_data || event.event.is_some() {
            return Some(event);
        }
        if buf.is_empty() {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_blocks_split_anywhere() {
        let mut buf = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\n\ndata: [DONE]".to_vec();
        assert_eq!(
            take_event(&mut buf, false),
            Some(SseEvent {
                event: Some("a".into()),
                data: "{\"x\":1}".into()
            })
        );
        assert_eq!(take_event(&mut buf, false), None);
        assert_eq!(
            take_event(&mut buf, true),
            Some(SseEvent {
                event: None,
                data: "[DONE]".into()
            })
        );
    }
}
