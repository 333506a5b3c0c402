//! `fanfare agents list`.

use std::path::Path;

use crate::plan::load_specs;

pub fn list_agents(dir: Option<&Path>, allow_prompts_outside: bool) -> anyhow::Result<()> {
    let options = fanfare::agent::spec::LoadOptions {
        allow_prompts_outside,
    };
    let (specs, source) = load_specs(dir, options)?;
    crate::output::line(format_args!("agents from {source}:"))?;
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in specs {
        let model = s.model.as_deref().unwrap_or("provider default");
        crate::output::line(format_args!(
            "  {:<width$}  {}  [model: {model}, max_tokens: {}]",
            s.name, s.description, s.max_tokens
        ))?;
    }
    Ok(())
}
