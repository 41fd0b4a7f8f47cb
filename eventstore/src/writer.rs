//! The single writer: group commit of concurrent appends into one atomic batch and one sync.
//!
//! It runs on its own OS thread because sled's flush and `fdatasync` block. Commands queue
//! while a group is being synced, so the next group is as large as the load: under load many
//! commands share one sync, at rest a lone command pays one sync and no waiting.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::append::{AppendRequest, Appended, Proposal, StreamView};
use crate::backend::{keys, Backend, Entry};
use crate::envelope::{Envelope, Hash, NewEvent};
use crate::error::{AppendError, StoreError};
use crate::log::{ChainHead, Limits, Shared};
use crate::stored;

pub(crate) struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// Hands `request` to the writer behind `jobs` and waits for its answer; `Closed` once the
/// store was closed (the sender taken) or the writer has gone. Both stores' `append`.
pub(crate) async fn submit(
    jobs: &Mutex<Option<mpsc::Sender<Job>>>,
    request: AppendRequest,
) -> Result<Appended, AppendError> {
    let jobs = jobs
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let jobs = jobs.ok_or(StoreError::Closed)?;
    let (reply, answer) = oneshot::channel();
    jobs.send(Job { request, reply })
        .await
        .map_err(|_| StoreError::Closed)?;
    answer.await.map_err(|_| StoreError::Closed)?
}

pub(crate) type Reply = (
    oneshot::Sender<Result<Appended, AppendError>>,
    Result<Appended, AppendError>,
);

/// A group applied to the store and waiting for its sync before anyone hears of it.
struct Applied {
    replies: Vec<Reply>,
    envelopes: Vec<Envelope>,
    head: ChainHead,
    appends: u64,
    /// The apply itself failed: nothing of this group is in the store.
    failed: Option<StoreError>,
}

/// Groups the writer may apply while the syncer is still syncing earlier ones.
const PIPELINE_GROUPS_MAX: usize = 8;

/// Where the writer and the syncer are, so that each group reaches the earliest sync it can.
///
/// sled 0.34's `apply_batch` takes a process-wide lock exclusively that its `flush` holds
/// shared until the log is written. A group applied during a flush therefore only waits for
/// it, and misses it; so while the syncer flushes, the writer goes on taking commands and
/// applies them all as one group when the flush is over (one `apply_batch` instead of
/// several, each of which hands two log buffers to sled's I/O threads). And a flush started
/// while the writer is assembling a group would leave that group to the next sync: so the
/// syncer lets a group being assembled be applied first. A lone command finds neither
/// waiting, so one writer's appends are never held back.
#[derive(Default)]
pub(crate) struct FlushGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    flushing: bool,
    assembling: bool,
}

impl FlushGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        // Two flags written whole: a panic while holding the lock cannot leave them torn.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn update(&self, change: impl FnOnce(&mut GateState)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Waits for the group being assembled, if any, then marks a flush begun; it ends when
    /// the guard drops, whatever happens in between.
    fn begin_flush(&self) -> FlushOpen<'_> {
        let mut state = self
            .changed
            .wait_while(self.lock(), |state| state.assembling)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.flushing = true;
        drop(state);
        FlushOpen(self)
    }

    fn is_flushing(&self) -> bool {
        self.lock().flushing
    }

    fn wait_until_flushed(&self) {
        let _flushed = self
            .changed
            .wait_while(self.lock(), |state| state.flushing)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    }

    /// Marks a group being assembled until the guard drops (also if the writer panics, so the
    /// syncer is never left waiting for a group that will not come).
    fn assembling(&self) -> Assembling<'_> {
        self.update(|state| state.assembling = true);
        Assembling(self)
    }
}

struct Assembling<'a>(&'a FlushGate);

impl Drop for Assembling<'_> {
    fn drop(&mut self) {
        self.0.update(|state| state.assembling = false);
    }
}

struct FlushOpen<'a>(&'a FlushGate);

