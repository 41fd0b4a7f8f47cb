//! `roster bench replay`: rebuilding every read model from the log, beside a raw scan of the
//! same log that only parses each envelope's JSON; and `as_of` latency on a busy resource.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use roster_domain::{
    Actor, Command, Principal, ResourceCommand, ResourceId, ServerSecret, Timestamp,
};
use roster_eventstore::{Durability, EventStore, SledOptions, SledStore};
use roster_projections::{AsOf, ReadModels};
use serde::Serialize;

use crate::bench::{to_f64, BenchError};
use roster_engine::{Engine, EngineConfig, Request};

#[derive(Debug, Clone, Serialize)]
pub struct ReplayFigure {
    pub events: u64,
    pub replay_events_per_s: f64,
    pub raw_scan_events_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AsOfFigure {
    pub stream_events: u64,
    pub queries: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn principal(name: &str) -> Result<Principal, BenchError> {
    Ok(Principal::parse(name)?)
}

/// Fills a log with `events` events of people joining `resources` spaces through their links,
/// from 64 concurrent tasks (relaxed durability: this is set-up, not the measurement).
async fn populate(dir: &Path, resources: usize, events: u64) -> Result<(), BenchError> {
    let options = SledOptions {
        durability: Durability::Relaxed,
        ..SledOptions::default()
    };
    let start = Timestamp::parse("2026-01-01T00:00:00Z")?;
    let (config, clock) =
        EngineConfig::deterministic(ServerSecret::new(b"bench".to_vec()), 1, start);
    let engine = Engine::open(dir, options, config).await?;
    let mut codes = Vec::new();
    for r in 0..resources.max(1) {
        let resource = ResourceId::parse(&format!("space/bench-{r}"))?;
        let register = ResourceCommand::RegisterResource {
            resource: resource.clone(),
            owner: principal("owner")?,
            parent: None,
        };
        let link = ResourceCommand::CreateInviteLink {
            resource: resource.clone(),
            role: None,
            expires_at: None,
            max_uses: None,
        };
        for command in [register, link] {
            engine
                .execute(Request::new(Actor::Admin, Command::Resource(command)))
                .await?;
        }
        let link = engine.links(&resource)?.remove(0);
        codes.push(engine.code(link.number, link.generation).encode_base64());
    }
    let codes = Arc::new(codes);
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let (engine, codes, clock) = (engine.clone(), Arc::clone(&codes), Arc::clone(&clock));
            tokio::spawn(async move {
                let mut n = 0u64;
                while engine.head() < events {
                    let code = &codes[usize::try_from(n * 64 + task).unwrap_or(0) % codes.len()];
                    let joiner = Actor::Principal {
                        principal: principal(&format!("u{task}-{n}"))?,
                        email: None,
                    };
                    engine.accept(joiner, code, None).await?;
                    clock.advance_ms(1);
                    n += 1;
                }
                Ok::<(), BenchError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    engine.close().await;
    Ok(())
}

/// Replay against a raw scan, on a log of about `events` events.
pub fn replay_scenario(scratch: &Path, events: u64) -> Result<ReplayFigure, BenchError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir_in(scratch)?;
    runtime.block_on(populate(dir.path(), 100, events))?;
    let store = SledStore::open(dir.path(), SledOptions::default())?;
    let total = store.head();

    let started = Instant::now();
    let mut scanned = 0u64;
    store.scan_stored_json(&mut |json| {
        let parsed: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| roster_eventstore::StoreError::Invalid(e.to_string()))?;
        scanned += u64::from(parsed.is_object());
        Ok(())
    })?;
    let raw = to_f64(scanned) / started.elapsed().as_secs_f64();

    let models = ReadModels::open_sled(store.db(), "bench.rm.")?;
    let started = Instant::now();
    let replayed = runtime.block_on(models.rebuild(&store, &mut |_| {}))?;
    let replay = to_f64(replayed) / started.elapsed().as_secs_f64();
    Ok(ReplayFigure {
        events: total,
        replay_events_per_s: replay,
        raw_scan_events_per_s: raw,
    })
}

/// `as_of` latency on one resource whose stream holds about `stream_events` events.
pub fn as_of_scenario(
    scratch: &Path,
    stream_events: u64,
    queries: usize,
) -> Result<AsOfFigure, BenchError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir_in(scratch)?;
    runtime.block_on(populate(dir.path(), 1, stream_events))?;
    let store = SledStore::open(dir.path(), SledOptions::default())?;
    let resource = ResourceId::parse("space/bench-0")?;
    let snapshots = roster_projections::Snapshots::in_dir(&dir.path().join("snapshots"));
    let head = store.head().max(1);
    let mut latencies = Vec::with_capacity(queries);
    for q in 0..queries.max(1) {
        // Positions spread over the whole stream, the last ones near the head.
        let position =
            head * u64::try_from(q + 1).unwrap_or(1) / u64::try_from(queries.max(1)).unwrap_or(1);
        let started = Instant::now();
        runtime.block_on(roster_projections::rolemap_as_of(
            &store,
            Some(&snapshots),
            &resource,
            AsOf::Position(position),
        ))?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let at = |fraction: f64| {
        let index = (to_f64(u64::try_from(latencies.len() - 1).unwrap_or(0)) * fraction).round();
        latencies[(0..latencies.len())
            .find(|i| to_f64(u64::try_from(*i).unwrap_or(0)) >= index)
            .unwrap_or(0)]
    };
    let stream_events = runtime.block_on(store.stream_version(&resource.stream().to_string()))?;
    Ok(AsOfFigure {
        stream_events,
        queries: latencies.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    })
}

pub fn replay_table(figure: &ReplayFigure) -> String {
    format!(
        "replay (rebuild all read models)\n   events  replay events/s  raw scan events/s  ratio\n{:>9}  {:>15.0}  {:>17.0}  {:>5.2}\n",
        figure.events,
        figure.replay_events_per_s,
        figure.raw_scan_events_per_s,
        figure.replay_events_per_s / figure.raw_scan_events_per_s
    )
}

pub fn as_of_table(figure: &AsOfFigure) -> String {
    format!(
        "as_of rolemap\nstream events  queries  p50 ms  p99 ms\n{:>13}  {:>7}  {:>6.2}  {:>6.2}\n",
        figure.stream_events, figure.queries, figure.p50_ms, figure.p99_ms
    )
}

/// Start-up time and peak memory of an engine over a log of `events` events holding
/// `members` members, measured in a fresh process (`roster probe`) so the figures are the
/// server's alone, not the set-up's.
#[derive(Debug, Clone, Serialize)]
pub struct StartupFigure {
    pub events: u64,
    pub members: u64,
    pub startup_ms: f64,
    pub peak_rss_mib: f64,
}

/// Fills a log: `members` people join one space through its link, then role changes make
/// up the rest of `events`.
async fn populate_members(dir: &Path, members: u64, events: u64) -> Result<(), BenchError> {
    let options = SledOptions {
        durability: Durability::Relaxed,
        ..SledOptions::default()
    };
    let start = Timestamp::parse("2026-01-01T00:00:00Z")?;
    let (config, _clock) =
        EngineConfig::deterministic(ServerSecret::new(b"bench".to_vec()), 2, start);
    let engine = Engine::open(dir, options, config).await?;
    let resource = ResourceId::parse("space/big")?;
    let register = ResourceCommand::RegisterResource {
        resource: resource.clone(),
        owner: principal("owner")?,
        parent: None,
    };
    engine
        .execute(Request::new(Actor::Admin, Command::Resource(register)))
        .await?;
    let link = ResourceCommand::CreateInviteLink {
        resource: resource.clone(),
        role: None,
        expires_at: None,
        max_uses: None,
    };
    engine
        .execute(Request::new(Actor::Admin, Command::Resource(link)))
        .await?;
    let link = engine.links(&resource)?.remove(0);
    let code = Arc::new(engine.code(link.number, link.generation).encode_base64());
    let tasks: Vec<_> = (0..64u64)
        .map(|task| {
            let (engine, code, resource) = (engine.clone(), Arc::clone(&code), resource.clone());
            tokio::spawn(async move {
                let mut n = task;
                while n < members {
                    let joiner = Actor::Principal {
                        principal: principal(&format!("m{n}"))?,
                        email: None,
                    };
                    engine.accept(joiner, &code, None).await?;
                    n += 64;
                }
                let roles = ["viewer", "commenter"];
                let mut flip = 0usize;
                while engine.head() < events {
                    let who = principal(&format!(
                        "m{}",
                        (task + 64 * u64::try_from(flip).unwrap_or(0)) % members.max(1)
                    ))?;
                    let role = roster_domain::RoleName::parse(roles[flip % 2])?;
                    let change = ResourceCommand::SetMemberRole {
                        resource: resource.clone(),
                        principal: who,
                        role,
                    };
                    engine
                        .execute(Request::new(Actor::Admin, Command::Resource(change)))
                        .await?;
                    flip += 1;
                }
                Ok::<(), BenchError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    engine.close().await;
    Ok(())
}

/// Populates a log in `scratch` and measures a fresh process opening it.
pub fn startup_scenario(
    scratch: &Path,
    events: u64,
    members: u64,
    settled: bool,
) -> Result<StartupFigure, BenchError> {
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir_in(scratch)?;
    runtime.block_on(populate_members(dir.path(), members, events))?;
    // As `roster serve` does after a clean stop (see `SledStore::settle`); `--unsettled`
    // measures a start after a crash instead.
    drop(runtime);
    if settled {
        SledStore::settle(dir.path())?;
    }
    let exe = std::env::current_exe()?;
    let output = std::process::Command::new(exe)
        .arg("--data")
        .arg(dir.path())
        .arg("probe")
        .output()?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(BenchError::Probe(said.trim_end().to_string()));
    }
    let probe: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(StartupFigure {
        events: probe["events"].as_u64().unwrap_or(0),
        members: probe["members"].as_u64().unwrap_or(0),
        startup_ms: probe["startup_ms"].as_f64().unwrap_or(0.0),
        peak_rss_mib: probe["peak_rss_mib"].as_f64().unwrap_or(0.0),
    })
}

/// `roster probe`: opens the engine on an existing data directory, answers a rolemap query,
/// and prints the time to open, the events and members, and the process's peak memory.
pub async fn probe(dir: &Path) -> Result<String, BenchError> {
    let started = Instant::now();
    let secret = ServerSecret::new(b"bench".to_vec());
    let engine = Engine::open(dir, SledOptions::default(), EngineConfig::new(secret)).await?;
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
    let resource = ResourceId::parse("space/big")?;
    let members = engine.resource(&resource)?.map_or(0, |r| r.member_count);
    let page = engine.members(&resource, None, 100)?;
    let events = engine.head();
    engine.close().await;
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u32>().ok())
        .map_or(0.0, f64::from);
    Ok(serde_json::json!({
        "events": events, "members": members, "startup_ms": startup_ms,
        "peak_rss_mib": peak_kib / 1024.0, "first_page": page.items.len(),
    })
    .to_string())
}

pub fn startup_table(figure: &StartupFigure) -> String {
    format!(
        "start-up and memory\n   events  members  start-up ms  peak RSS MiB\n{:>9}  {:>7}  {:>11.1}  {:>12.1}\n",
        figure.events, figure.members, figure.startup_ms, figure.peak_rss_mib
    )
}
