//! The engine end to end, in memory and on sled: commands, read-your-writes, codes, past rolemaps.

use roster_domain::{
    Actor, Command, DomainError, Principal, ResourceCommand, ResourceId, RoleName, ServerSecret,
    Timestamp,
};
use roster_engine::{Engine, EngineConfig, EngineError, Request};
use roster_projections::AsOf;

fn principal(name: &str) -> Principal {
    Principal::parse(name).expect("a valid principal")
}

fn as_principal(name: &str) -> Actor {
    Actor::Principal {
        principal: principal(name),
        email: None,
    }
}

fn role(name: &str) -> RoleName {
    RoleName::parse(name).expect("a valid role")
}

async fn walk_through(engine: &Engine) {
    let space = ResourceId::parse("space/spc_42").expect("a valid resource");
    let register = ResourceCommand::RegisterResource {
        resource: space.clone(),
        owner: principal("alice"),
        parent: None,
    };
    engine
        .execute(Request::new(Actor::Admin, Command::Resource(register)))
        .await
        .expect("registers");
    let create = ResourceCommand::CreateInviteLink {
        resource: space.clone(),
        role: Some(role("editor")),
        expires_at: None,
        max_uses: Some(1),
    };
    let created = engine
        .execute(Request::new(
            as_principal("alice"),
            Command::Resource(create),
        ))
        .await
        .expect("creates a link");
    let links = engine.links(&space).expect("lists links");
    assert_eq!(
        links.len(),
        1,
        "read-your-writes: the link is listed when the command returns"
    );
    let code = engine
        .code(links[0].number, links[0].generation)
        .encode_base64();
    let before = created.position;

    let accepted = engine
        .accept(as_principal("bob"), &code, None)
        .await
        .expect("bob joins");
    assert_eq!((accepted.role.as_str(), accepted.changed), ("editor", true));
    let again = engine.accept(as_principal("carol"), &code, None).await;
    assert!(
        matches!(
            again,
            Err(EngineError::Domain(DomainError::InvitationExhausted))
        ),
        "{again:?}"
    );

    let members = engine.members(&space, None, 10).expect("lists members");
    let names: Vec<&str> = members.items.iter().map(|m| m.principal.as_str()).collect();
    assert_eq!(names, vec!["alice", "bob"]);
    let (past, _) = engine
        .members_as_of(&space, AsOf::Position(before))
        .await
        .expect("reads")
        .expect("existed");
    assert_eq!(
        past.iter()
            .map(|m| m.principal.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    let history = engine.history(&space, 0, 100).expect("reads history");
    assert!(
        history
            .iter()
            .any(|h| h.summary.contains("bob joined as editor")),
        "{history:?}"
    );
    let hex = engine
        .code(links[0].number, links[0].generation)
        .encode_hex();
    let preview = engine.preview(&hex).await.expect("previews the hex form");
    assert_eq!(preview.resource, space);
    assert!(matches!(
        engine.preview("not-a-code").await,
        Err(EngineError::Domain(DomainError::InvitationNotFound))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_in_memory() {
    let (config, _clock) = EngineConfig::deterministic(
        ServerSecret::new(b"test-secret".to_vec()),
        7,
        Timestamp::from_unix_ms(1_790_000_000_000).expect("in range"),
    );
    let engine = Engine::in_memory(config).await.expect("starts");
    walk_through(&engine).await;
    engine.close().await;
}

/// The engine on sled in `dir`, as `Engine::open` makes it, with a handle kept on its read
/// models to compare them across a restart.
async fn open_keeping_models(
    dir: &std::path::Path,
    config: EngineConfig,
) -> (Engine, std::sync::Arc<roster_projections::ReadModels>) {
    let store = std::sync::Arc::new(
        roster_eventstore::SledStore::open(dir, Default::default()).expect("opens the log"),
    );
    let models = std::sync::Arc::new(
        roster_projections::ReadModels::open_sled(store.db(), "rm.").expect("opens the models"),
    );
    let snapshots = roster_projections::Snapshots::in_dir(&dir.join("snapshots"));
    let engine = Engine::start_with(store, std::sync::Arc::clone(&models), snapshots, config)
        .await
        .expect("starts");
    (engine, models)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walk_through_on_sled_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = EngineConfig::new(ServerSecret::new(b"test-secret".to_vec()));
    let (engine, models) = open_keeping_models(dir.path(), config.clone()).await;
    walk_through(&engine).await;
    let dump = models.dump().expect("dumps");
    engine.close().await;
    drop((engine, models));
    let (engine, models) = open_keeping_models(dir.path(), config).await;
    assert_eq!(models.dump().expect("dumps"), dump);
    let space = ResourceId::parse("space/spc_42").expect("a valid resource");
    assert_eq!(
        engine.members(&space, None, 10).expect("lists").items.len(),
        2
    );
    engine.close().await;
}

/// A read model's tree whose writes fail once `failing` is set, as on a full disk.
struct FailingTree {
    rows: roster_projections::MemoryTree,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl roster_projections::Tree for FailingTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, roster_projections::ProjectionError> {
        self.rows.get(key)
    }

    fn scan_prefix(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<roster_projections::Row>, roster_projections::ProjectionError> {
        self.rows.scan_prefix(prefix, from, limit)
    }

    fn apply(
        &self,
        changes: &[roster_projections::Change<'_>],
    ) -> Result<(), roster_projections::ProjectionError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(roster_projections::ProjectionError::Io(
                "no space left on device".into(),
            ));
        }
        self.rows.apply(changes)
    }

    fn clear(&self) -> Result<(), roster_projections::ProjectionError> {
        self.rows.clear()
    }
}

#[tokio::test]
async fn a_read_model_that_cannot_be_written_fails_the_engine_and_the_commands_after_it() {
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let models = roster_projections::ReadModels::open(|_| {
        Ok(std::sync::Arc::new(FailingTree {
            rows: roster_projections::MemoryTree::default(),
            failing: std::sync::Arc::clone(&failing),
        }) as std::sync::Arc<dyn roster_projections::Tree>)
    })
    .expect("opens");
    let config = EngineConfig::new(ServerSecret::new(b"read-model-failure".to_vec()));
    let engine = Engine::in_memory_with(models, config)
        .await
        .expect("starts");
    let register = |id: &str| {
        Request::new(
            Actor::Admin,
            Command::Resource(ResourceCommand::RegisterResource {
                resource: ResourceId::parse(id).expect("a valid resource"),
                owner: principal("alice"),
                parent: None,
            }),
        )
    };
    engine
        .execute(register("space/a"))
        .await
        .expect("registers");
    assert!(!engine.store_failed());

    // The log takes the next command; its read models cannot follow.
    failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = engine.execute(register("space/b")).await;
    assert!(
        matches!(refused, Err(EngineError::Unavailable(_))),
        "{refused:?}"
    );
    assert!(engine.store_failed(), "the engine says it failed");
    // Nor does it answer as if it had recovered once the writes would succeed again: a new
    // engine must be opened (`roster serve` does that itself).
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let after = engine.execute(register("space/c")).await;
    assert!(after.is_err(), "{after:?}");
    assert!(engine.store_failed());
}
