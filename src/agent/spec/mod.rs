//! Declarative agent specs: a TOML file per agent plus a prompt file.
//!
//! ```toml
//! name = "legal"                       # routing name, unique
//! description = "Regulatory and contractual exposure"
//! prompt_file = "legal.md"             # relative to the spec file (or `prompt = "…"`)
//! order = 10                           # listing / fan-out order (default 100)
//! model = "claude-sonnet-4-5"          # optional; the provider's default otherwise
//! max_tokens = 600                     # optional, default 512
//! temperature = 0.2                    # optional
//!
//! [sim]                                # optional: behaviour on the simulated provider
//! latency_ms = 900
//! jitter_ms = 400
//! failure_rate = 0.0
//!
//! [faults]                             # optional: fault injection (see `faults`)
//! panic = { every = 5 }
//! ```
//!
//! Unknown keys are errors (a typo should not be silently ignored), and every error
//! names the file, and the field and line where the parser can tell.

mod answer;

pub use answer::FAN_OUT_ASK;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::faults::Faults;
use crate::provider::SimProfile;

/// An agent defined by a spec file: one model call with the spec's system prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSpec {
    /// Routing name.
    pub name: String,
    /// One line on what it looks at.
    pub description: String,
    /// The system prompt.
    pub prompt: String,
    /// Listing and fan-out order.
    pub order: i32,
    /// Model override.
    pub model: Option<String>,
    /// Token cap.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Behaviour on the simulated provider.
    pub sim: Option<SimProfile>,
    /// Injected faults (see [`super::faults`]); empty by default.
    pub faults: Faults,
    /// Tools it may call, by name (registered with `FanfareBuilder::tool`): its
    /// model is offered them, and asked again with their results (see
    /// [`super::tools`]).
    pub tools: Vec<String>,
    /// The most model calls of one answer when it calls tools (default 4).
    pub max_turns: u32,
    /// Every tool call of this agent waits for a person's approval (see
    /// [`super::tools::approval`]).
    pub needs_approval: bool,
    /// What its first turn must do with its tools (`tool_choice = "auto"`,
    /// `"required"`, `"none"`, or a tool's name): later turns are the model's choice,
    /// or a forced call would never end.
    pub tool_choice: crate::provider::ToolChoice,
    /// The file it came from.
    pub source: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: String,
    prompt: Option<String>,
    prompt_file: Option<PathBuf>,
    #[serde(default = "default_order")]
    order: i32,
    model: Option<String>,
    #[serde(default = "default_max_tokens")]
    max_tokens: u32,
    temperature: Option<f32>,
    sim: Option<SimProfile>,
    #[serde(default)]
    faults: Faults,
    /// Tools it may call, by name (registered with `FanfareBuilder::tool`).
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default = "default_max_turns")]
    max_turns: u32,
    #[serde(default)]
    needs_approval: bool,
    tool_choice: Option<String>,
}

fn default_max_turns() -> u32 {
    4
}

fn default_order() -> i32 {
    100
}

fn default_max_tokens() -> u32 {
    512
}

/// Why specs could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// A file or directory could not be read.
    #[error("{}: cannot read it", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has a wrong, missing or unknown field.
    #[error("{}{location}: {message}", path.display())]
    Parse {
        /// The spec file.
        path: PathBuf,
        /// `:line:column`, when known.
        location: String,
        /// The parser's message (it names the field).
        message: String,
    },
    /// A field has a value the runtime cannot use.
    #[error("{}: field `{field}`: {reason}", path.display())]
    Invalid {
        /// The spec file.
        path: PathBuf,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Two specs share a name.
    #[error("{}: field `name`: `{name}` is already defined in {}", second.display(), first.display())]
    Duplicate {
        /// The name.
        name: String,
        /// Where it was first defined.
        first: PathBuf,
        /// Where it was defined again.
        second: PathBuf,
    },
    /// The directory holds no `*.toml` spec.
    #[error("{}: no agent specs (*.toml) found", dir.display())]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
}

