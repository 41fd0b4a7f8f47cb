//! The shared test suite every `EventStore` implementation passes: run against the sled
//! store, the in-memory store and the PostgreSQL store (a private cluster) alike.

use std::collections::HashSet;
use std::sync::Arc;

use roster_eventstore::{
    verify, AppendError, AppendRequest, Envelope, EventStore, ExpectedVersion, MemoryStore,
    NewEvent, SledOptions, SledStore, StoreError, StreamView,
};
use serde_json::json;

struct Fixture {
    store: Arc<dyn EventStore>,
    _dir: Option<tempfile::TempDir>,
}

fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::in_memory()),
        _dir: None,
    }
}

fn sled() -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

#[path = "../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;

async fn postgres() -> Fixture {
    let options = roster_eventstore::PgOptions::new(pg::database());
    let store = roster_eventstore::PgStore::open(options)
        .await
        .expect("opens the PostgreSQL store");
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

fn event(n: u64) -> NewEvent {
    NewEvent {
        event_id: ulid::Ulid::new().to_string(),
        event_type: "Counted".into(),
        schema: 1,
        data: json!({ "n": n }),
    }
}

fn append(stream: &str, expected: ExpectedVersion, count: u64) -> AppendRequest {
    AppendRequest::new(stream, expected, (0..count).map(event).collect())
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::memory()).await;
                }
            )*
        }
        mod sled_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::sled()).await;
                }
            )*
        }
        mod postgres_store {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::postgres().await).await;
                }
            )*
        }
    };
}

suite!(
    expected_versions_are_enforced,
    positions_are_global_and_versions_per_stream,
    streams_read_from_a_version_with_a_limit,
    the_log_reads_after_a_position_with_a_limit,
    a_repeated_command_id_returns_the_first_outcome_and_writes_nothing,
    a_command_id_with_another_fingerprint_is_refused_and_writes_nothing,
    the_chain_links_every_event_and_verifies,
    concurrent_appends_each_get_their_own_outcome,
    one_of_many_racing_creators_wins,
    decisions_on_a_hot_stream_never_conflict,
    a_rejected_decision_writes_nothing,
    bad_stream_names_are_refused_without_harm,
    an_empty_append_is_a_no_op,
    subscription_catches_up_then_follows_concurrent_appends,
    subscription_from_the_middle_starts_after_that_position,
    a_groups_events_read_back_from_any_position,
);

async fn expected_versions_are_enforced(f: Fixture) {
    let s = &f.store;
    let first = s
        .append(append("a", ExpectedVersion::NoStream, 1))
        .await
        .expect("creates the stream");
    assert_eq!((first.version, first.position), (1, 1));
    let again = s.append(append("a", ExpectedVersion::NoStream, 1)).await;
    assert!(
        matches!(again, Err(AppendError::Conflict { actual: 1, .. })),
        "{again:?}"
    );
    s.append(append("a", ExpectedVersion::Exactly(1), 2))
        .await
        .expect("at version 1");
    let stale = s.append(append("a", ExpectedVersion::Exactly(1), 1)).await;
    assert!(
        matches!(stale, Err(AppendError::Conflict { actual: 3, .. })),
        "{stale:?}"
    );
    let ahead = s.append(append("a", ExpectedVersion::Exactly(9), 1)).await;
    assert!(
        matches!(ahead, Err(AppendError::Conflict { actual: 3, .. })),
        "{ahead:?}"
    );
    let any = s
        .append(append("a", ExpectedVersion::Any, 1))
        .await
        .expect("any version");
    assert_eq!((any.version, any.position), (4, 4));
    assert_eq!(s.stream_version("a").await.expect("reads"), 4);
    assert_eq!(s.stream_version("never").await.expect("reads"), 0);
    assert_eq!(s.head(), 4);
}

async fn positions_are_global_and_versions_per_stream(f: Fixture) {
    let s = &f.store;
    s.append(append("a", ExpectedVersion::Any, 2))
        .await
        .expect("appends");
    let b = s
        .append(append("b", ExpectedVersion::Any, 3))
        .await
        .expect("appends");
    assert_eq!((b.version, b.position, b.events), (3, 5, 3));
    assert_eq!(b.positions(), 3..=5);
    let c = s
        .append(append("a", ExpectedVersion::Any, 1))
        .await
        .expect("appends");
    assert_eq!((c.version, c.position), (3, 6));
    let all = s.read_all(0, 100).await.expect("reads");
    let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![1, 2, 3, 4, 5, 6]);
    let versions: Vec<(String, u64)> = all.iter().map(|e| (e.stream.clone(), e.version)).collect();
    let expected = [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("b", 3), ("a", 3)];
    assert_eq!(versions, expected.map(|(s, v)| (s.to_string(), v)).to_vec());
}

