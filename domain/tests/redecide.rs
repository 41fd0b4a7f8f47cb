//! The re-decide check over whole logs (`LogCheck`, what `roster verify` and `roster import`
//! run): a log of decided commands passes, and each edit that no decision would make is
//! refused, one line per rule. The random sequences are in `model.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use roster_domain::*;
use support::{email, p, role, t0};

/// One command as a log records it.
#[derive(Debug, Clone)]
struct Entry {
    stream: StreamId,
    actor: String,
    at: Timestamp,
    events: Vec<Event>,
}

/// Decides commands as the engine does (the schema in force, one number sequence for the
/// whole log) and records what it appends.
struct Book {
    now: Timestamp,
    schema: SchemaState,
    resources: BTreeMap<ResourceId, ResourceState>,
    keys: ApiKeysState,
    hooks: WebhooksState,
    numbers: NumberSequence,
    log: Vec<Entry>,
}

fn space(id: &str) -> ResourceId {
    ResourceId::parse(&format!("space/{id}")).unwrap()
}

fn kind() -> Kind {
    Kind::parse("space").unwrap()
}

fn by(name: &str) -> Actor {
    Actor::Principal {
        principal: p(name),
        email: None,
    }
}

impl Book {
    fn new() -> Book {
        Book {
            now: t0(),
            schema: SchemaState::default(),
            resources: BTreeMap::new(),
            keys: ApiKeysState::default(),
            hooks: WebhooksState::default(),
            numbers: NumberSequence::starting_at(1),
            log: Vec::new(),
        }
    }

    /// Decides `command` a second after the last one and logs its events; they must be some.
    fn run(&mut self, actor: Actor, command: Command) -> Vec<Event> {
        self.now = self.now.checked_add_ms(1_000).unwrap();
        let schema = self.schema.in_force(&kind());
        let usage = KindUsage {
            has_resources: !self.resources.is_empty(),
            roles_held: self
                .resources
                .values()
                .flat_map(|r| r.members().values().map(|m| m.role.clone()))
                .collect(),
        };
        let ctx = Context::new(self.now, actor.clone(), &schema)
            .with_numbers(&self.numbers)
            .with_kind_usage(&usage);
        let stream = command.stream();
        let events = match command {
            Command::Resource(command) => {
                let state = self
                    .resources
                    .entry(command.resource().clone())
                    .or_default();
                let events = decide(state, command, &ctx).unwrap();
                *state = events.iter().fold(std::mem::take(state), evolve);
                events
            }
            Command::Schema(command) => {
                let events = decide(&self.schema, command, &ctx).unwrap();
                self.schema = events.iter().fold(std::mem::take(&mut self.schema), evolve);
                events
            }
            Command::ApiKeys(command) => {
                let events = decide(&self.keys, command, &ctx).unwrap();
                self.keys = events.iter().fold(std::mem::take(&mut self.keys), evolve);
                events
            }
            Command::Webhooks(command) => {
                let events = decide(&self.hooks, command, &ctx).unwrap();
                self.hooks = events.iter().fold(std::mem::take(&mut self.hooks), evolve);
                events
            }
        };
        assert!(
            !events.is_empty(),
            "a command that appends nothing is never logged"
        );
        self.log.push(Entry {
            stream,
            actor: actor.label(),
            at: self.now,
            events: events.clone(),
        });
        events
    }

    fn code(&self, resource: &str, number: u64) -> VerifiedCode {
        let state = &self.resources[&space(resource)];
        let generation = state
            .link(number)
            .map(|l| l.generation)
            .or_else(|| state.invitation(number).map(|i| i.generation))
            .unwrap();
        support::code(number, generation)
    }
}

fn resource(command: ResourceCommand) -> Command {
    Command::Resource(command)
}

