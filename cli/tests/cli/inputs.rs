//! Files and streams a user points the CLI at are read within bounds.

use super::{fanfare, repo};

#[test]
fn an_endless_task_file_is_refused_not_read_until_memory_runs_out() {
    // Regression: `--file /dev/zero` read until the process was killed.
    let out = fanfare(&["run", "--file", "/dev/zero"], repo());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("/dev/zero is larger than"), "{stderr}");
}

#[test]
fn a_prompt_file_that_is_not_a_regular_file_is_refused_not_waited_on() {
    // Regression: a FIFO as `prompt_file` hung the load forever.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("prompt.md");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::write(
        dir.path().join("a.toml"),
        "name = \"a\"\nprompt_file = \"prompt.md\"\n",
    )
    .unwrap();
    let out = fanfare(
        &["run", "--agents", dir.path().to_str().unwrap(), "task"],
        repo(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}
