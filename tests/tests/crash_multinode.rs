//! SIGKILL of one node of three under HTTP load over all three, on one PostgreSQL, cycle after
//! cycle (DESIGN section 10): every request a client was told succeeded is in the shared log
//! afterwards, the chain verifies, and the restarted node catches up with what the others
//! wrote meanwhile. The kill comes after a random number of acknowledged requests (seeded;
//! `CRASH_SEED` replays a run), not after a sleep.

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use roster_eventstore::{verify, PgOptions, PgStore};
use roster_tests::crash::{client, start_crash_serve, Acked};

const CYCLES: usize = 12;
const CLIENTS: usize = 9;
const TOKEN: &str = "crash-multinode-admin-token-0123456789";
const SECRET: &str = "crash-multinode-secret-0123456789";

fn start(dir: &std::path::Path, url: &str) -> (Child, String) {
    start_crash_serve(
        env!("CARGO_BIN_EXE_crash-serve"),
        dir,
        TOKEN,
        &[("ROSTER_STORE", url), ("ROSTER_SECRET", SECRET)],
    )
}

#[test]
fn every_acknowledged_request_survives_a_node_killed_under_load() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let url = roster_tests::pg::database();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("a directory"))
        .collect();
    let mut nodes: Vec<(Child, String)> = dirs.iter().map(|d| start(d.path(), &url)).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut all_acked: Vec<Acked> = Vec::new();
    for cycle in 0..CYCLES {
        let victim = cycle % 3;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let kill_after = rng.gen_range(1..=40);
        runtime.block_on(async {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|id| {
                    let base = nodes[id % 3].1.clone();
                    tokio::spawn(client(
                        base,
                        TOKEN,
                        (id, cycle),
                        Arc::clone(&acked),
                        Arc::clone(&stop),
                    ))
                })
                .collect();
            // Kill once enough requests were acknowledged: a condition, checked as they come.
            loop {
                let registered = acked
                    .lock()
                    .expect("unpoisoned")
                    .iter()
                    .filter(|a| matches!(a, Acked::Registered(_)))
                    .count();
                if registered >= kill_after {
                    break;
                }
                tokio::task::yield_now().await;
            }
            nodes[victim].0.kill().expect("SIGKILL");
            // The clients of the other nodes finish the request they are in, then stop.
            stop.store(true, Ordering::Release);
            for client in clients {
                let _ = client.await;
            }
        });
        nodes[victim].0.wait().expect("reaped");
        all_acked.extend(acked.lock().expect("unpoisoned").iter().cloned());
        nodes[victim] = start(dirs[victim].path(), &url);
    }

    runtime.block_on(async {
        let store = PgStore::open(PgOptions::new(url.clone()))
            .await
            .expect("opens");
        let report = verify(&store)
            .await
            .unwrap_or_else(|e| panic!("the chain: {e} (seed {seed})"));
        let head = store.store_head().await.expect("the head");
        assert_eq!(report.events, head);
        let http = reqwest::Client::new();
        let members = |node: usize, resource: String| {
            let http = http.clone();
            let base = nodes[node].1.clone();
            async move {
                let answer = http
                    .get(format!(
                        "{base}/v1/resources/{resource}/members?min_position={head}&limit=1000"
                    ))
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .expect("the node answers");
                assert_eq!(answer.status(), reqwest::StatusCode::OK, "{resource}");
                let list: serde_json::Value = answer.json().await.expect("JSON");
                list["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|m| m["principal"].as_str().expect("a principal").to_string())
                    .collect::<Vec<String>>()
            }
        };
        // Every node, the restarted ones included, answers for every acknowledged request.
        for (index, ack) in all_acked.iter().enumerate() {
            match ack {
                Acked::Registered(resource) => {
                    assert!(
                        !members(index % 3, resource.clone()).await.is_empty(),
                        "{resource} lost (seed {seed})"
                    );
                }
                Acked::Joined(resource, joiner) => {
                    assert!(
                        members(index % 3, resource.clone()).await.contains(joiner),
                        "{joiner} of {resource} lost (seed {seed})"
                    );
                }
                Acked::Position(position) => {
                    assert!(head >= *position, "position {position} lost (seed {seed})")
                }
            }
        }
    });
    for (child, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
    let joined = all_acked
        .iter()
        .filter(|a| matches!(a, Acked::Joined(..)))
        .count();
    println!(
        "{} acknowledged requests ({joined} joins) over {CYCLES} kills of one node of three, all present",
        all_acked.len()
    );
    assert!(joined > 0);
}

/// Registers resources on `base` until `stop`, recording each one a 201 acknowledged; a
/// refusal or a failed connection is not an acknowledgement, and the client goes on.
async fn registrar(
    base: String,
    name: String,
    acked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) {
    let http = reqwest::Client::new();
    for n in 0.. {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let resource = format!("space/{name}-{n}");
        let answer = http
            .post(format!("{base}/v1/resources"))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({ "resource": resource, "owner": "o" }))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == reqwest::StatusCode::CREATED) {
            acked.lock().expect("unpoisoned").push(resource);
        }
    }
}

