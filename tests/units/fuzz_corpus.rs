//! Replays every committed fuzz input (`fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`) through the same checks the fuzz targets run, so plain
//! `cargo test` on stable catches a regression of anything the fuzzer once found.

#[path = "../../fuzz/src/lib.rs"]
mod targets;

use std::path::{Path, PathBuf};

/// Inputs of one target: its corpus and its regressions, sorted for a stable order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("list a fuzz input dir").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Runs `check` on every input of `target`; a panic names the input that caused it.
fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no committed inputs for fuzz target {target}"
    );
    for path in files {
        let data = std::fs::read(&path).expect("read a fuzz input");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(
            outcome.is_ok(),
            "fuzz target {target} fails on {}",
            path.display()
        );
    }
}

#[test]
fn config_inputs() {
    replay("config", targets::config);
}

#[test]
fn hash_key_inputs() {
    replay("hash_key", targets::hash_key);
}

#[test]
fn raft_codec_inputs() {
    replay("raft_codec", targets::raft_codec);
}

#[test]
fn transport_inputs() {
    replay("transport", targets::transport);
}

#[test]
fn storage_inputs() {
    replay("storage", targets::storage);
}

#[test]
fn admin_json_inputs() {
    replay("admin_json", targets::admin_json);
}
