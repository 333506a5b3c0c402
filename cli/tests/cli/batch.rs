//! `fanfare batch`: one line per document, resumable.

use std::process::Command;

use super::common;

#[test]
fn batch_writes_one_line_per_document_with_its_index_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let agents = dir.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    for (name, ms) in [("a", 30), ("b", 5)] {
        let spec = format!("name = \"{name}\"\nprompt = \"p\"\n[sim]\nlatency_ms = {ms}\n");
        std::fs::write(agents.join(format!("{name}.toml")), spec).unwrap();
    }
    let mut docs = Vec::new();
    for i in 0..5 {
        let path = dir.path().join(format!("doc{i}.md"));
        std::fs::write(&path, format!("document number {i}")).unwrap();
        docs.push(path.display().to_string());
    }
    docs.push(dir.path().join("missing.md").display().to_string());
    let out = dir.path().join("out.jsonl");
    let batch = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_fanfare"))
            .env("XDG_CACHE_HOME", common::private_cache())
            .arg("batch")
            .args(&docs)
            .args([
                "--concurrency",
                "2",
                "--merge",
                "code",
                "--agents",
                agents.to_str().unwrap(),
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .output()
            .unwrap()
    };
    let first = batch(&[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(
        first.status.code(),
        Some(1),
        "one document is missing: {stderr}"
    );
    assert!(
        stderr.contains("batch: 5 ok, 1 failed, 0 skipped"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Lines come in completion order; each names its document and input index.
    let mut lines = lines;
    lines.sort_by_key(|l| l["index"].as_u64().unwrap());
    let order: Vec<&str> = lines
        .iter()
        .map(|l| l["document"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        docs.iter().map(String::as_str).collect::<Vec<_>>(),
        "every document once, by input index"
    );
    assert!(lines[5]["reason"].as_str().unwrap().contains("cannot read"));
    assert_eq!(lines[0]["report"]["totals"]["ok"], 2);
    // A document's run is an item of one map: each has a run (and id) of its own,
    // and never more than --concurrency of them overlap.
    let spans: Vec<(f64, f64)> = lines[..5]
        .iter()
        .map(|l| {
            let start = l["report"]["started_at_unix_s"].as_f64().unwrap();
            (start, start + l["report"]["wall_s"].as_f64().unwrap())
        })
        .collect();
    let ids: std::collections::HashSet<&str> = lines[..5]
        .iter()
        .map(|l| l["report"]["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "one run per document");
    for &(start, _) in &spans {
        // Shrunk by a millisecond: a run that ends as the next starts is not overlap.
        let at = start + 0.001;
        let running = spans.iter().filter(|(s, e)| *s <= at && at < *e).count();
        assert!(running <= 2, "{running} documents at once: {spans:?}");
    }
    // Each document's answer (here the code merge of both agents) is printed as
    // it finishes, or why it has none.
    let stdout = String::from_utf8_lossy(&first.stdout);
    for doc in &docs[..5] {
        assert!(stdout.contains(&format!("── {doc} · ok ──\n")), "{stdout}");
    }
    assert!(stdout.contains("[simulated a]"), "{stdout}");
    assert!(
        stdout.contains(&format!("── {} · FAILED ──\n(cannot read", docs[5])),
        "{stdout}"
    );
    // Resume: everything already in the file is skipped.
    let again = batch(&[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("batch: 0 ok, 0 failed, 6 skipped"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 6);
    // Regression: a resume matched by path, so an edited document was skipped. It
    // runs again (its new line is the one that counts).
    std::fs::write(&docs[1], "document number 1, edited").unwrap();
    let edited = batch(&[]);
    let stderr = String::from_utf8_lossy(&edited.stderr);
    assert!(
        stderr.contains("batch: 1 ok, 0 failed, 5 skipped"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&edited.stdout).contains(&format!("── {} · ok ──", docs[1])));
    // --show prints what the file holds, the last line of each document.
    let show = Command::new(env!("CARGO_BIN_EXE_fanfare"))
        .args(["batch", "--show", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&show.stdout);
    assert_eq!(show.status.code(), Some(1), "one document failed");
    assert_eq!(shown.matches(" ──\n").count(), 6, "{shown}");
    assert!(String::from_utf8_lossy(&show.stderr).contains(": 5 ok, 1 failed"));
    // --retry-failed runs the failed one again (and only it).
    let retry = batch(&["--retry-failed"]);
    let stderr = String::from_utf8_lossy(&retry.stderr);
    assert!(
        stderr.contains("batch: 0 ok, 1 failed, 5 skipped"),
        "{stderr}"
    );
}
