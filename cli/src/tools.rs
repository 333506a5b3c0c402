//! The tools a command's runtime offers its agents: MCP servers and the built-in
//! `read_file` and `http_get`, from the flags (`--mcp`, `--read-root`,
//! `--http-allow`) and from the spec directory's `fanfare.toml`; and the check,
//! before anything starts, that every tool a spec names is one of them.
//!
//! ```toml
//! # agents/specs/fanfare.toml
//! [mcp]
//! fs = "npx -y @modelcontextprotocol/server-filesystem ./docs"  # runs in this directory
//! web = "http://127.0.0.1:3001/mcp"
//!
//! [tools]
//! read_file = "docs"                      # its root, relative to this directory
//! http_get = ["example.com", "*.python.org"]
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use fanfare::agent::spec::{AgentSpec, DIR_CONFIG};
use fanfare::agent::tools::builtin::{http_get, read_file};
use fanfare::agent::tools::delegate::RUN_WORKFLOW;
use fanfare::agent::tools::mcp::McpServer;
use fanfare::FanfareBuilder;

use crate::args::RuntimeArgs;

/// What a runtime offers, and where each part came from.
pub struct Tools {
    mcp: Vec<McpServer>,
    /// The servers named in the config file (started only if a spec names them).
    from_file: Vec<String>,
    read_root: Option<PathBuf>,
    http_allow: Vec<String>,
    /// The config file read, if one was.
    config: Option<PathBuf>,
    /// A spec names `run_workflow`: the workflows are offered to it.
    delegates: bool,
}

