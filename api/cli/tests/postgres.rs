//! The log tools on a PostgreSQL store (`--store`): a sled log exported and imported into
//! PostgreSQL keeps its head hash, verifies, audits and replays there, and comes back to sled
//! byte for byte.

#[path = "../../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;

use std::path::Path;
use std::process::{Command, Output};

const SECRET: &str = "cli-postgres-secret-0123";

/// `roster` on `store` (`sled` or a URL) and `data`, with the log's secret in `ROSTER_SECRET`.
fn roster(store: &str, data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_roster"))
        .arg("--store")
        .arg(store)
        .arg("--data")
        .arg(data)
        .args(args)
        .env("ROSTER_SECRET", SECRET)
        .env_remove("ROSTER_STORE")
        .output()
        .expect("roster runs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A sled data directory with a resource, members, a link and invitations, made by `serve`'s
/// engine through the walk the log tools' own tests use (an export of a real server run).
async fn populated_sled(dir: &Path) {
    use roster_domain::{
        Actor, Command as DomainCommand, EmailList, Principal, ResourceCommand, ResourceId,
        RoleName, ServerSecret,
    };
    use roster_engine::{Engine, EngineConfig, Request};
    let engine = Engine::open(
        dir,
        roster_eventstore::SledOptions::default(),
        EngineConfig::new(ServerSecret::new(SECRET.as_bytes().to_vec())),
    )
    .await
    .expect("opens");
    let space = ResourceId::parse("space/spc_42").expect("valid");
    let alice = Actor::Principal {
        principal: Principal::parse("alice").expect("valid"),
        email: None,
    };
    let commands = [
        (
            Actor::Admin,
            ResourceCommand::RegisterResource {
                resource: space.clone(),
                owner: Principal::parse("alice").expect("valid"),
                parent: None,
            },
        ),
        (
            alice.clone(),
            ResourceCommand::CreateInviteLink {
                resource: space.clone(),
                role: Some(RoleName::parse("editor").expect("valid")),
                expires_at: None,
                max_uses: None,
            },
        ),
        (
            alice.clone(),
            ResourceCommand::CreateInvitations {
                resource: space.clone(),
                emails: EmailList::Joined("dana@example.com, erin@example.com".into()),
                role: None,
                expires_at: None,
                message: None,
            },
        ),
        (
            alice,
            ResourceCommand::SetMemberRole {
                resource: space.clone(),
                principal: Principal::parse("bob").expect("valid"),
                role: RoleName::parse("viewer").expect("valid"),
            },
        ),
    ];
    for (actor, command) in commands {
        engine
            .execute(Request::new(actor, DomainCommand::Resource(command)))
            .await
            .expect("executes");
    }
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_log_moves_to_postgres_and_back_with_the_same_head_hash() {
    let sled_dir = tempfile::tempdir().expect("a directory");
    populated_sled(sled_dir.path()).await;
    let url = pg::database();
    let node = tempfile::tempdir().expect("a directory");
    let verified_on_sled = ok(&roster("sled", sled_dir.path(), &["verify", "--quiet"]));
    assert!(verified_on_sled.starts_with("ok: "), "{verified_on_sled}");

    let export = sled_dir.path().join("export.ndjson");
    ok(&roster(
        "sled",
        sled_dir.path(),
        &["export", export.to_str().expect("utf-8")],
    ));
    assert_eq!(
        ok(&roster(&url, node.path(), &["migrate"])).trim(),
        "applied migrations 1"
    );
    assert_eq!(
        ok(&roster(&url, node.path(), &["migrate"])).trim(),
        "the store is up to date"
    );
    let imported = roster(
        &url,
        node.path(),
        &["import", export.to_str().expect("utf-8")],
    );
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    // The same events, streams, resources and head hash.
    assert_eq!(
        ok(&roster(&url, node.path(), &["verify", "--quiet"])),
        verified_on_sled
    );
    // The same audit, read from PostgreSQL.
    assert_eq!(
        ok(&roster(&url, node.path(), &["audit", "space/spc_42"])),
        ok(&roster("sled", sled_dir.path(), &["audit", "space/spc_42"]))
    );
    let replayed = ok(&roster(&url, node.path(), &["replay"]));
    assert!(
        replayed.starts_with("rebuilt the read models from "),
        "{replayed}"
    );
    let compared = ok(&roster(&url, node.path(), &["replay", "--verify"]));
    assert!(
        compared.starts_with("the read models equal a rebuild"),
        "{compared}"
    );
    // A second import into a store that holds events is refused, and changes nothing.
    let again = roster(
        &url,
        node.path(),
        &["import", export.to_str().expect("utf-8")],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("empty store"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // And back: PostgreSQL's export is the sled export, byte for byte.
    let back = node.path().join("back.ndjson");
    ok(&roster(
        &url,
        node.path(),
        &["export", back.to_str().expect("utf-8")],
    ));
    assert_eq!(
        std::fs::read(&back).expect("reads"),
        std::fs::read(&export).expect("reads")
    );
    let sled_again = tempfile::tempdir().expect("a directory");
    let target = sled_again.path().join("data");
    ok(&roster(
        "sled",
        &target,
        &["import", back.to_str().expect("utf-8")],
    ));
    assert_eq!(
        ok(&roster("sled", &target, &["verify", "--quiet"])),
        verified_on_sled
    );
}

#[test]
fn bench_and_probe_say_they_run_on_sled_only() {
    let dir = tempfile::tempdir().expect("a directory");
    for tool in ["bench", "probe"] {
        let output = roster("postgres://roster@127.0.0.1:1/none", dir.path(), &[tool]);
        assert_eq!(output.status.code(), Some(1), "{tool}");
        assert_eq!(
            String::from_utf8_lossy(&output.stderr).trim(),
            format!(
                "roster: `{tool}` runs on the embedded sled log only: leave out --store (ROSTER_STORE)"
            )
        );
    }
}
