//! Lines for stderr while a live view may be drawn there: a log line or a panic
//! message written straight to stderr tore the view (frozen rows above the live
//! ones, a row gone until the end). Each goes through the view instead, which
//! clears its rows, writes the line and draws them again below it.

use std::io::Write as _;
use std::sync::Mutex;

use indicatif::MultiProgress;

/// The view being drawn, if any.
static VIEW: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Lines go through `view` until [`detach`].
pub fn attach(view: &MultiProgress) {
    if let Ok(mut v) = VIEW.lock() {
        *v = Some(view.clone());
    }
}

/// Lines go straight to stderr again.
pub fn detach() {
    if let Ok(mut v) = VIEW.lock() {
        *v = None;
    }
}

/// Writes `text` (whole lines) to stderr: above the view's rows while one is drawn.
pub fn write(text: &[u8]) {
    let view = VIEW.lock().ok().and_then(|v| v.clone());
    let out = || {
        let _ = std::io::stderr().lock().write_all(text);
    };
    match view {
        Some(view) => view.suspend(out),
        None => out(),
    }
}

/// A `tracing` writer to [`write`]: an event's lines are gathered and written at
/// once when the event is done.
pub struct Lines;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Gathered;

    fn make_writer(&'a self) -> Gathered {
        Gathered(Vec::new())
    }
}

/// One event's text, written when dropped.
pub struct Gathered(Vec<u8>);

impl std::io::Write for Gathered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            write(&self.0);
        }
    }
}
