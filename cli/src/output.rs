//! Writing results to standard output without panicking when the reader has gone (a
//! closed pipe, `| head`): the text is dropped and the command ends normally.

use std::io::Write as _;

/// Writes `text` to standard output. A closed pipe is not an error; anything else is.
pub fn stdout(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes one formatted line to standard output, as [`stdout`] does.
pub fn line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    stdout(&format!("{args}\n"))
}
