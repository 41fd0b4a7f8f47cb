//! The child process of the projection crash test: runs a durable engine and drives it from
//! many concurrent tasks (a shared hot resource and resources of their own), printing one line
//! per acknowledged command, until it is killed.
//!
//! Usage: `crash-engine DATA_DIR TASKS`. Each line is `ack POSITION`.

use std::io::Write;

use roster_domain::{
    Actor, Command, Principal, ResourceCommand, ResourceId, RoleName, ServerSecret,
};
use roster_engine::{Engine, EngineConfig, Request};

fn ack(position: u64) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack {position}")
        .and_then(|()| out.flush())
        .is_ok()
}

fn principal(name: &str) -> Principal {
    Principal::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

async fn drive(engine: Engine, task: u32, run: String) -> Result<(), String> {
    let shared = ResourceId::parse("space/shared").map_err(|e| e.to_string())?;
    let shared_link = engine.links(&shared).map_err(|e| e.to_string())?[0].clone();
    let shared_code = engine
        .code(shared_link.number, shared_link.generation)
        .encode_base64();
    for n in 0u64.. {
        let own =
            ResourceId::parse(&format!("space/{run}-{task}-{n}")).map_err(|e| e.to_string())?;
        let owner = principal(&format!("o{task}"));
        let as_owner = Actor::Principal {
            principal: owner.clone(),
            email: None,
        };
        let register = ResourceCommand::RegisterResource {
            resource: own.clone(),
            owner,
            parent: None,
        };
        let done = engine
            .execute(Request::new(Actor::Admin, Command::Resource(register)))
            .await
            .map_err(|e| e.to_string())?;
        if !ack(done.position) {
            return Ok(());
        }
        let joiner = Actor::Principal {
            principal: principal(&format!("j{run}-{task}-{n}")),
            email: None,
        };
        let joined = engine
            .accept(joiner.clone(), &shared_code, None)
            .await
            .map_err(|e| e.to_string())?;
        if !ack(joined.position) {
            return Ok(());
        }
        let grant = ResourceCommand::SetMemberRole {
            resource: own,
            principal: joiner.principal().cloned().ok_or("a principal")?,
            role: RoleName::parse("editor").map_err(|e| e.to_string())?,
        };
        let granted = engine
            .execute(Request::new(as_owner, Command::Resource(grant)))
            .await
            .map_err(|e| e.to_string())?;
        if !ack(granted.position) {
            return Ok(());
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(tasks)) = (args.next(), args.next().and_then(|t| t.parse::<u32>().ok()))
    else {
        eprintln!("usage: crash-engine DATA_DIR TASKS");
        std::process::exit(2);
    };
    let config = EngineConfig::new(ServerSecret::new(b"crash-secret".to_vec()));
    let engine = match Engine::open(std::path::Path::new(&dir), Default::default(), config).await {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("crash-engine: {error}");
            std::process::exit(1);
        }
    };
    let shared = ResourceId::parse("space/shared").unwrap_or_else(|e| panic!("{e}"));
    if engine.resource(&shared).ok().flatten().is_none() {
        let register = ResourceCommand::RegisterResource {
            resource: shared.clone(),
            owner: principal("owner"),
            parent: None,
        };
        let link = ResourceCommand::CreateInviteLink {
            resource: shared,
            role: None,
            expires_at: None,
            max_uses: None,
        };
        for command in [register, link] {
            if let Err(error) = engine
                .execute(Request::new(Actor::Admin, Command::Resource(command)))
                .await
            {
                eprintln!("crash-engine: {error}");
                std::process::exit(1);
            }
        }
    }
    let run = ulid::Ulid::new().to_string().to_lowercase();
    let workers: Vec<_> = (0..tasks)
        .map(|task| tokio::spawn(drive(engine.clone(), task, run.clone())))
        .collect();
    for worker in workers {
        if let Ok(Err(error)) = worker.await {
            eprintln!("crash-engine: {error}");
        }
    }
}
