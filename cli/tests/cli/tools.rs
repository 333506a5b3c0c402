//! Tools from the flags and from a spec directory's `fanfare.toml`, as a user
//! gives them.

use super::fanfare;

/// A scratch directory with `specs/reader.toml` (offering `tools`), and
/// `docs/plan.txt`.
fn project(tools: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("specs")).unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/plan.txt"), "Launch on March 3.").unwrap();
    std::fs::write(
        dir.path().join("specs/reader.toml"),
        format!("name = \"reader\"\nprompt = \"You read the docs.\"\ntools = {tools}\n"),
    )
    .unwrap();
    dir
}

#[test]
fn a_spec_directorys_fanfare_toml_offers_read_file_under_its_root_and_the_report_shows_the_call() {
    let dir = project(r#"["read_file"]"#);
    std::fs::create_dir_all(dir.path().join("specs/docs")).unwrap();
    std::fs::write(dir.path().join("specs/docs/plan.txt"), "Launch on March 3.").unwrap();
    std::fs::write(
        dir.path().join("specs/fanfare.toml"),
        "[tools]\nread_file = \"docs\"\n",
    )
    .unwrap();
    let out = fanfare(
        &[
            "run",
            "--agents",
            "specs",
            "--only",
            "reader",
            "When do we launch?",
        ],
        dir.path(),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("tools: read_file under specs/docs"),
        "{stderr}"
    );
    assert!(stdout.contains("⚙ read_file · turn 1"), "{stdout}");
    // The simulated model lists the root (the tool's example path) and quotes it.
    assert!(stdout.contains("The tool said: plan.txt"), "{stdout}");
    // The config file is not taken for an agent spec.
    assert!(!stderr.contains("fanfare.toml:"), "{stderr}");
}

#[test]
fn a_spec_naming_a_tool_the_runtime_lacks_is_refused_before_anything_starts() {
    let cases = [
        (r#"["read_file"]"#, "needs a root: --read-root DIR"),
        (r#"["http_get"]"#, "--http-allow HOST"),
        (
            r#"["fs.*"]"#,
            "names the MCP server `fs`, which is not given",
        ),
        (
            r#"["search"]"#,
            "neither built in (read_file, http_get, run_workflow)",
        ),
    ];
    for (tools, says) in cases {
        let dir = project(tools);
        let out = fanfare(
            &["run", "--agents", "specs", "--only", "reader", "x"],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{tools}");
        assert!(
            stderr.contains("agent `reader` (specs/reader.toml): its `tools`")
                && stderr.contains(says),
            "{tools}: {stderr}"
        );
    }
}

#[test]
fn a_bad_fanfare_toml_is_named_and_an_mcp_server_given_twice_is_refused() {
    let dir = project(r#"["read_file"]"#);
    std::fs::write(
        dir.path().join("specs/fanfare.toml"),
        "[tools]\nread_files = 1\n",
    )
    .unwrap();
    let out = fanfare(
        &["run", "--agents", "specs", "--only", "reader", "x"],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("specs/fanfare.toml is not a valid spec-directory config")
            && stderr.contains("read_files"),
        "{stderr}"
    );
    std::fs::write(
        dir.path().join("specs/fanfare.toml"),
        "[mcp]\nfs = \"npx -y @modelcontextprotocol/server-filesystem ../docs\"\n",
    )
    .unwrap();
    let out = fanfare(
        &[
            "run", "--agents", "specs", "--only", "reader", "--mcp", "fs=true", "x",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MCP server `fs` is given twice: by --mcp and in specs/fanfare.toml"),
        "{stderr}"
    );
}

#[test]
fn a_call_needing_approval_runs_with_approve_all_and_is_rejected_without_a_terminal() {
    let dir = project(r#"["read_file"]"#);
    let spec = dir.path().join("specs/reader.toml");
    let text = std::fs::read_to_string(&spec).unwrap();
    std::fs::write(&spec, format!("{text}needs_approval = true\n")).unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "run",
            "--agents",
            "specs",
            "--only",
            "reader",
            "--read-root",
            "docs",
        ];
        a.extend_from_slice(extra);
        a.push("When do we launch?");
        a
    };
    let out = fanfare(&args(&["--approve-all"]), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("The tool said: plan.txt"), "{stdout}");
    // No terminal to ask (the test's standard input is not one), no flag: rejected,
    // and the model is told how to approve.
    let out = fanfare(&args(&[]), dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("⚙ read_file · turn 1") && stdout.contains("failed: not run: rejected"),
        "{stdout}"
    );
    assert!(stdout.contains("--approve-all"), "{stdout}");
}

#[test]
fn regression_a_spec_directorys_config_cannot_root_read_file_outside_it_nor_start_servers_no_agent_uses(
) {
    let dir = project(r#"["read_file"]"#);
    std::fs::write(
        dir.path().join("specs/fanfare.toml"),
        "[tools]\nread_file = \"../docs\"\n[mcp]\nunused = \"no-such-program-anywhere\"\n",
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--agents", "specs", "--only", "reader"];
        args.extend_from_slice(extra);
        args.push("When?");
        fanfare(&args, dir.path())
    };
    let out = run(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("read_file's root specs/../docs is outside the spec directory specs")
            && stderr.contains("--allow-prompts-outside"),
        "{stderr}"
    );
    // Allowed, it runs; the server no agent names is never started (its program
    // does not exist, which would fail the start).
    let out = run(&["--allow-prompts-outside"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("unused"), "{stderr}");
}
