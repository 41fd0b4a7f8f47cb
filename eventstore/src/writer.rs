//! The single writer: group commit of concurrent appends into one atomic batch and one sync.
//!
//! It runs on its own OS thread because sled's flush and `fdatasync` block. Commands queue
//! while a group is being synced, so the next group is as large as the load: under load many
//! commands share one sync, at rest a lone command pays one sync and no waiting.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::append::{AppendRequest, Appended, Proposal, StreamView};
use crate::backend::{keys, Backend, Entry};
use crate::envelope::{Envelope, Hash, NewEvent};
use crate::error::{AppendError, StoreError};
use crate::log::{ChainHead, Limits, Shared};

pub(crate) struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// Runs until every sender is dropped, then makes everything durable and returns.
pub(crate) fn run<B: Backend>(
    shared: Arc<Shared<B>>,
    mut jobs: mpsc::Receiver<Job>,
    tail: broadcast::Sender<Arc<[Envelope]>>,
    mut chain: ChainHead,
) {
    let batch_max = shared.limits.group_commands_max.max(1);
    let mut group_jobs = Vec::with_capacity(batch_max);
    while let Some(first) = jobs.blocking_recv() {
        group_jobs.push(first);
        while group_jobs.len() < batch_max {
            match jobs.try_recv() {
                Ok(job) => group_jobs.push(job),
                Err(_) => break,
            }
        }
        chain = commit_group(&shared, &tail, chain, group_jobs.drain(..));
    }
    if let Err(error) = shared.backend.close() {
        tracing::error!(%error, "the log could not be made durable on close");
    }
}

fn commit_group<B: Backend>(
    shared: &Shared<B>,
    tail: &broadcast::Sender<Arc<[Envelope]>>,
    chain: ChainHead,
    jobs: impl Iterator<Item = Job>,
) -> ChainHead {
    let mut group = Group::new(&shared.backend, &shared.limits, chain);
    let mut replies = Vec::new();
    for job in jobs {
        let outcome = group.admit(job.request);
        replies.push((job.reply, outcome));
    }
    if group.writes.is_empty() {
        answer(replies);
        return chain;
    }
    let next = group.chain;
    let envelopes = std::mem::take(&mut group.envelopes);
    let mut writes = std::mem::take(&mut group.writes);
    writes.push((keys::CHAIN_HEAD.to_vec(), next.to_bytes()));
    let committed = shared.backend.apply(writes).and_then(|()| shared.backend.sync());
    match committed {
        Ok(()) => {
            shared.visible_head.store(next.position, Ordering::Release);
            answer(replies);
            // Nobody listening is not an error: subscribers catch up from the store.
            let _ = tail.send(Arc::from(envelopes));
            next
        }
        Err(error) => {
            tracing::error!(%error, "a group commit failed; its commands were not acknowledged");
            for (reply, outcome) in replies {
                let _ = reply.send(outcome.and(Err(AppendError::Store(error.clone()))));
            }
            // The batch is atomic: either it is in the store (only the sync failed) or not at
            // all. The stored chain head says which, so start the next group from it.
            match ChainHead::load(&shared.backend) {
                Ok(stored) => stored,
                Err(_) => chain,
            }
        }
    }
}

fn answer(replies: Vec<(oneshot::Sender<Result<Appended, AppendError>>, Result<Appended, AppendError>)>) {
    for (reply, outcome) in replies {
        // A caller that went away does not undo the append; its command id still holds.
        let _ = reply.send(outcome);
    }
}

/// One group being assembled: what it writes, and an overlay of what it changed so that
/// later commands in the group see earlier ones.
struct Group<'a, B: Backend> {
    backend: &'a B,
    limits: &'a Limits,
    chain: ChainHead,
    writes: Vec<Entry>,
    envelopes: Vec<Envelope>,
    stream_heads: HashMap<String, u64>,
    uncommitted: HashMap<String, Vec<Envelope>>,
    commands: HashMap<String, Appended>,
}