impl FlushOpen<'_> {
    fn end(&self) {
        self.0.update(|state| state.flushing = false);
    }
}

impl Drop for FlushOpen<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// Runs until every sender is dropped, then makes everything durable and returns.
///
/// Two threads share the work: this one decides and applies groups, the syncer makes them
/// durable and answers. While one group is being synced the next is already being prepared,
/// so a group costs the larger of its CPU work and its sync, not their sum; and one sync
/// covers every group applied while the previous sync ran.
pub(crate) fn run<B: Backend>(
    shared: Arc<Shared<B>>,
    mut jobs: mpsc::Receiver<Job>,
    tail: broadcast::Sender<Arc<[Envelope]>>,
    mut chain: ChainHead,
) {
    let (to_syncer, applied) = std::sync::mpsc::sync_channel::<Applied>(PIPELINE_GROUPS_MAX);
    let syncer_shared = Arc::clone(&shared);
    let syncer = std::thread::Builder::new()
        .name("roster-log-sync".into())
        .spawn(move || sync_loop(&syncer_shared, &applied, &tail));
    let syncer = match syncer {
        Ok(syncer) => syncer,
        Err(error) => {
            tracing::error!(%error, "cannot start the log's sync thread");
            return;
        }
    };
    let batch_max = shared.limits.group_commands_max.max(1);
    let mut heads = StreamHeads::new(shared.limits.stream_heads_cached_max);
    while let Some(first) = jobs.blocking_recv() {
        let assembling = shared.flushing.assembling();
        let reads = Stored {
            backend: &shared.backend,
            heads: &heads,
        };
        let mut group = Group::new(reads, &shared.limits, chain);
        group.admit_job(first);
        loop {
            while group.replies.len() < batch_max {
                match jobs.try_recv() {
                    Ok(job) => group.admit_job(job),
                    Err(_) => break,
                }
            }
            // Applying now would only wait for the flush: take what arrives meanwhile too.
            if group.replies.len() >= batch_max || !shared.flushing.is_flushing() {
                break;
            }
            shared.flushing.wait_until_flushed();
        }
        let admitted = group.finish();
        let group = apply_group(&shared, &mut heads, admitted);
        chain = if group.failed.is_some() {
            // The batch is atomic, so the store holds exactly what it held before it: start
            // again from the stored head, with no cached stream version.
            heads.clear();
            ChainHead::load(&shared.backend).unwrap_or(chain)
        } else {
            group.head
        };
        // Done assembling once the group is in the channel, so a flush starting now takes it;
        // but not while waiting for room in a full channel, which the syncer empties only
        // after flushing.
        match to_syncer.try_send(group) {
            Ok(()) => drop(assembling),
            Err(std::sync::mpsc::TrySendError::Full(group)) => {
                drop(assembling);
                if to_syncer.send(group).is_err() {
                    break;
                }
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => break,
        }
    }
    drop(to_syncer);
    if syncer.join().is_err() {
        tracing::error!("the log's sync thread panicked");
    }
    if let Err(error) = shared.backend.close() {
        tracing::error!(%error, "the log could not be made durable on close");
    }
}

/// What an admitted group writes and answers, no longer borrowing the writer's state.
pub(crate) struct Admitted {
    pub replies: Vec<Reply>,
    pub envelopes: Vec<Envelope>,
    pub stored: Vec<Vec<u8>>,
    /// The sled store's index entries and command outcomes, as keys and values.
    pub writes: Vec<Entry>,
    /// The first outcome of each command that wrote, by command id (a store that keeps them
    /// as rows of its own writes these).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub commands: HashMap<String, (Appended, Option<Fingerprint>)>,
    pub stream_heads: HashMap<String, u64>,
    pub head: ChainHead,
    pub appends: u64,
}

/// Applies a group's writes as one atomic batch.
fn apply_group<B: Backend>(
    shared: &Shared<B>,
    heads: &mut StreamHeads,
    group: Admitted,
) -> Applied {
    let Admitted {
        replies,
        envelopes,
        stored,
        mut writes,
        stream_heads,
        head,
        appends,
        ..
    } = group;
    let mut failed = None;
    if let Some(first) = envelopes.first() {
        // The group's positions are contiguous: its events go in as a few runs.
        writes.extend(stored::pack(first.position, stored));
        writes.push((keys::CHAIN_HEAD.to_vec(), head.to_bytes()));
        match shared.backend.apply(writes) {
            Ok(()) => heads.remember(stream_heads),
            Err(error) => failed = Some(error),
        }
    }
    Applied {
        replies,
        envelopes,
        head,
        appends,
        failed,
    }
}

/// Makes applied groups durable, then answers their commands and tells the subscribers.
fn sync_loop<B: Backend>(
    shared: &Shared<B>,
    applied: &std::sync::mpsc::Receiver<Applied>,
    tail: &broadcast::Sender<Arc<[Envelope]>>,
) {
    while let Ok(first) = applied.recv() {
        let mut groups = vec![first];
        let flush = shared.flushing.begin_flush();
        groups.extend(applied.try_iter());
        // Even a group that wrote nothing waits for the sync of the ones before it: its
        // answers (a conflict, a duplicate) were decided against them.
        let wrote = groups
            .iter()
            .any(|g| g.failed.is_none() && !g.envelopes.is_empty());
        let synced = if wrote {
            shared.backend.sync_phased(&mut || flush.end())
        } else {
            Ok(())
        };
        drop(flush);
        if wrote && synced.is_ok() {
            shared.syncs_committed.fetch_add(1, Ordering::Relaxed);
        }
        // Answers first, every group's: the subscribers' copies (and freeing the envelopes
        // when nobody listens) can wait until the callers are on their way.
        let mut published = Vec::with_capacity(groups.len());
        for group in groups {
            let failure = group.failed.or_else(|| synced.as_ref().err().cloned());
            match failure {
                None => {
                    if !group.envelopes.is_empty() {
                        shared
                            .visible_head
                            .store(group.head.position, Ordering::Release);
                        shared.groups_committed.fetch_add(1, Ordering::Relaxed);
                        shared
                            .appends_committed
                            .fetch_add(group.appends, Ordering::Relaxed);
                    }
                    answer(group.replies);
                    if !group.envelopes.is_empty() {
                        published.push(group.envelopes);
                    }
                }
                Some(error) => {
                    tracing::error!(%error, "a group commit failed; its commands were not acknowledged");
                    // Whether the events are in the store is unknown to the caller: a retry
                    // with the same command id gets the first outcome if they are.
                    for (reply, outcome) in group.replies {
                        let _ = reply.send(outcome.and(Err(AppendError::Store(error.clone()))));
                    }
                }
            }
        }
        for envelopes in published {
            // Nobody listening is not an error: subscribers catch up from the store.
            let _ = tail.send(Arc::from(envelopes));
        }
    }
}

fn answer(replies: Vec<Reply>) {
    for (reply, outcome) in replies {
        // A caller that went away does not undo the append; its command id still holds.
        let _ = reply.send(outcome);
    }
}

/// The writer's own record of stream versions: it is the only writer, so what it applied is
/// exact. Bounded; when full it forgets everything and reads versions from the store again.
struct StreamHeads {
    versions: HashMap<String, u64>,
    entries_max: usize,
}

impl StreamHeads {
    fn new(entries_max: usize) -> StreamHeads {
        StreamHeads {
            versions: HashMap::new(),
            entries_max,
        }
    }

    fn get(&self, stream: &str) -> Option<u64> {
        self.versions.get(stream).copied()
    }

    fn remember(&mut self, applied: HashMap<String, u64>) {
        if self.versions.len() + applied.len() > self.entries_max {
            self.versions.clear();
        }
        self.versions.extend(applied);
    }

    fn clear(&mut self) {
        self.versions.clear();
    }
}

/// What a group reads of the store as it admits commands: a command id's first outcome and a
/// stream's version, as committed before the group (the group keeps its own changes).
pub(crate) trait GroupReads {
    /// A command id's first outcome, and the fingerprint of the request that had it.
    fn first_outcome(
        &self,
        command_id: &str,
    ) -> Result<Option<(Appended, Option<Fingerprint>)>, StoreError>;

    fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;
}

/// The single writer's reads: its backend, and the stream versions it remembers applying.
struct Stored<'a, B: Backend> {
    backend: &'a B,
    heads: &'a StreamHeads,
}

