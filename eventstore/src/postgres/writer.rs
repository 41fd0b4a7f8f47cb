//! The PostgreSQL writer: this node's appends, group-committed in one transaction under the
//! chain head's row lock, in two round trips.
//!
//! 1. `BEGIN`, lock the head (and read PostgreSQL's clock), the events other nodes appended
//!    since this node last read the log, the first outcomes of the group's command ids, and
//!    the versions of its streams: pipelined, one round trip.
//! 2. Under the lock: the catch-up is handed the others' events (so decisions read schemas,
//!    parents and states as any node left them), then every command is decided in order.
//! 3. The events, the outcomes, the new head, a notification and `COMMIT`: pipelined, one
//!    round trip. Only then is anyone answered.
//!
//! A group that did not commit leaves nothing, and its decisions' effects on the engine's
//! cached states are rolled back (`Catchup::rolled_back`). When the connection dies after
//! `COMMIT` was sent, the outcome is read back by command id on a new connection; if that
//! fails too, the callers hear "unavailable" and a retry with the same command id gets the
//! first outcome.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{Client, Statement};

use crate::append::Appended;
use crate::envelope::{Envelope, Hash, Timestamp};
use crate::error::{AppendError, StoreError};
use crate::log::ChainHead;
use crate::stored;
use crate::writer::{Admitted, Fingerprint, Group, GroupReads, Job};

use super::{connect, db_error, from_i64, to_i64, PgShared};

type Param = dyn tokio_postgres::types::ToSql + Sync;

/// The chain's head as the store has it.
pub(crate) async fn load_head(client: &Client, schema: &str) -> Result<ChainHead, StoreError> {
    let row = client
        .query_one(
            &format!("SELECT position, hash, latest_ms FROM {schema}.head WHERE id = 1"),
            &[],
        )
        .await
        .map_err(db_error)?;
    head_of(row.get(0), row.get(1), row.get(2))
}

fn head_of(position: i64, hash: &[u8], latest_ms: i64) -> Result<ChainHead, StoreError> {
    let position = from_i64(position)?;
    let hash = <[u8; 32]>::try_from(hash)
        .map_err(|_| StoreError::corrupt(position, "the chain head's hash"))?;
    Ok(ChainHead {
        position,
        hash: Hash(hash),
        latest: Timestamp(latest_ms),
    })
}

/// The statements of a group commit, prepared once per connection.
struct Prepared {
    begin: Statement,
    lock_head: Statement,
    others: Statement,
    outcomes: Statement,
    leases: Statement,
    versions: Statement,
    insert_events: Statement,
    insert_commands: Statement,
    move_head: Statement,
    notify: Statement,
    commit: Statement,
    rollback: Statement,
}

impl Prepared {
    async fn on(client: &Client, schema: &str) -> Result<Prepared, StoreError> {
        let prepare = |sql: String| async move { client.prepare(&sql).await.map_err(db_error) };
        Ok(Prepared {
            begin: prepare("BEGIN".into()).await?,
            lock_head: prepare(format!(
                "SELECT position, hash, latest_ms, \
                 (extract(epoch from clock_timestamp()) * 1000)::bigint \
                 FROM {schema}.head WHERE id = 1 FOR UPDATE"
            ))
            .await?,
            others: prepare(format!(
                "SELECT position, envelope FROM {schema}.events WHERE position > $1 \
                 ORDER BY position"
            ))
            .await?,
            outcomes: prepare(format!(
                "SELECT command_id, stream, position, version, events, fingerprint \
                 FROM {schema}.commands WHERE command_id = ANY($1)"
            ))
            .await?,
            leases: prepare(format!(
                "SELECT name, token FROM {schema}.leases WHERE name = ANY($1)"
            ))
            .await?,
            versions: prepare(format!(
                "SELECT stream, max(version) FROM {schema}.events WHERE stream = ANY($1) \
                 GROUP BY stream"
            ))
            .await?,
            insert_events: prepare(format!(
                "INSERT INTO {schema}.events \
                 (position, stream, version, event_type, occurred_at, actor, command_id, data, envelope) \
                 SELECT p, s, v, t, to_timestamp(o::float8 / 1000), a, c, d::jsonb, e \
                 FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[], \
                             $6::text[], $7::text[], $8::text[], $9::bytea[]) \
                      AS x(p, s, v, t, o, a, c, d, e)"
            ))
            .await?,
            insert_commands: prepare(format!(
                "INSERT INTO {schema}.commands \
                 (command_id, stream, position, version, events, fingerprint) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], \
                                      $5::bigint[], $6::bytea[])"
            ))
            .await?,
            move_head: prepare(format!(
                "UPDATE {schema}.head SET position = $1, hash = $2, latest_ms = $3 WHERE id = 1"
            ))
            .await?,
            notify: prepare(format!("SELECT pg_notify('{schema}_log', $1)")).await?,
            commit: prepare("COMMIT".into()).await?,
            rollback: prepare("ROLLBACK".into()).await?,
        })
    }
}

