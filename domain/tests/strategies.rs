//! The exported `strategies` drive `decide` as a host would: arbitrary commands from arbitrary actors
//! never panic, never leave a resource without an owner, and fold back to the running state.

mod support;

use proptest::prelude::*;
use roster_domain::strategies::{resource_command, timestamp};
use roster_domain::*;
use support::{p, space, team};

const CAST: [&str; 6] = ["alice", "carol", "erin", "vic", "zoe", "mia"];

fn actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        1 => Just(Actor::Admin),
        5 => proptest::sample::select(CAST.to_vec()).prop_map(|name| Actor::Principal {
            principal: p(name),
            email: Some(Email::parse(&format!("{name}@x.io")).unwrap()),
        }),
    ]
}

fn session() -> impl Strategy<Value = (Timestamp, Vec<(Actor, ResourceCommand)>)> {
    timestamp().prop_flat_map(|now| {
        let schema = RoleSchema::builtin(space().kind());
        let principals = CAST.iter().map(|n| p(n)).collect();
        // Numbers handed out start at 100, so commands naming 100 to 107 often find something.
        let commands = resource_command(space(), principals, &schema, (100..108).collect(), now);
        (
            Just(now),
            proptest::collection::vec((actor(), commands), 1..30),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn generated_commands_keep_the_invariants((now, commands) in session()) {
        let schema = RoleSchema::builtin(space().kind());
        let numbers = NumberSequence::starting_at(100);
        let mut log = team();
        let mut state: ResourceState = fold(&log);
        for (actor, command) in commands {
            let ctx = Context::new(now, actor, &schema).with_numbers(&numbers);
            if let Ok(events) = decide(&state, command, &ctx) {
                state = events.iter().fold(state, evolve);
                log.extend(events);
            }
            prop_assert!(state.members().values().any(|m| m.role.as_str() == "owner"));
            prop_assert!(state.links().values().all(|l| l.max_uses.is_none_or(|max| l.uses <= max)));
            prop_assert!(state.invitations().keys().chain(state.links().keys()).all(|n| is_valid_number(*n)));
        }
        prop_assert_eq!(fold::<ResourceState>(&log), state);
    }
}
