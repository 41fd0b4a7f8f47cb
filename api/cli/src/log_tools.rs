//! The command line's operations on the log itself: verify, export and import, replay, audit,
//! on the sled log in the data directory or on a PostgreSQL store (`--store`).

use std::io::Write;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use roster_domain::{
    DomainError, Event, LogCheck, LoggedCommand, ResourceId, ResourceState, StreamId, Timestamp,
};
use roster_eventstore::{
    ChainChecker, Envelope, EventStore, PgOptions, PgStore, SledOptions, SledStore, StoreError,
    VerifyReport,
};
use roster_projections::{ProjectionError, SnapshotCheck, Snapshots};
use roster_server::data_dir::DataDirError;
use roster_server::StoreChoice;

/// Why a log tool failed; one line each, as `roster` prints it after `roster: `.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: StoreError },
    #[error("cannot open {}: {source}", path.display())]
    OpenExport {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    WriteExport(#[source] std::io::Error),
    /// Keeping a copy of an export read from standard input failed.
    #[error(transparent)]
    CopyStdin(std::io::Error),
    #[error("verify failed at {0}")]
    VerifyFailed(#[source] LogFault),
    #[error("import refused: {0}")]
    ImportRefused(#[source] LogFault),
    #[error("import failed: {0}")]
    ImportFailed(#[source] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("read model {name} differs from a rebuild, first at row {row:?}")]
    ReadModelDiffers { name: String, row: String },
    #[error(transparent)]
    Resource(DomainError),
    #[error("--as-of: {0}")]
    AsOf(#[source] DomainError),
    #[error("--principal: {0}")]
    Principal(#[source] DomainError),
    #[error("{0} did not exist then")]
    NotYet(ResourceId),
    #[error(
        "a PostgreSQL store's nodes take the log's secret from ROSTER_SECRET: set it to the \
         secret the log was made with, and import with it set"
    )]
    SharedSecret,
}

/// A log a tool opened: the store, and the sled database the read models it rebuilds or
/// reads live in (the log's own on sled; the node's, `{data}/node`, beside a PostgreSQL
/// store, as `serve` keeps them).
pub struct ToolLog {
    pub store: Box<dyn EventStore>,
    pub models: sled::Db,
}

/// A PostgreSQL store's options as the tools take them: the URL, and the schema from
/// `ROSTER_STORE_SCHEMA` as `serve` reads it.
pub fn pg_options(url: &str) -> PgOptions {
    let mut options = PgOptions::new(url);
    if let Ok(schema) = std::env::var("ROSTER_STORE_SCHEMA") {
        options.schema = schema;
    }
    options
}

/// Opens the log, with a one-line reason when it cannot. A data directory that holds no log
/// is refused rather than given an empty one: a mistyped `--data` must not pass. A PostgreSQL
/// store is opened on `runtime`, whose tasks follow it.
pub fn open(
    data_dir: &Path,
    choice: &StoreChoice,
    runtime: &tokio::runtime::Handle,
) -> Result<ToolLog, ToolError> {
    match choice {
        StoreChoice::Sled => {
            if !roster_server::data_dir::holds_log(data_dir) {
                return Err(roster_server::data_dir::no_log(data_dir).into());
            }
            let store = SledStore::open(data_dir, SledOptions::default()).map_err(|source| {
                ToolError::Open {
                    path: data_dir.to_path_buf(),
                    source,
                }
            })?;
            let models = store.db().clone();
            Ok(ToolLog {
                store: Box::new(store),
                models,
            })
        }
        StoreChoice::Postgres(url) => {
            let store = runtime
                .block_on(PgStore::open(pg_options(url)))
                .map_err(|source| ToolError::Open {
                    path: "the PostgreSQL store".into(),
                    source,
                })?;
            let models = sled::open(data_dir.join("node")).map_err(|e| ToolError::Open {
                path: data_dir.join("node"),
                source: e.into(),
            })?;
            Ok(ToolLog {
                store: Box::new(store),
                models,
            })
        }
    }
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

/// Writes every envelope as one line of NDJSON.
pub async fn export(
    store: &dyn EventStore,
    out: &mut dyn Write,
    quiet: bool,
) -> Result<u64, ToolError> {
    let bar = progress_bar(store.head(), quiet);
    bar.set_message("exporting");
    let mut position = 0;
    loop {
        let page = store.read_all(position, 4096).await?;
        let Some(last) = page.last() else { break };
        position = last.position;
        for envelope in &page {
            writeln!(out, "{}", envelope.to_json_line()).map_err(ToolError::WriteExport)?;
        }
        bar.set_position(position);
    }
    out.flush().map_err(ToolError::WriteExport)?;
    bar.finish_and_clear();
    Ok(position)
}

/// The first bad position of a log, and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("position {position}: {reason}")]
pub struct LogFault {
    pub position: u64,
    pub reason: String,
}

/// Why the envelope at the next position could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("line {line}: {source}")]
    Line { line: usize, source: std::io::Error },
    #[error("line {line}: not an envelope: {source}")]
    NotAnEnvelope {
        line: usize,
        source: serde_json::Error,
    },
    /// The store's head is past the last event it gave.
    #[error("missing event")]
    Missing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a log that passed every check holds.
#[derive(Debug)]
pub struct Checked {
    pub report: VerifyReport,
    /// Resources (streams of them) in the log.
    pub resources: u64,
}

/// The one check of a whole log that `roster verify` and `roster import` both run, over its
/// envelopes in position order; it stops at the first bad position.
///
/// - The chain: positions gap-free from 1, stream versions contiguous, every hash recomputed
///   and chained (`ChainChecker`).
/// - The domain: every event decodes (an unknown type or schema is refused), and every command,
///   the consecutive events of one stream with one `command_id`, is what the rules decide from
///   the state before it (`roster_domain::LogCheck`): the rules live in the domain, not here.
/// - With `snapshots` (verify): each snapshot that names an event of the log must equal the
///   state folded from the log up to it, because `as_of` starts from snapshots, so an edited
///   one would change what an audit answers while the chain still verifies.
pub fn check_log(
    envelopes: impl Iterator<Item = Result<Envelope, Unreadable>>,
    snapshots: Option<&Snapshots>,
    progress: &mut dyn FnMut(u64),
) -> Result<Checked, LogFault> {
    let mut check = Check {
        chain: ChainChecker::new(),
        domain: LogCheck::new(),
        pending: Vec::new(),
        pending_events: Vec::new(),
        snapshots: snapshots.map(SnapshotCheck::new),
    };
    for envelope in envelopes {
        let next = check.chain.position() + 1;
        // A bad envelope is reported after the command before it is checked as far as it
        // goes: that command may hold an earlier bad position.
        let fault = match envelope {
            Err(unreadable) => Some(LogFault {
                position: next,
                reason: unreadable.to_string(),
            }),
            Ok(envelope) => check.push(envelope).err(),
        };
        if let Some(fault) = fault {
            return Err(match check.flush(false) {
                Err(earlier) if earlier.position < fault.position => earlier,
                _ => fault,
            });
        }
        if check.chain.position().is_multiple_of(4096) {
            progress(check.chain.position());
        }
    }
    check.flush(true)?;
    // The rules held command by command; the final states are checked once more, whole.
    check
        .domain
        .finish()
        .map_err(|(resource, reason)| LogFault {
            position: check.chain.position(),
            reason: format!("after the last event, {resource}: {reason}"),
        })?;
    progress(check.chain.position());
    Ok(Checked {
        report: check.chain.report(),
        resources: u64::try_from(check.domain.resource_count()).unwrap_or(u64::MAX),
    })
}

struct Check<'s> {
    chain: ChainChecker,
    domain: LogCheck,
    /// The envelopes of the command being read, and their events: a command is known to be
    /// complete only when an envelope of another one comes (or the log ends).
    pending: Vec<Envelope>,
    pending_events: Vec<Event>,
    snapshots: Option<SnapshotCheck<'s>>,
}

impl Check<'_> {
    fn push(&mut self, envelope: Envelope) -> Result<(), LogFault> {
        self.chain.check(&envelope).map_err(|e| LogFault {
            position: e.position,
            reason: e.reason,
        })?;
        let continues = self.pending.last().is_some_and(|last| {
            last.stream == envelope.stream && last.command_id == envelope.command_id
        });
        if !continues {
            self.flush(true)?;
        }
        let event = Event::from_parts(&envelope.event_type, envelope.schema, envelope.data.clone())
            .map_err(|e| LogFault {
                position: envelope.position,
                reason: e.to_string(),
            })?;
        self.pending.push(envelope);
        self.pending_events.push(event);
        Ok(())
    }

    /// Checks the command read so far against the rules, and its snapshots. When it may not be
    /// `complete` (the envelope after it is bad), events the rules give beyond the ones read
    /// are no fault of theirs.
    fn flush(&mut self, complete: bool) -> Result<(), LogFault> {
        let pending = std::mem::take(&mut self.pending);
        let events = std::mem::take(&mut self.pending_events);
        let Some(first) = pending.first() else {
            return Ok(());
        };
        let at = |position: u64| move |reason: String| LogFault { position, reason };
        let stream =
            StreamId::parse(&first.stream).map_err(|e| at(first.position)(e.to_string()))?;
        // One command has one actor and one time: its events' envelopes must agree.
        if let Some(odd) = pending
            .iter()
            .find(|e| e.actor != first.actor || e.occurred_at != first.occurred_at)
        {
            return Err(at(odd.position)(format!(
                "command {} names another actor or time than its first event",
                odd.command_id
            )));
        }
        let occurred_at = Timestamp::from_unix_ms(first.occurred_at.0)
            .map_err(|e| at(first.position)(e.to_string()))?;
        let logged = LoggedCommand {
            stream: &stream,
            actor: &first.actor,
            occurred_at,
            events: &events,
        };
        let snapshots = &mut self.snapshots;
        let mut snapshot_fault = None;
        let mut after_each = |index: usize, state: &ResourceState| {
            let Some((envelope, snapshots)) = pending.get(index).zip(snapshots.as_mut()) else {
                return;
            };
            if snapshot_fault.is_none() {
                snapshot_fault = snapshots
                    .after(envelope, state)
                    .err()
                    .map(|reason| LogFault {
                        position: envelope.position,
                        reason,
                    });
            }
        };
        // The rules' fault comes first: it is the cause, a snapshot at most a consequence.
        self.domain
            .command(&logged, &mut after_each)
            .map_err(|mismatch| {
                let offset = u64::try_from(mismatch.index).unwrap_or(u64::MAX);
                let position = first.position.saturating_add(offset);
                // Past the command's last event (the rules give more): name the last, or,
                // when the command was cut short, the position that cut it.
                let last = pending.last().map_or(first.position, |e| e.position);
                at(if complete {
                    position.min(last)
                } else {
                    position
                })(mismatch.reason)
            })?;
        snapshot_fault.map_or(Ok(()), Err)
    }
}

/// The log in a store as envelopes in position order, read a page at a time on `runtime`
/// (the store's reads are async; the check is not). A page that ends before the store's head
/// is a missing event.
fn store_envelopes<'a>(
    store: &'a dyn EventStore,
    runtime: &'a tokio::runtime::Handle,
) -> impl Iterator<Item = Result<Envelope, Unreadable>> + 'a {
    let head = store.head();
    let mut after = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done || after >= head {
            return None;
        }
        let page = match runtime.block_on(store.read_all(after, 4096)) {
            Ok(page) if page.is_empty() => Err(Unreadable::Missing),
            Ok(page) => Ok(page),
            Err(error) => Err(Unreadable::Store(error)),
        };
        match page {
            Ok(page) => {
                after = page.last().map_or(after, |e| e.position);
                Some(page.into_iter().map(Ok).collect::<Vec<_>>())
            }
            Err(reason) => {
                done = true;
                Some(vec![Err(reason)])
            }
        }
    })
    .flatten()
}

