//! Runs the README's walk-through as written against the real `roster serve`, and checks that
//! every command prints what the README says it prints.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use support::Served;

/// The walk-through's blocks: shell code, each followed by its expected output (if any).
fn walkthrough() -> Vec<(String, Option<String>)> {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("<!-- walkthrough -->")
        .expect("the README marks its walk-through");
    let end = readme.find("<!-- /walkthrough -->").expect("and its end");
    let mut blocks: Vec<(String, Option<String>)> = Vec::new();
    let mut lines = readme[start..end].lines();
    while let Some(line) = lines.next() {
        let fence = line.trim();
        if fence != "```sh" && fence != "```text" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let body = body.join("\n");
        if fence == "```sh" {
            blocks.push((body, None));
        } else if let Some(last) = blocks.last_mut() {
            last.1 = Some(body);
        }
    }
    blocks
}

#[test]
fn the_readme_walk_through_prints_what_it_says() {
    let blocks = walkthrough();
    assert!(blocks.len() >= 7, "the walk-through has its steps");
    let dir = tempfile::tempdir().expect("temporary directory");
    // The first block starts the server; the test starts the same binary with the same
    // settings, on a port of its own.
    assert!(blocks[0].0.contains("cargo run --release -- serve"));
    let token = blocks[0]
        .0
        .lines()
        .find_map(|l| l.strip_prefix("export ROSTER_ADMIN_TOKEN="))
        .expect("a token")
        .to_string();
    let served = Served::start(dir.path(), Some(&token));
    let (mut server, address) = (served.child, served.address);

    // One shell runs every other block in order (they share variables), printing a marker
    // before each so its output can be told apart.
    let mut script = String::from("set -u\n");
    for (index, (code, _)) in blocks.iter().enumerate().skip(1) {
        script.push_str(&format!(
            "echo '@@block {index}'\n{}\n",
            code.replace("127.0.0.1:8080", &address)
        ));
    }
    let mut shell = Command::new("bash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    shell
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("writes the script");
    let output = shell.wait_with_output().expect("the script runs");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut printed = std::collections::HashMap::new();
    let mut current = None;
    for line in stdout.lines() {
        if let Some(index) = line.strip_prefix("@@block ") {
            current = index.parse::<usize>().ok();
            printed.insert(current, Vec::new());
        } else if let Some(lines) = printed.get_mut(&current) {
            lines.push(line.to_string());
        }
    }
    for (index, (code, expected)) in blocks.iter().enumerate().skip(1) {
        let actual = printed
            .get(&Some(index))
            .map(|l| l.join("\n"))
            .unwrap_or_default();
        assert_eq!(
            actual.trim(),
            expected.as_deref().unwrap_or("").trim(),
            "block {index}:\n{code}"
        );
    }
}

/// The README's paragraph of `serve` settings names every flag `roster serve` takes, and no
/// flag it does not.
#[test]
fn the_readme_names_every_serve_setting() {
    use clap::CommandFactory;

    let readme = include_str!("../../../README.md");
    let start = readme
        .find("`serve` settings, each a flag and a variable")
        .expect("the README has its settings paragraph");
    let paragraph = &readme[start..];
    let paragraph = &paragraph[..paragraph.find("\n\n").unwrap_or(paragraph.len())];
    let command = roster_cli::Cli::command();
    let serve = command
        .get_subcommands()
        .find(|c| c.get_name() == "serve")
        .expect("a serve subcommand");
    let flags: Vec<String> = serve
        .get_arguments()
        .filter(|arg| !arg.is_global_set())
        .filter_map(|arg| arg.get_long())
        .filter(|long| *long != "help")
        .map(|long| format!("--{long}"))
        .collect();
    assert!(flags.len() > 30, "{flags:?}");
    for flag in &flags {
        assert!(
            paragraph.contains(&format!("`{flag}`")) || paragraph.contains(&format!("`{flag} ")),
            "the README does not name {flag}"
        );
    }
    // Every flag it names is one.
    for named in paragraph.split('`').filter(|s| s.starts_with("--")) {
        let flag = named.split_whitespace().next().unwrap_or(named);
        assert!(
            flags.iter().any(|f| f == flag),
            "{flag} is not a serve flag"
        );
    }
}
