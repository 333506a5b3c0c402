//! A minimal server-sent-events reader: splits a body into events, tolerating `\r\n`,
//! comments and events split across chunks. [`SseParser`] is the pure part (bytes in,
//! events out; linear in the input, however it is chunked); [`sse_events`] drives it
//! from a response, capped at a number of bytes so a runaway stream cannot exhaust
//! memory.

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
    S: Stream<Item = Result<SseEvent, ProviderErrorKind>> + Unpin,
{
    match tokio::time::timeout_at(deadline, events.next()).await {
        Err(_) => Err(ProviderErrorKind::Timeout {
            after_ms: timeout.as_millis() as u64,
        }),
        Ok(None) => Err(ProviderErrorKind::Decode {
            message: format!("the stream ended before {end}"),
        }),
        Ok(Some(result)) => result,
    }
}

/// One server-sent event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event:` field, if any.
    pub(crate) event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: String,
}

/// Bytes in, events out. An event ends at a blank line (`\n\n` or `\r\n\r\n`); at the
/// end of the stream, whatever is left is the last event.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    /// Where the search for the end of the next event resumes: everything before it
    /// has been looked at, so no byte is scanned twice.
    scanned: usize,
}

impl SseParser {
    /// Appends a chunk of the body.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if there is one (`at_end`: the body is over, so the
    /// remainder counts as one). Blocks with no `data:` or `event:` (comments,
    /// keep-alives) are skipped.
    pub(crate) fn next_event(&mut self, at_end: bool) -> Option<SseEvent> {
        loop {
            let (end, rest) = match self.find_blank_line() {
                Some(found) => found,
                None if at_end && !self.buf.iter().all(u8::is_ascii_whitespace) => {
                    (self.buf.len(), self.buf.len())
                }
                None => return None,
            };
            let event = parse_block(&self.buf[..end]);
            self.buf.drain(..rest);
            self.scanned = 0;
            if event.is_some() {
                return event;
            }
        }
    }

    /// The end of the first event and the start of what follows it, if a blank line
    /// has arrived.
    fn find_blank_line(&mut self) -> Option<(usize, usize)> {
        let buf = &self.buf;
        let mut i = self.scanned;
        while let Some(offset) = buf[i..].iter().position(|&b| b == b'\n') {
            let nl = i + offset;
            let mut next = nl + 1;
            if buf.get(next) == Some(&b'\r') {
                next += 1;
            }
            match buf.get(next) {
                Some(b'\n') => {
                    let end = if nl > 0 && buf[nl - 1] == b'\r' {
                        nl - 1
                    } else {
                        nl
                    };
                    return Some((end, next + 1));
                }
                // Not enough bytes yet to tell: look here again next time.
                None => {
                    self.scanned = nl;
                    return None;
                }
                Some(_) => i = nl + 1,
            }
        }
        self.scanned = buf.len();
        None
    }

    /// Bytes held, not yet returned as events.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }
}

/// Parses one event's lines.
fn parse_block(block: &[u8]) -> Option<SseEvent> {
    let text = String::from_utf8_lossy(block);
    let mut event = SseEvent::default();
    let mut has_data = false;
    for line in text.lines() {
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
    (has_data || event.event.is_some()).then_some(event)
}

/// Splits a response body into server-sent events. An error mid-stream ends it with
/// that error; so does a body longer than `limit` bytes.
pub(crate) fn sse_events(
    response: reqwest::Response,
    limit: u64,
) -> impl Stream<Item = Result<SseEvent, ProviderErrorKind>> + Send {
    let bytes = response.bytes_stream();
    futures::stream::unfold(
        (bytes, SseParser::default(), 0u64, false),
        move |(mut bytes, mut parser, mut read, mut done)| async move {
            loop {
                if let Some(event) = parser.next_event(done) {
                    return Some((Ok(event), (bytes, parser, read, done)));
                }
                if done {
                    return None;
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => {
                        read = read.saturating_add(chunk.len() as u64);
                        if read > limit {
                            let error = ProviderErrorKind::TooLarge { limit_bytes: limit };
                            return Some((Err(error), (bytes, SseParser::default(), read, true)));
                        }
                        parser.push(&chunk);
                    }
                    Some(Err(e)) => {
                        let error = transport_error(&e);
                        return Some((Err(error), (bytes, SseParser::default(), read, true)));
                    }
                    None => done = true,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.push(c);
            while let Some(e) = p.next_event(false) {
                out.push(e);
            }
        }
        while let Some(e) = p.next_event(true) {
            out.push(e);
        }
        out
    }

    #[test]
    fn sse_blocks_split_anywhere() {
        let body = b"event: a\r\ndata: {\"x\":1}\r\n\r\n: comment\n\ndata: [DONE]";
        let whole = events(&[body]);
        assert_eq!(
            whole,
            [
                SseEvent {
                    event: Some("a".into()),
                    data: "{\"x\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                }
            ]
        );
        // Any split gives the same events: byte by byte, and at every cut.
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(events(&bytes), whole);
        for cut in 0..body.len() {
            assert_eq!(events(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn multi_line_data_and_keep_alives() {
        let got = events(&[b": ping\n\ndata: a\ndata: b\n\n\n\ndata: c\n\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, "a\nb");
        assert_eq!(got[1].data, "c");
    }

    #[test]
    fn a_long_stream_without_separators_is_scanned_once() {
        // Each byte is looked at once, however many chunks it comes in: this is
        // how a runaway stream stays cheap until the byte cap ends it.
        let mut p = SseParser::default();
        for _ in 0..10_000 {
            p.push(&[b'x'; 100]);
            assert!(p.next_event(false).is_none());
        }
        assert_eq!(p.scanned, p.buffered());
    }
}