/// What a group read under the lock, for its decisions.
struct Fetched {
    outcomes: HashMap<String, (Appended, Option<Fingerprint>)>,
    versions: HashMap<String, u64>,
}

impl GroupReads for &Fetched {
    fn first_outcome(
        &self,
        command_id: &str,
    ) -> Result<Option<(Appended, Option<Fingerprint>)>, StoreError> {
        Ok(self.outcomes.get(command_id).cloned())
    }

    fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        // Every stream of the group was asked for; one with no event is at version 0.
        Ok(self.versions.get(stream).copied().unwrap_or(0))
    }
}

/// The writer's connection and what it prepared on it.
struct Session {
    client: Client,
    prepared: Prepared,
}

/// Runs until every sender is dropped: takes what is queued as one group, commits it.
pub(crate) async fn run(shared: Arc<PgShared>, mut jobs: mpsc::Receiver<Job>) {
    let batch_max = shared.limits.group_commands_max.max(1);
    let mut session: Option<Session> = None;
    let mut failures = 0u32;
    while let Some(first) = jobs.recv().await {
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            // A name PostgreSQL's text cannot hold is refused before it reaches a query.
            match storable(&shared, &job) {
                Ok(()) => batch.push(job),
                Err(error) => {
                    let _ = job.reply.send(Err(AppendError::Store(error)));
                }
            }
            if batch.len() < batch_max {
                next = jobs.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        if session.is_none() {
            match open_session(&shared).await {
                Ok(opened) => session = Some(opened),
                Err(error) => {
                    shared.set_cut_off(Some(error.to_string()));
                    refuse(batch, &error);
                    failures += 1;
                    // Back off a little so a dead server is not hammered; each caller is
                    // answered at once all the same.
                    tokio::time::sleep(Duration::from_millis(50 << failures.min(5))).await;
                    continue;
                }
            }
        }
        let Some(open) = session.as_ref() else {
            continue;
        };
        match commit_group(&shared, open, batch).await {
            Ok(()) => {
                failures = 0;
                shared.set_cut_off(None);
            }
            Err(keep) => {
                if !keep {
                    session = None;
                }
            }
        }
    }
}

/// The names of an append as the sled store checks them, and no NUL anywhere a text column
/// would take it (PostgreSQL's text cannot hold one).
fn storable(shared: &PgShared, job: &Job) -> Result<(), StoreError> {
    let request = &job.request;
    let bytes_max = shared.limits.stream_bytes_max;
    crate::writer::validate_name("stream", &request.stream, bytes_max)?;
    crate::writer::validate_name("command id", &request.command_id, bytes_max)?;
    if request.actor.contains('\0') || request.correlation_id.contains('\0') {
        return Err(StoreError::Invalid(
            "an actor or correlation id with a NUL character".into(),
        ));
    }
    Ok(())
}

async fn open_session(shared: &PgShared) -> Result<Session, StoreError> {
    let client = connect(&shared.options).await?;
    let prepared = Prepared::on(&client, &shared.options.schema).await?;
    Ok(Session { client, prepared })
}

fn refuse(batch: Vec<Job>, error: &StoreError) {
    for job in batch {
        let _ = job.reply.send(Err(AppendError::Store(error.clone())));
    }
}

/// Commits one group. `Err(keep)` when it did not: whether the session is still usable.
async fn commit_group(shared: &PgShared, session: &Session, batch: Vec<Job>) -> Result<(), bool> {
    let Session { client, prepared } = session;
    let seen = shared.known.load(Ordering::Acquire);
    // Owned: the parameters outlive the borrow of the batch, which is moved on below.
    let command_ids: Vec<String> = batch.iter().map(|j| j.request.command_id.clone()).collect();
    let streams: Vec<String> = {
        let mut unique: Vec<String> = batch.iter().map(|j| j.request.stream.clone()).collect();
        unique.sort_unstable();
        unique.dedup();
        unique
    };
    let Ok(seen_param) = to_i64(seen) else {
        refuse(batch, &StoreError::corrupt(seen, "a position out of range"));
        return Err(true);
    };
    let leases: Vec<String> = batch
        .iter()
        .filter_map(|j| j.request.fence.as_ref().map(|f| f.lease.clone()))
        .collect();
    // Round trip 1: the lock, and everything the decisions read.
    let others_params: [&Param; 1] = [&seen_param];
    let outcomes_params: [&Param; 1] = [&command_ids];
    let versions_params: [&Param; 1] = [&streams];
    let leases_params: [&Param; 1] = [&leases];
    let (begun, head, others, outcomes, versions, tokens) = tokio::join!(
        client.execute(&prepared.begin, &[]),
        client.query_one(&prepared.lock_head, &[]),
        client.query(&prepared.others, &others_params),
        client.query(&prepared.outcomes, &outcomes_params),
        client.query(&prepared.versions, &versions_params),
        client.query(&prepared.leases, &leases_params),
    );
    let read = (|| {
        begun.map_err(db_error)?;
        let head = head.map_err(db_error)?;
        let now_ms: i64 = head.get(3);
        let chain = head_of(head.get(0), head.get(1), head.get(2))?;
        let mut foreign = Vec::new();
        for row in others.map_err(db_error)? {
            let position = from_i64(row.get(0))?;
            foreign.push(stored::decode(position, row.get::<_, &[u8]>(1))?);
        }
        let mut fetched = Fetched {
            outcomes: HashMap::new(),
            versions: HashMap::new(),
        };
        for row in outcomes.map_err(db_error)? {
            let fingerprint: Option<Vec<u8>> = row.get(5);
            let fingerprint = match fingerprint {
                None => None,
                Some(bytes) => Some(<[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    StoreError::corrupt(0, "a command's fingerprint is not 32 bytes")
                })?),
            };
            let outcome = Appended {
                stream: row.get(1),
                position: from_i64(row.get(2))?,
                version: from_i64(row.get(3))?,
                events: from_i64(row.get(4))?,
                duplicate: false,
            };
            fetched
                .outcomes
                .insert(row.get::<_, String>(0), (outcome, fingerprint));
        }
        for row in versions.map_err(db_error)? {
            fetched
                .versions
                .insert(row.get::<_, String>(0), from_i64(row.get(1))?);
        }
        let mut tokens_now = HashMap::new();
        for row in tokens.map_err(db_error)? {
            tokens_now.insert(row.get::<_, String>(0), from_i64(row.get(1))?);
        }
        Ok::<_, StoreError>((chain, now_ms, foreign, fetched, tokens_now))
    })();
    let (chain, now_ms, foreign, fetched, tokens) = match read {
        Ok(read) => read,
        Err(error) => {
            let keep = rollback(client, prepared).await;
            if let StoreError::Unavailable(reason) = &error {
                shared.set_cut_off(Some(reason.clone()));
            }
            refuse(batch, &error);
            return Err(keep);
        }
    };
    // The others' events first: decisions read what every node decided. The log must hold
    // exactly what this node has not seen yet up to the locked head.
    let contiguous = foreign.first().is_none_or(|e| e.position == seen + 1)
        && foreign.last().map_or(seen, |e| e.position) == chain.position;
    if !contiguous {
        let keep = rollback(client, prepared).await;
        refuse(
            batch,
            &StoreError::corrupt(seen + 1, "the log has a gap below the chain head"),
        );
        return Err(keep);
    }
    if !foreign.is_empty() {
        shared.publish(foreign).await;
    }
    // Decide, in order, at PostgreSQL's time (never before the log's latest).
    let mut group = Group::new(&fetched, &shared.limits, chain);
    for mut job in batch {
        // An append made under a lease that changed hands since is refused, undecided.
        if let Some(fence) = &job.request.fence {
            if tokens.get(&fence.lease) != Some(&fence.token) {
                let lease = fence.lease.clone();
                let _ = job.reply.send(Err(AppendError::Fenced { lease }));
                continue;
            }
        }
        job.request.occurred_at = Timestamp(now_ms);
        group.admit_job(job);
    }
    let admitted = group.finish();
    if admitted.envelopes.is_empty() {
        // Nothing to write: duplicates and refusals, decided under the lock.
        let keep = rollback(client, prepared).await;
        answer(admitted.replies);
        return if keep { Ok(()) } else { Err(false) };
    }
    match write_and_commit(client, prepared, &admitted).await {
        Ok(()) => {
            // Handed over before the answers, so `head()` covers what a caller was told.
            shared.publish(admitted.envelopes).await;
            answer(admitted.replies);
            Ok(())
        }
        Err(Unsure::NotCommitted(error)) => {
            let keep = rollback(client, prepared).await;
            roll_back_decisions(shared, &admitted);
            fail(admitted.replies, &error);
            Err(keep)
        }
        Err(Unsure::Unknown(error)) => {
            // The connection died after COMMIT was sent: ask a new one what happened.
            match committed(shared, &admitted).await {
                Ok(true) => {
                    shared.publish(admitted.envelopes).await;
                    answer(admitted.replies);
                }
                Ok(false) => {
                    roll_back_decisions(shared, &admitted);
                    fail(admitted.replies, &error);
                }
                Err(unknown) => {
                    roll_back_decisions(shared, &admitted);
                    fail(
                        admitted.replies,
                        &StoreError::Unavailable(format!(
                            "the outcome of a commit is unknown ({error}; then {unknown}): \
                             retry with the same idempotency key"
                        )),
                    );
                }
            }
            Err(false)
        }
    }
}

