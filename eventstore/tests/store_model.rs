//! Model-based property test of the sled and PostgreSQL stores against a plain reference
//! model (a vector of events and a map of command outcomes), with closing and reopening the
//! store among the operations.
//!
//! A failure is saved under `proptest-regressions/` and replayed first on the next run; to
//! rerun a whole seeded sequence, set `PROPTEST_RNG_SEED=<seed>` (and `PROPTEST_CASES`).

use std::collections::HashMap;

use proptest::prelude::*;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};
use roster_eventstore::{
    verify, AppendError, AppendRequest, EventStore, ExpectedVersion, NewEvent, PgOptions, PgStore,
    SledOptions, SledStore,
};

#[path = "../../tests/src/pg.rs"]
#[allow(dead_code)]
mod pg;
use serde_json::json;

const STREAMS: [&str; 3] = ["resource:space/a", "resource:team/b", "api-keys"];

#[derive(Clone, Debug)]
enum Expect {
    Any,
    NoStream,
    Exactly(u64),
    Current,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        expect: Expect,
        count: u64,
        command: Option<u8>,
        tag: u32,
    },
    ReadStream {
        stream: usize,
        from_version: u64,
        limit: usize,
    },
    ReadAll {
        after: u64,
        limit: usize,
    },
    Reopen,
    Verify,
}

/// What the reference says the last append answered.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    Appended {
        stream: usize,
        version: u64,
        position: u64,
        events: u64,
        duplicate: bool,
    },
    Conflict {
        actual: u64,
    },
}

#[derive(Clone, Debug, Default)]
struct Model {
    /// (stream, version, tag, index in its append) by position - 1.
    log: Vec<(usize, u64, u32, u64)>,
    commands: HashMap<u8, Outcome>,
    last: Option<Outcome>,
}

impl Model {
    fn version(&self, stream: usize) -> u64 {
        self.log
            .iter()
            .filter(|e| e.0 == stream)
            .count()
            .try_into()
            .unwrap_or(u64::MAX)
    }

    fn head(&self) -> u64 {
        self.log.len().try_into().unwrap_or(u64::MAX)
    }
}

struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::default()).boxed()
    }

    fn transitions(_: &Model) -> BoxedStrategy<Op> {
        let expect = prop_oneof![
            1 => Just(Expect::Any),
            1 => Just(Expect::NoStream),
            1 => (0u64..5).prop_map(Expect::Exactly),
            3 => Just(Expect::Current),
        ];
        prop_oneof![
            8 => (0..STREAMS.len(), expect, 0u64..4, proptest::option::of(0u8..6), any::<u32>())
                .prop_map(|(stream, expect, count, command, tag)| Op::Append { stream, expect, count, command, tag }),
            2 => (0..STREAMS.len(), 0u64..8, 1usize..6)
                .prop_map(|(stream, from_version, limit)| Op::ReadStream { stream, from_version, limit }),
            2 => (0u64..40, 1usize..12).prop_map(|(after, limit)| Op::ReadAll { after, limit }),
            1 => Just(Op::Reopen),
            1 => Just(Op::Verify),
        ]
        .boxed()
    }

    fn apply(mut model: Model, op: &Op) -> Model {
        model.last = None;
        let Op::Append {
            stream,
            expect,
            count,
            command,
            tag,
        } = op
        else {
            return model;
        };
        if let Some(first) = command.and_then(|c| model.commands.get(&c)) {
            let mut again = first.clone();
            if let Outcome::Appended { duplicate, .. } = &mut again {
                *duplicate = true;
            }
            model.last = Some(again);
            return model;
        }
        let current = model.version(*stream);
        let admits = match expect {
            Expect::Any | Expect::Current => true,
            Expect::NoStream => current == 0,
            Expect::Exactly(v) => *v == current,
        };
        if !admits {
            model.last = Some(Outcome::Conflict { actual: current });
            return model;
        }
        for i in 0..*count {
            model.log.push((*stream, current + i + 1, *tag, i));
        }
        let outcome = Outcome::Appended {
            stream: *stream,
            version: current + count,
            position: model.head(),
            events: *count,
            duplicate: false,
        };
        // Only appends that wrote something are remembered by their command id.
        if let (Some(command), true) = (command, *count > 0) {
            model.commands.insert(*command, outcome.clone());
        }
        model.last = Some(outcome);
        model
    }
}

/// Where a store under test lives, so it can be opened again.
enum Place {
    Sled(tempfile::TempDir),
    /// A database of its own on the test cluster.
    Postgres(String),
}

impl Place {
    fn open(&self, runtime: &tokio::runtime::Runtime) -> Box<dyn EventStore> {
        match self {
            Place::Sled(dir) => {
                Box::new(SledStore::open(dir.path(), SledOptions::default()).expect("opens"))
            }
            Place::Postgres(url) => Box::new(
                runtime
                    .block_on(PgStore::open(PgOptions::new(url.clone())))
                    .expect("opens"),
            ),
        }
    }
}

struct Sut {
    runtime: tokio::runtime::Runtime,
    place: Place,
    store: Option<Box<dyn EventStore>>,
    /// Command ids are scoped to one test case: the pool's small numbers map to these.
    run_id: String,
}

impl Sut {
    fn new(place: Place) -> Sut {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = place.open(&runtime);
        Sut {
            runtime,
            place,
            store: Some(store),
            run_id: ulid::Ulid::new().to_string(),
        }
    }