/// Runs the log through `LogCheck`: the index of the first refused command and why.
fn check(log: &[Entry]) -> Result<(), (usize, Mismatch)> {
    let mut check = LogCheck::new();
    for (index, entry) in log.iter().enumerate() {
        let logged = LoggedCommand {
            stream: &entry.stream,
            actor: &entry.actor,
            occurred_at: entry.at,
            events: &entry.events,
        };
        check
            .command(&logged, &mut |_, _| {})
            .map_err(|mismatch| (index, mismatch))?;
    }
    Ok(())
}

/// A log touching every stream and most commands, all decided. Returns it with the number
/// of the one-use link carol used (entry 5) and of dana's invitation.
fn book() -> (Book, u64, u64) {
    let mut book = Book::new();
    let mut roles = RoleSchema::builtin(&kind()).roles().to_vec();
    roles.push(RoleDef {
        name: role("guest"),
        privileges: BTreeSet::new(),
    });
    book.run(
        Actor::Admin,
        Command::Schema(SchemaCommand::DefineRoleSchema {
            kind: kind(),
            roles,
            default_role: role("viewer"),
        }),
    );
    book.run(
        Actor::Admin,
        resource(ResourceCommand::RegisterResource {
            resource: space("a"),
            owner: p("alice"),
            parent: None,
        }),
    );
    book.run(
        by("alice"),
        resource(ResourceCommand::SetMemberRole {
            resource: space("a"),
            principal: p("bob"),
            role: role("editor"),
        }),
    );
    let created = book.run(
        by("bob"),
        resource(ResourceCommand::CreateInviteLink {
            resource: space("a"),
            role: Some(role("editor")),
            expires_at: None,
            max_uses: Some(1),
        }),
    );
    let Event::InviteLinkCreated { number: link, .. } = created[0] else {
        panic!("{created:?}")
    };
    let code = book.code("a", link);
    book.run(
        by("carol"),
        resource(ResourceCommand::AcceptInvitation {
            resource: space("a"),
            code,
        }),
    );
    let invited = book.run(
        by("alice"),
        resource(ResourceCommand::CreateInvitations {
            resource: space("a"),
            emails: EmailList::Joined("dana@x.io, erin@x.io".into()),
            role: None,
            expires_at: None,
            message: Some("welcome".into()),
        }),
    );
    let Event::InvitationCreated {
        number: invitation, ..
    } = invited[0]
    else {
        panic!("{invited:?}")
    };
    book.run(
        Actor::Admin,
        resource(ResourceCommand::RecordDelivery {
            resource: space("a"),
            invitation,
            generation: 1,
            attempt: 1,
            outcome: DeliveryOutcome::Delivered,
        }),
    );
    let code = book.code("a", invitation);
    book.run(
        Actor::Principal {
            principal: p("dana"),
            email: Some(email("dana@x.io")),
        },
        resource(ResourceCommand::AcceptInvitation {
            resource: space("a"),
            code,
        }),
    );
    book.run(
        by("alice"),
        resource(ResourceCommand::ChangeInviteLink {
            resource: space("a"),
            link,
            role: Some(role("commenter")),
            expires_at: None,
            max_uses: Some(Some(3)),
        }),
    );
    book.run(
        by("alice"),
        resource(ResourceCommand::RotateInviteLink {
            resource: space("a"),
            link,
        }),
    );
    book.run(
        by("alice"),
        resource(ResourceCommand::RemoveMember {
            resource: space("a"),
            principal: p("bob"),
        }),
    );
    book.run(
        by("carol"),
        resource(ResourceCommand::RemoveMember {
            resource: space("a"),
            principal: p("carol"),
        }),
    );
    book.run(
        Actor::Admin,
        Command::ApiKeys(ApiKeyCommand::IssueApiKey {
            key_id: ApiKeyId::parse("key_1").unwrap(),
            principal: p("alice"),
            scopes: [Scope::Read].into(),
            act_as: false,
            email: None,
            name: None,
            digest: KeyDigest::of_key("rk_test"),
        }),
    );
    let subscribed = book.run(
        Actor::Admin,
        Command::Webhooks(WebhookCommand::Subscribe {
            url: "https://hooks.example/roster".into(),
            events: vec!["MemberAdded".into()],
        }),
    );
    let Event::WebhookSubscribed { webhook, .. } = subscribed[0] else {
        panic!("{subscribed:?}")
    };
    book.run(
        Actor::Admin,
        Command::Webhooks(WebhookCommand::RecordDelivery {
            webhook,
            position: 3,
            attempt: 1,
            outcome: WebhookOutcome::Delivered { status: 204 },
        }),
    );
    (book, link, invitation)
}

