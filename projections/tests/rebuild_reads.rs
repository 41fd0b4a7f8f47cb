//! A rebuild reads the log as stored and parses each event once (`read_all_stored`): the read
//! models it builds equal those folded from `read_all`'s parsed envelopes, and an event whose
//! `prev_hash` does not name the event before it is refused, as `read_all` refuses it.

use std::sync::Arc;

use roster_domain::{Event, Principal, ResourceId, RoleName, Timestamp as DomainTime, Via};
use roster_eventstore::{
    AppendRequest, Backend, Entry, EventStore, ExpectedVersion, Limits, Log, MemoryBackend,
    NewEvent,
};
use roster_projections::ReadModels;

fn member(n: u64) -> Principal {
    Principal::parse(&format!("p{n}")).expect("valid")
}

/// Two resources: each registered, then members joining and some changing role.
fn event(n: u64) -> (String, Event) {
    let at = DomainTime::from_unix_ms(1_790_000_000_000 + i64::try_from(n).expect("small"))
        .expect("in range");
    let role = |name: &str| RoleName::parse(name).expect("valid");
    let space = format!("space/s{}", n % 2);
    let event = if n <= 2 {
        Event::ResourceRegistered {
            resource: ResourceId::parse(&space).expect("valid"),
            owner: member(n),
            role: role("owner"),
            parent: None,
            at,
        }
    } else if n.is_multiple_of(5) {
        Event::MemberRoleChanged {
            principal: member(n - 2),
            from_role: role("viewer"),
            role: role("editor"),
            changed_by: Some(member(n % 2)),
            via: Via::Direct,
            at,
        }
    } else {
        Event::MemberAdded {
            principal: member(n),
            role: role("viewer"),
            granted_by: Some(member(n % 2)),
            via: Via::Direct,
            at,
        }
    };
    (format!("resource:{space}"), event)
}

/// A log of `count` events appended one by one (so each is a record of its own).
async fn filled(count: u64) -> (Arc<MemoryBackend>, Log<Arc<MemoryBackend>>) {
    let backend = Arc::new(MemoryBackend::default());
    let log = Log::with_backend(backend.clone(), Limits::default()).expect("an empty log opens");
    for n in 1..=count {
        let (stream, event) = event(n);
        let new = NewEvent {
            event_id: format!("e{n}"),
            event_type: event.event_type().to_string(),
            schema: event.schema(),
            data: event.to_data(),
        };
        log.append(AppendRequest::new(stream, ExpectedVersion::Any, vec![new]))
            .await
            .expect("appends");
    }
    (backend, log)
}

#[tokio::test]
async fn a_rebuild_from_stored_events_equals_the_fold_of_parsed_envelopes() {
    let (_, log) = filled(60).await;
    let rebuilt = ReadModels::in_memory();
    rebuilt.rebuild(&log, &mut |_| {}).await.expect("rebuilds");
    let applied = ReadModels::in_memory();
    let envelopes = log.read_all(0, usize::MAX).await.expect("reads");
    for page in envelopes.chunks(7) {
        applied.apply(page).expect("applies");
    }
    assert_eq!(rebuilt.checkpoint(), 60);
    assert_eq!(
        rebuilt.dump().expect("dumps"),
        applied.dump().expect("dumps")
    );
}

#[tokio::test]
async fn a_rebuild_refuses_an_event_whose_prev_hash_names_another_event() {
    let (backend, log) = filled(10).await;
    drop(log);
    let mut records = backend
        .scan(&[], &[0xff], usize::MAX, false)
        .expect("scans");
    // Event 5's record: `e ‖ 5`. Its prev_hash now names event 3 instead of event 4.
    let key_of = |position: u64| {
        let mut key = vec![b'e'];
        key.extend_from_slice(&position.to_be_bytes());
        key
    };
    let envelope_of = |records: &[Entry], position: u64| -> serde_json::Value {
        let (_, bytes) = records
            .iter()
            .find(|(key, _)| *key == key_of(position))
            .expect("a record of its own");
        serde_json::from_slice(bytes).expect("an envelope")
    };
    let third_hash = envelope_of(&records, 3)["hash"].clone();
    let mut fifth = envelope_of(&records, 5);
    fifth["prev_hash"] = third_hash;
    let record = records
        .iter_mut()
        .find(|(key, _)| *key == key_of(5))
        .expect("found");
    record.1 = serde_json::to_vec(&fifth).expect("serializes");
    let edited = MemoryBackend::default();
    edited.apply(records).expect("applies");
    let log = Log::with_backend(edited, Limits::default()).expect("the head is intact: opens");
    let parsed = log.read_all(0, usize::MAX).await;
    assert!(parsed.is_err(), "read_all refuses it too");
    let rebuilt = ReadModels::in_memory();
    let refused = rebuilt
        .rebuild(&log, &mut |_| {})
        .await
        .expect_err("refused");
    assert!(
        refused.to_string().contains("position 5") && refused.to_string().contains("prev_hash"),
        "{refused}"
    );
}
