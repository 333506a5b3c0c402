//! `workflows show` checks what a run would, and shows what a step sets.

use super::{fanfare, repo};

#[test]
fn show_and_dry_run_refuse_what_a_run_would_refuse() {
    // Regression: `show` and `--dry-run` accepted an unknown agent, an unknown code
    // function and a `prefer:` naming no input; the run failed on them later.
    let cases = [
        ("agent = \"nosuch\"\n", "agent `nosuch` is not in"),
        (
            "agent = \"legal\"\n[[steps]]\nname = \"b\"\ncode = \"nofunc\"\nafter = [\"a\"]\n",
            "no code function is named `nofunc`",
        ),
        (
            "agent = \"legal\"\n[[steps]]\nname = \"b\"\ncode = \"json-merge\"\nafter = [\"a\"]\noptions = { on_conflict = \"prefer:zzz\" }\n",
            "`zzz` is not one of this step's inputs (a)",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (steps, said)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("w{i}.toml"));
        std::fs::write(
            &file,
            format!("name = \"w\"\n[[steps]]\nname = \"a\"\n{steps}"),
        )
        .unwrap();
        let file = file.to_str().unwrap();
        for args in [
            vec!["workflows", "show", file],
            vec!["run", "--dry-run", "--workflow", file, "task"],
        ] {
            let out = fanfare(&args, repo());
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(said) && stderr.contains(file),
                "{args:?}: {stderr}"
            );
        }
    }
}

#[test]
fn show_names_the_policy_and_each_steps_input() {
    let out = fanfare(&["workflows", "show", "research"], repo());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("policy: "), "{stdout}");
    assert!(stdout.contains("input: \""), "{stdout}");
}