/// A spec directory's `fanfare.toml`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DirConfig {
    /// MCP servers by name: a command line, its words, or a URL.
    #[serde(default)]
    mcp: BTreeMap<String, Command>,
    #[serde(default)]
    tools: Builtins,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Command {
    Line(String),
    Words(Vec<String>),
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Builtins {
    read_file: Option<PathBuf>,
    http_get: Option<Vec<String>>,
}

impl Tools {
    /// The tools `args` and the spec directory `dir`'s config file give (the flags
    /// win over the file for a built-in tool; an MCP server named in both is an
    /// error).
    pub fn gather(args: &RuntimeArgs, dir: Option<&Path>) -> anyhow::Result<Self> {
        let (file, path) = match dir.map(|d| d.join(DIR_CONFIG)) {
            Some(path) if path.is_file() => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let file: DirConfig = toml::from_str(&text).with_context(|| {
                    format!("{} is not a valid spec-directory config", path.display())
                })?;
                (file, Some(path))
            }
            _ => (DirConfig::default(), None),
        };
        let base = dir.unwrap_or(Path::new("."));
        let mut mcp = args.mcp.clone();
        let mut from_file = Vec::new();
        for (name, command) in file.mcp {
            let shown = path.as_deref().unwrap_or(base).display();
            let server = match command {
                Command::Line(line) => McpServer::parse(&format!("{name}={line}")),
                Command::Words(words) => match words.split_first() {
                    Some((url, []))
                        if url.starts_with("http://") || url.starts_with("https://") =>
                    {
                        McpServer::http(&name, url)
                    }
                    Some((program, rest)) => McpServer::stdio(&name, program, rest),
                    None => McpServer::parse(&format!("{name}=")),
                },
            }
            .with_context(|| format!("{shown}: [mcp] {name}"))?;
            if mcp.iter().any(|s| s.name() == name) {
                bail!("MCP server `{name}` is given twice: by --mcp and in {shown}");
            }
            mcp.push(server.current_dir(base));
            from_file.push(name);
        }
        let read_root = match (&args.read_root, file.tools.read_file) {
            (Some(root), _) => Some(root.clone()),
            (None, Some(root)) => {
                let root = base.join(root);
                inside(&root, base, args.allow_prompts_outside, path.as_deref())?;
                Some(root)
            }
            (None, None) => None,
        };
        let http_allow = if args.http_allow.is_empty() {
            file.tools.http_get.unwrap_or_default()
        } else {
            args.http_allow.clone()
        };
        Ok(Self {
            mcp,
            from_file,
            read_root,
            http_allow,
            config: path,
            delegates: false,
        })
    }

    /// Refuses a spec whose `tools` names one this runtime does not offer, before
    /// anything starts (a run would fail each of its branches on it); then leaves
    /// out the config file's MCP servers that no spec names (a spec directory's
    /// commands run only when its agents use them).
    pub fn check(&mut self, specs: &[AgentSpec]) -> anyhow::Result<()> {
        self.must_offer(specs)?;
        self.delegates = specs
            .iter()
            .any(|s| s.tools.iter().any(|t| t == RUN_WORKFLOW));
        let named = |server: &str| {
            specs
                .iter()
                .flat_map(|s| &s.tools)
                .any(|t| t.split_once('.').is_some_and(|(s, _)| s == server))
        };
        let unused: Vec<String> = self
            .from_file
            .iter()
            .filter(|n| !named(n))
            .cloned()
            .collect();
        self.mcp.retain(|s| !unused.iter().any(|n| n == s.name()));
        Ok(())
    }

    fn must_offer(&self, specs: &[AgentSpec]) -> anyhow::Result<()> {
        let servers: Vec<&str> = self.mcp.iter().map(McpServer::name).collect();
        let how = match &self.config {
            Some(path) => format!("--mcp NAME=COMMAND or [mcp] in {}", path.display()),
            None => format!(
                "--mcp NAME=COMMAND, or an [mcp] table in the spec directory's {DIR_CONFIG}"
            ),
        };
        for spec in specs {
            for name in &spec.tools {
                let missing = match name.split_once('.') {
                    Some((server, _)) if !servers.contains(&server) => format!(
                        "names the MCP server `{server}`, which is not given ({how}; given: {})",
                        listed(&servers)
                    ),
                    Some(_) => continue,
                    None => match name.as_str() {
                        "read_file" if self.read_root.is_none() => format!(
                            "names `read_file`, which needs a root: --read-root DIR, or read_file = \"DIR\" under [tools] in {DIR_CONFIG}"
                        ),
                        "http_get" if self.http_allow.is_empty() => format!(
                            "names `http_get`, which needs the hosts it may fetch from: --http-allow HOST, or http_get = [\"HOST\"] under [tools] in {DIR_CONFIG}"
                        ),
                        "read_file" | "http_get" | RUN_WORKFLOW => continue,
                        other => format!(
                            "names the tool `{other}`, which is neither built in (read_file, http_get, run_workflow) nor an MCP server's (`SERVER.TOOL` or `SERVER.*`)"
                        ),
                    },
                };
                bail!(
                    "agent `{}` ({}): its `tools` {missing}",
                    spec.name,
                    spec.source.display()
                );
            }
        }
        Ok(())
    }

    /// `builder` offering these tools.
    pub fn offer(self, mut builder: FanfareBuilder) -> anyhow::Result<FanfareBuilder> {
        if self.delegates {
            // Every workflow that runs on an input alone (one that maps over
            // given items needs them).
            let (workflows, _) = crate::plan::load_workflows()?;
            for w in workflows {
                if let Ok(request) = w.request("", None) {
                    builder = builder.workflow(request.into_workflow(w.name.clone()));
                }
            }
        }
        for server in self.mcp {
            builder = builder.mcp(server);
        }
        if let Some(root) = &self.read_root {
            builder = builder.tool(read_file(root)?);
        }
        if !self.http_allow.is_empty() {
            builder = builder.tool(http_get(&self.http_allow)?);
        }
        Ok(builder)
    }

    /// One line on what is offered, for the banner, if anything is.
    pub fn describe(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .mcp
            .iter()
            .map(|s| format!("MCP server `{}`", s.name()))
            .collect();
        if let Some(root) = &self.read_root {
            parts.push(format!("read_file under {}", root.display()));
        }
        if !self.http_allow.is_empty() {
            parts.push(format!("http_get from {}", self.http_allow.join(", ")));
        }
        (!parts.is_empty()).then(|| format!("tools: {}", parts.join("; ")))
    }
}

/// Refuses a root from the config file outside the spec directory, as a prompt
/// file outside it is refused: a spec directory from elsewhere would otherwise have
/// the model read (and send on) any file of this machine.
fn inside(root: &Path, dir: &Path, allowed: bool, config: Option<&Path>) -> anyhow::Result<()> {
    let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
    if allowed || real(root).starts_with(real(dir)) {
        return Ok(());
    }
    bail!(
        "{}: read_file's root {} is outside the spec directory {}; give --allow-prompts-outside to let it, or --read-root",
        config.map_or_else(|| DIR_CONFIG.into(), |p| p.display().to_string()),
        root.display(),
        dir.display()
    )
}

fn listed(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
