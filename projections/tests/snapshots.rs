//! Snapshots are a cache that can never change an answer: a past rolemap read from a snapshot
//! equals the one folded from the stream's start, at every position and time, and a snapshot
//! the log does not back (another event at its version, an unknown format) is passed over.

use roster_domain::{
    Event, Principal, ResourceId, ResourceState, RoleName, Timestamp as DomainTime, Via,
};
use roster_eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Hash, MemoryStore, NewEvent, SledOptions,
    SledStore, Timestamp,
};
use roster_projections::{rolemap_as_of, AsOf, Snapshot, Snapshots};

const STREAM: &str = "resource:space/s";

fn resource() -> ResourceId {
    ResourceId::parse("space/s").expect("valid")
}

fn member(n: u64) -> Principal {
    Principal::parse(&format!("p{n}")).expect("valid")
}

/// Event `n` of the stream: the registration, then members joining and, every third event, a
/// member changing role. Times go back and forth (writers do not append in time order).
fn event(n: u64) -> (Event, i64) {
    let at_ms = 1_790_000_000_000 + i64::try_from((n * 7919) % 50).expect("small") * 1000;
    let at = DomainTime::from_unix_ms(at_ms).expect("in range");
    let role = |name: &str| RoleName::parse(name).expect("valid");
    let event = if n == 1 {
        Event::ResourceRegistered {
            resource: resource(),
            owner: member(0),
            role: role("owner"),
            parent: None,
            at,
        }
    } else if n.is_multiple_of(3) {
        Event::MemberRoleChanged {
            principal: member(n / 2),
            from_role: role("viewer"),
            role: role("editor"),
            changed_by: None,
            via: Via::Direct,
            at,
        }
    } else {
        Event::MemberAdded {
            principal: member(n),
            role: role("viewer"),
            granted_by: None,
            via: Via::Direct,
            at,
        }
    };
    (event, at_ms)
}

/// Appends `count` events one by one; returns the state and latest time after each version.
async fn fill(store: &dyn EventStore, count: u64) -> Vec<(ResourceState, i64)> {
    let mut states = Vec::new();
    let mut state = ResourceState::default();
    let mut latest = i64::MIN;
    for n in 1..=count {
        let (event, at_ms) = event(n);
        let new = NewEvent {
            event_id: format!("e{n}"),
            event_type: event.event_type().to_string(),
            schema: event.schema(),
            data: event.to_data(),
        };
        let expected = match n {
            1 => ExpectedVersion::NoStream,
            _ => ExpectedVersion::Exactly(n - 1),
        };
        let request = AppendRequest::new(STREAM, expected, vec![new]).occurred_at(Timestamp(at_ms));
        store.append(request).await.expect("appends");
        state = state.evolve(&event);
        latest = latest.max(at_ms);
        states.push((state.clone(), latest));
    }
    states
}

async fn snapshot_of(
    store: &dyn EventStore,
    version: u64,
    (state, latest_ms): &(ResourceState, i64),
) -> Snapshot {
    let logged = store.read_stream(STREAM, version, 1).await.expect("reads");
    Snapshot {
        version,
        position: logged[0].position,
        latest_ms: *latest_ms,
        hash: logged[0].hash,
        state: state.clone(),
    }
}

/// The directory of the one stream that has snapshots under `root`.
fn only_stream_dir(root: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(root)
        .expect("lists")
        .next()
        .expect("one stream")
        .expect("reads")
        .path()
}

#[tokio::test]
async fn a_past_rolemap_from_snapshots_equals_the_full_fold_at_every_position_and_time() {
    let store = MemoryStore::in_memory();
    let states = fill(&store, 60).await;
    let snapshots = Snapshots::in_memory();
    for version in [5usize, 17, 18, 40] {
        let at = u64::try_from(version).expect("small");
        let snapshot = snapshot_of(&store, at, &states[version - 1]).await;
        snapshots.save(STREAM, &snapshot).expect("saves");
    }
    let head = store.head();
    let mut moments: Vec<AsOf> = (0..=head + 1).map(AsOf::Position).collect();
    moments.extend((0..=52).map(|s| {
        AsOf::Time(DomainTime::from_unix_ms(1_790_000_000_000 + (s - 1) * 1000).expect("ok"))
    }));
    for as_of in moments {
        let folded = rolemap_as_of(&store, None, &resource(), as_of)
            .await
            .expect("reads");
        let from_snapshot = rolemap_as_of(&store, Some(&snapshots), &resource(), as_of)
            .await
            .expect("reads");
        assert_eq!(from_snapshot, folded, "{as_of:?}");
    }
}

