//! The README's workflows, run as written: a newcomer who copies one must see it
//! succeed on the simulator.

use super::{fanfare, repo};

/// Each ```toml block of the README that is a workflow (it has `[[steps]]`).
fn readme_workflows() -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .filter(|block| block.contains("[[steps]]"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_workflows_succeed_as_written_on_the_simulator() {
    // Regression: the README's `review` workflow failed as written ("the output of
    // `legal` is not JSON") and its report said no branch had succeeded.
    let workflows = readme_workflows();
    assert!(!workflows.is_empty(), "the README shows a workflow");
    let dir = tempfile::tempdir().unwrap();
    for (i, workflow) in workflows.iter().enumerate() {
        let file = dir.path().join(format!("readme-{i}.toml"));
        std::fs::write(&file, workflow).unwrap();
        let out = fanfare(
            &[
                "run",
                "--json",
                "--workflow",
                file.to_str().unwrap(),
                "Should we adopt a new CRM vendor?",
            ],
            repo(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{workflow}\n{stderr}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["status"], "succeeded", "{workflow}");
    }
}

#[test]
fn a_run_whose_last_step_failed_names_that_step() {
    // Regression: it said "synthesis failed: no branch succeeded" though every
    // other step had succeeded.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("w.toml");
    std::fs::write(
        &file,
        "name = \"w\"\npolicy = \"partial:1\"\n\
         [[steps]]\nname = \"notes\"\nagent = \"legal\"\n\
         [[steps]]\nname = \"joined\"\ncode = \"json-merge\"\nafter = [\"notes\"]\n",
    )
    .unwrap();
    let out = fanfare(
        &["run", "--workflow", file.to_str().unwrap(), "A task"],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no answer: the final step `joined` did not succeed"),
        "{stderr}"
    );
}

#[test]
fn the_readmes_curl_posts_declare_json() {
    // Regression: the README's first curl example sent a form body, which the server
    // refuses (415: a web page may send forms without asking first).
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for line in readme
        .lines()
        .filter(|l| l.contains("curl ") && l.contains(" -d "))
    {
        assert!(
            line.contains("Content-Type: application/json") || line.contains("--json"),
            "{line}"
        );
    }
}
