//! What the admission gate learned about each endpoint, kept between runs in
//! `$XDG_CACHE_HOME/fanfare/limits.json` (else `~/.cache/fanfare/limits.json`).
//!
//! An entry names its endpoint by base URL and the key's fingerprint (never the
//! key), and the model. It is forgotten after [`FORGET_AFTER`], so a server whose
//! limit was raised is not held to the old one for long; `fanfare limits clear`
//! forgets everything at once. The file is replaced whole by a rename, so a run
//! killed while writing it leaves the old file, never half of one; a file that does
//! not parse is set aside with a warning, never fatal to a run.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use fanfare::provider::Learned;
use serde::{Deserialize, Serialize};

/// How long a learned limit is used.
pub const FORGET_AFTER: Duration = fanfare::provider::LEARNED_KEEPS_FOR;

/// The file's format version.
const VERSION: u32 = 1;

/// One learned limit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The endpoint ([`fanfare::provider::endpoint_id`]).
    pub endpoint: String,
    /// The model.
    pub model: String,
    /// What the gate learned.
    pub cap: usize,
    /// How many were in flight at the last refusal.
    pub refused_at: usize,
    /// When, in seconds since the Unix epoch.
    pub learned_at_unix_s: u64,
}

impl Entry {
    /// How long ago it was learned.
    pub fn age(&self, now: SystemTime) -> Duration {
        let at = UNIX_EPOCH + Duration::from_secs(self.learned_at_unix_s);
        now.duration_since(at).unwrap_or_default()
    }

    fn learned(&self) -> Learned {
        Learned {
            cap: self.cap,
            refused_at: self.refused_at,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    entries: Vec<Entry>,
}

/// The learned limits in one file.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
}

impl Store {
    /// The user's store: `$XDG_CACHE_HOME/fanfare/limits.json`, else
    /// `$HOME/.cache/fanfare/limits.json`; `None` when neither is set.
    pub fn user() -> Option<Self> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(Self::at(base.join("fanfare").join("limits.json")))
    }

    /// A store in the file at `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every entry, the stale ones included. A missing file is empty; one that does
    /// not parse is an error naming it.
    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let file: File = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a learned-limits file (`fanfare limits clear` removes it)",
                self.path.display()
            )
        })?;
        anyhow::ensure!(
            file.version == VERSION,
            "{} is version {} of the learned-limits file; this fanfare reads version {VERSION}",
            self.path.display(),
            file.version
        );
        Ok(file.entries)
    }

    /// What was learned about `endpoint` within [`FORGET_AFTER`], by model.
    pub fn recall(
        &self,
        endpoint: &str,
        now: SystemTime,
    ) -> anyhow::Result<Vec<(String, Learned)>> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|e| e.endpoint == endpoint && e.age(now) < FORGET_AFTER)
            .map(|e| (e.model.clone(), e.learned()))
            .collect())
    }

    /// Keeps what was learned about `endpoint` (by model), replacing what was
    /// there for those models and dropping entries past [`FORGET_AFTER`]. A file
    /// that does not parse is replaced.
    pub fn keep(
        &self,
        endpoint: &str,
        learned: &[(String, Learned)],
        now: SystemTime,
    ) -> anyhow::Result<()> {
        if learned.is_empty() {
            return Ok(());
        }
        let mut entries = self.entries().unwrap_or_default();
        entries.retain(|e| {
            e.age(now) < FORGET_AFTER
                && !(e.endpoint == endpoint && learned.iter().any(|(m, _)| *m == e.model))
        });
        let at = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        entries.extend(learned.iter().map(|(model, l)| Entry {
            endpoint: endpoint.to_owned(),
            model: model.clone(),
            cap: l.cap,
            refused_at: l.refused_at,
            learned_at_unix_s: at,
        }));
        entries.sort_by(|a, b| (&a.endpoint, &a.model).cmp(&(&b.endpoint, &b.model)));
        self.write(&File {
            version: VERSION,
            entries,
        })
    }

    /// Forgets everything; returns how many entries there were.
    pub fn clear(&self) -> anyhow::Result<usize> {
        let n = self.entries().map(|e| e.len()).unwrap_or(0);
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }

    /// Writes the whole file through a temporary file and a rename.
    fn write(&self, file: &File) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let temp = self
            .path
            .with_extension(format!("json.{}.tmp", std::process::id()));
        let text = serde_json::to_string_pretty(file)?;
        std::fs::write(&temp, text + "\n")
            .with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, &self.path).with_context(|| {
            let _ = std::fs::remove_file(&temp);
            format!("replacing {}", self.path.display())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(cap: usize) -> Learned {
        Learned {
            cap,
            refused_at: cap + 1,
        }
    }

    #[test]
    fn what_is_kept_is_recalled_per_endpoint_and_model_until_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("fanfare/limits.json"));
        let now = SystemTime::now();
        assert!(store.recall("a", now).unwrap().is_empty(), "no file yet");
        store
            .keep(
                "a",
                &[("m1".into(), learned(50)), ("m2".into(), learned(8))],
                now,
            )
            .unwrap();
        store.keep("b", &[("m1".into(), learned(3))], now).unwrap();
        // A later run replaces its own models' entries and leaves the rest.
        store.keep("a", &[("m1".into(), learned(52))], now).unwrap();
        let mut a = store.recall("a", now).unwrap();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, [("m1".into(), learned(52)), ("m2".into(), learned(8))]);
        assert_eq!(store.recall("b", now).unwrap(), [("m1".into(), learned(3))]);
        // Past FORGET_AFTER it is not used, and the next write drops it.
        let later = now + FORGET_AFTER + Duration::from_secs(1);
        assert!(store.recall("a", later).unwrap().is_empty());
        store.keep("c", &[("m".into(), learned(9))], later).unwrap();
        assert_eq!(store.entries().unwrap().len(), 1);
        assert_eq!(store.clear().unwrap(), 1);
        assert!(store.entries().unwrap().is_empty());
    }

    #[test]
    fn a_damaged_file_is_reported_by_name_and_replaced_by_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limits.json");
        std::fs::write(&path, "{ not json").unwrap();
        let store = Store::at(&path);
        let e = store.recall("a", SystemTime::now()).unwrap_err();
        assert!(format!("{e:#}").contains("limits.json"), "{e:#}");
        store
            .keep("a", &[("m".into(), learned(5))], SystemTime::now())
            .unwrap();
        assert_eq!(store.entries().unwrap().len(), 1);
        // Nothing is left beside it.
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }
}