async fn streams_read_from_a_version_with_a_limit(f: Fixture) {
    let s = &f.store;
    s.append(append("a", ExpectedVersion::Any, 5))
        .await
        .expect("appends");
    s.append(append("b", ExpectedVersion::Any, 5))
        .await
        .expect("appends");
    let from_three = s.read_stream("a", 3, 100).await.expect("reads");
    assert_eq!(
        from_three.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![3, 4, 5]
    );
    assert!(from_three.iter().all(|e| e.stream == "a"));
    let limited = s.read_stream("b", 1, 2).await.expect("reads");
    assert_eq!(
        limited
            .iter()
            .map(|e| (e.version, e.position))
            .collect::<Vec<_>>(),
        vec![(1, 6), (2, 7)]
    );
    assert!(s.read_stream("a", 6, 10).await.expect("reads").is_empty());
    assert!(s
        .read_stream("missing", 1, 10)
        .await
        .expect("reads")
        .is_empty());
    // Version 0 does not exist; reading "from 0" reads from the start.
    assert_eq!(s.read_stream("a", 0, 1).await.expect("reads")[0].version, 1);
}

async fn the_log_reads_after_a_position_with_a_limit(f: Fixture) {
    let s = &f.store;
    for stream in ["a", "b", "c"] {
        s.append(append(stream, ExpectedVersion::Any, 4))
            .await
            .expect("appends");
    }
    let page = s.read_all(5, 3).await.expect("reads");
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![6, 7, 8]
    );
    assert_eq!(s.read_all(10, 100).await.expect("reads").len(), 2);
    assert!(s.read_all(12, 100).await.expect("reads").is_empty());
    assert!(s.read_all(u64::MAX, 100).await.expect("reads").is_empty());
    assert!(s.read_all(0, 0).await.expect("reads").is_empty());
}

async fn a_repeated_command_id_returns_the_first_outcome_and_writes_nothing(f: Fixture) {
    let s = &f.store;
    let first = s
        .append(append("a", ExpectedVersion::NoStream, 2).command_id("cmd-1"))
        .await
        .expect("appends");
    assert!(!first.duplicate);
    // Even a different body, stream and expectation: the id decides.
    let again = s
        .append(append("b", ExpectedVersion::Exactly(7), 5).command_id("cmd-1"))
        .await
        .expect("first outcome");
    assert!(again.duplicate);
    assert_eq!(
        (
            again.stream.as_str(),
            again.version,
            again.position,
            again.events
        ),
        ("a", 2, 2, 2)
    );
    assert_eq!(s.head(), 2);
    assert_eq!(s.stream_version("b").await.expect("reads"), 0);
    // Repeats inside one group are caught too.
    let racing = (0..8).map(|_| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.append(append("c", ExpectedVersion::Any, 1).command_id("cmd-2"))
                .await
        })
    });
    let outcomes: Vec<_> = futures_join(racing).await;
    assert_eq!(outcomes.iter().filter(|o| !o.duplicate).count(), 1);
    assert!(outcomes.iter().all(|o| o.position == 3 && o.stream == "c"));
    assert_eq!(s.head(), 3);
}

