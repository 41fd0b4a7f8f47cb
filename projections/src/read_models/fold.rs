//! Folding events into every read model a chunk at a time: each model keeps one batch open
//! across many pages of the log, so a row changed by many events (a link's uses, a resource's
//! member count) is kept typed in memory and written once per chunk, and each page of rows is
//! rewritten once per chunk rather than once per page of events.

use std::sync::atomic::Ordering;

use roster_domain::{Event, ResourceId, StreamId, Timestamp, EVENT_SCHEMA_VERSION};
use roster_eventstore::{Envelope, Upcasters};
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer};
use serde::de::{DeserializeSeed, MapAccess};
use serde::Deserialize;
use serde_json::Value;

use super::Model;
use crate::kv::Batch;
use crate::models::Fact;
use crate::ProjectionError;

/// An event decoded once for every model.
pub(super) struct Decoded {
    event: Event,
    resource: Option<ResourceId>,
    at: Timestamp,
}

/// Decodes an envelope's event, upcast to the current schema.
pub(super) fn decode(
    upcasters: &Upcasters,
    envelope: &Envelope,
) -> Result<Decoded, ProjectionError> {
    let bad = |reason: String| {
        ProjectionError::Corrupt(format!("position {}: {reason}", envelope.position))
    };
    let event = if envelope.schema == EVENT_SCHEMA_VERSION
        && !upcasters.has_step(&envelope.event_type, envelope.schema)
    {
        // The common case, read straight from the envelope's data: `from_parts` would copy
        // the data into a tagged object and serde would buffer it again before the variant.
        event_from_data(&envelope.event_type, &envelope.data).map_err(|e| {
            bad(format!(
                "the data of a {} does not decode: {e}",
                envelope.event_type
            ))
        })?
    } else {
        let (schema, data) =
            upcasters.upcast(&envelope.event_type, envelope.schema, envelope.data.clone());
        Event::from_parts(&envelope.event_type, schema, data).map_err(|e| bad(e.to_string()))?
    };
    // Paired with the writer, which names the event's own type in the envelope.
    if event.event_type() != envelope.event_type {
        return Err(bad(format!(
            "a {} in an envelope of type {}",
            event.event_type(),
            envelope.event_type
        )));
    }
    let resource = match StreamId::parse(&envelope.stream).map_err(|e| bad(e.to_string()))? {
        StreamId::Resource(resource) => Some(resource),
        _ => None,
    };
    let at =
        Timestamp::from_unix_ms(envelope.occurred_at.unix_ms()).map_err(|e| bad(e.to_string()))?;
    Ok(Decoded {
        event,
        resource,
        at,
    })
}

/// `Event`'s adjacently tagged form (`{"type": .., "data": ..}`) presented with the tag first,
/// over the envelope's data by reference.
struct Tagged<'v> {
    event_type: &'v str,
    data: &'v Value,
    next: u8,
}

impl<'v> MapAccess<'v> for Tagged<'v> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'v>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let key = match self.next {
            0 => "type",
            1 => "data",
            _ => return Ok(None),
        };
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'v>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        self.next = self.next.saturating_add(1);
        if self.next == 1 {
            seed.deserialize(BorrowedStrDeserializer::new(self.event_type))
        } else {
            seed.deserialize(self.data)
        }
    }
}

fn event_from_data(event_type: &str, data: &Value) -> Result<Event, serde_json::Error> {
    Event::deserialize(MapAccessDeserializer::new(Tagged {
        event_type,
        data,
        next: 0,
    }))
}

/// One open batch per model that still needs the events being folded.
pub(super) struct Fold<'m> {
    /// Per model: the model, its checkpoint when the fold began (it skips events at or below
    /// it), and its batch.
    batches: Vec<(&'m Model, u64, Batch<'m>)>,
    last: Option<u64>,
    events: usize,
}

impl<'m> Fold<'m> {
    pub(super) fn new(models: impl IntoIterator<Item = &'m Model>) -> Fold<'m> {
        Fold {
            batches: models
                .into_iter()
                .map(|m| {
                    (
                        m,
                        m.checkpoint.load(Ordering::Acquire),
                        Batch::new(m.tree.as_ref()),
                    )
                })
                .collect(),
            last: None,
            events: 0,
        }
    }

    /// Events folded so far.
    pub(super) fn events(&self) -> usize {
        self.events
    }

    /// Folds envelopes (in log order, after any folded before) into every model that has not
    /// applied them yet.
    pub(super) fn add(
        &mut self,
        envelopes: &[Envelope],
        decoded: &[Decoded],
    ) -> Result<(), ProjectionError> {
        for (envelope, decoded) in envelopes.iter().zip(decoded) {
            // Paired with the log's reads: positions only go forward.
            if self.last.is_some_and(|last| envelope.position <= last) {
                return Err(ProjectionError::Corrupt(format!(
                    "position {} folded after {:?}",
                    envelope.position, self.last
                )));
            }
            let fact = Fact {
                envelope,
                event: &decoded.event,
                resource: decoded.resource.as_ref(),
                at: decoded.at,
            };
            for (model, checkpoint, batch) in &mut self.batches {
                if envelope.position > *checkpoint {
                    model.projection.apply(batch, &fact)?;
                }
            }
            self.last = Some(envelope.position);
            self.events = self.events.saturating_add(1);
        }
        Ok(())
    }

    /// Writes each model's changes with its new checkpoint, one atomic batch per model.
    pub(super) fn commit(self) -> Result<(), ProjectionError> {
        let Some(last) = self.last else {
            return Ok(());
        };
        for (model, checkpoint, batch) in self.batches {
            if checkpoint >= last {
                continue;
            }
            batch.commit(last)?;
            model.checkpoint.store(last, Ordering::Release);
        }
        Ok(())
    }
}
