//! Kill -9 under HTTP load, again and again: a real server process takes concurrent commands
//! from many clients and is killed at a random moment. After every kill, everything a client
//! got a 2xx for is there, the chain verifies, and the read models, caught up from their
//! checkpoints, equal a rebuild from the log. Then the next cycle starts on the same data.
//!
//! The kill comes after a random number of acknowledged requests (seeded; `CRASH_SEED`
//! replays a run), not after a sleep.

use std::process::Child;
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use roster_eventstore::{verify, EventStore, SledOptions, SledStore};
use roster_tests::crash::{client, read_models_equal_a_rebuild, start_crash_serve, Acked};

const CYCLES: usize = 20;
const CLIENTS: usize = 12;
const TOKEN: &str = "crash-http-admin-token-0123456789";

fn start(dir: &std::path::Path) -> (Child, String) {
    start_crash_serve(env!("CARGO_BIN_EXE_crash-serve"), dir, TOKEN, &[])
}

#[test]
fn every_acknowledged_request_survives_sigkill_under_load() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut all_acked: Vec<Acked> = Vec::new();
    for cycle in 0..CYCLES {
        let (mut child, base) = start(dir.path());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let kill_after = rng.gen_range(1..=60);
        runtime.block_on(async {
            let clients: Vec<_> = (0..CLIENTS)
                .map(|id| {
                    let never = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    tokio::spawn(client(
                        base.clone(),
                        TOKEN,
                        (id, cycle),
                        Arc::clone(&acked),
                        never,
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
            child.kill().expect("SIGKILL");
            for client in clients {
                let _ = client.await;
            }
        });
        child.wait().expect("reaped");
        all_acked.extend(acked.lock().expect("unpoisoned").iter().cloned());

        let store =
            SledStore::open(dir.path(), SledOptions::default()).expect("reopens after SIGKILL");
        runtime.block_on(async {
            verify(&store)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e} (seed {seed})"));
            let live =
                read_models_equal_a_rebuild(&store, &format!("cycle {cycle} (seed {seed})")).await;
            for ack in &all_acked {
                match ack {
                    Acked::Registered(resource) => {
                        let resource = roster_domain::ResourceId::parse(resource).expect("valid");
                        assert!(
                            live.resource(&resource).expect("reads").is_some(),
                            "cycle {cycle}: {resource} lost (seed {seed})"
                        );
                    }
                    Acked::Joined(resource, joiner) => {
                        let resource = roster_domain::ResourceId::parse(resource).expect("valid");
                        let joiner = roster_domain::Principal::parse(joiner).expect("valid");
                        assert!(
                            live.member(&resource, &joiner).expect("reads").is_some(),
                            "cycle {cycle}: {joiner} lost (seed {seed})"
                        );
                    }
                    Acked::Position(position) => assert!(
                        store.head() >= *position,
                        "cycle {cycle}: position {position} lost"
                    ),
                }
            }
        });
        drop(store);
    }
    let joined = all_acked
        .iter()
        .filter(|a| matches!(a, Acked::Joined(..)))
        .count();
    println!(
        "{} acknowledged requests ({joined} joins) over {CYCLES} kills, all present",
        all_acked.len()
    );
    assert!(joined > 0);
}
