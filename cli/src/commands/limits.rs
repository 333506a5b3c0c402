//! `fanfare limits list|clear`: what the admission gate learned about servers.

use std::time::SystemTime;

use anyhow::Context as _;

use crate::limits::store::{Store, FORGET_AFTER};
use crate::output;

fn store() -> anyhow::Result<Store> {
    Store::user().context(
        "neither XDG_CACHE_HOME nor HOME is set, so there is no cache directory to keep learned limits in",
    )
}

pub fn list(json: bool) -> anyhow::Result<()> {
    let store = store()?;
    let entries = store.entries()?;
    let now = SystemTime::now();
    if json {
        for e in &entries {
            output::line(format_args!("{}", serde_json::to_string(e)?))?;
        }
        return Ok(());
    }
    if entries.is_empty() {
        output::line(format_args!(
            "no learned limits in {} (a run keeps one after a server answers 429)",
            store.path().display()
        ))?;
        return Ok(());
    }
    output::line(format_args!(
        "{:<48} {:<24} {:>6} {:>10} {:>9}",
        "endpoint", "model", "cap", "refused at", "age"
    ))?;
    for e in &entries {
        let age = e.age(now);
        let stale = if age >= FORGET_AFTER { " (stale)" } else { "" };
        output::line(format_args!(
            "{:<48} {:<24} {:>6} {:>10} {:>8}m{stale}",
            e.endpoint,
            e.model,
            e.cap,
            e.refused_at,
            age.as_secs() / 60
        ))?;
    }
    output::line(format_args!("({})", store.path().display()))?;
    Ok(())
}

pub fn clear() -> anyhow::Result<()> {
    let store = store()?;
    let n = store.clear()?;
    output::line(format_args!(
        "forgot {n} learned limit(s) ({})",
        store.path().display()
    ))?;
    Ok(())
}