fn signal(child: &Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal}");
}

#[test]
fn a_node_stopped_while_it_holds_the_log_lock_holds_up_no_one_and_acknowledges_none_of_it() {
    let url = roster_tests::pg::database();
    let database = url.rsplit('/').next().expect("a name").to_string();
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("a directory"))
        .collect();
    // Each node's sessions carry its name, so PostgreSQL can say what node A's writer is doing.
    let a = start(dirs[0].path(), &format!("{url}?application_name=node_a"));
    let b = start(dirs[1].path(), &format!("{url}?application_name=node_b"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (acked_a, acked_b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let count = |acked: &Arc<Mutex<Vec<String>>>| acked.lock().expect("unpoisoned").len();
    let cluster = roster_tests::pg::cluster();
    let in_transaction = || {
        cluster.psql(
            &database,
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'node_a' AND state = 'idle in transaction'",
        ) != "0"
    };
    runtime.block_on(async {
        let mut clients = Vec::new();
        for i in 0..6 {
            clients.push(tokio::spawn(registrar(
                a.1.clone(),
                format!("a{i}"),
                Arc::clone(&acked_a),
                Arc::clone(&stop),
            )));
        }
        for i in 0..2 {
            clients.push(tokio::spawn(registrar(
                b.1.clone(),
                format!("b{i}"),
                Arc::clone(&acked_b),
                Arc::clone(&stop),
            )));
        }
        // Stop node A at moments of its load until one finds its writer inside a group.
        let mut caught = false;
        for _ in 0..500 {
            let before = count(&acked_a);
            roster_tests::poll::until("node A acknowledges more", || async {
                if count(&acked_a) > before {
                    Ok(())
                } else {
                    Err(())
                }
            })
            .await;
            signal(&a.0, "-STOP");
            if in_transaction() {
                caught = true;
                break;
            }
            signal(&a.0, "-CONT");
        }
        assert!(caught, "node A was never stopped inside a group");
        // The others go on once PostgreSQL has cut node A's session off.
        let before = count(&acked_b);
        roster_tests::poll::until("node B acknowledges ten more while A is stopped", || async {
            if count(&acked_b) >= before + 10 {
                Ok(())
            } else {
                Err(count(&acked_b) - before)
            }
        })
        .await;
        assert!(!in_transaction(), "node A's session was cut off");
        let acknowledged_by_a = count(&acked_a);
        signal(&a.0, "-CONT");
        // A wakes to a dead session: it goes on with a new one.
        roster_tests::poll::until("node A acknowledges again", || async {
            if count(&acked_a) > acknowledged_by_a {
                Ok(())
            } else {
                Err(())
            }
        })
        .await;
        stop.store(true, Ordering::Release);
        for client in clients {
            let _ = client.await;
        }
        // Everything either node acknowledged, A's last answers before and after included, is
        // in the log, and the chain verifies: nothing of the rolled-back group was answered.
        let store = PgStore::open(PgOptions::new(url.clone()))
            .await
            .expect("opens");
        verify(&store).await.expect("the chain verifies");
        let head = store.store_head().await.expect("the head");
        let http = reqwest::Client::new();
        let acked: Vec<String> = acked_a
            .lock()
            .expect("unpoisoned")
            .iter()
            .chain(acked_b.lock().expect("unpoisoned").iter())
            .cloned()
            .collect();
        for resource in &acked {
            let answer = http
                .get(format!("{}/v1/resources/{resource}?min_position={head}", b.1))
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("node B answers");
            assert_eq!(answer.status(), reqwest::StatusCode::OK, "{resource} lost");
        }
        println!(
            "{} registrations acknowledged by A and B around a stop of A inside a group, all present",
            acked.len()
        );
    });
    for (mut child, _) in [a, b] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
