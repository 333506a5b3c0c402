//! The library's structure, held by a test: each top-level module uses only the ones
//! above it in ARCHITECTURE.md's list of layers, and no module (file) imports one
//! that imports it back, through `crate::` or `super::` paths. Read from the source
//! text; a unit-test module at the end of a file does not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first (ARCHITECTURE.md, "Layers").
const LAYERS: [&str; 7] = [
    "tasks",
    "provider",
    "agent",
    "supervision",
    "run",
    "report",
    "runtime",
];

type Module = Vec<String>;

/// Every module of `src/` (the crate root is the empty path) and its file's text,
/// comments and a trailing `#[cfg(test)] mod tests` left out.
fn modules(src: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut out = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Module = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
            parts.pop();
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = match text.find("#[cfg(test)]\nmod tests {") {
            Some(at) => &text[..at],
            None => &text,
        };
        let code: String = code
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        out.insert(parts, code);
    }
    out
}

/// The paths a file names from `crate::` or `super::`, with `use …::{a, b::c}` groups
/// spread out: each as its head and the names after it.
fn paths(code: &str) -> Vec<(String, Vec<String>)> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    for head in ["crate", "super"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(head) {
            let start = from + at;
            from = start + head.len();
            if start > 0 && code[..start].chars().next_back().is_some_and(ident) {
                continue;
            }
            let mut names = Vec::new();
            let mut rest = &code[from..];
            while let Some(after) = rest.strip_prefix("::") {
                if let Some(group) = after.strip_prefix('{') {
                    // A group: each item is a path of its own after what came before.
                    let end = group.find('}').unwrap_or(group.len());
                    for item in group[..end].split([',', '{']) {
                        let item = item.trim().split(" as ").next().unwrap_or("").trim();
                        let first = item.split("::").next().unwrap_or("");
                        if !first.is_empty() && first != "self" && first.chars().all(ident) {
                            let mut with = names.clone();
                            with.push(first.to_owned());
                            out.push((head.to_owned(), with));
                        }
                    }
                    break;
                }
                let len = after.find(|c: char| !ident(c)).unwrap_or(after.len());
                if len == 0 {
                    break;
                }
                names.push(after[..len].to_owned());
                rest = &after[len..];
            }
            out.push((head.to_owned(), names));
        }
    }
    out
}

/// The module a path from `here` names: the longest one that exists.
fn resolve(
    here: &Module,
    head: &str,
    names: &[String],
    known: &BTreeMap<Module, String>,
) -> Option<Module> {
    let mut base: Module = if head == "crate" {
        Vec::new()
    } else {
        here[..here.len().saturating_sub(1)].to_vec()
    };
    let mut names = names;
    while names.first().is_some_and(|n| n == "super") {
        base.pop();
        names = &names[1..];
    }
    let mut best = None;
    for name in names {
        base.push(name.clone());
        if known.contains_key(&base) {
            best = Some(base.clone());
        }
    }
    best
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut edges = BTreeMap::new();
    for (module, code) in &known {
        let mut to = BTreeSet::new();
        for (head, names) in paths(code) {
            if let Some(target) = resolve(module, &head, &names, &known) {
                // A child naming its own ancestor (its parent's re-exports) is fine.
                if target != *module && !module.starts_with(&target) {
                    to.insert(target);
                }
            }
        }
        edges.insert(module.clone(), to);
    }
    edges
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let layer = |m: &Module| {
        m.first()
            .and_then(|top| LAYERS.iter().position(|l| l == top))
    };
    let mut wrong = Vec::new();
    for (module, to) in graph() {
        let Some(mine) = layer(&module) else { continue };
        for target in to {
            if layer(&target).is_some_and(|theirs| theirs > mine) {
                wrong.push(format!("{} uses {}", module.join("::"), target.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "layers used from below:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = graph();
    // Depth-first search for a back edge; the path to it is the cycle.
    fn visit(
        at: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        path: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
    ) -> Option<Vec<Module>> {
        if let Some(i) = path.iter().position(|m| m == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.clone());
            return Some(cycle);
        }
        if done.contains(at) {
            return None;
        }
        path.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(at.clone());
        None
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
            let names: Vec<String> = cycle
                .iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect();
            panic!("a module cycle: {}", names.join(" -> "));
        }
    }
    assert!(
        edges.len() > 50,
        "the source was not read: {} modules",
        edges.len()
    );
}

#[test]
fn the_reader_sees_paths_groups_and_cycles() {
    // The test above would pass on a reader that sees nothing: check the reader.
    let code = "use crate::provider::{Admission, http::ApiKey};\nuse super::super::x::Y;\nlet a = crate::run::code::f();";
    let found = paths(code);
    assert!(found.contains(&("crate".into(), vec!["provider".into(), "Admission".into()])));
    assert!(found.contains(&("crate".into(), vec!["provider".into(), "http".into()])));
    assert!(found.contains(&("super".into(), vec!["super".into(), "x".into(), "Y".into()])));
    assert!(found.contains(&(
        "crate".into(),
        vec!["run".into(), "code".into(), "f".into()]
    )));
    let edges = graph();
    let run = |s: &str| s.split("::").map(str::to_owned).collect::<Module>();
    assert!(
        edges[&run("runtime")].contains(&run("run")),
        "the runtime uses run: {:?}",
        edges[&run("runtime")]
    );
}