impl<B: Backend> GroupReads for Stored<'_, B> {
    fn first_outcome(
        &self,
        command_id: &str,
    ) -> Result<Option<(Appended, Option<Fingerprint>)>, StoreError> {
        let Some(stored) = self.backend.get(&keys::command(command_id))? else {
            return Ok(None);
        };
        decode_outcome(self.backend, command_id, &stored).map(Some)
    }

    fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        if let Some(version) = self.heads.get(stream) {
            return Ok(version);
        }
        // The stream's last index entry holds its head version: no separate record to keep.
        let last = self.backend.scan(
            &keys::stream_prefix(stream),
            &keys::stream_version(stream, u64::MAX),
            1,
            true,
        )?;
        match last.first() {
            None => Ok(0),
            Some((key, _)) => keys::stream_version_of(key)
                .ok_or_else(|| StoreError::corrupt(0, format!("the index of stream {stream}"))),
        }
    }
}

/// One group being assembled: what it writes, and an overlay of what it changed so that
/// later commands in the group see earlier ones.
pub(crate) struct Group<'a, R: GroupReads> {
    reads: R,
    limits: &'a Limits,
    chain: ChainHead,
    /// The index entries and command outcomes; the events themselves are in `stored`.
    writes: Vec<Entry>,
    envelopes: Vec<Envelope>,
    /// The stored JSON of each of `envelopes`, packed into runs when the group is applied.
    stored: Vec<Vec<u8>>,
    stream_heads: HashMap<String, u64>,
    /// Indices into `envelopes` of each stream's events in this group.
    uncommitted: HashMap<String, Vec<usize>>,
    commands: HashMap<String, (Appended, Option<Fingerprint>)>,
    appends: u64,
    /// Each admitted command's caller and outcome, answered once the group is durable.
    replies: Vec<Reply>,
}

