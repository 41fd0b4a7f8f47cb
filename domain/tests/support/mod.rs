//! Test helpers: a given/when/then harness over `decide` (after cqrs-es's TestFramework) and event builders.
#![allow(dead_code)]

use std::collections::BTreeMap;

use roster_domain::*;

pub const SECRET: &[u8] = b"test secret, never used outside tests";

/// 2026-11-22T10:00:00.000Z, the tests' "now".
pub fn t0() -> Timestamp {
    Timestamp::parse("2026-11-22T10:00:00Z").unwrap()
}

pub fn at_days(days: i64) -> Timestamp {
    t0().checked_add_ms(days * DAY_MS).unwrap()
}

pub fn p(name: &str) -> Principal {
    Principal::parse(name).unwrap()
}

pub fn role(name: &str) -> RoleName {
    RoleName::parse(name).unwrap()
}

pub fn email(text: &str) -> Email {
    Email::parse(text).unwrap()
}

pub fn space() -> ResourceId {
    ResourceId::parse("space/s1").unwrap()
}

/// A verified code for a number and generation, as the engine would hand it to `decide`.
pub fn code(number: u64, generation: u32) -> VerifiedCode {
    let secret = ServerSecret::new(SECRET);
    let text = InviteCode::derive(&secret, number, generation).encode_base64();
    VerifiedCode::from_text(&secret, &text).unwrap()
}

/// Who acts, when, under which limits: the parts of a [`Context`] a test varies.
#[derive(Clone)]
pub struct Ctx {
    pub now: Timestamp,
    pub actor: Actor,
    pub limits: Limits,
    pub kind_usage: KindUsage,
    pub known_emails: BTreeMap<Email, Principal>,
    pub schema: Option<RoleSchema>,
    pub first_number: u64,
}

/// The admin key without a principal, at [`t0`].
pub fn admin() -> Ctx {
    Ctx {
        now: t0(),
        actor: Actor::Admin,
        limits: Limits::default(),
        kind_usage: KindUsage::default(),
        known_emails: BTreeMap::new(),
        schema: None,
        first_number: 100,
    }
}

/// A principal without a verified email, at [`t0`].
pub fn by(name: &str) -> Ctx {
    Ctx {
        actor: Actor::Principal {
            principal: p(name),
            email: None,
        },
        ..admin()
    }
}

/// A principal with its verified email, at [`t0`].
pub fn by_with_email(name: &str, address: &str) -> Ctx {
    Ctx {
        actor: Actor::Principal {
            principal: p(name),
            email: Some(email(address)),
        },
        ..admin()
    }
}

impl Ctx {
    pub fn at(mut self, now: Timestamp) -> Ctx {
        self.now = now;
        self
    }

    pub fn limits(mut self, edit: impl FnOnce(&mut Limits)) -> Ctx {
        edit(&mut self.limits);
        self
    }

    pub fn kind_usage(mut self, usage: KindUsage) -> Ctx {
        self.kind_usage = usage;
        self
    }

    pub fn knowing(mut self, address: &str, principal: &str) -> Ctx {
        self.known_emails.insert(email(address), p(principal));
        self
    }
}

/// The start of a case: the events already in the stream.
pub struct Given<A> {
    state: A,
}

pub fn given<A: Aggregate>(events: impl IntoIterator<Item = Event>) -> Given<A> {
    let events: Vec<Event> = events.into_iter().collect();
    Given {
        state: fold(&events),
    }
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command, ctx: Ctx) -> Then {
        let schema = ctx
            .schema
            .clone()
            .unwrap_or_else(|| RoleSchema::builtin(space().kind()));
        let numbers = NumberSequence::starting_at(ctx.first_number);
        let context = Context::new(ctx.now, ctx.actor.clone(), &schema)
            .with_limits(&ctx.limits)
            .with_numbers(&numbers)
            .with_known_emails(&ctx.known_emails)
            .with_kind_usage(&ctx.kind_usage);
        Then {
            result: self.state.decide(command, &context),
        }
    }
}

/// What `decide` answered, to be compared with the expectation.
pub struct Then {
    pub result: Result<Vec<Event>, DomainError>,
}