enum Unsure {
    /// The transaction was refused before `COMMIT` took effect.
    NotCommitted(StoreError),
    /// The connection was lost with `COMMIT` possibly done.
    Unknown(StoreError),
}

/// Round trip 2: the group's rows, the head, the notification, `COMMIT`.
async fn write_and_commit(
    client: &Client,
    prepared: &Prepared,
    admitted: &Admitted,
) -> Result<(), Unsure> {
    let rows = EventRows::of(admitted).map_err(Unsure::NotCommitted)?;
    let commands = CommandRows::of(admitted).map_err(Unsure::NotCommitted)?;
    let head = admitted.head;
    let head_position = to_i64(head.position).map_err(Unsure::NotCommitted)?;
    let head_hash = head.hash.0.to_vec();
    let head_note = head.position.to_string();
    let event_params: [&Param; 9] = [
        &rows.positions,
        &rows.streams,
        &rows.versions,
        &rows.types,
        &rows.occurred_ms,
        &rows.actors,
        &rows.command_ids,
        &rows.data,
        &rows.envelopes,
    ];
    let command_params: [&Param; 6] = [
        &commands.ids,
        &commands.streams,
        &commands.positions,
        &commands.versions,
        &commands.events,
        &commands.fingerprints,
    ];
    let head_params: [&Param; 3] = [&head_position, &head_hash, &head.latest.0];
    let notify_params: [&Param; 1] = [&head_note];
    let (events, outcomes, moved, notified, committed) = tokio::join!(
        client.execute(&prepared.insert_events, &event_params),
        client.execute(&prepared.insert_commands, &command_params),
        client.execute(&prepared.move_head, &head_params),
        client.query(&prepared.notify, &notify_params),
        client.execute(&prepared.commit, &[]),
    );
    // A statement refused before COMMIT aborts the transaction: COMMIT then rolls back.
    let first_refused = [events.err(), outcomes.err(), moved.err(), notified.err()]
        .into_iter()
        .flatten()
        .next();
    if let Some(refused) = first_refused {
        if refused.is_closed() || refused.as_db_error().is_none() {
            return Err(Unsure::Unknown(db_error(refused)));
        }
        return Err(Unsure::NotCommitted(db_error(refused)));
    }
    match committed {
        Ok(_) => Ok(()),
        Err(error) if error.as_db_error().is_some() && !error.is_closed() => {
            Err(Unsure::NotCommitted(db_error(error)))
        }
        Err(error) => Err(Unsure::Unknown(db_error(error))),
    }
}

