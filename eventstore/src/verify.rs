//! Checks a whole log: positions gap-free from 1, stream versions contiguous from 1, every
//! hash recomputed and chained. The same checker serves `verify` (over any store, through the
//! trait) and `import` (over an export file, before anything is written).

use std::collections::HashMap;

use crate::envelope::{Envelope, Hash};
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

/// Checks envelopes one at a time, in log order, from position 1.
#[derive(Debug, Default)]
pub struct ChainChecker {
    versions: HashMap<String, u64>,
    previous: Hash,
    position: u64,
}

impl ChainChecker {
    pub fn new() -> ChainChecker {
        ChainChecker::default()
    }

    /// Checks the next envelope against everything before it.
    pub fn check(&mut self, envelope: &Envelope) -> Result<(), VerifyError> {
        let expected = self.position + 1;
        let bad = |reason: String| VerifyError {
            position: expected,
            reason,
        };
        if envelope.position != expected {
            return Err(bad(format!(
                "found position {} where {expected} belongs",
                envelope.position
            )));
        }
        if envelope.prev_hash != self.previous {
            return Err(bad(
                "prev_hash does not match the previous event's hash".into()
            ));
        }
        if envelope.compute_hash() != envelope.hash {
            return Err(bad(
                "the hash does not match the envelope: it was edited".into()
            ));
        }
        let version = self.versions.entry(envelope.stream.clone()).or_insert(0);
        if envelope.version != *version + 1 {
            return Err(bad(format!(
                "stream {} jumps from version {} to {}",
                envelope.stream, version, envelope.version
            )));
        }
        *version = envelope.version;
        self.previous = envelope.hash;
        self.position = expected;
        Ok(())
    }

    /// The last position checked.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Each stream's version so far.
    pub fn stream_versions(&self) -> &HashMap<String, u64> {
        &self.versions
    }

    pub fn report(&self) -> VerifyReport {
        VerifyReport {
            events: self.position,
            streams: u64::try_from(self.versions.len()).unwrap_or(u64::MAX),
            head_hash: self.previous,
        }
    }
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
    let mut checker = ChainChecker::new();
    while checker.position() < head {
        let after = checker.position();
        let page = store
            .read_all(after, PAGE_EVENTS)
            .await
            .map_err(|e| from_store(e, after + 1))?;
        if page.is_empty() {
            return Err(VerifyError {
                position: after + 1,
                reason: "missing event".into(),
            });
        }
        for envelope in &page {
            checker.check(envelope)?;
        }
        progress(checker.position());
    }
    for (stream, counted) in checker.stream_versions() {
        let indexed = store
            .stream_version(stream)
            .await
            .map_err(|e| from_store(e, head))?;
        if indexed != *counted {
            return Err(VerifyError {
                position: head,
                reason: format!(
                    "stream {stream} is indexed at version {indexed} but holds {counted} events"
                ),
            });
        }
    }
    Ok(checker.report())
}

fn from_store(error: StoreError, position: u64) -> VerifyError {
    match error {
        StoreError::Corrupt { position, reason } => VerifyError { position, reason },
        other => VerifyError {
            position,
            reason: other.to_string(),
        },
    }
}
