//! The module boundaries ARCHITECTURE.md states, checked against the source: every
//! `crate::MODULE` a top-level module names must be one its layer may use, so an
//! import that runs back up (the proxy reaching into the cluster, the config module
//! into health, two modules importing each other) fails here, naming file and line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the top-level modules it may name. The table is the one
/// in ARCHITECTURE.md ("Layers and boundaries"); keep the two the same.
const ALLOWED: &[(&str, &[&str])] = &[
    ("ring", &[]),
    ("raft", &[]),
    ("echo", &[]),
    ("shutdown", &[]),
    ("grpc_status", &[]),
    ("balance", &["ring"]),
    ("config", &["balance", "ring", "grpc_status"]),
    ("health", &["config", "ring", "balance", "grpc_status"]),
    ("cluster", &["raft", "config", "health", "ring"]),
    ("tls", &["config", "cluster", "raft"]),
    ("discover", &["cluster", "config"]),
    (
        "metrics",
        &["cluster", "health", "raft", "config", "grpc_status"],
    ),
    (
        "proxy",
        &[
            "config",
            "balance",
            "ring",
            "health",
            "metrics",
            "tls",
            "grpc_status",
        ],
    ),
    (
        "control",
        &[
            "proxy", "cluster", "config", "health", "metrics", "tls", "raft", "balance", "ring",
            "shutdown", "discover",
        ],
    ),
    (
        "admin",
        &[
            "control", "proxy", "cluster", "config", "health", "metrics", "tls", "raft", "balance",
            "ring",
        ],
    ),
    (
        "cli",
        &["admin", "control", "config", "proxy", "ring", "balance"],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs, main.rs).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The top-level modules a line of code names through `crate::`, comments left out
/// (doc links name modules without importing them).
fn named_modules(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b}` groups are not used in this code base; a name is enough.
        if !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

#[test]
fn every_import_follows_the_layers() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.iter().copied().collect()))
        .collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} files under src/",
        files.len()
    );
    let mut broken = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(may) = allowed.get(module.as_str()) else {
            broken.push(format!(
                "{}: module {module} is not in the boundary table",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("readable source file");
        for (n, line) in text.lines().enumerate() {
            for named in named_modules(line) {
                if named != module && !may.contains(named.as_str()) {
                    broken.push(format!(
                        "{}:{}: {module} may not import {named}: {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports across the boundaries:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_layers_have_no_cycle() {
    // Depth-first search over the table: a module reached again on its own path is a
    // cycle, and two modules allowed to import each other are one.
    fn visit<'a>(
        m: &'a str,
        table: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        assert!(!path.contains(&m), "cycle: {} -> {m}", path.join(" -> "));
        if done.contains(m) {
            return;
        }
        path.push(m);
        for dep in table.get(m).into_iter().flatten() {
            visit(dep, table, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let table: BTreeMap<&str, Vec<&str>> = ALLOWED
        .iter()
        .map(|(m, deps)| (*m, deps.to_vec()))
        .collect();
    let mut done = BTreeSet::new();
    for m in table.keys() {
        visit(m, &table, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_sees_an_import_and_skips_comments() {
    assert_eq!(named_modules("use crate::proxy::Proxy;"), ["proxy"]);
    assert_eq!(
        named_modules("let x = crate::cluster::raft_id(crate::config::X);"),
        ["cluster", "config"]
    );
    assert!(named_modules("//! See [`crate::control`].").is_empty());
    assert!(named_modules("    // crate::admin is above us").is_empty());
}
