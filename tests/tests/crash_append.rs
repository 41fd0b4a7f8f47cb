//! Crash test of the log: a child process appends from many concurrent tasks and reports each
//! acknowledged append; it is killed with SIGKILL at a random moment, again and again. After
//! every restart each acknowledged event must be in the log at its position, positions must be
//! gap-free, versions contiguous, and the chain must verify.
//!
//! The moment of the kill is a random number of acknowledgements read (seeded; the seed is
//! printed, set `CRASH_SEED` to replay it), not a sleep.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use rand::{Rng, SeedableRng};
use roster_eventstore::{verify, EventStore, SledOptions, SledStore};
use roster_tests::crash::Ack;

const CYCLES: usize = 24;
const TASKS: &str = "16";

#[test]
fn every_acknowledged_append_survives_sigkill() {
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
    let mut acked: Vec<Ack> = Vec::new();
    let mut survivors_beyond_acks = 0u64;

    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-append"))
            .arg(dir.path())
            .arg(TASKS)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let kill_after = rng.gen_range(1..=600);
        for _ in 0..kill_after {
            match lines.next() {
                Some(Ok(line)) => {
                    acked.push(Ack::parse(&line).unwrap_or_else(|| panic!("bad line {line:?}")))
                }
                other => panic!("cycle {cycle}: the child stopped early: {other:?}"),
            }
        }
        child.kill().expect("SIGKILL");
        // Lines already in the pipe were acknowledged before the kill: they count too.
        for line in lines.map_while(Result::ok) {
            if let Some(ack) = Ack::parse(&line) {
                acked.push(ack);
            }
        }
        child.wait().expect("reaped");

        let store =
            SledStore::open(dir.path(), SledOptions::default()).expect("reopens after SIGKILL");
        runtime.block_on(async {
            let report = verify(&store)
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            // In pages: a read answers at most the store's `read_events_max` events, and a
            // run of cycles can write more than that.
            let mut log = Vec::new();
            loop {
                let after = u64::try_from(log.len()).expect("fits");
                let page = store.read_all(after, usize::MAX).await.expect("reads");
                if page.is_empty() {
                    break;
                }
                log.extend(page);
            }
            assert_eq!(u64::try_from(log.len()).expect("fits"), report.events);
            let by_position: HashMap<u64, _> = log.iter().map(|e| (e.position, e)).collect();
            for ack in &acked {
                let event = by_position.get(&ack.position).unwrap_or_else(|| {
                    panic!("cycle {cycle}: acknowledged {ack:?} is gone (seed {seed})")
                });
                assert_eq!(
                    (&event.stream, event.version, &event.command_id),
                    (&ack.stream, ack.version, &ack.command_id),
                    "cycle {cycle}: position {} holds another event (seed {seed})",
                    ack.position
                );
            }
            survivors_beyond_acks = report.events - u64::try_from(acked.len()).expect("fits");
        });
        drop(store);
    }
    println!("{} acknowledged appends over {CYCLES} kills, all present; {survivors_beyond_acks} more were written but not yet acknowledged when killed", acked.len());
    assert!(acked.len() >= CYCLES);
}