impl<'a, R: GroupReads> Group<'a, R> {
    pub fn new(reads: R, limits: &'a Limits, chain: ChainHead) -> Group<'a, R> {
        Group {
            reads,
            limits,
            chain,
            writes: Vec::new(),
            envelopes: Vec::new(),
            stored: Vec::new(),
            stream_heads: HashMap::new(),
            uncommitted: HashMap::new(),
            commands: HashMap::new(),
            appends: 0,
            replies: Vec::new(),
        }
    }

    pub fn finish(self) -> Admitted {
        Admitted {
            replies: self.replies,
            envelopes: self.envelopes,
            stored: self.stored,
            writes: self.writes,
            commands: self.commands,
            stream_heads: self.stream_heads,
            head: self.chain,
            appends: self.appends,
        }
    }

    pub fn admit_job(&mut self, job: Job) {
        let outcome = self.admit(job.request);
        self.replies.push((job.reply, outcome));
    }

    fn admit(&mut self, mut request: AppendRequest) -> Result<Appended, AppendError> {
        validate_name("stream", &request.stream, self.limits.stream_bytes_max)?;
        validate_name(
            "command id",
            &request.command_id,
            self.limits.stream_bytes_max,
        )?;
        if let Some((first, fingerprint)) = self.first_outcome(&request.command_id)? {
            // A first outcome kept without a fingerprint (older logs, imports) is given back:
            // nothing tells the two requests apart.
            if let (Some(given), Some(kept)) = (request.fingerprint, fingerprint) {
                if given != kept {
                    return Err(AppendError::Reused {
                        command_id: request.command_id,
                    });
                }
            }
            return Ok(first);
        }
        let current = self.stream_version(&request.stream)?;
        if !request.expected.admits(current) {
            return Err(AppendError::Conflict {
                stream: request.stream,
                expected: request.expected,
                actual: current,
            });
        }
        let proposal = std::mem::replace(&mut request.proposal, Proposal::Events(Vec::new()));
        let events = match proposal {
            Proposal::Events(events) => events,
            Proposal::Decide(decide) => {
                let indices = self
                    .uncommitted
                    .get(&request.stream)
                    .map_or(&[][..], Vec::as_slice);
                let uncommitted: Vec<&Envelope> =
                    indices.iter().map(|&i| &self.envelopes[i]).collect();
                let view = StreamView {
                    stream: &request.stream,
                    version: current,
                    uncommitted: &uncommitted,
                    occurred_at: self.chain.stamp(request.occurred_at),
                };
                decide.decide(view).map_err(AppendError::Rejected)?
            }
        };
        if events.len() > self.limits.events_per_append_max {
            return Err(StoreError::Invalid(format!(
                "{} events in one append, more than the limit of {}",
                events.len(),
                self.limits.events_per_append_max
            ))
            .into());
        }
        if events.is_empty() {
            return Ok(Appended {
                stream: request.stream,
                version: current,
                position: self.chain.position,
                events: 0,
                duplicate: false,
            });
        }
        // Build everything first, so a request that fails half-way leaves the group untouched.
        let mut chain = self.chain;
        let mut built = Vec::with_capacity(events.len());
        for (offset, event) in (1u64..).zip(events) {
            let envelope = seal(&request, event, current + offset, &mut chain);
            let bytes = envelope
                .stored_json()
                .map_err(|e| StoreError::Invalid(e.to_string()))?;
            if bytes.len() > self.limits.event_bytes_max {
                return Err(StoreError::Invalid(format!(
                    "an event of {} bytes, more than the limit of {}",
                    bytes.len(),
                    self.limits.event_bytes_max
                ))
                .into());
            }
            built.push((envelope, bytes));
        }
        let count = u64::try_from(built.len()).unwrap_or(u64::MAX);
        let outcome = Appended {
            stream: request.stream.clone(),
            version: current + count,
            position: chain.position,
            events: count,
            duplicate: false,
        };
        for (envelope, bytes) in built {
            self.stored.push(bytes);
            self.writes.push((
                keys::stream_version(&envelope.stream, envelope.version),
                envelope.position.to_be_bytes().to_vec(),
            ));
            self.uncommitted
                .entry(request.stream.clone())
                .or_default()
                .push(self.envelopes.len());
            self.envelopes.push(envelope);
        }
        self.chain = chain;
        self.stream_heads.insert(request.stream, outcome.version);
        let stored = encode_outcome(&outcome, request.fingerprint)?;
        self.writes
            .push((keys::command(&request.command_id), stored));
        self.commands
            .insert(request.command_id, (outcome.clone(), request.fingerprint));
        self.appends += 1;
        Ok(outcome)
    }

    /// A command id's first outcome (this group's, else the store's), marked a duplicate,
    /// and the fingerprint of the request that had it.
    fn first_outcome(
        &self,
        command_id: &str,
    ) -> Result<Option<(Appended, Option<Fingerprint>)>, StoreError> {
        let first = match self.commands.get(command_id) {
            Some(kept) => Some(kept.clone()),
            None => self.reads.first_outcome(command_id)?,
        };
        Ok(first.map(|(outcome, fingerprint)| {
            let first = Appended {
                duplicate: true,
                ..outcome
            };
            (first, fingerprint)
        }))
    }

    fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        match self.stream_heads.get(stream) {
            Some(version) => Ok(*version),
            None => self.reads.stream_version(stream),
        }
    }
}