impl<'a, B: Backend> Group<'a, B> {
    fn new(backend: &'a B, limits: &'a Limits, chain: ChainHead) -> Group<'a, B> {
        Group {
            backend,
            limits,
            chain,
            writes: Vec::new(),
            envelopes: Vec::new(),
            stream_heads: HashMap::new(),
            uncommitted: HashMap::new(),
            commands: HashMap::new(),
        }
    }

    fn admit(&mut self, mut request: AppendRequest) -> Result<Appended, AppendError> {
        validate_name("stream", &request.stream, self.limits.stream_bytes_max)?;
        validate_name("command id", &request.command_id, self.limits.stream_bytes_max)?;
        if let Some(first) = self.first_outcome(&request.command_id)? {
            return Ok(first);
        }
        let current = self.stream_version(&request.stream)?;
        if !request.expected.admits(current) {
            return Err(AppendError::Conflict { stream: request.stream, expected: request.expected, actual: current });
        }
        let proposal = std::mem::replace(&mut request.proposal, Proposal::Events(Vec::new()));
        let events = match proposal {
            Proposal::Events(events) => events,
            Proposal::Decide(decide) => {
                let uncommitted = self.uncommitted.get(&request.stream).map_or(&[][..], Vec::as_slice);
                let view = StreamView { stream: &request.stream, version: current, uncommitted };
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
            let bytes = serde_json::to_vec(&envelope).map_err(|e| StoreError::Invalid(e.to_string()))?;
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
            self.writes.push((keys::event(envelope.position), bytes));
            self.writes.push((
                keys::stream_version(&envelope.stream, envelope.version),
                envelope.position.to_be_bytes().to_vec(),
            ));
            self.uncommitted.entry(envelope.stream.clone()).or_default().push(envelope.clone());
            self.envelopes.push(envelope);
        }
        self.chain = chain;
        self.writes.push((keys::stream_head(&request.stream), outcome.version.to_be_bytes().to_vec()));
        self.stream_heads.insert(request.stream, outcome.version);
        let stored = serde_json::to_vec(&outcome).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.writes.push((keys::command(&request.command_id), stored));
        self.commands.insert(request.command_id, outcome.clone());
        Ok(outcome)
    }

    fn first_outcome(&self, command_id: &str) -> Result<Option<Appended>, StoreError> {
        if let Some(outcome) = self.commands.get(command_id) {
            return Ok(Some(Appended { duplicate: true, ..outcome.clone() }));
        }
        let Some(stored) = self.backend.get(&keys::command(command_id))? else {
            return Ok(None);
        };
        let outcome: Appended = serde_json::from_slice(&stored)
            .map_err(|e| StoreError::corrupt(0, format!("the outcome of command {command_id}: {e}")))?;
        Ok(Some(Appended { duplicate: true, ..outcome }))
    }

    fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        if let Some(version) = self.stream_heads.get(stream) {
            return Ok(*version);
        }
        match self.backend.get(&keys::stream_head(stream))? {
            None => Ok(0),
            Some(bytes) => keys::decode_u64(&bytes)
                .ok_or_else(|| StoreError::corrupt(0, format!("the head version of stream {stream}"))),
        }
    }
}

/// Gives an event its place in the log and links it into the chain.
fn seal(request: &AppendRequest, event: NewEvent, version: u64, chain: &mut ChainHead) -> Envelope {
    let mut envelope = Envelope {
        position: chain.position + 1,
        stream: request.stream.clone(),
        version,
        event_id: event.event_id,
        event_type: event.event_type,
        schema: event.schema,
        occurred_at: request.occurred_at,
        actor: request.actor.clone(),
        command_id: request.command_id.clone(),
        correlation_id: request.correlation_id.clone(),
        data: event.data,
        prev_hash: chain.hash,
        hash: Hash::GENESIS,
    };
    envelope.hash = envelope.compute_hash();
    *chain = ChainHead { position: envelope.position, hash: envelope.hash };
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
