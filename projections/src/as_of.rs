//! Past state: a resource's rolemap as it was at a position or a time, rebuilt from its own
//! stream with the domain's `evolve`, without touching the live read models.

use roster_domain::{Event, ResourceId, ResourceState, Timestamp};
use roster_eventstore::{EventStore, Upcasters};

use crate::records::MemberRecord;
use crate::snapshots::Snapshots;
use crate::ProjectionError;

/// When to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// After the event at this global position.
    Position(u64),
    /// After every event that occurred at or before this time.
    Time(Timestamp),
}

impl AsOf {
    /// Whether an event at `position` that occurred at `occurred_ms` (Unix ms) is in the past
    /// of this moment: the one reading of "as of" for rolemaps, snapshots and `roster audit`.
    pub fn includes(&self, position: u64, occurred_ms: i64) -> bool {
        match *self {
            AsOf::Position(until) => position <= until,
            AsOf::Time(until) => occurred_ms <= until.unix_ms(),
        }
    }
}

/// The rolemap at that moment, ordered by principal, and the position it reflects; `None`
/// when the resource did not exist yet. With `snapshots`, the fold starts from the newest
/// snapshot taken at or before that moment instead of the stream's start.
pub async fn rolemap_as_of(
    store: &dyn EventStore,
    snapshots: Option<&Snapshots>,
    resource: &ResourceId,
    as_of: AsOf,
) -> Result<Option<(Vec<MemberRecord>, u64)>, ProjectionError> {
    let (state, reached) = state_as_of(store, snapshots, resource, as_of).await?;
    if state.registered().is_none() {
        return Ok(None);
    }
    let members = state
        .members()
        .iter()
        .map(|(principal, m)| MemberRecord {
            principal: principal.clone(),
            role: m.role.clone(),
            since: m.since,
            granted_by: m.granted_by.clone(),
            via: m.via,
        })
        .collect();
    Ok(Some((members, reached)))
}

/// The resource's whole state at that moment, folded with the domain's `evolve` (from the
/// newest snapshot at or before it, with `snapshots`), and the position it reflects; the
/// default state when the resource did not exist yet.
pub async fn state_as_of(
    store: &dyn EventStore,
    snapshots: Option<&Snapshots>,
    resource: &ResourceId,
    as_of: AsOf,
) -> Result<(ResourceState, u64), ProjectionError> {
    let upcasters = Upcasters::new();
    let stream = resource.stream().to_string();
    let snapshot = match snapshots {
        Some(snapshots) => snapshots.latest(store, &stream, Some(as_of)).await?,
        None => None,
    };
    let (mut state, mut reached, mut next_version) = match snapshot {
        Some(snapshot) => (snapshot.state, snapshot.position, snapshot.version + 1),
        None => (ResourceState::default(), 0, 1),
    };
    'pages: loop {
        let page = store.read_stream(&stream, next_version, 256).await?;
        let Some(last) = page.last() else { break };
        next_version = last.version + 1;
        for envelope in page {
            if !as_of.includes(envelope.position, envelope.occurred_at.unix_ms()) {
                break 'pages;
            }
            let (schema, data) =
                upcasters.upcast(&envelope.event_type, envelope.schema, envelope.data);
            let event = Event::from_parts(&envelope.event_type, schema, data).map_err(|e| {
                ProjectionError::Corrupt(format!("position {}: {e}", envelope.position))
            })?;
            state = state.evolve(&event);
            reached = envelope.position;
        }
    }
    Ok((state, reached))
}