/// Whether a group whose `COMMIT` got no answer is in the log: its last command that wrote
/// has an outcome row exactly when the transaction committed.
async fn committed(shared: &PgShared, admitted: &Admitted) -> Result<bool, StoreError> {
    let Some(command_id) = admitted.commands.keys().next() else {
        return Ok(false);
    };
    let client = connect(&shared.options).await?;
    let schema = &shared.options.schema;
    let rows = client
        .query(
            &format!("SELECT position FROM {schema}.commands WHERE command_id = $1"),
            &[command_id],
        )
        .await
        .map_err(db_error)?;
    Ok(!rows.is_empty())
}

/// Ends a transaction that will not commit; whether the session is still usable.
async fn rollback(client: &Client, prepared: &Prepared) -> bool {
    client.execute(&prepared.rollback, &[]).await.is_ok()
}

fn roll_back_decisions(shared: &PgShared, admitted: &Admitted) {
    let streams: Vec<String> = admitted
        .envelopes
        .iter()
        .map(|e| e.stream.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if let Some(catchup) = shared.catchup() {
        catchup.rolled_back(&streams);
    }
}

fn answer(replies: Vec<crate::writer::Reply>) {
    for (reply, outcome) in replies {
        // A caller that went away does not undo the append; its command id still holds.
        let _ = reply.send(outcome);
    }
}

/// Answers every command of a group that did not commit with `error`, keeping the answers
/// that were decided without writing (a refusal stays a refusal).
fn fail(replies: Vec<crate::writer::Reply>, error: &StoreError) {
    tracing::error!(%error, "a group commit failed; its commands were not acknowledged");
    for (reply, outcome) in replies {
        let _ = reply.send(outcome.and(Err(AppendError::Store(error.clone()))));
    }
}

/// A group's events as the columns of one `INSERT … SELECT FROM unnest(…)`.
struct EventRows {
    positions: Vec<i64>,
    streams: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    occurred_ms: Vec<i64>,
    actors: Vec<String>,
    command_ids: Vec<String>,
    /// The event's data for SQL readers (`sql_data`).
    data: Vec<String>,
    envelopes: Vec<Vec<u8>>,
}

impl EventRows {
    fn of(admitted: &Admitted) -> Result<EventRows, StoreError> {
        let n = admitted.envelopes.len();
        let mut rows = EventRows {
            positions: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            occurred_ms: Vec::with_capacity(n),
            actors: Vec::with_capacity(n),
            command_ids: Vec::with_capacity(n),
            data: Vec::with_capacity(n),
            envelopes: Vec::with_capacity(n),
        };
        for (envelope, bytes) in admitted.envelopes.iter().zip(&admitted.stored) {
            rows.positions.push(to_i64(envelope.position)?);
            rows.streams.push(envelope.stream.clone());
            rows.versions.push(to_i64(envelope.version)?);
            rows.types.push(envelope.event_type.clone());
            rows.occurred_ms.push(envelope.occurred_at.0);
            rows.actors.push(envelope.actor.clone());
            rows.command_ids.push(envelope.command_id.clone());
            rows.data.push(sql_data(&envelope.data));
            rows.envelopes.push(bytes.clone());
        }
        Ok(rows)
    }
}

/// An event's data as the `data` column holds it: its JSON, except that a NUL character
/// (which `jsonb` cannot hold) reads as the six characters `\u0000`. Only the column differs;
/// the envelope, which the hash covers, keeps the data exactly.
pub(crate) fn sql_data(data: &serde_json::Value) -> String {
    let json = data.to_string();
    if !json.contains("\\u0000") {
        return json;
    }
    // Walk the escapes, so an escaped backslash followed by "u0000" is left alone.
    let mut out = String::with_capacity(json.len() + 8);
    let mut rest = json.as_str();
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let escape = &rest[at..];
        if let Some(after) = escape.strip_prefix("\\u0000") {
            out.push_str("\\\\u0000");
            rest = after;
        } else {
            // A backslash and the character it escapes (ASCII in JSON's escapes).
            out.push_str(&escape[..2.min(escape.len())]);
            rest = &escape[2.min(escape.len())..];
        }
    }
    out.push_str(rest);
    out
}

