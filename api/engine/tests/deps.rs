//! The promise to embedding hosts, checked on the real dependency tree: `roster-engine`
//! compiles no HTTP, command-line, allocator or terminal crate, however deep it would come in.

use std::process::Command;

/// What an embedding host must not have to compile; a PostgreSQL driver may come later
/// behind a feature of its own.
const FORBIDDEN: &[&str] = &[
    "axum",
    "hyper",
    "tower",
    "tower-http",
    "clap",
    "indicatif",
    "mimalloc",
    "tracing-subscriber",
    "tempfile",
    "lettre",
    "reqwest",
    "utoipa",
    "fuser",
    // The PostgreSQL driver is the `postgres` feature's: a host on sled compiles none of it.
    "tokio-postgres",
    "deadpool-postgres",
    "roster-server",
    "roster-cli",
];

/// The names of every crate in the engine's normal dependency tree, as `cargo tree` resolves
/// it for this package alone.
fn tree() -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-p",
            "roster-engine",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(String::from))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn the_engine_compiles_no_http_cli_allocator_or_terminal_crate() {
    let names = tree();
    assert!(
        names.iter().any(|n| n == "roster-eventstore") && names.iter().any(|n| n == "sled"),
        "the tree was not read: {names:?}"
    );
    let found: Vec<&String> = names
        .iter()
        .filter(|n| FORBIDDEN.contains(&n.as_str()))
        .collect();
    assert!(
        found.is_empty(),
        "roster-engine depends on {found:?}, which an embedding host should not compile"
    );
}
