//! `read_file`: reads a file (or lists a directory) under one root. A path that is
//! absolute, holds `..`, or leads out of the root through a symlink is refused; so
//! is anything but a regular file or a directory (a FIFO would block the reader),
//! and a file with a second name (a hard link, whose other name may be outside).

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use futures::future::BoxFuture;

use super::BuiltinError;
use crate::agent::tools::{Tool, ToolContext, ToolError};

/// The most bytes one call reads (less than what the tool loop sends back to a
/// model, so a page is never cut there).
const PAGE: usize = 48 * 1024;
/// The most entries one directory listing shows.
const MAX_ENTRIES: usize = 1000;

/// A `read_file` tool confined to `root` (which must be a directory).
pub fn read_file(root: impl AsRef<Path>) -> Result<ReadFile, BuiltinError> {
    let given = root.as_ref();
    let bad = |reason: String| BuiltinError::BadRoot {
        root: given.to_owned(),
        reason,
    };
    let root = std::fs::canonicalize(given).map_err(|e| bad(e.to_string()))?;
    if !root.is_dir() {
        return Err(bad("not a directory".to_owned()));
    }
    let schema = serde_json::to_value(schemars::schema_for!(ReadInput)).unwrap_or_default();
    Ok(ReadFile { root, schema })
}

/// See [`read_file`].
#[derive(Clone, Debug)]
pub struct ReadFile {
    root: PathBuf,
    schema: serde_json::Value,
}

impl ReadFile {
    /// The directory it reads under (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// What the model asks `read_file`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct ReadInput {
    /// The file or directory, relative to the root (`.` for the root itself).
    #[schemars(example = ".")]
    path: String,
    /// The byte to start reading at, for a file longer than one call shows.
    #[serde(default)]
    offset: u64,
}

impl Tool for ReadFile {
    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Reads a text file, or lists a directory, under the folder this tool is confined to. \
Paths are relative to that folder. A long file is shown a page at a time: ask again with the offset it names."
    }

    fn input_schema(&self) -> serde_json::Value {
        self.schema.clone()
    }

    fn is_idempotent(&self) -> bool {
        true
    }

    fn call(
        &self,
        _ctx: ToolContext,
        input: serde_json::Value,
    ) -> BoxFuture<'_, Result<String, ToolError>> {
        Box::pin(async move {
            let input: ReadInput = serde_json::from_value(input)
                .map_err(|e| ToolError::new(format!("the input does not fit `read_file`: {e}")))?;
            let root = self.root.clone();
            tokio::task::spawn_blocking(move || read(&root, &input.path, input.offset))
                .await
                .map_err(|e| ToolError::new(format!("the read failed: {e}")))?
        })
    }
}

/// Reads `path` under `root` from `offset`.
fn read(root: &Path, path: &str, offset: u64) -> Result<String, ToolError> {
    let relative = Path::new(path.trim());
    for part in relative.components() {
        match part {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(ToolError::new(format!(
                    "`{path}`: `..` is not allowed; paths stay under the root"
                )))
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(ToolError::new(format!(
                    "`{path}` is absolute; give a path relative to the root"
                )))
            }
        }
    }
    let wanted = root.join(relative);
    let real = std::fs::canonicalize(&wanted)
        .map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    if !real.starts_with(root) {
        return Err(ToolError::new(format!(
            "`{path}` leads out of the root (through a symlink); not read"
        )));
    }
    let meta =
        std::fs::metadata(&real).map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    if meta.is_dir() {
        return list(&real, path);
    }
    if !meta.is_file() {
        return Err(ToolError::new(format!(
            "`{path}` is not a regular file; not read"
        )));
    }
    let mut file = open(&real).map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    let opened = file
        .metadata()
        .map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    if !opened.is_file() {
        return Err(ToolError::new(format!(
            "`{path}` is not a regular file; not read"
        )));
    }
    // A hard link is the file itself under a second name, which may lie outside
    // the root (a link to a key file read it through the root).
    #[cfg(unix)]
    if std::os::unix::fs::MetadataExt::nlink(&opened) > 1 {
        return Err(ToolError::new(format!(
            "`{path}` has more than one name (a hard link), and another may lie outside the root; not read"
        )));
    }
    still_inside(&file, root, path)?;
    let size = opened.len();
    if offset > size {
        return Err(ToolError::new(format!(
            "`{path}` has {size} bytes; offset {offset} is past its end"
        )));
    }
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset))
        .map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    let mut bytes = Vec::with_capacity(PAGE.min(usize::try_from(size).unwrap_or(PAGE)));
    file.take(PAGE as u64 + 4)
        .read_to_end(&mut bytes)
        .map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    if bytes.contains(&0) {
        return Err(ToolError::new(format!(
            "`{path}` is binary ({size} bytes); not shown"
        )));
    }
    let text = match std::str::from_utf8(&bytes) {
        Ok(text) => text,
        // A page may end inside a character: keep what is whole.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => {
            return Err(ToolError::new(format!(
                "`{path}` is not UTF-8 text ({size} bytes); not shown"
            )))
        }
    };
    let page = &text[..text.floor_char_boundary(PAGE)];
    let end = offset + page.len() as u64;
    if offset == 0 && end == size {
        return Ok(page.to_owned());
    }
    let more = if end < size {
        format!("; ask again with offset {end} for the rest")
    } else {
        String::new()
    };
    Ok(format!(
        "[`{path}`: bytes {offset}–{end} of {size}{more}]\n{page}"
    ))
}

/// Opens `path` for reading without blocking on a FIFO swapped in since it was
/// looked at.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

/// Refuses a file that, opened, is not under `root`: a path component swapped for
/// a symlink between the check and the open.
fn still_inside(file: &std::fs::File, root: &Path, path: &str) -> Result<(), ToolError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        let opened = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
        if let Ok(opened) = opened {
            if !opened.starts_with(root) {
                return Err(ToolError::new(format!(
                    "`{path}` leads out of the root; not read"
                )));
            }
        }
    }
    let _ = (file, root, path);
    Ok(())
}

/// The entries of `dir`, one per line, sorted; directories end with `/`.
fn list(dir: &Path, path: &str) -> Result<String, ToolError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| ToolError::new(format!("`{path}`: {}", plain(&e))))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                format!("{name}/")
            } else {
                name
            }
        })
        .collect();
    names.sort();
    let total = names.len();
    if total == 0 {
        return Ok(format!("`{path}` is an empty directory"));
    }
    names.truncate(MAX_ENTRIES);
    let mut text = names.join("\n");
    if total > MAX_ENTRIES {
        text.push_str(&format!("\n[{MAX_ENTRIES} of {total} entries shown]"));
    }
    Ok(text)
}

/// An I/O error without the OS's error number.
fn plain(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => e.to_string(),
    }
}
