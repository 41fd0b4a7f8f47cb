//! What the engine learns from a store shared with other nodes (PostgreSQL): their events
//! fold into the cached stream states and move the number sequence on, before this node's
//! writer decides anything, so a decision reads what any node decided.

use std::sync::Arc;

use roster_domain::NumberSequence;
use roster_eventstore::{Catchup, Envelope};

use crate::cache::{lock, StateCache};
use crate::decode;

/// The engine's side of [`Catchup`]: its cache of stream states and its number sequence.
pub(crate) struct EngineCatchup {
    pub cache: Arc<StateCache>,
    pub numbers: Arc<NumberSequence>,
}

impl Catchup for EngineCatchup {
    fn appended(&self, events: &[Envelope]) {
        for envelope in events {
            let Ok(event) = decode(envelope) else {
                // Unreadable here: whatever state holds this stream is loaded again from
                // the log, which reports what is wrong with it.
                self.cache.invalidate(&envelope.stream);
                continue;
            };
            if let Some(number) = event.new_number() {
                self.numbers.advance_past(number);
            }
            let Some(entry) = self.cache.get(&envelope.stream) else {
                continue;
            };
            let mut cached = lock(&entry);
            if envelope.version <= cached.version {
                // Already in the state: this node's own decision, or loaded after it.
                continue;
            }
            if envelope.version == cached.version + 1 && cached.valid {
                cached.state.apply(&event);
                cached.version += 1;
                cached.latest_ms = cached.latest_ms.max(envelope.occurred_at.0);
            } else {
                drop(cached);
                self.cache.invalidate(&envelope.stream);
            }
        }
    }

    fn rolled_back(&self, streams: &[String]) {
        for stream in streams {
            self.cache.invalidate(stream);
        }
    }
}