/// A group's first outcomes, by command id, as columns.
struct CommandRows {
    ids: Vec<String>,
    streams: Vec<String>,
    positions: Vec<i64>,
    versions: Vec<i64>,
    events: Vec<i64>,
    fingerprints: Vec<Option<Vec<u8>>>,
}

impl CommandRows {
    fn of(admitted: &Admitted) -> Result<CommandRows, StoreError> {
        let mut rows = CommandRows {
            ids: Vec::new(),
            streams: Vec::new(),
            positions: Vec::new(),
            versions: Vec::new(),
            events: Vec::new(),
            fingerprints: Vec::new(),
        };
        for (id, (outcome, fingerprint)) in &admitted.commands {
            rows.ids.push(id.clone());
            rows.streams.push(outcome.stream.clone());
            rows.positions.push(to_i64(outcome.position)?);
            rows.versions.push(to_i64(outcome.version)?);
            rows.events.push(to_i64(outcome.events)?);
            rows.fingerprints.push(fingerprint.map(|f| f.to_vec()));
        }
        Ok(rows)
    }
}

/// Writes an export into an empty store in one transaction, checking the chain as it goes.
pub(crate) async fn import(
    client: &mut Client,
    schema: &str,
    envelopes: &mut (dyn Iterator<Item = Result<Envelope, StoreError>> + Send),
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, StoreError> {
    let transaction = client.transaction().await.map_err(db_error)?;
    let head = transaction
        .query_one(
            &format!("SELECT position FROM {schema}.head WHERE id = 1 FOR UPDATE"),
            &[],
        )
        .await
        .map_err(db_error)?;
    if head.get::<_, i64>(0) != 0 {
        return Err(StoreError::Invalid(
            "the store already holds events: import only into an empty store".into(),
        ));
    }
    let insert = transaction
        .prepare(&format!(
            "INSERT INTO {schema}.events \
             (position, stream, version, event_type, occurred_at, actor, command_id, data, envelope) \
             VALUES ($1, $2, $3, $4, to_timestamp($5::bigint::float8 / 1000), $6, $7, $8::text::jsonb, $9)"
        ))
        .await
        .map_err(db_error)?;
    let mut checker = crate::verify::ChainChecker::new();
    let mut latest = i64::MIN;
    let mut last: Option<Envelope> = None;
    // Each command's last event and count, for its first outcome.
    let mut commands: HashMap<String, (String, u64, u64, u64)> = HashMap::new();
    let mut count = 0u64;
    for envelope in envelopes {
        let envelope = envelope?;
        checker
            .check(&envelope)
            .map_err(|e| StoreError::corrupt(e.position, e.reason))?;
        latest = latest.max(envelope.occurred_at.0);
        let bytes = envelope
            .stored_json()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        transaction
            .execute(
                &insert,
                &[
                    &to_i64(envelope.position)?,
                    &envelope.stream,
                    &to_i64(envelope.version)?,
                    &envelope.event_type,
                    &envelope.occurred_at.0,
                    &envelope.actor,
                    &envelope.command_id,
                    &sql_data(&envelope.data),
                    &bytes,
                ],
            )
            .await
            .map_err(db_error)?;
        let entry = commands
            .entry(envelope.command_id.clone())
            .or_insert_with(|| (envelope.stream.clone(), 0, 0, 0));
        entry.1 = envelope.position;
        entry.2 = envelope.version;
        entry.3 += 1;
        count += 1;
        progress(count);
        last = Some(envelope);
    }
    for (id, (stream, position, version, events)) in &commands {
        transaction
            .execute(
                &format!(
                    "INSERT INTO {schema}.commands (command_id, stream, position, version, events) \
                     VALUES ($1, $2, $3, $4, $5)"
                ),
                &[
                    id,
                    stream,
                    &to_i64(*position)?,
                    &to_i64(*version)?,
                    &to_i64(*events)?,
                ],
            )
            .await
            .map_err(db_error)?;
    }
    if let Some(last) = &last {
        transaction
            .execute(
                &format!(
                    "UPDATE {schema}.head SET position = $1, hash = $2, latest_ms = $3 WHERE id = 1"
                ),
                &[&to_i64(last.position)?, &last.hash.0.to_vec(), &latest],
            )
            .await
            .map_err(db_error)?;
    }
    transaction.commit().await.map_err(db_error)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::sql_data;

    #[test]
    fn the_data_column_takes_a_nul_as_text_and_nothing_else_changes() {
        let data = serde_json::json!({"a": "x\u{0}y", "b": "\\u0000", "c": "\u{e9}\"q"});
        let column = sql_data(&data);
        assert_eq!(column, r#"{"a":"x\\u0000y","b":"\\u0000","c":"é\"q"}"#);
        let read: serde_json::Value = serde_json::from_str(&column).expect("still JSON");
        assert_eq!(read["a"], "x\\u0000y");
        assert_eq!(read["b"], data["b"]);
        assert_eq!(read["c"], data["c"]);
    }
}
