//! Ready-made fanfare specialists, written only against fanfare's public API.
//!
//! - Declarative agents under `agents/specs/` (TOML + prompt): the four perspectives
//!   (legal, technical, financial, security), the validation panel (grammar, facts,
//!   tone) and the research crew (gatherer, summariser, critic); and the workflows
//!   under `agents/workflows/` (`perspectives`, `validation`, `research`,
//!   `summarise`). They are compiled into this crate ([`specs`], [`perspectives`],
//!   [`workflows`]), so an installed binary has them: the files are the one source,
//!   read at build time.
//! - [`DataHandlingAudit`] is a specialist written in Rust: a deterministic scan of
//!   the task text for data-handling red flags, with no model call. It shows that a
//!   specialist need not be an LLM, and gives a fan-out a cheap, exact check beside
//!   the model's opinions.

use std::path::Path;

use fanfare::agent::spec::{self, AgentSpec, SpecError};
use fanfare::run::workflow::{Workflow, WorkflowError};
use fanfare::{Agent, AgentContext, AgentError, AgentOutput, AgentReply, Task};

/// One embedded spec file: its name, its text, and the prompt file it names.
struct Embedded {
    file: &'static str,
    toml: &'static str,
    prompt_file: &'static str,
    prompt: &'static str,
}

macro_rules! embed {
    ($($name:literal),* $(,)?) => {
        &[$(Embedded {
            file: concat!($name, ".toml"),
            toml: include_str!(concat!("../specs/", $name, ".toml")),
            prompt_file: concat!($name, ".md"),
            prompt: include_str!(concat!("../specs/", $name, ".md")),
        }),*]
    };
}

/// Every spec under `agents/specs/`, compiled in.
const SPECS: &[Embedded] = embed![
    "legal",
    "technical",
    "financial",
    "security",
    "grammar",
    "facts",
    "tone",
    "gatherer",
    "summariser",
    "critic",
];

/// The perspective agents, by name.
const PERSPECTIVES: [&str; 4] = ["legal", "technical", "financial", "security"];

/// The workflows under `agents/workflows/`, compiled in: (file, text).
const WORKFLOWS: &[(&str, &str)] = &[
    (
        "perspectives.toml",
        include_str!("../workflows/perspectives.toml"),
    ),
    (
        "validation.toml",
        include_str!("../workflows/validation.toml"),
    ),
    ("research.toml", include_str!("../workflows/research.toml")),
    (
        "summarise.toml",
        include_str!("../workflows/summarise.toml"),
    ),
];

/// The shipped perspective specs (legal, technical, financial, security), parsed from
/// the copies compiled into this crate. Errors name `<built-in>/FILE`.
pub fn perspectives() -> Result<Vec<AgentSpec>, SpecError> {
    let mut all = specs()?;
    all.retain(|s| PERSPECTIVES.contains(&s.name.as_str()));
    Ok(all)
}

