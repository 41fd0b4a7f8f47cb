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

/// Checks the domain's invariants over the whole log: every event decodes, and every
/// registered resource has a holder of its kind's highest role after every event. Then every
/// snapshot in `data_dir/snapshots` that names an event the log holds must equal the state
/// folded from the log up to it: `as_of` starts from snapshots, so a snapshot edited on disk
/// would change what an audit answers while the chain still verifies.
pub async fn verify_domain(data_dir: &Path, store: &SledStore, quiet: bool) -> Result<u64, String> {
    use roster_domain::{Event, ResourceState, SchemaState, StreamId};
    use roster_projections::Snapshots;
    use std::collections::HashMap;

    /// A resource's state as the fold reaches it, the count of its kind's schema changes it
    /// was last checked under, and the snapshot versions still ahead.
    #[derive(Default)]
    struct Folded {
        state: ResourceState,
        latest_ms: i64,
        checked_under: u64,
        snapshots_ahead: std::collections::VecDeque<roster_projections::SnapshotName>,
    }

    let snapshots = Snapshots::in_dir(&data_dir.join("snapshots"));
    let failed = |at: u64, reason: String| format!("verify failed at position {at}: {reason}");
    let bar = progress_bar(store.head(), quiet);
    bar.set_message("checking invariants");
    let mut schemas: HashMap<String, SchemaState> = HashMap::new();
    // How many schema events each kind has seen: a resource is checked again at its next
    // event after its kind's schema changed (the highest role may have changed with it).
    let mut schema_changes: HashMap<String, u64> = HashMap::new();
    let mut resources: HashMap<String, Folded> = HashMap::new();
    let mut position = 0;
    loop {
        let page = store
            .read_all(position, 4096)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else { break };
        position = last.position;
        for envelope in page {
            let at = envelope.position;
            let event = Event::from_parts(&envelope.event_type, envelope.schema, envelope.data)
                .map_err(|e| failed(at, e.to_string()))?;
            let resource =
                match StreamId::parse(&envelope.stream).map_err(|e| failed(at, e.to_string()))? {
                    StreamId::RoleSchema(kind) => {
                        let state = schemas.remove(kind.as_str()).unwrap_or_default();
                        schemas.insert(kind.to_string(), state.evolve(&event));
                        *schema_changes.entry(kind.to_string()).or_default() += 1;
                        continue;
                    }
                    StreamId::Resource(resource) => resource,
                    StreamId::ApiKeys | StreamId::Webhooks => continue,
                };
            let folded = match resources.entry(envelope.stream.clone()) {
                std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Folded {
                    latest_ms: i64::MIN,
                    snapshots_ahead: snapshots
                        .names(&envelope.stream)
                        .map_err(|e| failed(at, e.to_string()))?
                        .into(),
                    ..Folded::default()
                }),
            };
            // The member the event changes, and the role it held before.
            let touched = match &event {
                Event::MemberAdded { principal, .. }
                | Event::MemberRoleChanged { principal, .. }
                | Event::MemberRemoved { principal, .. } => Some(principal),
                _ => None,
            };
            let role_before = touched
                .and_then(|p| folded.state.member(p))
                .map(|m| m.role.clone());
            folded.state = std::mem::take(&mut folded.state).evolve(&event);
            folded.latest_ms = folded.latest_ms.max(envelope.occurred_at.0);
            // The highest role can lose its last holder only when a holder's role changes
            // (`MemberAdded` overwrites a member too), at registration, or when the kind's
            // schema changed: only then are the members scanned, not after every event.
            let schema_changed = schema_changes
                .get(resource.kind().as_str())
                .copied()
                .unwrap_or(0);
            let whole = folded.checked_under != schema_changed
                || matches!(event, Event::ResourceRegistered { .. });
            folded.checked_under = schema_changed;
            if folded.state.registered().is_some() && (whole || role_before.is_some()) {
                let schema = schemas
                    .get(resource.kind().as_str())
                    .cloned()
                    .unwrap_or_default()
                    .in_force(resource.kind());
                let highest = schema.highest();
                let demoted = role_before.as_ref() == Some(highest)
                    && touched
                        .and_then(|p| folded.state.member(p))
                        .map(|m| &m.role)
                        != Some(highest);
                if (whole || demoted)
                    && !folded.state.members().values().any(|m| &m.role == highest)
                {
                    return Err(failed(at, format!("{resource} has no {highest} left")));
                }
            }
            while folded
                .snapshots_ahead
                .front()
                .is_some_and(|name| name.version() <= envelope.version)
            {
                let name = folded.snapshots_ahead.pop_front();
                // A snapshot of an event a crash took back names another hash (or an older
                // version was passed): passed over when read, so not an error here either.
                let Some(name) =
                    name.filter(|n| n.version() == envelope.version && n.hash() == envelope.hash)
                else {
                    continue;
                };
                let version = name.version();
                let snapshot = snapshots
                    .read_named(&envelope.stream, &name)
                    .map_err(|e| failed(at, e.to_string()))?;
                let Some(snapshot) = snapshot else {
                    continue;
                };
                if snapshot.position != at
                    || snapshot.latest_ms != folded.latest_ms
                    || snapshot.state != folded.state
                {
                    return Err(failed(
                        at,
                        format!(
                            "the snapshot of {resource} at version {version} differs from the \
                             log (remove the data directory's snapshots/ to have it taken again)"
                        ),
                    ));
                }
            }
        }
        bar.set_position(position);
    }
    bar.finish_and_clear();
    Ok(u64::try_from(resources.len()).unwrap_or(u64::MAX))
}