/// What an append's request was, as its caller digested it (`AppendRequest::fingerprint`).
pub(crate) type Fingerprint = [u8; 32];

/// The first outcome of a command as stored under its id: `1 ‖ position ‖ version ‖ events`,
/// big-endian, the events as 32 bits; or, for a request with a fingerprint, `2 ‖ the same ‖
/// fingerprint`. 21 bytes, so sled keeps the value inline instead of allocating it (only a
/// request with an `Idempotency-Key` pays for its 53), and no JSON on the writer's thread. The stream is not stored: it is the stream of the
/// event at `position`, read back on the rare duplicate.
pub(crate) fn encode_outcome(
    outcome: &Appended,
    fingerprint: Option<Fingerprint>,
) -> Result<Vec<u8>, StoreError> {
    let Ok(events) = u32::try_from(outcome.events) else {
        // More events than any limit allows: the general form still holds it (without a
        // fingerprint, which then checks nothing).
        return serde_json::to_vec(outcome).map_err(|e| StoreError::Invalid(e.to_string()));
    };
    let mut bytes = Vec::with_capacity(OUTCOME_FINGERPRINTED_BYTES);
    bytes.push(if fingerprint.is_some() {
        OUTCOME_FINGERPRINTED
    } else {
        OUTCOME_BINARY
    });
    bytes.extend_from_slice(&outcome.position.to_be_bytes());
    bytes.extend_from_slice(&outcome.version.to_be_bytes());
    bytes.extend_from_slice(&events.to_be_bytes());
    if let Some(fingerprint) = fingerprint {
        bytes.extend_from_slice(&fingerprint);
    }
    Ok(bytes)
}