async fn a_command_id_with_another_fingerprint_is_refused_and_writes_nothing(f: Fixture) {
    let s = &f.store;
    let print = |byte: u8| Some([byte; 32]);
    let first = s
        .append(
            append("a", ExpectedVersion::Any, 2)
                .command_id("cmd-f")
                .fingerprint(print(1)),
        )
        .await
        .expect("appends");
    // The same request again (in a later group: the outcome is read back from the store).
    let again = s
        .append(
            append("a", ExpectedVersion::Any, 2)
                .command_id("cmd-f")
                .fingerprint(print(1)),
        )
        .await
        .expect("first outcome");
    assert!(again.duplicate);
    assert_eq!(again.position, first.position);
    // Another request under the same id.
    let other = s
        .append(
            append("a", ExpectedVersion::Any, 1)
                .command_id("cmd-f")
                .fingerprint(print(2)),
        )
        .await;
    assert!(
        matches!(&other, Err(AppendError::Reused { command_id }) if command_id == "cmd-f"),
        "{other:?}"
    );
    // A caller that gives no fingerprint checks nothing, and gets the first outcome.
    let unchecked = s
        .append(append("a", ExpectedVersion::Any, 1).command_id("cmd-f"))
        .await
        .expect("first outcome");
    assert!(unchecked.duplicate);
    // Racing in one group: the first decides, the other fingerprint is refused.
    let racing = (0..8u8).map(|i| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.append(
                append("b", ExpectedVersion::Any, 1)
                    .command_id("cmd-g")
                    .fingerprint(print(10 + i % 2)),
            )
            .await
        })
    });
    let mut outcomes = Vec::new();
    for task in racing {
        outcomes.push(task.await.expect("joins"));
    }
    let appended = outcomes
        .iter()
        .filter(|o| matches!(o, Ok(a) if !a.duplicate))
        .count();
    let refused = outcomes.iter().filter(|o| o.is_err()).count();
    assert_eq!(appended, 1);
    assert_eq!(refused, 4, "{outcomes:?}");
    assert_eq!(s.head(), first.position + 1);
}

async fn the_chain_links_every_event_and_verifies(f: Fixture) {
    let s = &f.store;
    for n in 0..20 {
        s.append(append(
            if n % 2 == 0 { "a" } else { "b" },
            ExpectedVersion::Any,
            1 + n % 3,
        ))
        .await
        .expect("appends");
    }
    let all = s.read_all(0, 1000).await.expect("reads");
    assert_eq!(all[0].prev_hash.to_hex(), "0".repeat(64));
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
    }
    for envelope in &all {
        assert_eq!(envelope.compute_hash(), envelope.hash);
    }
    let report = verify(s.as_ref()).await.expect("an intact log verifies");
    assert_eq!(
        (report.events, report.streams),
        (u64::try_from(all.len()).expect("fits"), 2)
    );
    assert_eq!(Some(report.head_hash), all.last().map(|e| e.hash));
}

async fn concurrent_appends_each_get_their_own_outcome(f: Fixture) {
    let s = &f.store;
    let tasks = (0..200u64).map(|n| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.append(append(
                &format!("s{n}"),
                ExpectedVersion::NoStream,
                1 + n % 2,
            ))
            .await
        })
    });
    let outcomes = futures_join(tasks).await;
    let mut positions = HashSet::new();
    for (n, outcome) in (0..200u64).zip(&outcomes) {
        assert_eq!(outcome.stream, format!("s{n}"));
        assert_eq!(outcome.version, 1 + n % 2);
        for position in outcome.positions() {
            assert!(
                positions.insert(position),
                "position {position} given twice"
            );
        }
    }
    assert_eq!(positions.len(), 300);
    assert_eq!(s.head(), 300);
    for (n, outcome) in (0..200u64).zip(&outcomes) {
        let events = s.read_stream(&format!("s{n}"), 1, 10).await.expect("reads");
        assert_eq!(
            events.iter().map(|e| e.position).collect::<Vec<_>>(),
            outcome.positions().collect::<Vec<_>>()
        );
    }
    verify(s.as_ref()).await.expect("verifies");
}

async fn one_of_many_racing_creators_wins(f: Fixture) {
    let s = &f.store;
    let tasks = (0..32).map(|_| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.append(append("contested", ExpectedVersion::NoStream, 1))
                .await
        })
    });
    let mut won = 0;
    let mut lost = 0;
    for task in tasks {
        match task.await.expect("joins") {
            Ok(_) => won += 1,
            Err(AppendError::Conflict { actual: 1, .. }) => lost += 1,
            Err(other) => panic!("unexpected outcome {other}"),
        }
    }
    assert_eq!((won, lost), (1, 31));
    assert_eq!(s.stream_version("contested").await.expect("reads"), 1);
}

