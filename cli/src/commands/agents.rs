//! `fanfare agents list`.

use std::path::Path;

use crate::setup::load_specs;

pub fn list_agents(dir: Option<&Path>) -> anyhow::Result<()> {
    let (specs, source) = load_specs(dir)?;
    println!("agents from {source}:");
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(0);
    for s in specs {
        let model = s.model.as_deref().unwrap_or("provider default");
        println!(
            "  {:<width$}  {}  [model: {model}, max_tokens: {}]",
            s.name, s.description, s.max_tokens
        );
    }
    Ok(())
}
