//! Writing a verified sequence of envelopes into an empty log, as `roster import` does.
//!
//! The envelopes keep their positions and hashes: an import reproduces the exported log
//! exactly, chain included. The caller verifies the whole sequence first (with
//! `ChainChecker`), so a bad file is refused before anything is written; this checks again
//! as it writes, because it must never write a broken chain whatever it is handed.

use crate::append::Appended;
use crate::backend::{keys, Backend, Entry};
use crate::envelope::{Envelope, Timestamp};
use crate::error::StoreError;
use crate::log::ChainHead;
use crate::verify::ChainChecker;
use crate::writer::encode_outcome;

const BATCH_EVENTS: usize = 4096;

/// Writes `envelopes` into `backend`, which must hold no event. Returns the events written.
pub(crate) fn import_into<B: Backend>(
    backend: &B,
    envelopes: &mut dyn Iterator<Item = Result<Envelope, StoreError>>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, StoreError> {
    if ChainHead::load(backend)?.position != 0 {
        return Err(StoreError::Invalid("import needs an empty log".into()));
    }
    let mut checker = ChainChecker::new();
    let mut writes: Vec<Entry> = Vec::new();
    // The stored JSON of the events since the last batch, packed into runs as the writer does.
    let mut stored: Vec<Vec<u8>> = Vec::new();
    let mut command: Option<Appended> = None;
    let mut command_id = String::new();
    let mut last_hash = crate::envelope::Hash::GENESIS;
    for envelope in envelopes {
        let envelope = envelope?;
        checker
            .check(&envelope)
            .map_err(|e| StoreError::corrupt(e.position, e.reason))?;
        // Consecutive events of one command in one stream were one append: one outcome.
        let same_command = command
            .as_ref()
            .is_some_and(|c| command_id == envelope.command_id && c.stream == envelope.stream);
        if same_command {
            if let Some(outcome) = command.as_mut() {
                outcome.version = envelope.version;
                outcome.position = envelope.position;
                outcome.events += 1;
            }
        } else {
            if let Some(outcome) = command.take() {
                writes.push(command_record(&command_id, &outcome)?);
            }
            command_id.clone_from(&envelope.command_id);
            command = Some(Appended {
                stream: envelope.stream.clone(),
                version: envelope.version,
                position: envelope.position,
                events: 1,
                duplicate: false,
            });
        }
        let bytes = envelope
            .stored_json()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        writes.push((
            keys::stream_version(&envelope.stream, envelope.version),
            envelope.position.to_be_bytes().to_vec(),
        ));
        stored.push(bytes);
        last_hash = envelope.hash;
        if stored.len() >= BATCH_EVENTS {
            flush(
                backend,
                &mut writes,
                &mut stored,
                ChainHead {
                    position: checker.position(),
                    hash: last_hash,
                    latest: Timestamp(i64::MIN),
                },
            )?;
            progress(checker.position());
        }
    }
    if let Some(outcome) = command.take() {
        writes.push(command_record(&command_id, &outcome)?);
    }
    flush(
        backend,
        &mut writes,
        &mut stored,
        ChainHead {
            position: checker.position(),
            hash: last_hash,
            latest: Timestamp(i64::MIN),
        },
    )?;
    backend.close()?;
    progress(checker.position());
    Ok(checker.position())
}

fn command_record(command_id: &str, outcome: &Appended) -> Result<Entry, StoreError> {
    // An export carries no fingerprints: a repeated key after an import gets its first
    // outcome back whatever the request.
    Ok((keys::command(command_id), encode_outcome(outcome, None)?))
}

/// Writes the batch so far; `stored` holds the events up to and including `head`.
fn flush<B: Backend>(
    backend: &B,
    writes: &mut Vec<Entry>,
    stored: &mut Vec<Vec<u8>>,
    head: ChainHead,
) -> Result<(), StoreError> {
    if head.position == 0 {
        return Ok(());
    }
    let mut batch = std::mem::take(writes);
    let events = std::mem::take(stored);
    let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
    batch.extend(crate::stored::pack(head.position + 1 - count, events));
    // Each batch moves the chain head with it, so an interrupted import leaves a consistent
    // (shorter) log, never one whose head names a missing event.
    batch.push((keys::CHAIN_HEAD.to_vec(), head.to_bytes()));
    backend.apply(batch)
}
