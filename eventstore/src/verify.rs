//! Checks a whole log: positions gap-free from 1, stream versions contiguous from 1, every
//! hash recomputed and chained. Written against the trait, so it checks any store.

use std::collections::HashMap;

use crate::envelope::Hash;
use crate::error::StoreError;
use crate::EventStore;

/// What an intact log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub events: u64,
    pub streams: u64,
    pub head_hash: Hash,
}

/// The first bad event, by position, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {position}: {reason}")]
pub struct VerifyError {
    pub position: u64,
    pub reason: String,
}

const PAGE_EVENTS: usize = 4096;

pub async fn verify(store: &dyn EventStore) -> Result<VerifyReport, VerifyError> {
    verify_with_progress(store, &mut |_| {}).await
}

/// As `verify`, calling `progress` with the last position checked after each page.
pub async fn verify_with_progress(
    store: &dyn EventStore,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<VerifyReport, VerifyError> {
    let head = store.head();
    let mut versions: HashMap<String, u64> = HashMap::new();
    let mut previous = Hash::GENESIS;
    let mut position = 0u64;
    while position < head {
        let page = store.read_all(position, PAGE_EVENTS).await.map_err(|e| from_store(e, position + 1))?;
        if page.is_empty() {
            return Err(VerifyError { position: position + 1, reason: "missing event".into() });
        }
        for envelope in page {
            let expected = position + 1;
            let bad = |reason: String| VerifyError { position: expected, reason };
            if envelope.position != expected {
                return Err(bad(format!("found position {} where {expected} belongs", envelope.position)));
            }
            if envelope.prev_hash != previous {
                return Err(bad("prev_hash does not match the previous event's hash".into()));
            }
            if envelope.compute_hash() != envelope.hash {
                return Err(bad("the hash does not match the envelope: it was edited".into()));
            }
            let version = versions.entry(envelope.stream.clone()).or_insert(0);
            if envelope.version != *version + 1 {
                return Err(bad(format!(
                    "stream {} jumps from version {} to {}",
                    envelope.stream, version, envelope.version
                )));
            }
            *version = envelope.version;
            previous = envelope.hash;
            position = expected;
        }
        progress(position);
    }
    for (stream, counted) in &versions {
        let indexed = store.stream_version(stream).await.map_err(|e| from_store(e, position))?;
        if indexed != *counted {
            return Err(VerifyError {
                position,
                reason: format!("stream {stream} is indexed at version {indexed} but holds {counted} events"),
            });
        }
    }
    Ok(VerifyReport { events: position, streams: u64::try_from(versions.len()).unwrap_or(u64::MAX), head_hash: previous })
}

fn from_store(error: StoreError, position: u64) -> VerifyError {
    match error {
        StoreError::Corrupt { position, reason } => VerifyError { position, reason },
        other => VerifyError { position, reason: other.to_string() },
    }
}
