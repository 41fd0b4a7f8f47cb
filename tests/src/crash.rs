//! What the crash and power-cut tests share: the acknowledgement line `crash-append` prints
//! for each append it was told is durable, and the check that the read models a data
//! directory holds equal a rebuild from its log; starting `crash-serve`, and a client of it
//! that records what it was told succeeded.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use roster_eventstore::{EventStore, SledStore};
use roster_projections::ReadModels;
use serde_json::json;

/// An append `crash-append` acknowledged: `ack {position} {stream} {version} {command_id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub command_id: String,
}

impl Ack {
    /// The acknowledgement a line holds; `None` for any other line.
    pub fn parse(line: &str) -> Option<Ack> {
        let mut parts = line.split(' ');
        (parts.next()? == "ack").then_some(())?;
        Some(Ack {
            position: parts.next()?.parse().ok()?,
            stream: parts.next()?.to_string(),
            version: parts.next()?.parse().ok()?,
            command_id: parts.next()?.to_string(),
        })
    }
}

/// Brings the read models kept in `store`'s database (under `rm.`, as the server keeps them)
/// up to the log's head from their own checkpoint, and panics, saying `context`, unless they
/// equal read models rebuilt from the whole log. Returns them.
pub async fn read_models_equal_a_rebuild(store: &SledStore, context: &str) -> ReadModels {
    let live = ReadModels::open_sled(store.db(), "rm.").expect("opens read models");
    let resumed_from = live.checkpoint();
    live.catch_up(store, &mut |_| {}).await.expect("catches up");
    let rebuilt = ReadModels::in_memory();
    rebuilt
        .catch_up(store, &mut |_| {})
        .await
        .expect("rebuilds");
    assert_eq!(
        live.dump().expect("dumps"),
        rebuilt.dump().expect("dumps"),
        "{context}: the read models, resumed from {resumed_from}, differ from a rebuild (head {})",
        store.head()
    );
    live
}

/// Starts `crash-serve` (the test's `env!("CARGO_BIN_EXE_crash-serve")`) on `dir` with the
/// admin token `token` and the variables `env` (a PostgreSQL store's `ROSTER_STORE` and
/// `ROSTER_SECRET`), on a port of its own on 127.0.0.1; returns the process and its base URL,
/// read from the first line it prints.
pub fn start_crash_serve(
    program: &str,
    dir: &Path,
    token: &str,
    env: &[(&str, &str)],
) -> (Child, String) {
    let mut child = Command::new(program)
        .args([dir.to_str().expect("utf-8"), "127.0.0.1:0", "-"])
        .env("ROSTER_ADMIN_TOKEN", token)
        .env_remove("ROSTER_STORE")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server starts");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let first = lines.next().expect("a line").expect("text");
    let address = first.strip_prefix("listening ").expect("its address");
    (child, format!("http://{address}"))
}

/// What a client was told succeeded.
#[derive(Debug, Clone)]
pub enum Acked {
    Registered(String),
    Joined(String, String),
    Position(u64),
}

/// One client of `crash-serve` at `base`: registers resources, makes links, joins them, and
/// records every 2xx, until its server dies or `stop` is set.
pub async fn client(
    base: String,
    token: &'static str,
    (id, cycle): (usize, usize),
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let resource = format!("space/c{cycle}-{id}-{n}");
        let Ok(registered) = http
            .post(format!("{base}/v1/resources"))
            .bearer_auth(token)
            .json(&json!({"resource": resource, "owner": format!("o{id}")}))
            .send()
            .await
        else {
            return;
        };
        if !registered.status().is_success() {
            return;
        }
        let position = registered
            .headers()
            .get("x-roster-position")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        {
            let mut record = acked.lock().expect("unpoisoned");
            record.push(Acked::Registered(resource.clone()));
            record.extend(position.map(Acked::Position));
        }
        let Ok(link) = http
            .post(format!("{base}/v1/resources/{resource}/invite-links"))
            .bearer_auth(token)
            .header("X-Roster-Actor", format!("o{id}"))
            .json(&json!({"role": "editor"}))
            .send()
            .await
        else {
            return;
        };
        let Ok(link) = link.json::<serde_json::Value>().await else {
            return;
        };
        let Some(code) = link["code"].as_str() else {
            return;
        };
        let joiner = format!("j{cycle}-{id}-{n}");
        let Ok(joined) = http
            .post(format!("{base}/v1/invitations/accept"))
            .bearer_auth(token)
            .header("X-Roster-Actor", &joiner)
            .json(&json!({ "code": code }))
            .send()
            .await
        else {
            return;
        };
        if joined.status().is_success() {
            acked
                .lock()
                .expect("unpoisoned")
                .push(Acked::Joined(resource, joiner));
        }
    }
}
