//! Property test of the chunked catch-up: for random sessions, read models rebuilt into sled
//! with tiny chunks (a commit after every event, or every few) and tiny pages (a page split at
//! nearly every write), or resumed from a checkpoint part-way, equal the ones the engine built
//! incrementally, row for row.
//!
//! A failing case is saved under `proptest-regressions/`; rerun a seed with
//! `PROPTEST_RNG_SEED=<seed> cargo test -p roster-tests --test rebuild_chunks`.

use proptest::prelude::*;
use roster_domain::{ServerSecret, Timestamp};
use roster_engine::driver::Driver;
use roster_engine::strategies::{steps, Step};
use roster_engine::EngineConfig;

use roster_eventstore::{EventStore, SledOptions, SledStore};
use roster_projections::ReadModels;

const RESOURCES: usize = 2;
const PRINCIPALS: usize = 4;

fn run_session(seed: u64, session: &[Step], resume_at: usize) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let start = Timestamp::from_unix_ms(1_790_000_000_000).expect("in range");
        let (config, clock) =
            EngineConfig::deterministic(ServerSecret::new(b"chunk-secret".to_vec()), seed, start);
        let (store, models, engine) = roster_tests::engine_in_memory(config).await;
        let driver = Driver::new(engine.clone(), clock, RESOURCES, PRINCIPALS)
            .await
            .expect("sets up");
        for step in session {
            // A step the domain refuses is part of the session; only the engine failing is not.
            let _outcome = driver
                .run(step)
                .await
                .expect("the engine itself never fails");
        }
        let expected = models.dump().expect("dumps");
        let store = store.as_ref();
        // Only the read models' trees are used in this database; the log is the engine's.
        let dir = tempfile::tempdir().expect("tempdir");
        let scratch = SledStore::open(dir.path(), SledOptions::default()).expect("opens");
        for (chunk_events, page_bytes_max) in [(1, 1), (3, 64), (7, 700), (1 << 20, 4096)] {
            let models = ReadModels::open_sled_paged(
                scratch.db(),
                &format!("c{chunk_events}."),
                page_bytes_max,
            )
            .expect("opens");
            let mut reached = Vec::new();
            let head = models
                .catch_up_in_chunks(store, chunk_events, &mut |p| reached.push(p))
                .await
                .expect("catches up");
            prop_assert_eq!(head, store.head());
            prop_assert!(reached.windows(2).all(|w| w[0] <= w[1]), "{:?}", reached);
            prop_assert_eq!(reached.last().copied(), Some(head));
            prop_assert_eq!(
                models.dump().expect("dumps"),
                expected.clone(),
                "chunks of {} events, pages of {} bytes",
                chunk_events,
                page_bytes_max
            );
        }
        // Resumed from a checkpoint part-way (where a crash after a chunk's commit leaves it):
        // the events before it applied one batch at a time, as the projector does, then the
        // rest in chunks; and again over the same trees after a rebuild.
        let events = store.read_all(0, usize::MAX).await.expect("reads");
        let split = resume_at.min(events.len());
        let models = ReadModels::open_sled_paged(scratch.db(), "resumed.", 64).expect("opens");
        for event in &events[..split] {
            models.apply(std::slice::from_ref(event)).expect("applies");
        }
        prop_assert_eq!(
            models.checkpoint(),
            events[..split].last().map_or(0, |e| e.position)
        );
        models
            .catch_up_in_chunks(store, 2, &mut |_| {})
            .await
            .expect("catches up");
        prop_assert_eq!(models.dump().expect("dumps"), expected.clone());
        models.rebuild(store, &mut |_| {}).await.expect("rebuilds");
        prop_assert_eq!(models.dump().expect("dumps"), expected);
        engine.close().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn chunked_rebuilds_equal_the_incremental_read_models(
        seed in any::<u64>(),
        session in steps(RESOURCES, PRINCIPALS, 5, 1..40),
        resume_at in 0usize..60,
    ) {
        run_session(seed, &session, resume_at)?;
    }
}