impl AgentSpec {
    /// A spec built in code: `name` and its system prompt, defaults for the rest.
    pub fn new(name: impl Into<String>, prompt: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            prompt: prompt.into(),
            order: default_order(),
            model: None,
            max_tokens: default_max_tokens(),
            temperature: None,
            sim: None,
            faults: Faults::default(),
            tools: Vec::new(),
            max_turns: default_max_turns(),
            needs_approval: false,
            tool_choice: crate::provider::ToolChoice::Auto,
            source: PathBuf::from("<code>"),
        }
    }

    /// Parses one spec. `read_prompt` resolves `prompt_file` (relative to the spec).
    pub fn parse(
        path: &Path,
        text: &str,
        read_prompt: impl FnOnce(&Path) -> std::io::Result<String>,
    ) -> Result<Self, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| line_col(text, s.start))
                .unwrap_or_default();
            SpecError::Parse {
                path: path.to_owned(),
                location,
                message: e.message().trim().to_owned(),
            }
        })?;
        let invalid = |field, reason: &str| SpecError::Invalid {
            path: path.to_owned(),
            field,
            reason: reason.to_owned(),
        };
        if !valid_name(&raw.name) {
            return Err(invalid(
                "name",
                "use letters, digits, `-`, `_` and `.` only (it is a routing name, and lists of names are comma-separated)",
            ));
        }
        let prompt = match (raw.prompt, raw.prompt_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "prompt",
                    "give `prompt` or `prompt_file`, not both",
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "prompt_file",
                    "missing: give `prompt_file` or `prompt`",
                ))
            }
            (Some(p), None) => p,
            (None, Some(file)) => {
                let full = path.parent().unwrap_or(Path::new(".")).join(&file);
                read_prompt(&full).map_err(|e| SpecError::Invalid {
                    path: path.to_owned(),
                    field: "prompt_file",
                    reason: format!("cannot read {}: {e}", full.display()),
                })?
            }
        };
        if prompt.trim().is_empty() {
            return Err(invalid("prompt", "the prompt is empty"));
        }
        if raw.max_tokens == 0 {
            return Err(invalid("max_tokens", "must be at least 1"));
        }
        if let Some(t) = raw.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(invalid("temperature", "must be between 0 and 2"));
            }
        }
        if let Some(sim) = &raw.sim {
            if !(0.0..=1.0).contains(&sim.failure_rate) {
                return Err(invalid("sim.failure_rate", "must be between 0 and 1"));
            }
        }
        if !(1..=64).contains(&raw.max_turns) {
            return Err(invalid("max_turns", "must be 1 to 64"));
        }
        let tool_choice = match raw.tool_choice.as_deref() {
            None | Some("auto") => crate::provider::ToolChoice::Auto,
            Some("required") => crate::provider::ToolChoice::Required,
            Some("none") => crate::provider::ToolChoice::Never,
            Some(name) => {
                // A tool it names: its own (`add`), or a server's (`fs.read_file`,
                // which the model sees as `fs__read_file`).
                let offered = raw.tools.iter().any(|t| {
                    t == name
                        || name
                            .split_once('.')
                            .is_some_and(|(server, _)| *t == format!("{server}.*"))
                });
                if !offered {
                    return Err(invalid(
                        "tool_choice",
                        "must be \"auto\", \"required\", \"none\" or a tool the spec's `tools` names",
                    ));
                }
                crate::provider::ToolChoice::Tool(name.replacen('.', "__", 1))
            }
        };
        if let Err(e) = raw.faults.validate() {
            return Err(SpecError::Invalid {
                path: path.to_owned(),
                field: "faults",
                reason: e.to_string(),
            });
        }
        Ok(Self {
            name: raw.name,
            description: raw.description,
            prompt,
            order: raw.order,
            model: raw.model,
            max_tokens: raw.max_tokens,
            temperature: raw.temperature,
            sim: raw.sim,
            faults: raw.faults,
            tools: raw.tools,
            max_turns: raw.max_turns,
            needs_approval: raw.needs_approval,
            tool_choice,
            source: path.to_owned(),
        })
    }

    /// Reads and parses one spec file; its `prompt_file` must be in the spec's own
    /// directory (see [`LoadOptions`]).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        Self::load_with(path, LoadOptions::default())
    }

    /// [`AgentSpec::load`] with options.
    pub fn load_with(path: &Path, options: LoadOptions) -> Result<Self, SpecError> {
        let text = read_small_file(path).map_err(|source| SpecError::Io {
            path: path.to_owned(),
            source,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(path, &text, |p| {
            if !options.allow_prompts_outside {
                let inside = std::fs::canonicalize(dir)
                    .and_then(|d| std::fs::canonicalize(p).map(|f| f.starts_with(d)))?;
                if !inside {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "it is outside the spec's directory (a spec may only send prompt files next to it to the model, unless prompts outside are allowed explicitly)",
                    ));
                }
            }
            read_small_file(p)
        })
    }
}