#[test]
fn a_log_of_decided_commands_passes() {
    let (book, _, _) = book();
    assert_eq!(check(&book.log), Ok(()));
}

#[test]
fn the_admin_has_one_label_and_the_old_one_still_reads_as_the_admin() {
    assert_eq!(Actor::Admin.label(), ADMIN_ACTOR_LABEL);
    assert_eq!(ADMIN_ACTOR_LABEL, "roster/admin");
    assert!(
        Principal::parse(ADMIN_ACTOR_LABEL).is_err(),
        "no principal has it"
    );
    assert_eq!(Actor::from_label("roster/admin"), Ok(Actor::Admin));
    assert_eq!(
        Actor::from_label(LEGACY_ADMIN_ACTOR_LABEL),
        Ok(Actor::Admin)
    );
    assert_eq!(Actor::from_label("alice"), Ok(by("alice")));
    assert_eq!(by("alice").label(), "alice");
    assert!(Actor::from_label("not a principal").is_err());
}

/// One edit of the decided log per rule: which command (by index) is refused, and words of why.
type Edit = fn(&mut Vec<Entry>, u64, u64);

#[test]
fn each_edit_that_no_decision_makes_is_refused() {
    let cases: Vec<(&str, Edit, usize, &str)> = vec![
        (
            "carol joins as owner through an editor link",
            |log, _, _| {
                let Event::MemberAdded { role: r, .. } = &mut log[4].events[1] else {
                    panic!("{:?}", log[4])
                };
                *r = role("owner");
            },
            4,
            "(they differ in role)",
        ),
        (
            "dave uses the one-use link after carol",
            |log, _, _| {
                let mut again = log[4].clone();
                for event in &mut again.events {
                    match event {
                        Event::InviteLinkUsed { used_by, uses, .. } => {
                            *used_by = p("dave");
                            *uses = 2;
                        }
                        Event::MemberAdded { principal, .. } => *principal = p("dave"),
                        other => panic!("{other:?}"),
                    }
                }
                again.actor = "dave".into();
                log.insert(5, again);
            },
            5,
            "invitation_exhausted",
        ),
        (
            "alice, the last owner, leaves",
            |log, _, _| {
                log.push(Entry {
                    stream: space("a").stream(),
                    actor: "alice".into(),
                    at: log.last().unwrap().at,
                    events: vec![Event::MemberRemoved {
                        principal: p("alice"),
                        role: role("owner"),
                        removed_by: Some(p("alice")),
                        left: true,
                    }],
                });
            },
            15,
            "space/a has no owner left",
        ),
        (
            "dana's invitation accepted a second time",
            |log, _, _| {
                let again = log[7].clone();
                log.insert(8, again);
            },
            8,
            "invitation_used",
        ),
        (
            "the admin accepts a link (roster/admin is never a principal)",
            |log, _, _| log[4].actor = ADMIN_ACTOR_LABEL.into(),
            4,
            "refuse it: invalid_request",
        ),
        (
            "a member added through a link without a use of it",
            |log, _, _| {
                log[4].events.remove(0);
            },
            4,
            "no command gives that",
        ),
        (
            "bob grants editor but was never a member",
            |log, _, _| log[2].actor = "bob".into(),
            2,
            "forbidden",
        ),
        (
            "a link number handed out twice",
            |log, link, _| {
                log.push(Entry {
                    stream: space("b").stream(),
                    actor: ADMIN_ACTOR_LABEL.into(),
                    at: log.last().unwrap().at,
                    events: vec![Event::ResourceRegistered {
                        resource: space("b"),
                        owner: p("zoe"),
                        role: role("owner"),
                        parent: None,
                        at: log.last().unwrap().at,
                    }],
                });
                log.push(Entry {
                    stream: space("b").stream(),
                    actor: "zoe".into(),
                    at: log.last().unwrap().at,
                    events: vec![Event::InviteLinkCreated {
                        number: link,
                        generation: 1,
                        role: role("viewer"),
                        expires_at: None,
                        max_uses: None,
                        created_by: Some(p("zoe")),
                    }],
                });
            },
            16,
            "was handed out before",
        ),
        (
            "a role schema that drops a role members hold",
            |log, _, _| {
                log.push(Entry {
                    stream: StreamId::RoleSchema(kind()),
                    actor: ADMIN_ACTOR_LABEL.into(),
                    at: log.last().unwrap().at,
                    events: vec![Event::RoleSchemaDefined {
                        kind: kind(),
                        // Dana holds viewer (her invitation's default role).
                        roles: RoleSchema::builtin(&kind())
                            .roles()
                            .iter()
                            .filter(|r| r.name != role("viewer"))
                            .cloned()
                            .collect(),
                        default_role: role("commenter"),
                    }],
                });
            },
            15,
            "conflict",
        ),
        (
            "a principal subscribes a webhook",
            |log, _, _| log[13].actor = "alice".into(),
            13,
            "forbidden",
        ),
        (
            "two invitations of one request with one number",
            |log, _, invitation| {
                let Event::InvitationCreated { number, .. } = &mut log[5].events[1] else {
                    panic!("{:?}", log[5])
                };
                *number = invitation;
            },
            5,
            "was handed out before",
        ),
    ];
    let mut codes = BTreeSet::new();
    for (what, edit, refused_at, why) in cases {
        let (book, link, invitation) = book();
        let mut log = book.log;
        edit(&mut log, link, invitation);
        match check(&log) {
            Err((index, mismatch)) => {
                assert_eq!(index, refused_at, "{what}: {mismatch}");
                assert!(mismatch.reason.contains(why), "{what}: {mismatch}");
                assert!(
                    !mismatch.reason.contains("@x.io"),
                    "{what}: no email in the reason: {mismatch}"
                );
                codes.insert(why);
            }
            Ok(()) => panic!("{what}: passed"),
        }
    }
    assert!(codes.len() > 5);
}

#[test]
fn a_principal_named_admin_in_an_old_log_is_still_read_right() {
    // Before `roster/admin`, the admin's label was `admin`, which a principal may be called:
    // such a principal accepting a link must not be taken for the admin, who cannot accept.
    let (mut book, _, _) = book();
    let created = book.run(
        by("alice"),
        resource(ResourceCommand::CreateInviteLink {
            resource: space("a"),
            role: None,
            expires_at: None,
            max_uses: None,
        }),
    );
    let Event::InviteLinkCreated { number: link, .. } = created[0] else {
        panic!("{created:?}")
    };
    let code = book.code("a", link);
    book.run(
        by("admin"),
        resource(ResourceCommand::AcceptInvitation {
            resource: space("a"),
            code,
        }),
    );
    assert_eq!(book.log.last().unwrap().actor, LEGACY_ADMIN_ACTOR_LABEL);
    // And the admin's own commands logged as `admin` read as the admin's.
    for entry in &mut book.log {
        if entry.actor == ADMIN_ACTOR_LABEL {
            entry.actor = LEGACY_ADMIN_ACTOR_LABEL.into();
        }
    }
    assert_eq!(check(&book.log), Ok(()));
}
