//! Tidy checks over the whole workspace: every Rust file of every crate starts with a `//!`
//! line that says what it is for (rust-analyzer's habit; STYLE.md).

use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's crates and test directories, from the root.
const TOP: &[&str] = &["domain", "eventstore", "projections", "api", "tests"];

fn rust_files(root: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs: Vec<PathBuf> = TOP.iter().map(|t| root.join(t)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("lists") {
            let path = entry.expect("an entry").path();
            let generated = path.file_name().is_some_and(|n| n == "target");
            if path.is_dir() && !generated {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn every_rust_file_of_every_crate_starts_with_a_doc_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let files = rust_files(root);
    for crate_dir in [
        "domain",
        "eventstore",
        "projections",
        "api/engine",
        "api/server",
        "api/cli",
        "tests",
    ] {
        assert!(
            files.iter().any(|f| f.starts_with(root.join(crate_dir))),
            "no Rust file found under {crate_dir}"
        );
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !fs::read_to_string(f).expect("reads").starts_with("//! "))
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}
