//! A stdio server's process and transport: spawned in a process group of its own,
//! its stdout read through a watch on line lengths. `rmcp` drops a message longer
//! than [`MAX_MESSAGE`] and keeps the connection, so the call it answered waited
//! until its branch's deadline (60 s by default) and was then said to be cut by
//! it; the watch tells the link at once, which fails the calls in flight saying
//! why.

use std::pin::Pin;
use std::task::{Context, Poll};

use process_wrap::tokio::{ChildWrapper, CommandWrap};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::RoleClient;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{ChildStderr, ChildStdin, ChildStdout};

/// The longest message (one line) read from a server, newline included.
pub(crate) const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A spawned server: the process (killed when dropped), the transport, and its
/// stderr when piped.
pub(crate) type Spawned = (
    Box<dyn ChildWrapper>,
    AsyncRwTransport<RoleClient, Watched<ChildStdout>, ChildStdin>,
    Option<ChildStderr>,
);

/// Spawns `command` with piped stdio; each message longer than [`MAX_MESSAGE`]
/// is dropped and counted on `oversized`.
pub(crate) fn spawn(
    mut command: CommandWrap,
    oversized: tokio::sync::watch::Sender<u64>,
) -> std::io::Result<Spawned> {
    command
        .command_mut()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn()?;
    let taken = |what: &str| std::io::Error::other(format!("its {what} was not piped"));
    let stdin = child.stdin().take().ok_or_else(|| taken("stdin"))?;
    let stdout = child.stdout().take().ok_or_else(|| taken("stdout"))?;
    let stderr = child.stderr().take();
    let read = Watched {
        inner: stdout,
        line: 0,
        oversized,
    };
    let transport = AsyncRwTransport::new(read, stdin).with_max_line_length(MAX_MESSAGE);
    Ok((child, transport, stderr))
}

/// A reader that counts each line's bytes as they pass and says when one grows
/// past [`MAX_MESSAGE`] (the bytes pass on unchanged; none are kept).
pub(crate) struct Watched<R> {
    inner: R,
    /// Bytes of the current line so far, newline excluded.
    line: usize,
    oversized: tokio::sync::watch::Sender<u64>,
}

impl<R> Watched<R> {
    /// `n` more bytes of the current line.
    fn grow(&mut self, n: usize) {
        let was = self.line;
        self.line = self.line.saturating_add(n);
        // With its newline, a line of MAX_MESSAGE bytes is too long for rmcp.
        if was < MAX_MESSAGE && self.line >= MAX_MESSAGE {
            self.oversized.send_modify(|n| *n += 1);
        }
    }

    fn saw(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.grow(end);
            self.line = 0;
            bytes = &bytes[end + 1..];
        }
        self.grow(bytes.len());
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.saw(&buf.filled()[before..]);
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_counted_oversized_once_when_it_reaches_the_limit_across_reads() {
        let (tell, seen) = tokio::sync::watch::channel(0u64);
        let mut w = Watched {
            inner: (),
            line: 0,
            oversized: tell,
        };
        w.saw(b"{\"short\":1}\n{\"next\":");
        assert_eq!((*seen.borrow(), w.line), (0, 8));
        let chunk = vec![b'x'; MAX_MESSAGE / 2];
        w.saw(&chunk);
        assert_eq!(*seen.borrow(), 0);
        w.saw(&chunk);
        assert_eq!(*seen.borrow(), 1, "past the limit");
        w.saw(&chunk);
        assert_eq!(*seen.borrow(), 1, "once per line");
        w.saw(b"}\nok\n");
        assert_eq!((*seen.borrow(), w.line), (1, 0));
        // A line just under the limit, newline included, is not.
        w.saw(&vec![b'y'; MAX_MESSAGE - 1]);
        w.saw(b"\n");
        assert_eq!(*seen.borrow(), 1);
    }
}
