//! Power cuts, not just kill -9: the log and the server run on the test filesystem that forgets
//! whatever was not synced (`roster_tests::lazyfs`), are killed at a random moment, and then
//! the filesystem is put back to what it had synced, sometimes with the last unsynced write of
//! each file torn, as a power cut would leave the disk. After every cut everything that was
//! acknowledged is there, the chain and the domain's rules verify, the read models equal a
//! rebuild, and the codes handed out before the cut still work.
//!
//! The moments are random numbers of acknowledgements (seeded; the seed is printed, and
//! `POWER_CUT_SEED` replays a run), never sleeps. Two tests, 24 and 26 cuts: the 50 of the
//! normal run; `POWER_CUT_CYCLES` multiplies them for a soak by hand.
//!
//! Needs root and `/dev/fuse` (as CI has); without them it fails saying so.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use roster_eventstore::{verify, EventStore, SledOptions, SledStore};
use roster_tests::crash::{read_models_equal_a_rebuild, start_crash_serve, Ack};
use roster_tests::lazyfs::{Mounted, Tear};
use serde_json::{json, Value};

const TOKEN: &str = "power-cut-admin-token-0123456789";

/// A child process killed when the test lets go of it, also when a failing assertion unwinds.
struct Running(Child);

impl Running {
    /// SIGKILL, as the power going would stop it, and reaped.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

fn seed() -> u64 {
    let seed = std::env::var("POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("POWER_CUT_SEED={seed}");
    seed
}

fn cycles(normal: usize) -> usize {
    normal
        * std::env::var("POWER_CUT_CYCLES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1)
}

fn mounted(temp: &Path) -> Mounted {
    Mounted::mount(&temp.join("backing"), &temp.join("mnt")).unwrap_or_else(|e| {
        panic!(
            "cannot mount the test filesystem ({e}): this test needs root and /dev/fuse \
             (.ci/run installs fuse3)"
        )
    })
}

/// A cut whole half the time; otherwise each file's last unsynced write is torn somewhere.
fn cut(mounted: &Mounted, rng: &mut rand::rngs::StdRng) -> roster_tests::lazyfs::CutReport {
    let tear = if rng.gen_bool(0.5) {
        Tear::None
    } else {
        Tear::Part(rng.gen_range(0..=1000))
    };
    mounted.power_cut(tear).expect("the power cut")
}

/// Every event the log holds, in pages.
async fn whole_log(store: &SledStore) -> Vec<roster_eventstore::Envelope> {
    let mut log = Vec::new();
    loop {
        let after = u64::try_from(log.len()).expect("fits");
        let page = store.read_all(after, usize::MAX).await.expect("reads");
        if page.is_empty() {
            return log;
        }
        log.extend(page);
    }
}

#[test]
fn every_acknowledged_append_survives_power_cuts() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let temp = tempfile::tempdir().expect("temporary directory");
    let mounted = mounted(temp.path());
    let dir = mounted.path().join("log");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut acked: Vec<Ack> = Vec::new();
    let mut torn = 0u64;
    let cuts = cycles(24);
    for cycle in 0..cuts {
        let mut child = Running(
            Command::new(env!("CARGO_BIN_EXE_crash-append"))
                .arg(&dir)
                .arg("16")
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("the child starts"),
        );
        let mut lines = BufReader::new(child.0.stdout.take().expect("piped")).lines();
        let cut_after = rng.gen_range(1..=300);
        for _ in 0..cut_after {
            match lines.next() {
                Some(Ok(line)) => acked.push(Ack::parse(&line).expect("an ack line")),
                other => panic!("cycle {cycle}: the child stopped early: {other:?} (seed {seed})"),
            }
        }
        child.kill();
        // What was in the pipe was acknowledged before the power went.
        acked.extend(lines.map_while(Result::ok).filter_map(|l| Ack::parse(&l)));
        torn += cut(&mounted, &mut rng).torn_bytes;

        let store = SledStore::open(&dir, SledOptions::default()).unwrap_or_else(|e| {
            panic!("cycle {cycle}: reopening after a power cut: {e} (seed {seed})")
        });
        runtime.block_on(async {
            let report = verify(&store)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e} (seed {seed})"));
            let log = whole_log(&store).await;
            assert_eq!(u64::try_from(log.len()).expect("fits"), report.events);
            let by_position: HashMap<u64, _> = log.iter().map(|e| (e.position, e)).collect();
            for ack in &acked {
                let event = by_position.get(&ack.position).unwrap_or_else(|| {
                    panic!("cycle {cycle}: acknowledged {ack:?} is gone after a power cut (seed {seed})")
                });
                assert_eq!(
                    (&event.stream, event.version, &event.command_id),
                    (&ack.stream, ack.version, &ack.command_id),
                    "cycle {cycle}: position {} holds another event (seed {seed})",
                    ack.position
                );
            }
        });
        drop(store);
    }
    println!(
        "{} acknowledged appends over {cuts} power cuts, all present ({torn} bytes of torn writes kept)",
        acked.len()
    );
    assert!(acked.len() >= cuts);
}

/// What a client was told succeeded.
#[derive(Debug, Default)]
struct Told {
    resources: Vec<String>,
    members: Vec<(String, String)>,
    /// Link codes handed out: each must still open its link.
    link_codes: Vec<String>,
    /// Invitations made: `(resource, id)`.
    invitations: Vec<(String, u64)>,
    /// The newest code of an invitation, where a resend of it was answered.
    resent_codes: Vec<String>,
    positions: Vec<u64>,
}

fn start(dir: &Path) -> (Running, String) {
    let (child, base) = start_crash_serve(env!("CARGO_BIN_EXE_crash-serve"), dir, TOKEN, &[]);
    (Running(child), base)
}

fn position_of(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("x-roster-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The resource every client also joins, so that its stream grows long enough to be
/// snapshotted (every 256 events) and the snapshots meet the cuts too.
const HOT: &str = "space/hot";

/// One client's loop: register, make a link, join it and the hot resource's, invite two
/// addresses, resend one; every 2xx is recorded as it comes.
async fn client(base: String, id: usize, cycle: usize, hot_code: String, told: Arc<Mutex<Told>>) {
    let http = reqwest::Client::new();
    let post = |path: String, actor: Option<String>, body: Value| {
        let mut request = http
            .post(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .json(&body);
        if let Some(actor) = actor {
            request = request.header("X-Roster-Actor", actor);
        }
        request.send()
    };
    for n in 0.. {
        let resource = format!("space/p{cycle}-{id}-{n}");
        let owner = format!("o{id}");
        let Ok(registered) = post(
            "/v1/resources".into(),
            None,
            json!({ "resource": resource, "owner": owner }),
        )
        .await
        else {
            return;
        };
        if !registered.status().is_success() {
            return;
        }
        {
            let mut told = told.lock().expect("unpoisoned");
            told.resources.push(resource.clone());
            told.positions.extend(position_of(&registered));
        }
        let Ok(link) = post(
            format!("/v1/resources/{resource}/invite-links"),
            Some(owner.clone()),
            json!({ "role": "editor" }),
        )
        .await
        else {
            return;
        };
        let Ok(link) = link.json::<Value>().await else {
            return;
        };
        let Some(code) = link["code"].as_str().map(String::from) else {
            return;
        };
        told.lock()
            .expect("unpoisoned")
            .link_codes
            .push(code.clone());
        let joiner = format!("j{cycle}-{id}-{n}");
        let Ok(joined) = post(
            "/v1/invitations/accept".into(),
            Some(joiner.clone()),
            json!({ "code": code }),
        )
        .await
        else {
            return;
        };
        if !joined.status().is_success() {
            return;
        }
        told.lock()
            .expect("unpoisoned")
            .members
            .push((resource.clone(), joiner.clone()));
        let Ok(hot) = post(
            "/v1/invitations/accept".into(),
            Some(joiner.clone()),
            json!({ "code": hot_code }),
        )
        .await
        else {
            return;
        };
        if !hot.status().is_success() {
            return;
        }
        told.lock()
            .expect("unpoisoned")
            .members
            .push((HOT.to_string(), joiner));
        let Ok(invited) = post(
            format!("/v1/resources/{resource}/invitations"),
            Some(owner.clone()),
            json!({ "emails": [format!("a{n}@example.com"), format!("b{n}@example.com")] }),
        )
        .await
        else {
            return;
        };
        let Ok(invited) = invited.json::<Value>().await else {
            return;
        };
        let ids: Vec<u64> = invited["invited"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["invitation"]["id"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        let Some(first) = ids.first().copied() else {
            return;
        };
        told.lock()
            .expect("unpoisoned")
            .invitations
            .extend(ids.iter().map(|i| (resource.clone(), *i)));
        let Ok(resent) = post(
            format!("/v1/resources/{resource}/invitations/{first}/resend"),
            Some(owner.clone()),
            json!({}),
        )
        .await
        else {
            return;
        };
        let Ok(resent) = resent.json::<Value>().await else {
            return;
        };
        if let Some(code) = resent["code"].as_str() {
            told.lock()
                .expect("unpoisoned")
                .resent_codes
                .push(code.to_string());
        }
    }
}

/// Registers the hot resource and makes its link, for everyone, many times over.
async fn hot_link(base: &str, told: &Mutex<Told>) -> String {
    let http = reqwest::Client::new();
    let registered = http
        .post(format!("{base}/v1/resources"))
        .bearer_auth(TOKEN)
        .json(&json!({ "resource": HOT, "owner": "hot-owner" }))
        .send()
        .await
        .expect("answers");
    assert!(registered.status().is_success());
    let link: Value = http
        .post(format!("{base}/v1/resources/{HOT}/invite-links"))
        .bearer_auth(TOKEN)
        .header("X-Roster-Actor", "hot-owner")
        .json(&json!({ "role": "viewer" }))
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    let code = link["code"].as_str().expect("a code").to_string();
    let mut told = told.lock().expect("unpoisoned");
    told.resources.push(HOT.to_string());
    told.link_codes.push(code.clone());
    code
}

/// Through a running server: everything told is there, and every handed-out code still works.
async fn check_told(base: &str, told: &Told, cycle: usize, seed: u64) {
    let http = reqwest::Client::new();
    let get = |path: String| http.get(format!("{base}{path}")).bearer_auth(TOKEN).send();
    let head: u64 = get("/healthz".into())
        .await
        .expect("answers")
        .json::<Value>()
        .await
        .expect("JSON")["position"]
        .as_u64()
        .expect("a position");
    for position in &told.positions {
        assert!(
            head >= *position,
            "cycle {cycle}: position {position} lost (seed {seed})"
        );
    }
    for resource in &told.resources {
        let response = get(format!("/v1/resources/{resource}"))
            .await
            .expect("answers");
        assert_eq!(
            response.status(),
            200,
            "cycle {cycle}: {resource} lost (seed {seed})"
        );
    }
    let mut by_resource: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (resource, joiner) in &told.members {
        by_resource.entry(resource).or_default().push(joiner);
    }
    for (resource, joiners) in by_resource {
        let mut members = std::collections::BTreeSet::new();
        let mut after = String::new();
        loop {
            let page: Value = get(format!(
                "/v1/resources/{resource}/members?limit=1000{after}"
            ))
            .await
            .expect("answers")
            .json()
            .await
            .expect("JSON");
            members.extend(
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["principal"].as_str().map(String::from)),
            );
            match page["next"].as_str() {
                Some(next) => after = format!("&after={next}"),
                None => break,
            }
        }
        for joiner in joiners {
            assert!(
                members.contains(joiner),
                "cycle {cycle}: {joiner} lost from {resource} (seed {seed})"
            );
        }
    }
    for (resource, id) in &told.invitations {
        let response = get(format!("/v1/resources/{resource}/invitations/{id}"))
            .await
            .expect("answers");
        assert_eq!(
            response.status(),
            200,
            "cycle {cycle}: invitation {id} lost (seed {seed})"
        );
    }
    // The hot resource's rolemap at the head, folded from its snapshots and the log, is the
    // rolemap now.
    let members_at = |query: String| {
        let get = &get;
        async move {
            let page: Value = get(format!("/v1/resources/{HOT}/members?limit=1000{query}"))
                .await
                .expect("answers")
                .json()
                .await
                .expect("JSON");
            page["items"].clone()
        }
    };
    if !told.resources.is_empty() {
        assert_eq!(
            members_at(format!("&at_position={head}")).await,
            members_at(String::new()).await,
            "cycle {cycle}: the past at the head is not the present (seed {seed})"
        );
    }
    for code in told.link_codes.iter().chain(&told.resent_codes) {
        let preview = http
            .post(format!("{base}/v1/invitations/preview"))
            .bearer_auth(TOKEN)
            .json(&json!({ "code": code }))
            .send()
            .await
            .expect("answers");
        let status = preview.status();
        let body: Value = preview.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status, 200,
            "cycle {cycle}: a code handed out before a power cut no longer opens anything: {body} (seed {seed})"
        );
    }
}

/// How many files lie under `dir`.
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// After a cut, with no server running: the chain, the rules and the snapshots verify, and the
/// read models, caught up from their checkpoints, equal a rebuild.
fn check_at_rest(dir: &Path, cycle: usize, seed: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = SledStore::open(dir, SledOptions::default()).unwrap_or_else(|e| {
        panic!("cycle {cycle}: reopening after a power cut: {e} (seed {seed})")
    });
    roster_cli::log_tools::verify(dir, &store, runtime.handle(), true)
        .unwrap_or_else(|e| panic!("cycle {cycle}: {e} (seed {seed})"));
    runtime.block_on(async {
        let live =
            read_models_equal_a_rebuild(&store, &format!("cycle {cycle} (seed {seed})")).await;
        live.flush().expect("writes what waits");
    });
    // `roster replay --verify` as the command line opens the log.
    drop(store);
    let log = roster_cli::log_tools::open(dir, &roster_server::StoreChoice::Sled, runtime.handle())
        .unwrap_or_else(|e| panic!("cycle {cycle}: reopening: {e} (seed {seed})"));
    runtime
        .block_on(roster_cli::log_tools::replay(&log, true, true))
        .unwrap_or_else(|e| panic!("cycle {cycle}: replay --verify: {e} (seed {seed})"));
    drop(log);
}

#[test]
fn every_acknowledged_request_and_code_survives_power_cuts_under_load() {
    let seed = seed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let temp = tempfile::tempdir().expect("temporary directory");
    let mounted = mounted(temp.path());
    let dir = mounted.path().join("data");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let told = Arc::new(Mutex::new(Told::default()));
    let cuts = cycles(26);
    let mut hot_code = String::new();
    let mut snapshots_cut = 0;
    for cycle in 0..cuts {
        let (mut child, base) = start(&dir);
        if cycle == 0 {
            hot_code = runtime.block_on(hot_link(&base, &told));
        }
        // What earlier cycles were told is all there, on the restarted server.
        runtime.block_on(check_told(
            &base,
            &told.lock().expect("unpoisoned"),
            cycle,
            seed,
        ));
        let cut_after = rng.gen_range(1..=40);
        runtime.block_on(async {
            let before = told.lock().expect("unpoisoned").resources.len();
            let clients: Vec<_> = (0..8)
                .map(|id| {
                    let (base, code) = (base.clone(), hot_code.clone());
                    tokio::spawn(client(base, id, cycle, code, Arc::clone(&told)))
                })
                .collect();
            loop {
                if told.lock().expect("unpoisoned").resources.len() >= before + cut_after {
                    break;
                }
                tokio::task::yield_now().await;
            }
            child.kill();
            for client in clients {
                let _ = client.await;
            }
        });
        snapshots_cut += walk(&dir.join("snapshots"));
        cut(&mounted, &mut rng);
        check_at_rest(&dir, cycle, seed);
    }
    // Once more after the last cut, on a server, then stopped cleanly.
    let (mut child, base) = start(&dir);
    runtime.block_on(check_told(
        &base,
        &told.lock().expect("unpoisoned"),
        cuts,
        seed,
    ));
    child.kill();
    check_at_rest(&dir, cuts, seed);
    let told = told.lock().expect("unpoisoned");
    println!(
        "{cuts} power cuts under load: {} resources, {} joins, {} invitations, {} codes, all there; {snapshots_cut} snapshot files met a cut",
        told.resources.len(),
        told.members.len(),
        told.invitations.len(),
        told.link_codes.len() + told.resent_codes.len()
    );
    assert!(!told.members.is_empty());
    assert!(snapshots_cut > 0, "no snapshot was written before a cut");
}