const OUTCOME_BINARY: u8 = 1;
const OUTCOME_BYTES: usize = 21;
const OUTCOME_FINGERPRINTED: u8 = 2;
const OUTCOME_FINGERPRINTED_BYTES: usize = OUTCOME_BYTES + 32;

/// Reads a stored outcome back: the binary form, or the JSON form older logs hold. Checks that
/// the event it names belongs to the command, the pair of the write in `encode_outcome`.
pub(crate) fn decode_outcome<B: Backend>(
    backend: &B,
    command_id: &str,
    stored: &[u8],
) -> Result<(Appended, Option<Fingerprint>), StoreError> {
    let corrupt =
        |what: &str| StoreError::corrupt(0, format!("the outcome of command {command_id}: {what}"));
    let fingerprint = match stored.first() {
        Some(&OUTCOME_BINARY) if stored.len() == OUTCOME_BYTES => None,
        Some(&OUTCOME_FINGERPRINTED) if stored.len() == OUTCOME_FINGERPRINTED_BYTES => {
            let mut fingerprint = [0u8; 32];
            fingerprint.copy_from_slice(&stored[OUTCOME_BYTES..]);
            Some(fingerprint)
        }
        Some(&(OUTCOME_BINARY | OUTCOME_FINGERPRINTED)) => {
            return Err(corrupt("a binary outcome of the wrong length"))
        }
        _ => {
            let outcome = serde_json::from_slice(stored).map_err(|e| corrupt(&e.to_string()))?;
            return Ok((outcome, None));
        }
    };
    let position = keys::decode_u64(&stored[1..9]).ok_or_else(|| corrupt("its position"))?;
    let version = keys::decode_u64(&stored[9..17]).ok_or_else(|| corrupt("its version"))?;
    let events = stored
        .get(17..21)
        .and_then(|raw| <[u8; 4]>::try_from(raw).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| corrupt("its event count"))?;
    let envelope = stored::read_event(backend, position)?;
    if envelope.command_id != command_id || envelope.version != version {
        return Err(StoreError::corrupt(
            position,
            format!("the event named by the outcome of command {command_id} is not its last"),
        ));
    }
    let outcome = Appended {
        stream: envelope.stream,
        version,
        position,
        events: u64::from(events),
        duplicate: false,
    };
    Ok((outcome, fingerprint))
}

