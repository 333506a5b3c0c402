//! Reading what a user gives (a task, a document, a token file) with bounds: a file
//! that is not a regular one, or larger than what it may hold, is refused before it
//! is read whole.

use std::io::Read as _;

use anyhow::{bail, Context as _};

/// The most bytes a task may have (what one branch's input may carry).
pub const MAX_TASK_BYTES: u64 = 16 << 20;

/// Reads a document (an `--each` file, a batch's, `submit --file`): a regular file
/// of at most [`MAX_TASK_BYTES`] (a 1.5 GB file took 10-20 GB; `/dev/zero` never
/// ended).
pub fn read_document(path: &std::path::Path) -> anyhow::Result<String> {
    let what = path.display().to_string();
    let meta = std::fs::metadata(path).with_context(|| format!("reading {what}"))?;
    if !meta.is_file() {
        bail!("{what} is not a regular file");
    }
    if meta.len() > MAX_TASK_BYTES {
        bail!(
            "{what} is {} bytes, more than the {MAX_TASK_BYTES} a task may have",
            meta.len()
        );
    }
    let file = std::fs::File::open(path).with_context(|| format!("reading {what}"))?;
    read_bounded(file, &what, MAX_TASK_BYTES)
}

/// Reads `what` whole, refusing more than `limit` bytes: `--file /dev/zero` or
/// `yes | fanfare run -` read until memory ran out.
pub fn read_bounded(reader: impl std::io::Read, what: &str, limit: u64) -> anyhow::Result<String> {
    let mut text = String::new();
    reader
        .take(limit + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("reading {what}"))?;
    if text.len() as u64 > limit {
        bail!("{what} is larger than {limit} bytes, the most it may have");
    }
    Ok(text)
}
