//! What only the durable store can show: reopening, tampering found by verify, the lock.

use roster_eventstore::{
    verify, AppendRequest, Durability, EventStore, ExpectedVersion, NewEvent, SledOptions,
    SledStore, StoreError,
};
use serde_json::{json, Value};

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: ulid::Ulid::new().to_string(),
        event_type: "Counted".into(),
        schema: 1,
        data: json!({ "n": n }),
    }
}

async fn fill(store: &SledStore, events: u64) {
    for n in 0..events {
        let stream = format!("s{}", n % 3);
        store
            .append(AppendRequest::new(
                stream,
                ExpectedVersion::Any,
                vec![event(n)],
            ))
            .await
            .expect("appends");
    }
}

/// Rewrites the stored envelope at `position` with `edit`, behind the store's back.
fn tamper(dir: &std::path::Path, position: u64, edit: impl FnOnce(&mut Value)) {
    let db = sled::open(dir).expect("opens raw");
    let tree = db.open_tree("log").expect("log tree");
    let mut key = vec![b'e'];
    key.extend_from_slice(&position.to_be_bytes());
    let mut envelope: Value =
        serde_json::from_slice(&tree.get(&key).expect("reads").expect("present")).expect("json");
    edit(&mut envelope);
    tree.insert(key, serde_json::to_vec(&envelope).expect("json"))
        .expect("writes");
    db.flush().expect("flushes");
}

#[tokio::test]
async fn everything_is_there_after_reopening() {
    let dir = tempfile::tempdir().expect("temporary directory");
    for durability in [Durability::Sync, Durability::Relaxed] {
        let store = SledStore::open(
            dir.path(),
            SledOptions {
                durability,
                ..SledOptions::default()
            },
        )
        .expect("opens");
        fill(&store, 10).await;
        drop(store);
    }
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("reopens");
    assert_eq!(store.head(), 20);
    assert_eq!(store.stream_version("s1").await.expect("reads"), 6);
    // The chain continues across restarts.
    fill(&store, 1).await;
    let report = verify(&store).await.expect("verifies");
    assert_eq!(report.events, 21);
}

/// Rewrites the log as Roster wrote it before runs: every event under its own `e ‖ position`
/// key as its JSON, whatever group it came in.
fn rewrite_one_event_per_key(dir: &std::path::Path, events: &[roster_eventstore::Envelope]) {
    let db = sled::open(dir).expect("opens raw");
    let tree = db.open_tree("log").expect("log tree");
    let stored: Vec<_> = tree
        .scan_prefix(b"e")
        .map(|row| row.expect("reads").0)
        .collect();
    assert!(
        stored.len() < events.len(),
        "the groups were stored as runs, {} keys for {} events",
        stored.len(),
        events.len()
    );
    let mut batch = sled::Batch::default();
    for key in stored {
        batch.remove(key);
    }
    for envelope in events {
        let mut key = vec![b'e'];
        key.extend_from_slice(&envelope.position.to_be_bytes());
        batch.insert(key, serde_json::to_vec(envelope).expect("json"));
    }
    tree.apply_batch(batch).expect("writes");
    db.flush().expect("flushes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_one_event_per_key_still_opens_reads_and_verifies() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    let big = AppendRequest::new("s9", ExpectedVersion::Any, (0..30).map(event).collect())
        .command_id("thirty");
    store.append(big).await.expect("appends");
    fill(&store, 5).await;
    let before = store.read_all(0, 100).await.expect("reads");
    let report = verify(&store).await.expect("verifies");
    drop(store);

    rewrite_one_event_per_key(dir.path(), &before);
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("reopens");
    assert_eq!(store.head(), 35);
    assert_eq!(store.read_all(0, 100).await.expect("reads"), before);
    assert_eq!(store.read_all(12, 3).await.expect("reads"), before[12..15]);
    let stream = store.read_stream("s9", 10, 5).await.expect("reads");
    assert_eq!(
        stream.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![10, 11, 12, 13, 14]
    );
    assert_eq!(verify(&store).await.expect("verifies"), report);
    let again = store
        .append(AppendRequest::new("s1", ExpectedVersion::Any, vec![event(1)]).command_id("thirty"))
        .await
        .expect("first outcome");
    assert!(again.duplicate);
    assert_eq!(
        (again.stream.as_str(), again.position, again.events),
        ("s9", 30, 30)
    );
    // New groups go in as runs beside the old keys, and the whole reads and verifies.
    store
        .append(AppendRequest::new(
            "s9",
            ExpectedVersion::Exactly(30),
            (0..10).map(event).collect(),
        ))
        .await
        .expect("appends");
    drop(store);
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("reopens");
    assert_eq!(store.head(), 45);
    assert_eq!(verify(&store).await.expect("verifies").events, 45);
    assert_eq!(store.read_all(30, 100).await.expect("reads").len(), 15);
}

#[tokio::test]
async fn verify_names_an_edited_event() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    fill(&store, 6).await;
    drop(store);
    tamper(dir.path(), 3, |e| e["data"]["n"] = json!(99));
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("reopens");
    let error = verify(&store).await.expect_err("an edit is found");
    assert_eq!(error.position, 3, "{error}");
    assert!(error.reason.contains("edited"), "{error}");
}