impl AgentSpec {
    /// A digest (SHA-256, hex) of what decides its model calls, their cost and
    /// what they may do: its name, prompt, model, `max_tokens` and temperature, and
    /// (when it has any) its tools, `max_turns`, `needs_approval` and `tool_choice`.
    /// Two processes whose specs have the same fingerprint ask the same; a
    /// cluster's orchestrator routes to a worker only the specialists whose
    /// fingerprint is its own (a worker whose spec offered other tools, or none
    /// needing approval, was taken as the same).
    pub fn fingerprint(&self) -> String {
        use std::fmt::Write as _;
        let mut text = format!(
            "{}\0{}\0{}\0{}\0{}",
            self.name,
            self.prompt,
            self.model.as_deref().unwrap_or(""),
            self.max_tokens,
            self.temperature
                .map(|t| t.to_bits().to_string())
                .unwrap_or_default()
        );
        // Only when it has tools: a spec without them keeps the digest it had.
        if !self.tools.is_empty() || self.needs_approval {
            let _ = write!(
                text,
                "\0{}\0{}\0{}\0{:?}",
                self.tools.join("\u{1f}"),
                self.max_turns,
                self.needs_approval,
                self.tool_choice
            );
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            let _ = write!(hex, "{b:02x}");
        }
        hex
    }
}

/// The most bytes a spec or prompt file may hold.
pub const MAX_SPEC_FILE: u64 = 4 << 20;

/// Reads a spec, prompt or workflow file: a regular file (a FIFO hung the load) of
/// at most [`MAX_SPEC_FILE`] bytes (a 3 GB prompt file took 6 GB and was sent whole;
/// a 1.5 GB workflow file, 3 GB).
pub(crate) fn read_small_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    // Asked before opening: opening a FIFO waits for a writer.
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    if meta.len() > MAX_SPEC_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "it is {} bytes, more than the {MAX_SPEC_FILE} a spec, prompt or workflow file may hold",
                meta.len()
            ),
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SPEC_FILE + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    format!(":{line}:{col}")
}

/// How specs are loaded from files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Let a spec's `prompt_file` point outside its directory (`../x.md`, `/etc/…`).
    /// Off by default: whoever wrote the spec would choose what file is sent to the
    /// model.
    pub allow_prompts_outside: bool,
}

/// Whether `name` is a usable routing name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The file of a spec directory that is not a spec: the directory's own settings
/// (the tools its agents may call, say), read by the CLI.
pub const DIR_CONFIG: &str = "fanfare.toml";

/// Loads every `*.toml` spec in `dir` (but [`DIR_CONFIG`]), sorted by `order` then
/// name.
pub fn load_dir(dir: &Path) -> Result<Vec<AgentSpec>, SpecError> {
    load_dir_with(dir, LoadOptions::default())
}

/// [`load_dir`] with options.
pub fn load_dir_with(dir: &Path, options: LoadOptions) -> Result<Vec<AgentSpec>, SpecError> {
    let io = |source| SpecError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    files.retain(|p| {
        p.extension().is_some_and(|e| e == "toml") && p.file_name().is_none_or(|n| n != DIR_CONFIG)
    });
    files.sort();
    let specs = files
        .iter()
        .map(|f| AgentSpec::load_with(f, options))
        .collect::<Result<Vec<_>, _>>()?;
    finish(specs, dir)
}

/// Sorts specs and rejects duplicate names and empty sets.
pub fn finish(mut specs: Vec<AgentSpec>, dir: &Path) -> Result<Vec<AgentSpec>, SpecError> {
    if specs.is_empty() {
        return Err(SpecError::Empty {
            dir: dir.to_owned(),
        });
    }
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for s in &specs {
        if let Some(first) = seen.insert(&s.name, &s.source) {
            return Err(SpecError::Duplicate {
                name: s.name.clone(),
                first: first.to_owned(),
                second: s.source.clone(),
            });
        }
    }
    specs.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    Ok(specs)
}

/// The simulated-provider profiles the specs ask for, keyed by agent name.
pub fn sim_profiles(specs: &[AgentSpec]) -> HashMap<String, SimProfile> {
    specs
        .iter()
        .filter_map(|s| s.sim.clone().map(|p| (s.name.clone(), p)))
        .collect()
}

#[cfg(test)]
mod tests;
