//! Folding events into every read model a chunk at a time: each model keeps one batch open
//! across many pages of the log, so a row changed by many events (a link's uses, a resource's
//! member count) is kept typed in memory and written once per chunk, and each page of rows is
//! rewritten once per chunk rather than once per page of events.

use std::sync::atomic::Ordering;

use roster_domain::{Event, ResourceId, StreamId, Timestamp, EVENT_SCHEMA_VERSION};
use roster_eventstore::{Envelope, Hash, Upcasters};
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer};
use serde::de::{DeserializeSeed, Deserializer, MapAccess};
use serde::Deserialize;
use serde_json::value::RawValue;
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
    let event = if is_current(upcasters, envelope) {
        // The common case, read straight from the envelope's data: `from_parts` would copy
        // the data into a tagged object and serde would buffer it again before the variant.
        event_from(&envelope.event_type, &envelope.data).map_err(|e| undecodable(envelope, &e))?
    } else {
        let (schema, data) =
            upcasters.upcast(&envelope.event_type, envelope.schema, envelope.data.clone());
        Event::from_parts(&envelope.event_type, schema, data).map_err(|e| bad(e.to_string()))?
    };
    decoded(envelope, event)
}

/// Whether an envelope's data is in the current schema, with no upcaster to run.
fn is_current(upcasters: &Upcasters, envelope: &Envelope) -> bool {
    envelope.schema == EVENT_SCHEMA_VERSION
        && !upcasters.has_step(&envelope.event_type, envelope.schema)
}

fn undecodable(envelope: &Envelope, error: &serde_json::Error) -> ProjectionError {
    ProjectionError::Corrupt(format!(
        "position {}: the data of a {} does not decode: {error}",
        envelope.position, envelope.event_type
    ))
}

/// An envelope as the log stores it, its data left unparsed.
#[derive(Deserialize)]
struct Stored<'a> {
    position: u64,
    stream: String,
    version: u64,
    event_id: String,
    #[serde(rename = "type")]
    event_type: String,
    schema: u32,
    occurred_at: roster_eventstore::Timestamp,
    actor: String,
    command_id: String,
    correlation_id: String,
    #[serde(borrow)]
    data: &'a RawValue,
    prev_hash: Hash,
    hash: Hash,
}

/// Decodes the stored JSON of the envelope at `position` and its event in one pass: the
/// event's data is parsed once, straight into the event, instead of into a `Value` first
/// (which is what `read_all` hands out, and as much work again as the rest of a rebuild's
/// reading). The envelope comes back with `Value::Null` as its data when the event was
/// decoded that way: no model reads an envelope's data, only its event (a model that did
/// would differ between a rebuild and the live projector, which the rebuild tests compare).
pub(super) fn decode_stored(
    upcasters: &Upcasters,
    position: u64,
    bytes: &[u8],
) -> Result<(Envelope, Decoded), ProjectionError> {
    let corrupt =
        |reason: String| ProjectionError::Corrupt(format!("position {position}: {reason}"));
    let stored: Stored<'_> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("undecodable envelope: {e}")))?;
    if stored.position != position {
        return Err(corrupt(format!(
            "the envelope says position {}",
            stored.position
        )));
    }
    let mut envelope = Envelope {
        position,
        stream: stored.stream,
        version: stored.version,
        event_id: stored.event_id,
        event_type: stored.event_type,
        schema: stored.schema,
        occurred_at: stored.occurred_at,
        actor: stored.actor,
        command_id: stored.command_id,
        correlation_id: stored.correlation_id,
        data: Value::Null,
        prev_hash: stored.prev_hash,
        hash: stored.hash,
    };
    if !is_current(upcasters, &envelope) {
        envelope.data = serde_json::from_str(stored.data.get())
            .map_err(|e| corrupt(format!("undecodable data: {e}")))?;
        let decoded = decode(upcasters, &envelope)?;
        return Ok((envelope, decoded));
    }
    let mut data = serde_json::Deserializer::from_str(stored.data.get());
    let event = event_from(&envelope.event_type, &mut data)
        .and_then(|event| data.end().map(|()| event))
        .map_err(|e| undecodable(&envelope, &e))?;
    let decoded = decoded(&envelope, event)?;
    Ok((envelope, decoded))
}

/// The `Decoded` of an envelope whose event is decoded.
fn decoded(envelope: &Envelope, event: Event) -> Result<Decoded, ProjectionError> {
    let bad = |reason: String| {
        ProjectionError::Corrupt(format!("position {}: {reason}", envelope.position))
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
/// over the envelope's data (a `Value` by reference, or its JSON being parsed).
struct Tagged<'v, D> {
    event_type: &'v str,
    data: Option<D>,
    next: u8,
}

impl<'v, D: Deserializer<'v, Error = serde_json::Error>> MapAccess<'v> for Tagged<'v, D> {
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
            return seed.deserialize(BorrowedStrDeserializer::new(self.event_type));
        }
        match self.data.take() {
            Some(data) => seed.deserialize(data),
            None => Err(serde::de::Error::custom("the data is read once")),
        }
    }
}

fn event_from<'v, D: Deserializer<'v, Error = serde_json::Error>>(
    event_type: &'v str,
    data: D,
) -> Result<Event, serde_json::Error> {
    Event::deserialize(MapAccessDeserializer::new(Tagged {
        event_type,
        data: Some(data),
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
