//! Tidy checks on the crate itself: no I/O crate among its dependencies (the `//!` line of every
//! file of every crate is checked in `tests/tests/tidy.rs`).

use std::fs;
use std::path::Path;

/// Crates that do I/O, run an async runtime or talk to a network or database: never in `domain`.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "sled",
    "axum",
    "hyper",
    "tower",
    "tower-http",
    "reqwest",
    "ureq",
    "mio",
    "socket2",
    "net2",
    "async-std",
    "smol",
    "futures-io",
    "actix-web",
    "actix-rt",
    "warp",
    "rocket",
    "tonic",
    "lettre",
    "rusqlite",
    "sqlx",
    "postgres",
    "tokio-postgres",
    "diesel",
    "redis",
    "tracing-subscriber",
    "tempfile",
    "roster-eventstore",
    "roster-projections",
    "roster-api",
];

/// What `domain` depends on today. A new entry is a review decision: check it does no I/O, then add it here.
const ALLOWED: &[&str] = &[
    "base64",
    "hex",
    "hmac",
    // UTS 46 domain mapping (IDNA): tables and string work only.
    "idna",
    "sha2",
    "subtle",
    "serde",
    "serde_json",
    "thiserror",
    "time",
    "proptest",
    "proptest-state-machine",
    // The rules table's test harness (tests only): runs each case as a test of its own; it
    // prints to the terminal and reads its arguments, nothing the domain's code reaches.
    "libtest-mimic",
    "roster-domain",
];

/// Dependency names in every `[*dependencies]` table of a manifest; a line-based read is enough
/// for the manifest's plain `name = ...` and `name.workspace = true` forms.
fn dependency_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_dependencies = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line
                .trim_matches(|c| c == '[' || c == ']')
                .ends_with("dependencies");
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let name = key.trim().split('.').next().unwrap_or("").trim_matches('"');
            names.push(name.to_owned());
        }
    }
    names
}

#[test]
fn the_domain_depends_on_no_io_crate() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let manifest = fs::read_to_string(&path).unwrap();
    let names = dependency_names(&manifest);
    assert!(
        names.iter().any(|n| n == "serde"),
        "the manifest was not read: {names:?}"
    );
    let forbidden: Vec<&String> = names
        .iter()
        .filter(|n| FORBIDDEN.contains(&n.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "domain must stay pure, but depends on {forbidden:?}"
    );
    let unreviewed: Vec<&String> = names
        .iter()
        .filter(|n| !ALLOWED.contains(&n.as_str()))
        .collect();
    assert!(
        unreviewed.is_empty(),
        "new dependencies {unreviewed:?}: check they do no I/O, then allow them here"
    );
}

#[test]
fn the_check_would_catch_an_io_crate() {
    let manifest = "[dependencies]\nserde.workspace = true\ntokio = { version = \"1\" }\n\n[target.'cfg(unix)'.dev-dependencies]\nsled = \"0.34\"\n";
    assert_eq!(dependency_names(manifest), ["serde", "tokio", "sled"]);
}