/// `roster verify`: the whole log in `data_dir` through [`check_log`], its snapshots included.
/// Call it outside the runtime: it reads the store through `runtime`.
pub fn verify(
    data_dir: &Path,
    store: &dyn EventStore,
    runtime: &tokio::runtime::Handle,
    quiet: bool,
) -> Result<Checked, ToolError> {
    let bar = progress_bar(store.head(), quiet);
    bar.set_message("verifying");
    let snapshots = Snapshots::in_dir(&data_dir.join("snapshots"));
    let checked = check_log(
        store_envelopes(store, runtime),
        Some(&snapshots),
        &mut |p| bar.set_position(p),
    );
    bar.finish_and_clear();
    checked.map_err(ToolError::VerifyFailed)
}

/// Reads an export: one envelope per line, numbered from 1 for error messages.
fn envelopes(path: &Path) -> Result<impl Iterator<Item = Result<Envelope, Unreadable>>, ToolError> {
    let file = std::fs::File::open(path).map_err(|source| ToolError::OpenExport {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(|(index, line)| match line {
            Err(source) => Some(Err(Unreadable::Line {
                line: index + 1,
                source,
            })),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => {
                Some(
                    serde_json::from_str(&line).map_err(|source| Unreadable::NotAnEnvelope {
                        line: index + 1,
                        source,
                    }),
                )
            }
        }))
}

/// `roster import`'s first pass: the whole export through [`check_log`], exactly what
/// `verify` would check of it, before anything is written. Returns the events it holds.
pub fn check_export(file: &Path, quiet: bool) -> Result<u64, ToolError> {
    let bar = progress_bar(0, quiet);
    bar.set_message("verifying");
    let checked = check_log(envelopes(file)?, None, &mut |p| bar.set_position(p));
    bar.finish_and_clear();
    checked
        .map(|c| c.report.events)
        .map_err(ToolError::ImportRefused)
}

/// Where the codes of an imported log get their server secret from: codes, links and webhook
/// signing secrets are derived from it, so a log moved without it opens nothing.
#[derive(Debug, Clone)]
pub enum ImportSecret {
    /// Copy `secret.key` from the data directory the log comes from.
    CopyFrom(PathBuf),
    /// `ROSTER_SECRET` is set; the server will take it from there.
    Environment,
    /// On purpose: `serve` makes a new one, and every existing code stops working.
    New,
}

/// `roster import`: checks the whole export (see [`check_export`]) before anything is written,
/// then writes its server secret as `secret` says and the log into the empty log in
/// `data_dir`. From standard input when `file` is `None`. Returns what to tell the operator.
pub fn import(
    data_dir: &Path,
    file: Option<&Path>,
    secret: &ImportSecret,
    quiet: bool,
) -> Result<String, ToolError> {
    import_into(data_dir, &StoreChoice::Sled, None, file, secret, quiet)
}

/// `roster import` into the store `choice` names: a PostgreSQL store takes the export in one
/// transaction, on `runtime`, and its nodes take the log's secret from `ROSTER_SECRET`.
pub fn import_into(
    data_dir: &Path,
    choice: &StoreChoice,
    runtime: Option<&tokio::runtime::Handle>,
    file: Option<&Path>,
    secret: &ImportSecret,
    quiet: bool,
) -> Result<String, ToolError> {
    if let (StoreChoice::Postgres(_), ImportSecret::CopyFrom(_) | ImportSecret::New) =
        (choice, secret)
    {
        return Err(ToolError::SharedSecret);
    }
    if let ImportSecret::CopyFrom(from) = secret {
        roster_server::data_dir::check_secret_copy(from, data_dir)?;
    }
    let existed = data_dir.exists();
    // Standard input is read twice (checked, then written): a copy is kept beside the data,
    // in a file only the owner reads, gone when this returns.
    let (path, copy) = match file {
        Some(file) => (file.to_path_buf(), None),
        None => {
            roster_server::data_dir::make_private(data_dir)?;
            let mut copy =
                tempfile::NamedTempFile::new_in(data_dir).map_err(ToolError::CopyStdin)?;
            std::io::copy(&mut std::io::stdin().lock(), &mut copy).map_err(ToolError::CopyStdin)?;
            (copy.path().to_path_buf(), Some(copy))
        }
    };
    let events = match check_export(&path, quiet) {
        Ok(events) => events,
        Err(refused) => {
            drop(copy);
            if !existed {
                // Made only for the copy: leave nothing behind.
                let _ = std::fs::remove_dir(data_dir);
            }
            return Err(refused);
        }
    };
    roster_server::data_dir::make_private(data_dir)?;
    let said_secret = match secret {
        ImportSecret::CopyFrom(from) => {
            roster_server::data_dir::copy_secret(from, data_dir)?;
            format!(
                "copied the server secret from {}: the log's codes keep working",
                roster_server::data_dir::secret_path(from).display()
            )
        }
        ImportSecret::Environment => {
            "the codes are derived from ROSTER_SECRET: serve this directory with the same value"
                .to_string()
        }
        ImportSecret::New => "no server secret was copied (--new-secret): serve makes a new \
             secret.key at its next start, and every invitation code, link code and webhook \
             signing secret of the imported log stops working"
            .to_string(),
    };
    let bar = progress_bar(events, quiet);
    bar.set_message("importing");
    let mut lines =
        envelopes(&path)?.map(|line| line.map_err(|e| StoreError::Invalid(e.to_string())));
    let written = match (choice, runtime) {
        (StoreChoice::Postgres(url), Some(runtime)) => {
            runtime.block_on(PgStore::import(&pg_options(url), &mut lines, &mut |p| {
                bar.set_position(p)
            }))
        }
        _ => SledStore::import(data_dir, SledOptions::default(), &mut lines, &mut |p| {
            bar.set_position(p)
        }),
    }
    .map_err(ToolError::ImportFailed)?;
    bar.finish_and_clear();
    Ok(format!("imported {written} events\n{said_secret}"))
}

/// Rebuilds every read model from the log; with `verify`, rebuilds into scratch trees
/// instead and compares them with the live ones, changing nothing.
pub async fn replay(log: &ToolLog, verify: bool, quiet: bool) -> Result<String, ToolError> {
    use roster_projections::ReadModels;

    let store = log.store.as_ref();
    let bar = progress_bar(store.head(), quiet);
    let live = ReadModels::open_sled(&log.models, "rm.")?;
    if !verify {
        bar.set_message("replaying");
        let events = live.rebuild(store, &mut |p| bar.set_position(p)).await?;
        bar.finish_and_clear();
        return Ok(format!("rebuilt the read models from {events} events"));
    }
    live.catch_up(store, &mut |_| {}).await?;
    let scratch = ReadModels::open_sled(&log.models, "scratch.rm.")?;
    bar.set_message("replaying into scratch trees");
    let rebuilt = scratch.rebuild(store, &mut |p| bar.set_position(p)).await;
    bar.finish_and_clear();
    let compared = rebuilt.map_err(ToolError::from).and_then(|events| {
        let (live_rows, scratch_rows) = (live.dump()?, scratch.dump()?);
        for ((name, expected), (_, actual)) in live_rows.iter().zip(&scratch_rows) {
            if expected != actual {
                let row = expected
                    .iter()
                    .zip(actual)
                    .find(|(a, b)| a != b)
                    .map(|(a, _)| String::from_utf8_lossy(&a.0).into_owned())
                    .unwrap_or_else(|| "(one has more rows)".into());
                return Err(ToolError::ReadModelDiffers {
                    name: name.to_string(),
                    row,
                });
            }
        }
        Ok(format!(
            "the read models equal a rebuild from {events} events"
        ))
    });
    for (name, _) in scratch.dump().unwrap_or_default() {
        let _ = log.models.drop_tree(format!("scratch.rm.{name}"));
    }
    compared
}

/// The history of a resource up to a time (all of it without one), optionally only what
/// concerns one principal, and its rolemap at that time, as tables.
pub async fn audit(
    data_dir: &Path,
    log: &ToolLog,
    resource: &str,
    as_of: Option<&str>,
    principal: Option<&str>,
) -> Result<String, ToolError> {
    use roster_domain::Principal;
    use roster_projections::{rolemap_as_of, AsOf, ReadModels};
    use std::fmt::Write as _;

    let resource = ResourceId::parse(resource).map_err(ToolError::Resource)?;
    let until = as_of
        .map(|t| Timestamp::parse(t).map_err(ToolError::AsOf))
        .transpose()?;
    let principal = principal
        .map(|p| Principal::parse(p).map_err(ToolError::Principal))
        .transpose()?;
    let store = log.store.as_ref();
    let models = ReadModels::open_sled(&log.models, "rm.")?;
    models.catch_up(store, &mut |_| {}).await?;
    let entries = match &principal {
        Some(p) => models
            .principal_history(p, 0, usize::MAX)?
            .into_iter()
            .filter(|h| h.resource.as_ref() == Some(&resource))
            .collect(),
        None => models.history(&resource, 0, usize::MAX)?,
    };
    let as_of = until.map_or(AsOf::Position(store.head()), AsOf::Time);
    let snapshots = Snapshots::in_dir(&data_dir.join("snapshots"));
    let Some((members, reached)) = rolemap_as_of(store, Some(&snapshots), &resource, as_of).await?
    else {
        return Err(ToolError::NotYet(resource));
    };
    let mut out = String::new();
    let when = until.map_or_else(|| "now".to_string(), |t| t.to_string());
    let _ = writeln!(out, "history of {resource} up to {when}");
    let _ = writeln!(
        out,
        "{:>9}  {:<24}  {:<16}  summary",
        "position", "time", "actor"
    );
    // The history up to the moment the rolemap is taken at, as the projections read "as of".
    for entry in entries
        .iter()
        .filter(|e| as_of.includes(e.position, e.occurred_at.unix_ms()))
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
