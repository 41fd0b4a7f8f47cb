//! The command line's operations on the log itself: verify and export.

use std::io::Write;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{BufRead, BufReader};

use roster_eventstore::{
    verify_with_progress, ChainChecker, Envelope, EventStore, SledOptions, SledStore, StoreError,
    VerifyReport,
};

/// Opens the log in `data_dir`, with a one-line reason when it cannot.
pub fn open(data_dir: &Path) -> Result<SledStore, String> {
    SledStore::open(data_dir, SledOptions::default())
        .map_err(|e| format!("cannot open {}: {e}", data_dir.display()))
}

fn progress_bar(length: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} events ({per_sec})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

/// Checks the chain, positions and versions of the whole log; names the first bad position.
pub async fn verify_log(store: &SledStore, quiet: bool) -> Result<VerifyReport, String> {
    let bar = progress_bar(store.head(), quiet);
    bar.set_message("verifying");
    let report = verify_with_progress(store, &mut |position| bar.set_position(position)).await;
    bar.finish_and_clear();
    report.map_err(|e| format!("verify failed at position {}: {}", e.position, e.reason))
}

/// Writes every envelope as one line of NDJSON.
pub async fn export(store: &SledStore, out: &mut dyn Write, quiet: bool) -> Result<u64, String> {
    let bar = progress_bar(store.head(), quiet);
    bar.set_message("exporting");
    let mut position = 0;
    loop {
        let page = store
            .read_all(position, 4096)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        position = last.position;
        for envelope in &page {
            writeln!(out, "{}", envelope.to_json_line())
                .map_err(|e| format!("cannot write the export: {e}"))?;
        }
        bar.set_position(position);
    }
    out.flush()
        .map_err(|e| format!("cannot write the export: {e}"))?;
    bar.finish_and_clear();
    Ok(position)
}

/// Reads an export: one envelope per line, numbered from 1 for error messages.
fn envelopes(path: &Path) -> Result<impl Iterator<Item = Result<Envelope, String>>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(|(index, line)| match line {
            Err(error) => Some(Err(format!("line {}: {error}", index + 1))),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(
                serde_json::from_str(&line)
                    .map_err(|e| format!("line {}: not an envelope: {e}", index + 1)),
            ),
        }))
}

/// Imports an export into the empty log in `data_dir`: the whole file is verified first, and
/// a bad one is refused, naming the first bad position, before anything is written.
pub fn import(data_dir: &Path, file: &Path, quiet: bool) -> Result<u64, String> {
    let bar = progress_bar(0, quiet);
    bar.set_message("verifying");
    let mut checker = ChainChecker::new();
    for envelope in envelopes(file)? {
        checker
            .check(&envelope?)
            .map_err(|e| format!("import refused: position {}: {}", e.position, e.reason))?;
        if checker.position().is_multiple_of(4096) {
            bar.set_position(checker.position());
        }
    }
    let total = checker.position();
    bar.set_length(total);
    bar.set_position(0);
    bar.set_message("importing");
    let mut lines = envelopes(file)?.map(|line| line.map_err(StoreError::Invalid));
    let written = SledStore::import(data_dir, SledOptions::default(), &mut lines, &mut |p| {
        bar.set_position(p)
    })
    .map_err(|e| format!("import failed: {e}"))?;
    bar.finish_and_clear();
    Ok(written)
}
