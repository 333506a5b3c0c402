//! `run --dry-run`: what it says a run may cost is what the run's budget reserves.

use super::{fanfare, repo};

/// The `$` figure at the end of the dry run's line for `step`.
fn cost_of(dry: &str, step: &str) -> f64 {
    let line = dry
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{step} ")) && l.contains(" calls "))
        .unwrap_or_else(|| panic!("no line for {step}:\n{dry}"));
    line.rsplit('$').next().unwrap().trim().parse().unwrap()
}

#[test]
fn a_dry_run_prices_each_call_as_the_budget_reserves_it_merge_included() {
    // Regression: max_tokens was priced at the input price: the dry run said
    // $0.0021 a call where the budget reserved $0.0093.
    let task = "Should we adopt a four-day week?";
    let anthropic = [
        "--provider",
        "anthropic",
        "--base-url",
        "http://127.0.0.1:9",
    ];
    let mut dry_args = vec!["run", "--dry-run"];
    dry_args.extend(anthropic);
    dry_args.push(task);
    let dry = fanfare(&dry_args, repo());
    let dry = String::from_utf8_lossy(&dry.stdout).into_owned();
    // The same run with a budget too small for one call: each branch is refused
    // before any call, saying what it needed.
    let mut run_args = vec!["run", "--json", "--budget-usd", "0.0001"];
    run_args.extend(anthropic);
    run_args.push(task);
    let out = super::fanfare_with_key(&run_args, repo());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    let legal = &report["branches"][0];
    assert_eq!(legal["agent"], "legal");
    let needed = legal["outcome"]["reason"]["needed_usd"].as_f64().unwrap();
    let said = cost_of(&dry, "legal");
    assert!(
        (said - needed).abs() < 0.00006,
        "dry run ${said}, reserved ${needed}:\n{dry}"
    );
    assert!(cost_of(&dry, "merge") > 0.0, "the merge is priced:\n{dry}");
}

#[test]
fn a_dry_run_lists_the_files_each_matched() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["b.md", "a.md"] {
        std::fs::write(dir.path().join(name), "A document.").unwrap();
    }
    let pattern = format!("{}/*.md", dir.path().display());
    let out = fanfare(
        &[
            "run",
            "--dry-run",
            "--workflow",
            "summarise",
            "--each",
            &pattern,
            "Digest",
        ],
        repo(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = stdout.find("a.md").expect("a.md listed");
    let b = stdout.find("b.md").expect("b.md listed");
    assert!(
        stdout.contains("items (--each): 2 files") && a < b,
        "{stdout}"
    );
}
