//! Property test over the engine with the exported strategies: for random sessions, the read
//! models built incrementally equal the ones rebuilt from the log, and the rolemap `as_of`
//! every position equals the live rolemap as it was at that position, whether it starts from a
//! snapshot or folds the stream from its start.
//!
//! A failing case is saved under `proptest-regressions/`; rerun a seed with
//! `PROPTEST_RNG_SEED=<seed> cargo test -p roster-tests --test engine_model`.

use proptest::prelude::*;
use roster_domain::{ServerSecret, Timestamp};
use roster_engine::driver::Driver;
use roster_engine::strategies::{steps, Step};
use roster_engine::EngineConfig;

use roster_projections::{rolemap_as_of, AsOf, MemberRecord, ReadModels};

const RESOURCES: usize = 2;
const PRINCIPALS: usize = 4;

fn run_session(seed: u64, session: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let start = Timestamp::from_unix_ms(1_790_000_000_000).expect("in range");
        let (mut config, clock) =
            EngineConfig::deterministic(ServerSecret::new(b"model-secret".to_vec()), seed, start);
        // A snapshot after nearly every command, and a cache of one stream: most commands
        // start from a cold load, most of those from a snapshot.
        config.snapshot_events_min = 1;
        config.cached_streams_max = 1;
        let (store, models, engine) = roster_tests::engine_in_memory(config).await;
        let driver = Driver::new(engine.clone(), clock, RESOURCES, PRINCIPALS)
            .await
            .expect("sets up");
        // The live rolemap of every resource after every step, with the position it reflects.
        let mut seen: Vec<(u64, usize, Vec<MemberRecord>)> = Vec::new();
        for step in session {
            let outcome = driver
                .run(step)
                .await
                .expect("the engine itself never fails");
            if std::env::var("ENGINE_MODEL_TRACE").is_ok() {
                eprintln!("{step:?} -> {outcome:?}");
            }
            let position = engine.applied();
            for (index, resource) in driver.resources.iter().enumerate() {
                seen.push((
                    position,
                    index,
                    engine.members(resource, None, 1000).expect("lists").items,
                ));
            }
        }
        let rebuilt = ReadModels::in_memory();
        rebuilt
            .catch_up(store.as_ref(), &mut |_| {})
            .await
            .expect("rebuilds");
        prop_assert_eq!(
            rebuilt.dump().expect("dumps"),
            models.dump().expect("dumps")
        );
        for (position, index, live) in seen {
            let resource = &driver.resources[index];
            let (past, _) = engine
                .members_as_of(resource, AsOf::Position(position))
                .await
                .expect("reads")
                .expect("registered");
            prop_assert_eq!(&past, &live, "as_of position {} of {}", position, resource);
            let (folded, _) =
                rolemap_as_of(store.as_ref(), None, resource, AsOf::Position(position))
                    .await
                    .expect("reads")
                    .expect("registered");
            prop_assert_eq!(
                folded,
                live,
                "as_of position {} without snapshots",
                position
            );
        }
        roster_eventstore::verify(store.as_ref())
            .await
            .expect("the chain verifies");
        engine.close().await;
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn read_models_equal_a_rebuild_and_as_of_equals_the_past(
        seed in any::<u64>(),
        session in steps(RESOURCES, PRINCIPALS, 5, 1..40),
    ) {
        run_session(seed, &session)?;
    }
}