async fn decisions_on_a_hot_stream_never_conflict(f: Fixture) {
    let s = &f.store;
    let tasks = (0..64u64).map(|n| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            let request = AppendRequest::decided("hot", move |view: StreamView<'_>| {
                // Each decision sees every earlier one, committed or still in its group; what
                // it saw is recorded in its event and checked below, off the writer's thread.
                let seen = view.version;
                let last_uncommitted = view.uncommitted.last().map(|e| e.version);
                Ok(vec![NewEvent {
                    event_id: ulid::Ulid::new().to_string(),
                    event_type: "Joined".into(),
                    schema: 1,
                    data: json!({ "n": n, "seen": seen, "last_uncommitted": last_uncommitted }),
                }])
            });
            s.append(request).await
        })
    });
    let outcomes = futures_join(tasks).await;
    let mut versions: Vec<u64> = outcomes.iter().map(|o| o.version).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=64).collect::<Vec<_>>());
    for event in s.read_stream("hot", 1, 100).await.expect("reads") {
        assert_eq!(
            event.data["seen"],
            json!(event.version - 1),
            "decided against the newest version"
        );
        let last_uncommitted = &event.data["last_uncommitted"];
        assert!(
            last_uncommitted.is_null() || *last_uncommitted == event.data["seen"],
            "the group's uncommitted events end at the version the decision saw: {}",
            event.data
        );
    }
}

async fn a_rejected_decision_writes_nothing(f: Fixture) {
    let s = &f.store;
    s.append(append("a", ExpectedVersion::Any, 1))
        .await
        .expect("appends");
    let request = AppendRequest::decided("a", |view: StreamView<'_>| {
        Err(format!("refused at version {}", view.version).into())
    });
    match s.append(request).await {
        Err(AppendError::Rejected(reason)) => {
            assert_eq!(reason.to_string(), "refused at version 1")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(s.head(), 1);
}

async fn bad_stream_names_are_refused_without_harm(f: Fixture) {
    let s = &f.store;
    for name in ["", "nul\0inside", "new\nline", &"x".repeat(513)] {
        let outcome = s.append(append(name, ExpectedVersion::Any, 1)).await;
        assert!(
            matches!(outcome, Err(AppendError::Store(StoreError::Invalid(_)))),
            "{name:?}: {outcome:?}"
        );
        assert!(matches!(
            s.read_stream(name, 1, 1).await,
            Err(StoreError::Invalid(_))
        ));
    }
    let good = s
        .append(append("fine", ExpectedVersion::Any, 1))
        .await
        .expect("appends");
    assert_eq!(good.position, 1);
}

async fn an_empty_append_is_a_no_op(f: Fixture) {
    let s = &f.store;
    s.append(append("a", ExpectedVersion::Any, 2))
        .await
        .expect("appends");
    let nothing = s
        .append(append("a", ExpectedVersion::Exactly(2), 0))
        .await
        .expect("accepted");
    assert_eq!(
        (nothing.version, nothing.position, nothing.events),
        (2, 2, 0)
    );
    assert!(nothing.positions().is_empty());
    assert_eq!(s.head(), 2);
}

async fn subscription_catches_up_then_follows_concurrent_appends(f: Fixture) {
    let s = &f.store;
    for n in 0..30 {
        s.append(append(&format!("before{}", n % 3), ExpectedVersion::Any, 1))
            .await
            .expect("appends");
    }
    let mut subscription = s.subscribe(0);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let s = Arc::clone(s);
            tokio::spawn(async move {
                for _ in 0..25 {
                    s.append(append(&format!("w{w}"), ExpectedVersion::Any, 2))
                        .await
                        .expect("appends");
                }
            })
        })
        .collect();
    let total = 30 + 8 * 25 * 2;
    let mut received = Vec::with_capacity(total);
    while received.len() < total {
        let envelope = subscription.next().await.expect("the tail delivers");
        received.push(envelope);
    }
    for writer in writers {
        writer.await.expect("writer finished");
    }
    let positions: Vec<u64> = received.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (1..=u64::try_from(total).expect("fits")).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert_eq!(received, s.read_all(0, 10_000).await.expect("reads"));
    // And it keeps following.
    s.append(append("after", ExpectedVersion::Any, 1))
        .await
        .expect("appends");
    assert_eq!(subscription.next().await.expect("delivers").stream, "after");
}

async fn subscription_from_the_middle_starts_after_that_position(f: Fixture) {
    let s = &f.store;
    s.append(append("a", ExpectedVersion::Any, 10))
        .await
        .expect("appends");
    let mut subscription = s.subscribe(7);
    for expected in 8..=10 {
        assert_eq!(
            subscription.next().await.expect("delivers").position,
            expected
        );
    }
    let pending = tokio::spawn(async move { subscription.next().await.map(|e| e.position) });
    s.append(append("a", ExpectedVersion::Any, 1))
        .await
        .expect("appends");
    assert_eq!(pending.await.expect("joins").expect("delivers"), 11);
}

