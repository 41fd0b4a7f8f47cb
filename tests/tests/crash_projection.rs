//! Crash test of the read models: a child process runs a durable engine under concurrent
//! commands (its projector busy applying them) and is killed with SIGKILL at a random moment,
//! again and again. After every restart the read models, caught up from their checkpoints,
//! must equal a rebuild from the log: nothing lost, nothing applied twice. Every acknowledged
//! command's position must be in the log, and the chain must verify.
//!
//! The moment of the kill is a random number of acknowledgements read (seeded; set
//! `CRASH_SEED` to replay a run), not a sleep.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use roster_eventstore::{verify, EventStore, SledOptions, SledStore};
use roster_tests::crash::read_models_equal_a_rebuild;

const CYCLES: usize = 20;

#[test]
fn read_models_equal_a_rebuild_after_every_sigkill() {
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut highest_ack = 0u64;
    let mut acks = 0usize;
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-engine"))
            .arg(dir.path())
            .arg("8")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let kill_after = rng.gen_range(1..=300);
        let mut read = |line: String| {
            let position: u64 = line
                .strip_prefix("ack ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("bad line {line:?}"));
            highest_ack = highest_ack.max(position);
            acks += 1;
        };
        for _ in 0..kill_after {
            match lines.next() {
                Some(Ok(line)) => read(line),
                other => panic!("cycle {cycle}: the child stopped early: {other:?}"),
            }
        }
        child.kill().expect("SIGKILL");
        for line in lines.map_while(Result::ok) {
            read(line);
        }
        child.wait().expect("reaped");

        let store =
            SledStore::open(dir.path(), SledOptions::default()).expect("reopens after SIGKILL");
        runtime.block_on(async {
            verify(&store)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e} (seed {seed})"));
            assert!(
                store.head() >= highest_ack,
                "cycle {cycle}: acknowledged position {highest_ack} lost (seed {seed})"
            );
            read_models_equal_a_rebuild(&store, &format!("cycle {cycle} (seed {seed})")).await;
        });
    }
    println!(
        "{acks} acknowledged commands over {CYCLES} kills; read models equal a rebuild after each"
    );
}
