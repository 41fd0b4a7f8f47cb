//! The `roster` command line against a real data directory: verify, export and import,
//! replay, audit, and what each says when the log has been tampered with.

use std::path::Path;
use std::process::{Command, Output};

use roster_api::engine::{Engine, EngineConfig, Request};
use roster_domain::{
    Actor, Command as DomainCommand, EmailList, Principal, ResourceCommand, ResourceId, RoleName,
    ServerSecret,
};
use roster_eventstore::{SledOptions, SledStore};
use roster_projections::ReadModels;

fn roster(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .expect("roster runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn member(name: &str) -> Actor {
    Actor::Principal {
        principal: Principal::parse(name).expect("valid"),
        email: None,
    }
}

/// A data directory with a resource, a link someone joined through, and invitations.
/// Returns the position just before the acceptance.
/// The envelopes' JSON in one stored `e` value: the JSON itself, or a run (`1 ‖ count ‖ each
/// length ‖ the JSON`, 32-bit big-endian integers).
fn stored_events(value: &[u8]) -> Vec<&[u8]> {
    if value.first() != Some(&1) {
        return vec![value];
    }
    let number = |at: usize| {
        let raw: [u8; 4] = value[at..at + 4].try_into().expect("four bytes");
        usize::try_from(u32::from_be_bytes(raw)).expect("fits")
    };
    let count = number(1);
    let mut offset = 5 + 4 * count;
    let mut events = Vec::new();
    for index in 0..count {
        let length = number(5 + 4 * index);
        events.push(&value[offset..offset + length]);
        offset += length;
    }
    events
}

async fn populate(dir: &Path) -> u64 {
    let engine = Engine::open(
        dir,
        SledOptions::default(),
        EngineConfig::new(ServerSecret::new(b"cli".to_vec())),
    )
    .await
    .expect("opens");
    let space = ResourceId::parse("space/spc_42").expect("valid");
    let run = |actor: Actor, command: ResourceCommand| {
        let engine = engine.clone();
        async move {
            engine
                .execute(Request::new(actor, DomainCommand::Resource(command)))
                .await
                .expect("executes")
        }
    };
    run(
        Actor::Admin,
        ResourceCommand::RegisterResource {
            resource: space.clone(),
            owner: Principal::parse("alice").expect("valid"),
            parent: None,
        },
    )
    .await;
    let role = Some(RoleName::parse("editor").expect("valid"));
    run(
        member("alice"),
        ResourceCommand::CreateInviteLink {
            resource: space.clone(),
            role,
            expires_at: None,
            max_uses: None,
        },
    )
    .await;
    let emails = EmailList::Joined("dana@example.com, erin@example.com".into());
    let before = run(
        member("alice"),
        ResourceCommand::CreateInvitations {
            resource: space.clone(),
            emails,
            role: None,
            expires_at: None,
            message: None,
        },
    )
    .await
    .position;
    let link = engine.links(&space).expect("lists")[0].clone();
    engine
        .accept(
            member("bob"),
            &engine.code(link.number, link.generation).encode_base64(),
            None,
        )
        .await
        .expect("bob joins");
    engine.close().await;
    before
}

async fn dump(dir: &Path) -> Vec<(&'static str, Vec<roster_projections::Row>)> {
    let store = SledStore::open(dir, SledOptions::default()).expect("opens");
    let models = ReadModels::open_sled(store.db(), "rm.").expect("opens read models");
    models
        .catch_up(&store, &mut |_| {})
        .await
        .expect("catches up");
    models.dump().expect("dumps")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_the_same_chain_and_read_models() {
    let source = tempfile::tempdir().expect("temporary directory");
    populate(source.path()).await;
    let verified = roster(source.path(), &["verify", "--quiet"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let summary = text(&verified.stdout);
    assert!(summary.starts_with("ok: 6 events"), "{summary}");

    let export = source.path().join("export.ndjson");
    let exported = roster(source.path(), &["export", export.to_str().expect("utf-8")]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let target = tempfile::tempdir().expect("temporary directory");
    // The log alone is what this test compares; the secret's move has a test of its own.
    let imported = roster(
        target.path(),
        &["import", "--new-secret", export.to_str().expect("utf-8")],
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let again = roster(target.path(), &["verify", "--quiet"]);
    assert_eq!(
        text(&again.stdout),
        summary,
        "the same events, streams and head hash"
    );
    assert_eq!(dump(target.path()).await, dump(source.path()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_export_is_refused_with_the_first_bad_position() {
    let source = tempfile::tempdir().expect("temporary directory");
    populate(source.path()).await;
    let exported = roster(source.path(), &["export"]);
    let mut lines: Vec<String> = text(&exported.stdout).lines().map(String::from).collect();
    lines[3] = lines[3].replace("\"role\":\"viewer\"", "\"role\":\"owner\"");
    assert!(lines[3].contains("owner"), "the edit took: {}", lines[3]);
    let edited = source.path().join("edited.ndjson");
    std::fs::write(&edited, lines.join("\n")).expect("writes");
    let target = tempfile::tempdir().expect("temporary directory");
    let refused = roster(
        target.path(),
        &["import", "--new-secret", edited.to_str().expect("utf-8")],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("position 4"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!target.path().join("db").exists(), "nothing was written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_tampered_event_and_replay_rebuilds() {
    let dir = tempfile::tempdir().expect("temporary directory");
    populate(dir.path()).await;
    let replayed = roster(dir.path(), &["replay", "--verify"]);
    assert!(replayed.status.success(), "{}", text(&replayed.stderr));
    assert!(
        text(&replayed.stdout).contains("equal a rebuild from 6 events"),
        "{}",
        text(&replayed.stdout)
    );
    let rebuilt = roster(dir.path(), &["replay"]);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt.stderr));

    // Promote bob to owner behind the log's back.
    {
        let db = sled::open(dir.path()).expect("opens raw");
        let tree = db.open_tree("log").expect("log tree");
        let key = [&[b'e'][..], &6u64.to_be_bytes()].concat();
        // Event 6 is stored under its own key, or in a run of its command's events under the
        // first one's position (docs/ARCHITECTURE.md): the edit writes the run's events back one
        // per key, the layout the log also reads.
        let (first_key, stored) = tree
            .range(&b"e"[..]..=&key[..])
            .next_back()
            .expect("reads")
            .expect("present");
        let first = u64::from_be_bytes(first_key[1..9].try_into().expect("a position"));
        let mut batch = sled::Batch::default();
        for (position, json) in (first..).zip(stored_events(&stored)) {
            let edited = if position == 6 {
                let edited = text(json).replace("\"role\":\"editor\"", "\"role\":\"owner\"");
                assert_ne!(edited, text(json));
                edited
            } else {
                text(json)
            };
            let own_key = [&[b'e'][..], &position.to_be_bytes()].concat();
            batch.insert(own_key, edited.as_bytes());
        }
        tree.apply_batch(batch).expect("writes");
        db.flush().expect("flushes");
    }
    let verified = roster(dir.path(), &["verify", "--quiet"]);
    assert_eq!(verified.status.code(), Some(1));
    assert!(
        text(&verified.stderr).contains("position 6"),
        "{}",
        text(&verified.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_shows_the_history_and_the_rolemap_as_of_a_time() {
    let dir = tempfile::tempdir().expect("temporary directory");
    populate(dir.path()).await;
    let now = roster(dir.path(), &["audit", "space/spc_42"]);
    assert!(now.status.success(), "{}", text(&now.stderr));
    let tables = text(&now.stdout);
    assert!(tables.contains("bob joined as editor"), "{tables}");
    assert!(
        tables.contains("rolemap of space/spc_42 at now"),
        "{tables}"
    );
    let bob_only = roster(dir.path(), &["audit", "space/spc_42", "--principal", "bob"]);
    let tables = text(&bob_only.stdout);
    assert!(
        tables.contains("bob") && !tables.contains("alice  "),
        "{tables}"
    );
    // The rolemap's columns line up under its header.
    assert!(
        tables.contains(&format!("{:<24}  {:<14}  ", "bob", "editor")),
        "{tables}"
    );
    let before = roster(
        dir.path(),
        &["audit", "space/spc_42", "--as-of", "2000-01-01T00:00:00Z"],
    );
    assert_eq!(before.status.code(), Some(1));
    assert!(
        text(&before.stderr).contains("did not exist then"),
        "{}",
        text(&before.stderr)
    );
    let bad = roster(
        dir.path(),
        &["audit", "space/spc_42", "--as-of", "yesterday"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("roster: --as-of: "),
        "{}",
        text(&bad.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_compares_every_snapshot_with_the_log_and_reports_an_edited_one() {
    use roster_domain::{Event, ResourceState, Timestamp, Via};
    use roster_eventstore::EventStore;
    use roster_projections::{Snapshot, Snapshots};

    let dir = tempfile::tempdir().expect("temporary directory");
    populate(dir.path()).await;
    let stream = "resource:space/spc_42";
    // The state after each version, folded from the log, as the engine would snapshot it.
    let folded = {
        let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
        let mut state = ResourceState::default();
        let mut latest_ms = i64::MIN;
        let mut folded = Vec::new();
        for envelope in store.read_stream(stream, 1, 100).await.expect("reads") {
            let event = Event::from_parts(&envelope.event_type, envelope.schema, envelope.data)
                .expect("decodes");
            state = state.evolve(&event);
            latest_ms = latest_ms.max(envelope.occurred_at.0);
            folded.push(Snapshot {
                version: envelope.version,
                position: envelope.position,
                latest_ms,
                hash: envelope.hash,
                state: state.clone(),
            });
        }
        folded
    };
    assert!(folded.len() >= 3, "the resource has a few events");
    let snapshots = Snapshots::in_dir(&dir.path().join("snapshots"));
    for snapshot in &folded {
        snapshots.save(stream, snapshot).expect("saves");
    }
    let verified = roster(dir.path(), &["verify", "--quiet"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));

    // Mallory made an owner in the snapshot of version 2, behind the log's back: `as_of`
    // would start from it, so verify must refuse it.
    let mut edited = folded[1].clone();
    edited.state = edited.state.evolve(&Event::MemberAdded {
        principal: Principal::parse("mallory").expect("valid"),
        role: RoleName::parse("owner").expect("valid"),
        granted_by: None,
        via: Via::Direct,
        at: Timestamp::from_unix_ms(edited.latest_ms).expect("in range"),
    });
    snapshots.save(stream, &edited).expect("saves");
    let verified = roster(dir.path(), &["verify", "--quiet"]);
    assert_eq!(verified.status.code(), Some(1));
    let said = text(&verified.stderr);
    assert!(
        said.contains(&format!("position {}", edited.position))
            && said.contains("snapshot of space/spc_42 at version 2 differs from the log"),
        "{said}"
    );

    std::fs::remove_dir_all(dir.path().join("snapshots")).expect("removes");
    let verified = roster(dir.path(), &["verify", "--quiet"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_last_owner_demoted_by_an_event_the_domain_never_decides() {
    use roster_domain::{Event, Timestamp, Via};
    use roster_eventstore::{AppendRequest, EventStore, ExpectedVersion, NewEvent};

    let dir = tempfile::tempdir().expect("temporary directory");
    populate(dir.path()).await;
    // A chain-valid event no decision would make: alice, the only owner, "added" again as a
    // viewer (a `MemberAdded` overwrites the member).
    {
        let store = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
        let event = Event::MemberAdded {
            principal: Principal::parse("alice").expect("valid"),
            role: RoleName::parse("viewer").expect("valid"),
            granted_by: None,
            via: Via::Direct,
            at: Timestamp::from_unix_ms(1_790_000_000_000).expect("in range"),
        };
        let new = NewEvent {
            event_id: "forged".into(),
            event_type: event.event_type().to_string(),
            schema: event.schema(),
            data: event.to_data(),
        };
        let appended = store
            .append(AppendRequest::new(
                "resource:space/spc_42",
                ExpectedVersion::Any,
                vec![new],
            ))
            .await
            .expect("appends");
        store.close();
        drop(store);
        let verified = roster(dir.path(), &["verify", "--quiet"]);
        assert_eq!(verified.status.code(), Some(1));
        let said = text(&verified.stderr);
        assert!(
            said.contains(&format!("position {}", appended.position))
                && said.contains("space/spc_42 has no owner left"),
            "{said}"
        );
    }
}