/// A group's events are stored as runs of several events under one key: every read must
/// find an event wherever it sits in its run.
async fn a_groups_events_read_back_from_any_position(f: Fixture) {
    let s = &f.store;
    // One command of many events (several runs), then many small ones at once (one group).
    s.append(append("big", ExpectedVersion::NoStream, 40))
        .await
        .expect("appends");
    let tasks = (0..40u64).map(|n| {
        let s = Arc::clone(s);
        tokio::spawn(async move {
            s.append(append(
                &format!("s{}", n % 5),
                ExpectedVersion::Any,
                1 + n % 3,
            ))
            .await
        })
    });
    futures_join(tasks).await;
    let head = s.head();
    assert_eq!(head, 40 + (0..40u64).map(|n| 1 + n % 3).sum::<u64>());
    let all = s.read_all(0, 1000).await.expect("reads");
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    for after in 0..head {
        let page = s.read_all(after, 7).await.expect("reads");
        let from = usize::try_from(after).expect("small");
        let to = (from + 7).min(all.len());
        assert_eq!(page, all[from..to], "a page after {after}");
        // The same events unparsed: each stored JSON is its envelope's.
        let stored = s.read_all_stored(after, 7).await.expect("reads");
        let parsed: Vec<Envelope> = stored
            .iter()
            .map(|(position, bytes)| {
                let envelope: Envelope = serde_json::from_slice(bytes).expect("an envelope");
                assert_eq!(envelope.position, *position);
                envelope
            })
            .collect();
        assert_eq!(parsed, all[from..to], "stored events after {after}");
    }
    assert!(s.read_all_stored(head, 7).await.expect("reads").is_empty());
    for version in 1..=40 {
        let events = s.read_stream("big", version, 3).await.expect("reads");
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (version..=(version + 2).min(40)).collect::<Vec<_>>()
        );
    }
    let again = s
        .append(append("elsewhere", ExpectedVersion::Any, 1).command_id(&all[20].command_id))
        .await
        .expect("first outcome");
    assert!(again.duplicate);
    assert_eq!((again.stream.as_str(), again.position), ("big", 40));
    verify(s.as_ref()).await.expect("verifies");
}

async fn futures_join<T: Send + 'static>(
    tasks: impl IntoIterator<Item = tokio::task::JoinHandle<Result<T, AppendError>>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("joins").expect("appends"));
    }
    out
}

/// The workers' lease on a shared store: one holder at a time, handed on only once it ran out,
/// and an append fenced with a token that has moved on is refused (DESIGN section 10).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_leases_change_hands_only_when_run_out_and_fence_the_old_holder() {
    use roster_eventstore::{Fence, PgOptions, PgStore};
    use std::time::Duration;

    let url = pg::database();
    let a = PgStore::open(PgOptions::new(url.clone()))
        .await
        .expect("opens");
    let b = PgStore::open(PgOptions::new(url)).await.expect("opens");
    let ttl = Duration::from_millis(400);
    assert_eq!(a.lease("workers", "a", ttl).await.expect("asks"), Some(1));
    assert_eq!(b.lease("workers", "b", ttl).await.expect("asks"), None);
    assert_eq!(a.lease("workers", "a", ttl).await.expect("renews"), Some(1));
    let fenced = |token: u64| {
        append("delivery", ExpectedVersion::Any, 1).fence(Some(Fence {
            lease: "workers".into(),
            token,
        }))
    };
    a.append(fenced(1)).await.expect("the holder records");
    // `a` stops renewing: `b` takes over once the lease has run out, with the next token.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let taken = loop {
        if let Some(token) = b.lease("workers", "b", ttl).await.expect("asks") {
            break token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lease never ran out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(taken, 2);
    let refused = a.append(fenced(1)).await;
    assert!(
        matches!(&refused, Err(AppendError::Fenced { lease }) if lease == "workers"),
        "{refused:?}"
    );
    b.append(fenced(2)).await.expect("the new holder records");
    assert_eq!(a.lease("workers", "a", ttl).await.expect("asks"), None);
    assert_eq!(b.head(), 2);
    let log = b.read_all(0, 10).await.expect("reads");
    assert_eq!(log.len(), 2, "the old holder's refused append left nothing");
}