/// Gives an event its place in the log and links it into the chain, at the request's time or,
/// when the log already holds a later one, at that: times rise with positions.
fn seal(request: &AppendRequest, event: NewEvent, version: u64, chain: &mut ChainHead) -> Envelope {
    let occurred_at = chain.stamp(request.occurred_at);
    let mut envelope = Envelope {
        position: chain.position + 1,
        stream: request.stream.clone(),
        version,
        event_id: event.event_id,
        event_type: event.event_type,
        schema: event.schema,
        occurred_at,
        actor: request.actor.clone(),
        command_id: request.command_id.clone(),
        correlation_id: request.correlation_id.clone(),
        data: event.data,
        prev_hash: chain.hash,
        hash: Hash::GENESIS,
    };
    envelope.hash = envelope.compute_hash();
    *chain = ChainHead {
        position: envelope.position,
        hash: envelope.hash,
        latest: occurred_at,
    };
    envelope
}

/// Stream names and command ids become parts of keys: no NUL (the key separator), no control
/// characters, not empty, bounded.
pub(crate) fn validate_name(what: &str, name: &str, bytes_max: usize) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > bytes_max || name.chars().any(char::is_control) {
        return Err(StoreError::Invalid(format!(
            "a {what} is 1 to {bytes_max} bytes without control characters"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::envelope::Timestamp;

    fn stored_event(backend: &MemoryBackend, command_id: &str) -> Envelope {
        let mut envelope = Envelope {
            position: 7,
            stream: "resource:space/spc_42".into(),
            version: 3,
            event_id: "01JD0000000000000000000000".into(),
            event_type: "MemberAdded".into(),
            schema: 1,
            occurred_at: Timestamp(1_763_769_600_123),
            actor: "admin".into(),
            command_id: command_id.into(),
            correlation_id: command_id.into(),
            data: serde_json::json!({"principal": "bob"}),
            prev_hash: Hash::GENESIS,
            hash: Hash::GENESIS,
        };
        envelope.hash = envelope.compute_hash();
        let bytes = envelope.stored_json().expect("stored");
        backend
            .apply(vec![(keys::event(7), bytes)])
            .expect("applies");
        envelope
    }

    fn outcome() -> Appended {
        Appended {
            stream: "resource:space/spc_42".into(),
            version: 3,
            position: 7,
            events: 2,
            duplicate: false,
        }
    }

    #[test]
    fn a_binary_outcome_is_inline_sized_and_reads_back_with_its_stream() {
        let backend = MemoryBackend::default();
        stored_event(&backend, "c1");
        let bytes = encode_outcome(&outcome(), None).expect("encodes");
        assert!(bytes.len() <= 22, "sled keeps values up to 22 bytes inline");
        assert_eq!(
            decode_outcome(&backend, "c1", &bytes).expect("decodes"),
            (outcome(), None)
        );
        let print = Some([7u8; 32]);
        let bytes = encode_outcome(&outcome(), print).expect("encodes");
        assert_eq!(
            decode_outcome(&backend, "c1", &bytes).expect("decodes"),
            (outcome(), print)
        );
    }

    #[test]
    fn the_json_outcomes_of_older_logs_still_read() {
        let backend = MemoryBackend::default();
        let json = serde_json::to_vec(&outcome()).expect("json");
        assert_eq!(
            decode_outcome(&backend, "c1", &json).expect("decodes"),
            (outcome(), None)
        );
    }

    #[test]
    fn an_outcome_naming_another_commands_event_is_corrupt() {
        let backend = MemoryBackend::default();
        stored_event(&backend, "someone-else");
        let bytes = encode_outcome(&outcome(), None).expect("encodes");
        assert!(matches!(
            decode_outcome(&backend, "c1", &bytes),
            Err(StoreError::Corrupt { position: 7, .. })
        ));
    }
}