#[tokio::test]
async fn verify_finds_an_edit_whose_hash_was_recomputed() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    fill(&store, 6).await;
    drop(store);
    tamper(dir.path(), 2, |e| {
        e["actor"] = json!("mallory");
        let mut edited: roster_eventstore::Envelope =
            serde_json::from_value(e.clone()).expect("envelope");
        edited.hash = edited.compute_hash();
        *e = serde_json::to_value(edited).expect("json");
    });
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("reopens");
    let error = verify(&store).await.expect_err("the chain breaks after it");
    assert_eq!(error.position, 3, "{error}");
    // Readers check the link too, so the corruption is never served silently.
    assert!(matches!(
        store.read_all(0, 10).await,
        Err(StoreError::Corrupt { position: 3, .. })
    ));
}

#[tokio::test]
async fn a_locked_data_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let _first = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    let second = SledStore::open(dir.path(), SledOptions::default());
    match second {
        Err(StoreError::Io(reason)) => assert!(reason.contains("locked"), "{reason}"),
        Err(other) => panic!("expected a lock error, got {other}"),
        Ok(_) => panic!("opened twice"),
    }
}

#[tokio::test]
async fn appends_after_close_are_refused() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    fill(&store, 2).await;
    let mut tail = store.subscribe(2);
    store.close();
    let refused = store
        .append(AppendRequest::new(
            "s0",
            ExpectedVersion::Any,
            vec![event(1)],
        ))
        .await;
    assert!(
        matches!(
            refused,
            Err(roster_eventstore::AppendError::Store(StoreError::Closed))
        ),
        "{refused:?}"
    );
    assert!(matches!(tail.next().await, Err(StoreError::Closed)));
}

#[tokio::test]
async fn an_import_reproduces_the_exported_log_and_its_idempotency() {
    let source_dir = tempfile::tempdir().expect("temporary directory");
    let source = SledStore::open(source_dir.path(), SledOptions::default()).expect("opens");
    fill(&source, 5).await;
    let two = AppendRequest::new("s9", ExpectedVersion::Any, vec![event(1), event(2)])
        .command_id("two-events");
    source.append(two).await.expect("appends");
    let exported = source.read_all(0, 100).await.expect("reads");
    let target_dir = tempfile::tempdir().expect("temporary directory");
    let mut envelopes = exported.clone().into_iter().map(Ok);
    let written = SledStore::import(
        target_dir.path(),
        SledOptions::default(),
        &mut envelopes,
        &mut |_| {},
    )
    .expect("imports");
    assert_eq!(written, 7);
    let target = SledStore::open(target_dir.path(), SledOptions::default()).expect("opens");
    assert_eq!(target.read_all(0, 100).await.expect("reads"), exported);
    assert_eq!(
        verify(&target).await.expect("verifies"),
        verify(&source).await.expect("verifies")
    );
    // The imported command ids still hold their first outcome.
    let again = target
        .append(
            AppendRequest::new("s9", ExpectedVersion::Any, vec![event(3)]).command_id("two-events"),
        )
        .await
        .expect("first outcome");
    assert!(again.duplicate);
    assert_eq!((again.version, again.position, again.events), (2, 7, 2));
    // And the chain goes on from the imported head.
    let next = target
        .append(AppendRequest::new(
            "s9",
            ExpectedVersion::Exactly(2),
            vec![event(4)],
        ))
        .await;
    assert_eq!(next.expect("appends").position, 8);
    verify(&target).await.expect("verifies");
}

#[tokio::test]
async fn an_import_refuses_a_log_that_holds_events_and_a_broken_chain() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    fill(&store, 3).await;
    let mut exported = store.read_all(0, 100).await.expect("reads");
    drop(store);
    let mut envelopes = exported.clone().into_iter().map(Ok);
    let refused = SledStore::import(
        dir.path(),
        SledOptions::default(),
        &mut envelopes,
        &mut |_| {},
    );
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );

    exported[1].actor = "mallory".into();
    let empty = tempfile::tempdir().expect("temporary directory");
    let mut envelopes = exported.into_iter().map(Ok);
    let refused = SledStore::import(
        empty.path(),
        SledOptions::default(),
        &mut envelopes,
        &mut |_| {},
    );
    assert!(
        matches!(refused, Err(StoreError::Corrupt { position: 2, .. })),
        "{refused:?}"
    );
}