#[tokio::test]
async fn the_newest_snapshot_the_log_backs_is_the_one_used() {
    let store = MemoryStore::in_memory();
    let states = fill(&store, 30).await;
    let snapshots = Snapshots::in_memory();
    let older = snapshot_of(&store, 10, &states[9]).await;
    snapshots.save(STREAM, &older).expect("saves");
    // A snapshot naming an event the log does not hold (a crash took it back, or the log was
    // restored from elsewhere): never used, whatever state it carries.
    let mut unbacked = snapshot_of(&store, 20, &states[19]).await;
    unbacked.hash = Hash([7; 32]);
    unbacked.state = ResourceState::default();
    snapshots.save(STREAM, &unbacked).expect("saves");
    let found = snapshots.latest(&store, STREAM, None).await.expect("reads");
    assert_eq!(found, Some(older.clone()));
    let at_15 = snapshots
        .latest(&store, STREAM, Some(AsOf::Position(older.position - 1)))
        .await
        .expect("reads");
    assert_eq!(at_15, None, "no snapshot is older than that position");
    let newer = snapshot_of(&store, 25, &states[24]).await;
    snapshots.save(STREAM, &newer).expect("saves");
    let found = snapshots.latest(&store, STREAM, None).await.expect("reads");
    assert_eq!(found.map(|s| s.version), Some(25));
}

#[tokio::test]
async fn a_snapshot_in_a_format_this_code_does_not_read_is_passed_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    let states = fill(&store, 12).await;
    let snapshots = Snapshots::in_dir(&dir.path().join("snapshots"));
    let older = snapshot_of(&store, 4, &states[3]).await;
    snapshots.save(STREAM, &older).expect("saves");
    for version in [6usize, 8] {
        let at = u64::try_from(version).expect("small");
        let snapshot = snapshot_of(&store, at, &states[version - 1]).await;
        snapshots.save(STREAM, &snapshot).expect("saves");
    }
    assert_eq!(
        snapshots
            .latest(&store, STREAM, None)
            .await
            .expect("reads")
            .map(|s| s.version),
        Some(8)
    );
    // Version 8 as a later format would write it, and version 6 torn by a crash.
    let stream_dir = only_stream_dir(&dir.path().join("snapshots"));
    for file in std::fs::read_dir(&stream_dir).expect("lists") {
        let path = file.expect("reads").path();
        let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8");
        if name.starts_with(&format!("{:020}.", 8)) {
            std::fs::write(&path, b"\x09{}").expect("writes");
        }
        if name.starts_with(&format!("{:020}.", 6)) {
            let whole = std::fs::read(&path).expect("reads");
            std::fs::write(&path, &whole[..whole.len() / 2]).expect("writes");
        }
    }
    let found = snapshots.latest(&store, STREAM, None).await.expect("reads");
    assert_eq!(found, Some(older));
}

#[tokio::test]
async fn a_save_removes_temporary_files_left_long_ago_and_keeps_young_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
    let states = fill(&store, 3).await;
    let snapshots = Snapshots::in_dir(&dir.path().join("snapshots"));
    snapshots
        .save(STREAM, &snapshot_of(&store, 1, &states[0]).await)
        .expect("saves");
    let stream_dir = only_stream_dir(&dir.path().join("snapshots"));
    // One save that never finished an hour ago, one that may be in progress.
    let stale = stream_dir.join(".5000.tmp");
    let young = stream_dir.join(".5001.tmp");
    std::fs::write(&stale, b"\x02{").expect("writes");
    std::fs::write(&young, b"\x02{").expect("writes");
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("dated");
    snapshots
        .save(STREAM, &snapshot_of(&store, 3, &states[2]).await)
        .expect("saves");
    assert!(!stale.exists(), "a temporary file an hour old is removed");
    assert!(young.exists(), "a young one may be a save in progress");
    let snapshot_files = std::fs::read_dir(&stream_dir)
        .expect("lists")
        .filter(|f| {
            f.as_ref()
                .is_ok_and(|f| !f.file_name().to_string_lossy().ends_with(".tmp"))
        })
        .count();
    assert_eq!(snapshot_files, 2, "every snapshot is kept");
}
