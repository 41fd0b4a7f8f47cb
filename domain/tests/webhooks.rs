//! The `webhooks` stream's rules: who may subscribe, what a subscription may name, and how
//! delivery attempts are recorded; and that its events round-trip through envelope parts.

use roster_domain::{
    fold, Actor, Context, DomainError, Event, NumberSequence, Principal, RoleSchema, Timestamp,
    WebhookCommand, WebhookOutcome, WebhooksState,
};

fn decide(
    state: &WebhooksState,
    actor: Actor,
    command: WebhookCommand,
) -> Result<Vec<Event>, DomainError> {
    let schema = RoleSchema::builtin(&roster_domain::Kind::parse("space").expect("a kind"));
    let numbers = NumberSequence::starting_at(7);
    let now = Timestamp::from_unix_ms(1_790_000_000_000).expect("in range");
    let ctx = Context::new(now, actor, &schema).with_numbers(&numbers);
    state.decide(command, &ctx)
}

fn subscribe(url: &str, events: &[&str]) -> WebhookCommand {
    WebhookCommand::Subscribe {
        url: url.into(),
        events: events.iter().map(|e| e.to_string()).collect(),
    }
}

#[test]
fn subscriptions_name_a_web_url_and_known_event_types() {
    let empty = WebhooksState::default();
    let made = decide(
        &empty,
        Actor::Admin,
        subscribe("https://host.example/hook", &["MemberAdded", "MemberAdded"]),
    );
    assert_eq!(
        made.expect("subscribes"),
        vec![Event::WebhookSubscribed {
            webhook: 7,
            url: "https://host.example/hook".into(),
            events: vec!["MemberAdded".into()]
        }]
    );
    let refused = [
        (subscribe("ftp://host.example/hook", &[]), "invalid_request"),
        (
            subscribe("https://host.example/a hook", &[]),
            "invalid_request",
        ),
        (
            subscribe(&format!("https://{}", "x".repeat(2048)), &[]),
            "invalid_request",
        ),
        (
            subscribe("https://host.example/hook", &["MemberJoined"]),
            "invalid_request",
        ),
        (WebhookCommand::Remove { webhook: 99 }, "not_found"),
    ];
    for (command, code) in refused {
        let error = decide(&empty, Actor::Admin, command.clone()).expect_err("refused");
        assert_eq!(error.code(), code, "{command:?}");
    }
    let alice = Actor::Principal {
        principal: Principal::parse("alice").expect("valid"),
        email: None,
    };
    let error =
        decide(&empty, alice, subscribe("https://host.example/hook", &[])).expect_err("refused");
    assert_eq!(error.code(), "forbidden");
}

#[test]
fn removal_and_delivery_records() {
    let state: WebhooksState = fold(&[Event::WebhookSubscribed {
        webhook: 3,
        url: "http://127.0.0.1:9/h".into(),
        events: vec![],
    }]);
    assert!(
        state.hooks()[&3].wants("MemberAdded"),
        "an empty list wants every type"
    );
    let delivered = WebhookCommand::RecordDelivery {
        webhook: 3,
        position: 12,
        attempt: 2,
        outcome: WebhookOutcome::Delivered { status: 204 },
    };
    assert_eq!(
        decide(&state, Actor::Admin, delivered).expect("records"),
        vec![Event::WebhookDelivered {
            webhook: 3,
            position: 12,
            attempt: 2,
            status: 204
        }]
    );
    let zeroth = WebhookCommand::RecordDelivery {
        webhook: 3,
        position: 12,
        attempt: 0,
        outcome: WebhookOutcome::Delivered { status: 200 },
    };
    assert_eq!(
        decide(&state, Actor::Admin, zeroth)
            .expect_err("refused")
            .code(),
        "invalid_request"
    );
    let removed =
        decide(&state, Actor::Admin, WebhookCommand::Remove { webhook: 3 }).expect("removes");
    assert_eq!(removed, vec![Event::WebhookRemoved { webhook: 3 }]);
    let state = state.evolve(&removed[0]);
    assert!(!state.hooks()[&3].wants("MemberAdded"));
    assert_eq!(
        decide(&state, Actor::Admin, WebhookCommand::Remove { webhook: 3 }).expect("a no-op"),
        vec![]
    );
}

#[test]
fn webhook_events_round_trip() {
    let events = [
        Event::WebhookSubscribed {
            webhook: 1,
            url: "https://h.example/x".into(),
            events: vec!["MemberAdded".into()],
        },
        Event::WebhookRemoved { webhook: 1 },
        Event::WebhookDelivered {
            webhook: 1,
            position: 5,
            attempt: 1,
            status: 200,
        },
        Event::WebhookDeliveryFailed {
            webhook: 1,
            position: 5,
            attempt: 3,
            status: Some(500),
            error: "500".into(),
            gave_up: true,
        },
    ];
    for event in events {
        let back = Event::from_parts(event.event_type(), event.schema(), event.to_data())
            .expect("decodes");
        assert_eq!(back, event);
    }
}
