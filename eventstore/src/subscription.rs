//! The live tail: catch up from the store, then follow the writer, with no gap and no duplicate.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError};

use crate::envelope::Envelope;
use crate::error::StoreError;

/// Events committed after a position, as the store reads them.
#[async_trait::async_trait]
pub trait ReadAll: Send + Sync {
    async fn read_after(&self, after: u64, limit: usize) -> Result<Vec<Envelope>, StoreError>;
}

const PAGE_EVENTS: usize = 1024;

/// Every event after a position, in order, then each new one as it is committed.
///
/// The receiver of the writer's broadcast is taken before the first read, so an event is
/// either already in the store when it reads, or in the receiver after; the next expected
/// position filters the overlap. When the receiver lags, the store fills the gap.
pub struct Subscription {
    reader: Arc<dyn ReadAll>,
    live: broadcast::Receiver<Arc<[Envelope]>>,
    next_position: u64,
    buffer: VecDeque<Envelope>,
}

impl Subscription {
    pub fn new(
        reader: Arc<dyn ReadAll>,
        live: broadcast::Receiver<Arc<[Envelope]>>,
        after: u64,
    ) -> Subscription {
        Subscription {
            reader,
            live,
            next_position: after.saturating_add(1),
            buffer: VecDeque::new(),
        }
    }

    /// The next event; waits for one when caught up. Fails when the store fails or closes.
    pub async fn next(&mut self) -> Result<Envelope, StoreError> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.next_position = envelope.position + 1;
                return Ok(envelope);
            }
            let page = self
                .reader
                .read_after(self.next_position - 1, PAGE_EVENTS)
                .await?;
            if !page.is_empty() {
                self.buffer.extend(page);
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    let fresh = batch.iter().filter(|e| e.position >= self.next_position);
                    let contiguous = batch
                        .first()
                        .is_none_or(|e| e.position <= self.next_position);
                    // A batch that starts past the next position means one was missed: the
                    // loop reads it from the store instead.
                    if contiguous {
                        self.buffer.extend(fresh.cloned());
                    }
                }
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return Err(StoreError::Closed),
            }
        }
    }

    /// At least one event, waiting for it, and then every event already at hand, up to `max`:
    /// for consumers that work in batches (a projector writes one batch per call).
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Envelope>, StoreError> {
        let mut batch = vec![self.next().await?];
        while batch.len() < max {
            if self.buffer.is_empty() {
                let more = self
                    .reader
                    .read_after(self.next_position - 1, max - batch.len())
                    .await?;
                if more.is_empty() {
                    break;
                }
                self.buffer.extend(more);
            }
            match self.buffer.pop_front() {
                Some(envelope) => {
                    self.next_position = envelope.position + 1;
                    batch.push(envelope);
                }
                None => break,
            }
        }
        Ok(batch)
    }

    /// The position the next event will have.
    pub fn next_position(&self) -> u64 {
        self.next_position
    }
}