/// A case's verdict: `Err` says what differed. `expected_code` records which code the case covers.
pub struct Verdict {
    pub outcome: Result<(), String>,
    pub expected_code: Option<&'static str>,
}

impl Then {
    pub fn then_events(self, expected: Vec<Event>) -> Verdict {
        let outcome = match self.result {
            Ok(events) if events == expected => Ok(()),
            other => Err(format!("expected events {expected:#?}\n got {other:#?}")),
        };
        Verdict {
            outcome,
            expected_code: None,
        }
    }

    pub fn then_no_events(self) -> Verdict {
        self.then_events(vec![])
    }

    /// Passes when the events are those `check` accepts (for events carrying generated numbers).
    pub fn then_events_matching(self, what: &str, check: impl Fn(&[Event]) -> bool) -> Verdict {
        let outcome = match self.result {
            Ok(events) if check(&events) => Ok(()),
            other => Err(format!("expected {what}, got {other:#?}")),
        };
        Verdict {
            outcome,
            expected_code: None,
        }
    }

    pub fn then_error(self, code: &'static str) -> Verdict {
        let outcome = match self.result {
            Err(error) if error.code() == code => Ok(()),
            other => Err(format!("expected error {code}, got {other:#?}")),
        };
        Verdict {
            outcome,
            expected_code: Some(code),
        }
    }
}

// Event builders for the resource `space/s1`, whose owner is alice.

pub fn registered(owner: &str) -> Event {
    Event::ResourceRegistered {
        resource: space(),
        owner: p(owner),
        role: role("owner"),
        parent: None,
        at: t0(),
    }
}

pub fn added(principal: &str, role_name: &str, granted_by: Option<&str>) -> Event {
    Event::MemberAdded {
        principal: p(principal),
        role: role(role_name),
        granted_by: granted_by.map(p),
        via: Via::Direct,
        at: t0(),
    }
}

pub fn changed(principal: &str, from: &str, to: &str, changed_by: Option<&str>) -> Event {
    Event::MemberRoleChanged {
        principal: p(principal),
        from_role: role(from),
        role: role(to),
        changed_by: changed_by.map(p),
        via: Via::Direct,
        at: t0(),
    }
}

pub fn removed(principal: &str, role_name: &str, removed_by: Option<&str>, left: bool) -> Event {
    Event::MemberRemoved {
        principal: p(principal),
        role: role(role_name),
        removed_by: removed_by.map(p),
        left,
    }
}

/// A link with no expiry and no use limit unless given.
pub fn link(number: u64, role_name: &str, created_by: Option<&str>) -> Event {
    link_with(number, role_name, created_by, None, None)
}

pub fn link_with(
    number: u64,
    role_name: &str,
    created_by: Option<&str>,
    expires_at: Option<Timestamp>,
    max_uses: Option<u32>,
) -> Event {
    Event::InviteLinkCreated {
        number,
        generation: 1,
        role: role(role_name),
        expires_at,
        max_uses,
        created_by: created_by.map(p),
    }
}

pub fn link_used(number: u64, used_by: &str, uses: u32) -> Event {
    Event::InviteLinkUsed {
        number,
        generation: 1,
        used_by: p(used_by),
        uses,
    }
}

/// An invitation valid for 7 days from [`t0`].
pub fn invited(number: u64, address: &str, role_name: &str, invited_by: Option<&str>) -> Event {
    Event::InvitationCreated {
        number,
        generation: 1,
        email: email(address),
        role: role(role_name),
        expires_at: at_days(7),
        validity_ms: 7 * DAY_MS,
        invited_by: invited_by.map(p),
        message: None,
    }
}

/// alice owns `space/s1`; carol is a creator, erin an editor, vic a viewer, all granted by alice.
pub fn team() -> Vec<Event> {
    vec![
        registered("alice"),
        added("carol", "creator", Some("alice")),
        added("erin", "editor", Some("alice")),
        added("vic", "viewer", Some("alice")),
    ]
}

pub fn team_and(more: impl IntoIterator<Item = Event>) -> Vec<Event> {
    let mut events = team();
    events.extend(more);
    events
}