/// Rebuilds every read model from the log; with `verify`, rebuilds into scratch trees
/// instead and compares them with the live ones, changing nothing.
pub async fn replay(store: &SledStore, verify: bool, quiet: bool) -> Result<String, String> {
    use roster_projections::ReadModels;

    let bar = progress_bar(store.head(), quiet);
    let error = |e: roster_projections::ProjectionError| e.to_string();
    let live = ReadModels::open_sled(store.db(), "rm.").map_err(error)?;
    if !verify {
        bar.set_message("replaying");
        let events = live
            .rebuild(store, &mut |p| bar.set_position(p))
            .await
            .map_err(error)?;
        bar.finish_and_clear();
        return Ok(format!("rebuilt the read models from {events} events"));
    }
    live.catch_up(store, &mut |_| {}).await.map_err(error)?;
    let scratch = ReadModels::open_sled(store.db(), "scratch.rm.").map_err(error)?;
    bar.set_message("replaying into scratch trees");
    let rebuilt = scratch.rebuild(store, &mut |p| bar.set_position(p)).await;
    bar.finish_and_clear();
    let compared = rebuilt.map_err(error).and_then(|events| {
        let (live_rows, scratch_rows) =
            (live.dump().map_err(error)?, scratch.dump().map_err(error)?);
        for ((name, expected), (_, actual)) in live_rows.iter().zip(&scratch_rows) {
            if expected != actual {
                let first = expected
                    .iter()
                    .zip(actual)
                    .find(|(a, b)| a != b)
                    .map(|(a, _)| String::from_utf8_lossy(&a.0).into_owned())
                    .unwrap_or_else(|| "(one has more rows)".into());
                return Err(format!(
                    "read model {name} differs from a rebuild, first at row {first:?}"
                ));
            }
        }
        Ok(format!(
            "the read models equal a rebuild from {events} events"
        ))
    });
    for (name, _) in scratch.dump().unwrap_or_default() {
        let _ = store.db().drop_tree(format!("scratch.rm.{name}"));
    }
    compared
}

/// The history of a resource up to a time (all of it without one), optionally only what
/// concerns one principal, and its rolemap at that time, as tables.
pub async fn audit(
    data_dir: &Path,
    store: &SledStore,
    resource: &str,
    as_of: Option<&str>,
    principal: Option<&str>,
) -> Result<String, String> {
    use roster_domain::{Principal, ResourceId, Timestamp};
    use roster_projections::{rolemap_as_of, AsOf, ReadModels, Snapshots};
    use std::fmt::Write as _;

    let resource = ResourceId::parse(resource).map_err(|e| e.to_string())?;
    let until = as_of
        .map(|t| Timestamp::parse(t).map_err(|e| format!("--as-of: {e}")))
        .transpose()?;
    let principal = principal
        .map(|p| Principal::parse(p).map_err(|e| format!("--principal: {e}")))
        .transpose()?;
    let models = ReadModels::open_sled(store.db(), "rm.").map_err(|e| e.to_string())?;
    models
        .catch_up(store, &mut |_| {})
        .await
        .map_err(|e| e.to_string())?;
    let entries = match &principal {
        Some(p) => models
            .principal_history(p, 0, usize::MAX)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|h| h.resource.as_ref() == Some(&resource))
            .collect(),
        None => models
            .history(&resource, 0, usize::MAX)
            .map_err(|e| e.to_string())?,
    };
    let as_of = until.map_or(AsOf::Position(store.head()), AsOf::Time);
    let snapshots = Snapshots::in_dir(&data_dir.join("snapshots"));
    let Some((members, reached)) = rolemap_as_of(store, Some(&snapshots), &resource, as_of)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Err(format!("{resource} did not exist then"));
    };
    let mut out = String::new();
    let when = until.map_or_else(|| "now".to_string(), |t| t.to_string());
    let _ = writeln!(out, "history of {resource} up to {when}");
    let _ = writeln!(
        out,
        "{:>9}  {:<24}  {:<16}  summary",
        "position", "time", "actor"
    );
    for entry in entries
        .iter()
        .filter(|e| until.is_none_or(|t| e.occurred_at <= t))
    {
        let _ = writeln!(
            out,
            "{:>9}  {:<24}  {:<16}  {}",
            entry.position, entry.occurred_at, entry.actor, entry.summary
        );
    }
    let _ = writeln!(
        out,
        "\nrolemap of {resource} at {when} (position {reached})"
    );
    let _ = writeln!(
        out,
        "{:<24}  {:<14}  {:<24}  granted by",
        "principal", "role", "since"
    );
    for member in members
        .iter()
        .filter(|m| principal.as_ref().is_none_or(|p| &m.principal == p))
    {
        let granted_by = member
            .granted_by
            .as_ref()
            .map_or_else(|| "the admin".to_string(), |p| p.to_string());
        // The domain's types print without padding: the widths apply to their text.
        let _ = writeln!(
            out,
            "{:<24}  {:<14}  {:<24}  {granted_by}",
            member.principal.to_string(),
            member.role.to_string(),
            member.since.to_string()
        );
    }
    Ok(out)
}
