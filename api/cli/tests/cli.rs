//! The `roster` command line against a real data directory: verify, export and import,
//! replay, audit, and what each says when the log has been tampered with.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use roster_domain::{
    Actor, Command as DomainCommand, EmailList, Principal, ResourceCommand, ResourceId, RoleName,
    ServerSecret,
};
use roster_engine::{Engine, EngineConfig, Request};
use roster_eventstore::{SledOptions, SledStore};
use roster_projections::ReadModels;

fn roster(data: &Path, args: &[&str]) -> Output {
    roster_with(data, args, &[])
}

/// `roster` with these environment variables; `ROSTER_SECRET` only when given here, so that
/// the caller's environment never decides what `import` may do.
fn roster_with(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("ROSTER_SECRET")
        .envs(env.iter().copied())
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

/// `populate`'s log, then a one-use link that carol joined through: nine events, the last
/// two carol's use (positions 8 and 9).
async fn populate_with_a_one_use_link(dir: &Path) {
    populate(dir).await;
    let engine = Engine::open(
        dir,
        SledOptions::default(),
        EngineConfig::new(ServerSecret::new(b"cli".to_vec())),
    )
    .await
    .expect("opens");
    let space = ResourceId::parse("space/spc_42").expect("valid");
    engine
        .execute(Request::new(
            member("alice"),
            DomainCommand::Resource(ResourceCommand::CreateInviteLink {
                resource: space.clone(),
                role: Some(RoleName::parse("commenter").expect("valid")),
                expires_at: None,
                max_uses: Some(1),
            }),
        ))
        .await
        .expect("creates the link");
    let link = engine
        .links(&space)
        .expect("lists")
        .into_iter()
        .find(|l| l.max_uses == Some(1))
        .expect("the one-use link");
    engine
        .accept(
            member("carol"),
            &engine.code(link.number, link.generation).encode_base64(),
            None,
        )
        .await
        .expect("carol joins");
    engine.close().await;
}

fn envelopes_of(export: &str) -> Vec<roster_eventstore::Envelope> {
    export
        .lines()
        .map(|line| serde_json::from_str(line).expect("an envelope"))
        .collect()
}

/// A new event after the last one of `log`, in `stream`, by `actor`: a copy of the last
/// envelope with the next position and version and its own ids.
fn appended(
    log: &[roster_eventstore::Envelope],
    stream: &str,
    actor: &str,
    event_type: &str,
    data: serde_json::Value,
) -> roster_eventstore::Envelope {
    let last = log.last().expect("a log").clone();
    let position = last.position + 1;
    roster_eventstore::Envelope {
        position,
        stream: stream.to_string(),
        version: u64::try_from(log.iter().filter(|e| e.stream == stream).count()).expect("fits")
            + 1,
        event_id: format!("edited-{position}"),
        event_type: event_type.to_string(),
        schema: 1,
        actor: actor.to_string(),
        command_id: format!("edited-command-{position}"),
        correlation_id: format!("edited-command-{position}"),
        data,
        ..last
    }
}

/// Links every envelope to the one before and recomputes its hash with the store's own
/// canonical hashing, so that the chain check alone passes: what is left to catch an edit is
/// the domain check.
fn rechain(log: &mut [roster_eventstore::Envelope]) {
    let mut previous = roster_eventstore::Hash::GENESIS;
    for envelope in log.iter_mut() {
        envelope.prev_hash = previous;
        envelope.hash = envelope.compute_hash();
        previous = envelope.hash;
    }
}

fn write_export(path: &Path, log: &[roster_eventstore::Envelope]) {
    let lines: Vec<String> = log.iter().map(|e| e.to_json_line()).collect();
    std::fs::write(path, lines.join("\n") + "\n").expect("writes");
}

/// Writes `log` into a new log in `dir` the way import does, with the chain check only: a data
/// directory holding a log that no decision made, for `verify` to find.
fn forge_data_dir(dir: &Path, log: &[roster_eventstore::Envelope]) {
    let mut envelopes = log.iter().cloned().map(Ok);
    SledStore::import(dir, SledOptions::default(), &mut envelopes, &mut |_| {})
        .expect("the chain alone is sound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_and_import_refuse_a_log_the_rules_would_not_have_decided() {
    let source = tempfile::tempdir().expect("temporary directory");
    populate_with_a_one_use_link(source.path()).await;
    let good = envelopes_of(&text(&roster(source.path(), &["export"]).stdout));
    assert_eq!(good.len(), 9, "the fixture's events");
    let space = "resource:space/spc_42";

    // Each edit keeps the chain sound (hashes recomputed) and breaks a rule that an event
    // records the outcome of; each names the position and the words that must be said.
    let mut edits: Vec<(&str, Vec<roster_eventstore::Envelope>, u64, Vec<&str>)> = Vec::new();

    let mut owner_via_editor_link = good.clone();
    let joined = &mut owner_via_editor_link[5];
    assert_eq!(joined.event_type, "MemberAdded");
    joined.data["role"] = "owner".into();
    edits.push((
        "bob joins as owner through an editor link",
        owner_via_editor_link,
        6,
        vec![
            "MemberAdded of bob as owner via link 1",
            "the rules decide",
            "MemberAdded of bob as editor via link 1",
        ],
    ));

    // Dave uses carol's one-use link after her: the log says a second use.
    let mut used_twice = good.clone();
    let (used, added) = (good[7].clone(), good[8].clone());
    assert_eq!(
        (used.event_type.as_str(), added.event_type.as_str()),
        ("InviteLinkUsed", "MemberAdded")
    );
    let mut again = appended(
        &used_twice,
        space,
        "dave",
        "InviteLinkUsed",
        used.data.clone(),
    );
    again.data["used_by"] = "dave".into();
    again.data["uses"] = 2.into();
    used_twice.push(again);
    let mut joins = appended(
        &used_twice,
        space,
        "dave",
        "MemberAdded",
        added.data.clone(),
    );
    joins.command_id.clone_from(&used_twice[9].command_id);
    joins
        .correlation_id
        .clone_from(&used_twice[9].correlation_id);
    joins.data["principal"] = "dave".into();
    used_twice.push(joins);
    edits.push((
        "a one-use link used twice",
        used_twice,
        10,
        vec![
            "InviteLinkUsed of link",
            "by dave (use 2)",
            "invitation_exhausted",
        ],
    ));

    // Alice, the only owner, leaves.
    let mut last_owner_leaves = good.clone();
    let leaves = appended(
        &last_owner_leaves,
        space,
        "alice",
        "MemberRemoved",
        serde_json::json!({"principal": "alice", "role": "owner", "removed_by": "alice", "left": true}),
    );
    last_owner_leaves.push(leaves);
    edits.push((
        "the last owner leaves",
        last_owner_leaves,
        10,
        vec!["space/spc_42 has no owner left", "last_owner"],
    ));

    // An event of a type this version does not know.
    let mut unknown_type = good.clone();
    let unknown = appended(
        &unknown_type,
        space,
        "alice",
        "MemberPromoted",
        serde_json::json!({"principal": "bob"}),
    );
    unknown_type.push(unknown);
    edits.push((
        "an event of an unknown type",
        unknown_type,
        10,
        vec!["MemberPromoted"],
    ));

    // A known type under a schema version this version does not know.
    let mut unknown_schema = good.clone();
    let mut newer = appended(
        &unknown_schema,
        space,
        "alice",
        "MemberRemoved",
        serde_json::json!({"principal": "bob", "role": "editor", "removed_by": "alice", "left": false}),
    );
    newer.schema = 2;
    unknown_schema.push(newer);
    edits.push((
        "an event of an unknown schema version",
        unknown_schema,
        10,
        vec!["event type MemberRemoved has no schema version 2"],
    ));

    for (what, mut log, position, words) in edits {
        rechain(&mut log);
        let said_at = format!("position {position}: ");

        let export = source.path().join("edited.ndjson");
        write_export(&export, &log);
        let target = tempfile::tempdir().expect("temporary directory");
        let refused = roster(
            target.path(),
            &["import", "--new-secret", export.to_str().expect("utf-8")],
        );
        let said = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{what}: import: {said}");
        assert!(said.contains(&said_at), "{what}: import: {said}");
        for word in &words {
            assert!(said.contains(word), "{what}: import: {said}");
        }
        assert_eq!(said.lines().count(), 1, "{what}: one line: {said}");
        assert!(
            std::fs::read_dir(target.path())
                .expect("lists")
                .next()
                .is_none(),
            "{what}: import wrote nothing"
        );

        // The same log already in a data directory (written past the domain check): verify
        // finds the same position.
        let forged = tempfile::tempdir().expect("temporary directory");
        forge_data_dir(forged.path(), &log);
        let verified = roster(forged.path(), &["verify", "--quiet"]);
        let said = text(&verified.stderr);
        assert_eq!(verified.status.code(), Some(1), "{what}: verify: {said}");
        assert!(said.contains(&said_at), "{what}: verify: {said}");
        for word in &words {
            assert!(said.contains(word), "{what}: verify: {said}");
        }
    }

    // The unedited log, through the same helpers, passes both.
    let mut log = good;
    rechain(&mut log);
    let export = source.path().join("good.ndjson");
    write_export(&export, &log);
    let target = tempfile::tempdir().expect("temporary directory");
    let imported = roster(
        target.path(),
        &["import", "--new-secret", export.to_str().expect("utf-8")],
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let verified = roster(target.path(), &["verify", "--quiet"]);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
}

/// A server killed when the test is done with it, or fails: this test only reads from it.
struct Killed(support::Served);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.child.kill();
        let _ = self.0.child.wait();
    }
}

/// Answers `POST /v1/invitations/preview` for `code` on a server, as `(status, body)`.
fn preview(address: &str, token: &str, code: &str) -> (String, String) {
    let output = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("http://{address}/v1/invitations/preview"))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(["-d", &serde_json::json!({ "code": code }).to_string()])
        .output()
        .expect("curl runs");
    let said = text(&output.stdout);
    let (body, status) = said.rsplit_once('\n').expect("a status line");
    (status.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_moves_the_secret_with_the_log_or_says_why_not() {
    use std::os::unix::fs::PermissionsExt;

    let source = tempfile::tempdir().expect("temporary directory");
    populate(source.path()).await;
    // The secret `serve` would have made there: `populate`'s codes are derived from it.
    std::fs::write(source.path().join("secret.key"), "cli\n").expect("writes");
    let link = ServerSecret::new(b"cli".to_vec());
    let code = roster_domain::InviteCode::derive(&link, 1, 1).encode_base64();
    let export = source.path().join("export.ndjson");
    let exported = roster(source.path(), &["export", export.to_str().expect("utf-8")]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    let export = export.to_str().expect("utf-8");

    // Without a word about the secret, import refuses, in one line that says what to pass,
    // and writes nothing.
    let target = tempfile::tempdir().expect("temporary directory");
    let refused = roster(target.path(), &["import", export]);
    let said = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "{said}");
    for word in ["--secret-from", "ROSTER_SECRET", "--new-secret"] {
        assert!(said.contains(word), "{said}");
    }
    assert!(
        std::fs::read_dir(target.path())
            .expect("lists")
            .next()
            .is_none(),
        "nothing written"
    );

    // With --secret-from, the secret comes along (0600), and the old link's code still opens
    // its link on a server started on the new directory.
    let imported = roster(
        target.path(),
        &[
            "import",
            "--secret-from",
            source.path().to_str().expect("utf-8"),
            export,
        ],
    );
    assert!(imported.status.success(), "{}", text(&imported.stderr));
    let copied = target.path().join("secret.key");
    assert_eq!(
        std::fs::read(&copied).expect("a secret"),
        b"cli\n",
        "the same secret"
    );
    let mode = std::fs::metadata(&copied)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let token = "an admin token for this test";
    let served = Killed(support::Served::start(target.path(), Some(token)));
    let (status, body) = preview(&served.0.address, token, &code);
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("space/spc_42"), "{body}");
    drop(served);

    // With ROSTER_SECRET set, nothing needs copying; with --new-secret, import says what
    // stops working.
    let target = tempfile::tempdir().expect("temporary directory");
    let with_env = roster_with(
        target.path(),
        &["import", export],
        &[("ROSTER_SECRET", "a secret of at least sixteen characters")],
    );
    assert!(with_env.status.success(), "{}", text(&with_env.stderr));
    assert!(text(&with_env.stderr).contains("ROSTER_SECRET"));
    let target = tempfile::tempdir().expect("temporary directory");
    let renewed = roster(target.path(), &["import", "--new-secret", export]);
    let said = text(&renewed.stderr);
    assert!(renewed.status.success(), "{said}");
    assert!(
        said.contains("every invitation code, link code and webhook signing secret"),
        "{said}"
    );
    assert!(!target.path().join("secret.key").exists());
}

#[test]
fn every_log_tool_but_import_refuses_a_directory_that_holds_no_log() {
    let parent = tempfile::tempdir().expect("temporary directory");
    let missing = parent.path().join("typo");
    let empty = parent.path().join("empty");
    std::fs::create_dir(&empty).expect("creates");
    let tools: [&[&str]; 5] = [
        &["verify", "--quiet"],
        &["replay"],
        &["replay", "--verify"],
        &["audit", "space/spc_42"],
        &["export"],
    ];
    for dir in [&missing, &empty] {
        for args in tools {
            let refused = roster(dir, args);
            let said = text(&refused.stderr);
            assert_eq!(
                refused.status.code(),
                Some(1),
                "{args:?} on {dir:?}: {said}"
            );
            assert_eq!(
                said,
                format!(
                    "roster: {} holds no Roster log (give --data the directory serve wrote)\n",
                    dir.display()
                ),
                "{args:?}"
            );
            assert!(refused.stdout.is_empty(), "{args:?}");
        }
    }
    // Nothing was made: no directory where there was none, no file in the empty one.
    assert!(!missing.exists());
    assert!(std::fs::read_dir(&empty).expect("lists").next().is_none());
}