    fn store(&self) -> &dyn EventStore {
        self.store.as_deref().expect("open")
    }
}

impl Drop for Sut {
    fn drop(&mut self) {
        // Inside the runtime: a PostgreSQL store's tasks end with it.
        let _entered = self.runtime.enter();
        drop(self.store.take());
    }
}

struct SledModelTest;

struct PostgresModelTest;

impl StateMachineTest for PostgresModelTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        Sut::new(Place::Postgres(pg::database()))
    }

    fn apply(sut: Sut, model: &Model, op: Op) -> Sut {
        apply(sut, model, op)
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        check_invariants(sut, model);
    }
}

impl StateMachineTest for SledModelTest {
    type SystemUnderTest = Sut;
    type Reference = Reference;

    fn init_test(_: &Model) -> Sut {
        Sut::new(Place::Sled(
            tempfile::tempdir().expect("temporary directory"),
        ))
    }

    fn apply(sut: Sut, model: &Model, op: Op) -> Sut {
        apply(sut, model, op)
    }

    fn check_invariants(sut: &Sut, model: &Model) {
        check_invariants(sut, model);
    }
}

/// One operation on the store, checked against the model's outcome.
fn apply(mut sut: Sut, model: &Model, op: Op) -> Sut {
    match op {
        Op::Append {
            stream,
            expect,
            count,
            command,
            tag,
        } => {
            let expected = match expect {
                Expect::Any => ExpectedVersion::Any,
                Expect::NoStream => ExpectedVersion::NoStream,
                Expect::Exactly(v) => ExpectedVersion::Exactly(v),
                // The model already appended; the version before is what it had then.
                Expect::Current => match &model.last {
                    Some(Outcome::Appended {
                        version,
                        events,
                        duplicate: false,
                        ..
                    }) => ExpectedVersion::Exactly(version - events),
                    _ => ExpectedVersion::Any,
                },
            };
            let events = (0..count)
                .map(|i| NewEvent {
                    event_id: ulid::Ulid::new().to_string(),
                    event_type: "Tagged".into(),
                    schema: 1,
                    data: json!({ "tag": tag, "i": i }),
                })
                .collect();
            let mut request = AppendRequest::new(STREAMS[stream], expected, events);
            if let Some(command) = command {
                request = request.command_id(format!("{}-{command}", sut.run_id));
            }
            let actual = sut.runtime.block_on(sut.store().append(request));
            let actual = match actual {
                Ok(a) => Outcome::Appended {
                    stream: STREAMS
                        .iter()
                        .position(|s| *s == a.stream)
                        .expect("a known stream"),
                    version: a.version,
                    position: a.position,
                    events: a.events,
                    duplicate: a.duplicate,
                },
                Err(AppendError::Conflict { actual, .. }) => Outcome::Conflict { actual },
                Err(other) => panic!("store failed: {other}"),
            };
            assert_eq!(Some(actual), model.last);
        }
        Op::ReadStream {
            stream,
            from_version,
            limit,
        } => {
            let read = sut.runtime.block_on(sut.store().read_stream(
                STREAMS[stream],
                from_version,
                limit,
            ));
            let got: Vec<(u64, u64, serde_json::Value)> = read
                .expect("reads")
                .into_iter()
                .map(|e| (e.position, e.version, e.data))
                .collect();
            let want: Vec<(u64, u64, serde_json::Value)> = (1u64..)
                .zip(&model.log)
                .filter(|(_, e)| e.0 == stream && e.1 >= from_version.max(1))
                .take(limit)
                .map(|(p, e)| (p, e.1, json!({ "tag": e.2, "i": e.3 })))
                .collect();
            assert_eq!(got, want);
        }
        Op::ReadAll { after, limit } => {
            let read = sut
                .runtime
                .block_on(sut.store().read_all(after, limit))
                .expect("reads");
            let got: Vec<(u64, String, u64)> = read
                .into_iter()
                .map(|e| (e.position, e.stream, e.version))
                .collect();
            let want: Vec<(u64, String, u64)> = (1u64..)
                .zip(&model.log)
                .skip(usize::try_from(after).unwrap_or(usize::MAX))
                .take(limit)
                .map(|(p, e)| (p, STREAMS[e.0].to_string(), e.1))
                .collect();
            assert_eq!(got, want);
        }
        Op::Reopen => {
            {
                let _entered = sut.runtime.enter();
                drop(sut.store.take());
            }
            sut.store = Some(sut.place.open(&sut.runtime));
        }
        Op::Verify => {
            let report = sut.runtime.block_on(verify(sut.store())).expect("verifies");
            assert_eq!(report.events, model.head());
        }
    }
    sut
}

/// What must hold after every operation.
fn check_invariants(sut: &Sut, model: &Model) {
    assert_eq!(sut.store().head(), model.head());
    for (index, stream) in STREAMS.iter().enumerate() {
        let version = sut
            .runtime
            .block_on(sut.store().stream_version(stream))
            .expect("reads");
        assert_eq!(version, model.version(index));
    }
}

prop_state_machine! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_matches_the_reference_model(sequential 1..40 => SledModelTest);

    #[test]
    fn postgres_store_matches_the_reference_model(sequential 1..40 => PostgresModelTest);
}