/// The shipped workflows, parsed from the copies compiled into this crate, sorted by
/// name. Errors name `<built-in>/FILE`.
pub fn workflows() -> Result<Vec<Workflow>, WorkflowError> {
    let dir = Path::new("<built-in>");
    let mut all = WORKFLOWS
        .iter()
        .map(|(file, text)| Workflow::parse(&dir.join(file), text))
        .collect::<Result<Vec<_>, _>>()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Every shipped spec, parsed from the copies compiled into this crate, in listing
/// order. Errors name `<built-in>/FILE`.
pub fn specs() -> Result<Vec<AgentSpec>, SpecError> {
    let dir = Path::new("<built-in>");
    let specs = SPECS
        .iter()
        .map(|e| {
            AgentSpec::parse(&dir.join(e.file), e.toml, |p| {
                if p.file_name().is_some_and(|n| n == e.prompt_file) {
                    Ok(e.prompt.to_owned())
                } else {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "only the spec's own embedded prompt file is available",
                    ))
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    spec::finish(specs, dir)
}

/// One red flag: what was found, how serious it is, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `high`, `medium` or `low`.
    pub severity: &'static str,
    /// The phrase that triggered it.
    pub matched: String,
    /// What to do about it.
    pub advice: &'static str,
}

struct Rule {
    any_of: &'static [&'static str],
    severity: &'static str,
    advice: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        any_of: &[
            "plain text",
            "plaintext",
            "unencrypted",
            "clear text",
            "cleartext",
        ],
        severity: "high",
        advice: "encrypt at rest and in transit; never keep sensitive data in clear text",
    },
    Rule {
        any_of: &["password", "api key", "secret", "token", "credential"],
        severity: "high",
        advice: "keep credentials in a secret store; redact them before logging",
    },
    Rule {
        any_of: &[
            "user queries",
            "personal data",
            "email address",
            "phone number",
            "pii",
            "user data",
        ],
        severity: "medium",
        advice: "classify the personal data, minimise what is kept, and set a retention period",
    },
    Rule {
        any_of: &["logs", "logging", "log file"],
        severity: "medium",
        advice: "redact personal data from logs and restrict who can read them",
    },
    Rule {
        any_of: &["forever", "indefinitely", "all history", "never delete"],
        severity: "medium",
        advice: "define a retention schedule and a deletion path for user requests",
    },
    Rule {
        any_of: &["third party", "third-party", "vendor", "share with"],
        severity: "low",
        advice: "put a data processing agreement in place with each recipient",
    },
];

/// A deterministic data-handling audit of the task text (no model call).
#[derive(Clone, Debug, Default)]
pub struct DataHandlingAudit;

impl DataHandlingAudit {
    /// The findings for `text`, most severe first.
    pub fn findings(text: &str) -> Vec<Finding> {
        let lower = text.to_lowercase();
        let mut found: Vec<Finding> = RULES
            .iter()
            .filter_map(|rule| {
                rule.any_of
                    .iter()
                    .find(|p| lower.contains(*p))
                    .map(|p| Finding {
                        severity: rule.severity,
                        matched: (*p).to_owned(),
                        advice: rule.advice,
                    })
            })
            .collect();
        let rank = |s: &str| match s {
            "high" => 0,
            "medium" => 1,
            _ => 2,
        };
        found.sort_by_key(|f| rank(f.severity));
        found
    }
}

impl Agent for DataHandlingAudit {
    fn name(&self) -> &str {
        "data-audit"
    }

    async fn run(&self, _ctx: &AgentContext, task: Task) -> AgentReply {
        if task.input.trim().is_empty() {
            return Err(AgentError::Rejected {
                reason: "the task text is empty".to_owned(),
            });
        }
        let findings = Self::findings(&task.input);
        let text = if findings.is_empty() {
            "No data-handling red flags found by the rule scan.".to_owned()
        } else {
            findings
                .iter()
                .map(|f| format!("- [{}] \"{}\": {}", f.severity, f.matched, f.advice))
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(AgentOutput::text(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_plain_text_logs_of_user_queries() {
        let f = DataHandlingAudit::findings("storing all user queries in plain text logs");
        let severities: Vec<&str> = f.iter().map(|f| f.severity).collect();
        assert_eq!(severities, ["high", "medium", "medium"]);
        assert_eq!(f[0].matched, "plain text");
    }

    #[test]
    fn clean_text_has_no_findings() {
        assert!(DataHandlingAudit::findings("We will add a dark mode toggle.").is_empty());
    }

    #[test]
    fn embedded_workflows_match_the_files_on_disk() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let on_disk = fanfare::run::workflow::load_dir(&dir).unwrap();
        let embedded = workflows().unwrap();
        let names = |w: &[Workflow]| w.iter().map(|w| w.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&on_disk),
            names(&embedded),
            "a workflow file is not embedded"
        );
        for (d, e) in on_disk.iter().zip(&embedded) {
            assert_eq!(d.steps, e.steps);
        }
        // Every agent they ask is shipped.
        let agents: Vec<String> = specs().unwrap().into_iter().map(|s| s.name).collect();
        for w in &embedded {
            for a in w.agents() {
                assert!(agents.iter().any(|n| n == a), "{}: no agent `{a}`", w.name);
            }
        }
    }

    #[test]
    fn embedded_specs_match_the_files_on_disk() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("specs");
        let on_disk = spec::load_dir(&dir).unwrap();
        let embedded = specs().unwrap();
        assert_eq!(on_disk.len(), embedded.len(), "a spec file is not embedded");
        for (d, e) in on_disk.iter().zip(&embedded) {
            assert_eq!((&d.name, &d.prompt), (&e.name, &e.prompt));
        }
    }

    #[test]
    fn shipped_specs_load() {
        let names: Vec<String> = perspectives()
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["legal", "technical", "financial", "security"]);
    }
}
