//! Every rule of DESIGN section 2 and every domain error code of section 5, one given/when/then case per line.

mod support;

use std::collections::BTreeSet;

use libtest_mimic::{Arguments, Failed, Trial};

use roster_domain::*;
use support::*;

fn set_role(principal: &str, role_name: &str) -> ResourceCommand {
    ResourceCommand::SetMemberRole {
        resource: space(),
        principal: p(principal),
        role: role(role_name),
    }
}

fn remove(principal: &str) -> ResourceCommand {
    ResourceCommand::RemoveMember {
        resource: space(),
        principal: p(principal),
    }
}

fn create_link(role_name: &str) -> ResourceCommand {
    create_link_with(Some(role_name), None, None)
}

fn create_link_with(
    role_name: Option<&str>,
    expires_at: Option<Timestamp>,
    max_uses: Option<u32>,
) -> ResourceCommand {
    ResourceCommand::CreateInviteLink {
        resource: space(),
        role: role_name.map(role),
        expires_at,
        max_uses,
    }
}

fn change_link_role(number: u64, role_name: &str) -> ResourceCommand {
    ResourceCommand::ChangeInviteLink {
        resource: space(),
        link: number,
        role: Some(role(role_name)),
        expires_at: None,
        max_uses: None,
    }
}

fn rotate(number: u64) -> ResourceCommand {
    ResourceCommand::RotateInviteLink {
        resource: space(),
        link: number,
    }
}

fn revoke_link(number: u64) -> ResourceCommand {
    ResourceCommand::RevokeInviteLink {
        resource: space(),
        link: number,
    }
}

fn accept(number: u64, generation: u32) -> ResourceCommand {
    ResourceCommand::AcceptInvitation {
        resource: space(),
        code: code(number, generation),
    }
}

fn accept_by_id(number: u64) -> ResourceCommand {
    ResourceCommand::AcceptInvitationById {
        resource: space(),
        invitation: number,
    }
}

fn decline(number: u64, generation: u32) -> ResourceCommand {
    ResourceCommand::DeclineInvitation {
        resource: space(),
        code: code(number, generation),
    }
}

fn invite(emails: &str, role_name: Option<&str>) -> ResourceCommand {
    ResourceCommand::CreateInvitations {
        resource: space(),
        emails: EmailList::Joined(emails.to_owned()),
        role: role_name.map(role),
        expires_at: None,
        message: None,
    }
}

fn resend(number: u64) -> ResourceCommand {
    ResourceCommand::ResendInvitation {
        resource: space(),
        invitation: number,
    }
}

fn revoke_invitation(number: u64) -> ResourceCommand {
    ResourceCommand::RevokeInvitation {
        resource: space(),
        invitation: number,
    }
}

fn register(owner: &str) -> ResourceCommand {
    ResourceCommand::RegisterResource {
        resource: space(),
        owner: p(owner),
        parent: None,
    }
}

fn used(number: u64, by: &str, uses: u32) -> Event {
    link_used(number, by, uses)
}

fn joined_via_link(principal: &str, role_name: &str, creator: Option<&str>, number: u64) -> Event {
    Event::MemberAdded {
        principal: p(principal),
        role: role(role_name),
        granted_by: creator.map(p),
        via: Via::Link { number },
        at: t0(),
    }
}

fn accepted(number: u64, address: &str, by: &str) -> Event {
    Event::InvitationAccepted {
        number,
        generation: 1,
        email: email(address),
        accepted_by: p(by),
    }
}

fn schema_of(roles: &[&str], default_role: &str) -> SchemaCommand {
    SchemaCommand::DefineRoleSchema {
        kind: Kind::parse("space").unwrap(),
        roles: roles
            .iter()
            .map(|name| RoleDef {
                name: role(name),
                privileges: BTreeSet::from([Privilege::ViewMembers]),
            })
            .collect(),
        default_role: role(default_role),
    }
}

fn held(roles: &[&str]) -> KindUsage {
    KindUsage {
        has_resources: true,
        roles_held: roles.iter().map(|r| role(r)).collect(),
    }
}

fn issue_key(id: &str, key: &str) -> ApiKeyCommand {
    ApiKeyCommand::IssueApiKey {
        key_id: ApiKeyId::parse(id).unwrap(),
        principal: p("svc"),
        scopes: BTreeSet::from([Scope::Read, Scope::Write]),
        act_as: true,
        email: None,
        name: None,
        digest: KeyDigest::of_key(key),
    }
}

fn key_issued(id: &str, key: &str) -> Event {
    Event::ApiKeyIssued {
        key_id: ApiKeyId::parse(id).unwrap(),
        principal: p("svc"),
        scopes: BTreeSet::from([Scope::Read, Scope::Write]),
        act_as: true,
        email: None,
        name: None,
        digest: KeyDigest::of_key(key),
    }
}

fn is_types(events: &[Event], types: &[&str]) -> bool {
    events
        .iter()
        .map(Event::event_type)
        .eq(types.iter().copied())
}

/// A case of the table: decides its command when run, so each runs on its own.
type Case = Box<dyn Fn() -> Verdict + Send>;

/// The whole table: (what the case shows, how to reach its verdict). Names start with the rule
/// they exercise; each is a test of its own (`cargo test -p roster-domain --test rules -- 'rule 1:'`).
fn cases() -> Vec<(&'static str, Case)> {
    let r = given::<ResourceState>;
    vec![
        // Rule 1: grant only roles at or below one's own; the highest only by a holder.
        (
            "rule 1: an owner may grant owner",
            Box::new(move || {
                r(team())
                    .when(set_role("bob", "owner"), by("alice"))
                    .then_events(vec![added("bob", "owner", Some("alice"))])
            }) as Case,
        ),
        (
            "rule 1: a creator may not grant owner",
            Box::new(move || {
                r(team())
                    .when(set_role("bob", "owner"), by("carol"))
                    .then_error("role_not_grantable")
            }) as Case,
        ),
        (
            "rule 1: a creator may grant creator",
            Box::new(move || {
                r(team())
                    .when(set_role("bob", "creator"), by("carol"))
                    .then_events(vec![added("bob", "creator", Some("carol"))])
            }) as Case,
        ),
        (
            "rule 1: an editor may not make a creator link",
            Box::new(move || {
                r(team())
                    .when(create_link("creator"), by("erin"))
                    .then_error("role_not_grantable")
            }) as Case,
        ),
        (
            "rule 1: an editor may invite by email as editor",
            Box::new(move || {
                r(team())
                    .when(invite("zoe@x.io", Some("editor")), by("erin"))
                    .then_events_matching("one InvitationCreated", |e| {
                        is_types(e, &["InvitationCreated"])
                    })
            }) as Case,
        ),
        (
            "rule 1: an editor may not invite by email as owner",
            Box::new(move || {
                r(team())
                    .when(invite("zoe@x.io", Some("owner")), by("erin"))
                    .then_error("role_not_grantable")
            }) as Case,
        ),
        (
            "rule 1: a creator may not rotate an owner link, it would be a fresh grant",
            Box::new(move || {
                r(team_and([link(5, "owner", Some("alice"))]))
                    .when(rotate(5), by("carol"))
                    .then_error("role_not_grantable")
            }) as Case,
        ),
        (
            "rule 1: a creator may not turn a link into an owner link",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("carol"))]))
                    .when(change_link_role(5, "owner"), by("carol"))
                    .then_error("role_not_grantable")
            }) as Case,
        ),
        // Rule 2: change or remove only members at or below oneself; anyone may leave.
        (
            "rule 2: a creator may not remove the owner",
            Box::new(move || {
                r(team())
                    .when(remove("alice"), by("carol"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "rule 2: a creator may not demote the owner",
            Box::new(move || {
                r(team())
                    .when(set_role("alice", "viewer"), by("carol"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "rule 2: a creator may demote an editor",
            Box::new(move || {
                r(team())
                    .when(set_role("erin", "viewer"), by("carol"))
                    .then_events(vec![changed("erin", "editor", "viewer", Some("carol"))])
            }) as Case,
        ),
        (
            "rule 2: an editor lacks manage_members",
            Box::new(move || {
                r(team())
                    .when(remove("vic"), by("erin"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "rule 2: a viewer may leave",
            Box::new(move || {
                r(team())
                    .when(remove("vic"), by("vic"))
                    .then_events(vec![removed("vic", "viewer", Some("vic"), true)])
            }) as Case,
        ),
        (
            "rule 2: a creator removes a viewer",
            Box::new(move || {
                r(team())
                    .when(remove("vic"), by("carol"))
                    .then_events(vec![removed("vic", "viewer", Some("carol"), false)])
            }) as Case,
        ),
        // Rule 3: at least one holder of the highest role, for the admin too.
        (
            "rule 3: the sole owner may not leave",
            Box::new(move || {
                r(team())
                    .when(remove("alice"), by("alice"))
                    .then_error("last_owner")
            }) as Case,
        ),
        (
            "rule 3: the sole owner may not demote itself",
            Box::new(move || {
                r(team())
                    .when(set_role("alice", "creator"), by("alice"))
                    .then_error("last_owner")
            }) as Case,
        ),
        (
            "rule 3: the admin may not remove the sole owner",
            Box::new(move || {
                r(team())
                    .when(remove("alice"), admin())
                    .then_error("last_owner")
            }) as Case,
        ),
        (
            "rule 3: an owner may leave when another remains",
            Box::new(move || {
                r(team_and([added("olga", "owner", Some("alice"))]))
                    .when(remove("alice"), by("alice"))
                    .then_events(vec![removed("alice", "owner", Some("alice"), true)])
            }) as Case,
        ),
        // Rule 4: the inviter must still be able to invite with the role when the code is used.
        (
            "rule 4: the link's creator was removed",
            Box::new(move || {
                r(team_and([
                    link(5, "editor", Some("erin")),
                    removed("erin", "editor", Some("alice"), false),
                ]))
                .when(accept(5, 1), by("zoe"))
                .then_error("inviter_lost_privilege")
            }) as Case,
        ),
        (
            "rule 4: the link's creator was demoted below the role",
            Box::new(move || {
                r(team_and([
                    link(5, "editor", Some("erin")),
                    changed("erin", "editor", "commenter", Some("alice")),
                ]))
                .when(accept(5, 1), by("zoe"))
                .then_error("inviter_lost_privilege")
            }) as Case,
        ),
        (
            "rule 4: the inviter lost the invite privilege",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", Some("carol")),
                    changed("carol", "creator", "viewer", Some("alice")),
                ]))
                .when(accept(7, 1), by_with_email("zoe", "zoe@x.io"))
                .then_error("inviter_lost_privilege")
            }) as Case,
        ),
        (
            "rule 4: an inviter still entitled lets the code work",
            Box::new(move || {
                r(team_and([link(5, "editor", Some("erin"))]))
                    .when(accept(5, 1), by("zoe"))
                    .then_events(vec![
                        used(5, "zoe", 1),
                        joined_via_link("zoe", "editor", Some("erin"), 5),
                    ])
            }) as Case,
        ),
        // Rule 5: accepting never lowers a role; rule 6 first.
        (
            "rule 5: an owner accepting a viewer link changes nothing",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("alice"))]))
                    .when(accept(5, 1), by("alice"))
                    .then_no_events()
            }) as Case,
        ),
        (
            "rule 5: an equal role changes nothing and uses no slot",
            Box::new(move || {
                r(team_and([link_with(
                    5,
                    "viewer",
                    Some("alice"),
                    None,
                    Some(1),
                )]))
                .when(accept(5, 1), by("vic"))
                .then_no_events()
            }) as Case,
        ),
        (
            "rule 5: a lower member is raised",
            Box::new(move || {
                r(team_and([link(5, "editor", Some("alice"))]))
                    .when(accept(5, 1), by("vic"))
                    .then_events_matching("InviteLinkUsed then MemberRoleChanged", |e| {
                        is_types(e, &["InviteLinkUsed", "MemberRoleChanged"])
                    })
            }) as Case,
        ),
        (
            "rule 5: rule 6 is checked first",
            Box::new(move || {
                r(team_and([
                    link(5, "viewer", Some("alice")),
                    Event::InviteLinkRevoked {
                        number: 5,
                        revoked_by: None,
                    },
                ]))
                .when(accept(5, 1), by("alice"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        // Rule 6: used, revoked, expired, exhausted and rotated codes are refused.
        (
            "rule 6: a revoked link",
            Box::new(move || {
                r(team_and([
                    link(5, "viewer", None),
                    Event::InviteLinkRevoked {
                        number: 5,
                        revoked_by: None,
                    },
                ]))
                .when(accept(5, 1), by("zoe"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        (
            "rule 6: a rotated link's older code",
            Box::new(move || {
                r(team_and([
                    link(5, "viewer", None),
                    Event::InviteLinkRotated {
                        number: 5,
                        generation: 2,
                        rotated_by: None,
                    },
                ]))
                .when(accept(5, 1), by("zoe"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        (
            "rule 6: a rotated link's new code works",
            Box::new(move || {
                r(team_and([
                    link(5, "viewer", None),
                    Event::InviteLinkRotated {
                        number: 5,
                        generation: 2,
                        rotated_by: None,
                    },
                ]))
                .when(accept(5, 2), by("zoe"))
                .then_events_matching("a use and a new member", |e| {
                    is_types(e, &["InviteLinkUsed", "MemberAdded"])
                })
            }) as Case,
        ),
        (
            "rule 6: an expired link",
            Box::new(move || {
                r(team_and([link_with(
                    5,
                    "viewer",
                    None,
                    Some(at_days(1)),
                    None,
                )]))
                .when(accept(5, 1), by("zoe").at(at_days(1)))
                .then_error("invitation_expired")
            }) as Case,
        ),
        (
            "rule 6: a link at its use limit",
            Box::new(move || {
                r(team_and([
                    link_with(5, "viewer", None, None, Some(1)),
                    used(5, "bob", 1),
                ]))
                .when(accept(5, 1), by("zoe"))
                .then_error("invitation_exhausted")
            }) as Case,
        ),
        (
            "rule 6: a used email invitation",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    accepted(7, "zoe@x.io", "zoe"),
                ]))
                .when(accept(7, 1), by_with_email("zed", "zoe@x.io"))
                .then_error("invitation_used")
            }) as Case,
        ),
        (
            "rule 6: a declined email invitation",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    Event::InvitationDeclined {
                        number: 7,
                        declined_by: None,
                    },
                ]))
                .when(accept(7, 1), by_with_email("zoe", "zoe@x.io"))
                .then_error("invitation_declined")
            }) as Case,
        ),
        (
            "rule 6: a revoked email invitation",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    Event::InvitationRevoked {
                        number: 7,
                        revoked_by: None,
                    },
                ]))
                .when(accept(7, 1), by_with_email("zoe", "zoe@x.io"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        (
            "rule 6: an expired email invitation",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(
                        accept(7, 1),
                        by_with_email("zoe", "zoe@x.io").at(at_days(7)),
                    )
                    .then_error("invitation_expired")
            }) as Case,
        ),
        (
            "rule 6: a resent invitation's older code",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    Event::InvitationResent {
                        number: 7,
                        generation: 2,
                        expires_at: at_days(8),
                        resent_by: None,
                    },
                ]))
                .when(accept(7, 1), by_with_email("zoe", "zoe@x.io"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        (
            "rule 6: resending a used invitation",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    accepted(7, "zoe@x.io", "zoe"),
                ]))
                .when(resend(7), admin())
                .then_error("invitation_used")
            }) as Case,
        ),
        // Rule 7: preview or decline with any valid code; accept an email invitation only with its email.
        (
            "rule 7: anyone with the code may decline",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(decline(7, 1), by("stranger"))
                    .then_events(vec![Event::InvitationDeclined {
                        number: 7,
                        declined_by: Some(p("stranger")),
                    }])
            }) as Case,
        ),
        (
            "rule 7: declining a link records nothing",
            Box::new(move || {
                r(team_and([link(5, "viewer", None)]))
                    .when(decline(5, 1), by("stranger"))
                    .then_no_events()
            }) as Case,
        ),
        (
            "rule 7: another email may not accept",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(accept(7, 1), by_with_email("zed", "zed@x.io"))
                    .then_error("invitation_email_mismatch")
            }) as Case,
        ),
        (
            "rule 7: no verified email may not accept",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(accept(7, 1), by("zoe"))
                    .then_error("invitation_email_mismatch")
            }) as Case,
        ),
        (
            "rule 7: the email matches trimmed and case-insensitively",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", Some("alice"))]))
                    .when(accept(7, 1), by_with_email("zoe", "  ZOE@X.io "))
                    .then_events(vec![
                        accepted(7, "zoe@x.io", "zoe"),
                        Event::MemberAdded {
                            principal: p("zoe"),
                            role: role("viewer"),
                            granted_by: Some(p("alice")),
                            via: Via::Invitation { number: 7 },
                            at: t0(),
                        },
                    ])
            }) as Case,
        ),
        (
            "rule 7: the addressee accepts by number, its verified email standing in for the code",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", Some("alice"))]))
                    .when(accept_by_id(7), by_with_email("zoe", "Zoe@X.io"))
                    .then_events(vec![
                        accepted(7, "zoe@x.io", "zoe"),
                        Event::MemberAdded {
                            principal: p("zoe"),
                            role: role("viewer"),
                            granted_by: Some(p("alice")),
                            via: Via::Invitation { number: 7 },
                            at: t0(),
                        },
                    ])
            }) as Case,
        ),
        (
            "rule 7: by number, another address learns nothing: not_found",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(accept_by_id(7), by_with_email("zed", "zed@x.io"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "rule 7: by number, a look-alike address is another address",
            Box::new(move || {
                r(team_and([invited(7, "kate@x.io", "viewer", None)]))
                    .when(accept_by_id(7), by_with_email("k", "\u{212A}ate@x.io"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "rule 6: by number, a revoked invitation stays unusable",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    Event::InvitationRevoked {
                        number: 7,
                        revoked_by: None,
                    },
                ]))
                .when(accept_by_id(7), by_with_email("zoe", "zoe@x.io"))
                .then_error("invitation_revoked")
            }) as Case,
        ),
        // Rule 8: the admin without a principal stands outside the rolemap.
        (
            "rule 8: the admin may make an owner link",
            Box::new(move || {
                r(team())
                    .when(create_link("owner"), admin())
                    .then_events(vec![Event::InviteLinkCreated {
                        number: 100,
                        generation: 1,
                        role: role("owner"),
                        expires_at: None,
                        max_uses: None,
                        created_by: None,
                    }])
            }) as Case,
        ),
        (
            "rule 8: an admin link needs no inviter check",
            Box::new(move || {
                r(team_and([link(5, "owner", None)]))
                    .when(accept(5, 1), by("zoe"))
                    .then_events(vec![
                        used(5, "zoe", 1),
                        joined_via_link("zoe", "owner", None, 5),
                    ])
            }) as Case,
        ),
        (
            "rule 8: the admin needs an acting principal to accept",
            Box::new(move || {
                r(team_and([link(5, "viewer", None)]))
                    .when(accept(5, 1), admin())
                    .then_error("invalid_request")
            }) as Case,
        ),
        // The remaining codes.
        (
            "code forbidden: a non-member may not invite",
            Box::new(move || {
                r(team())
                    .when(create_link("viewer"), by("stranger"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "code forbidden: a viewer lacks invite",
            Box::new(move || {
                r(team())
                    .when(create_link("viewer"), by("vic"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "code forbidden: an editor may not revoke another's link",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("carol"))]))
                    .when(revoke_link(5), by("erin"))
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "code not_found: a stranger learns nothing of an existing link by its number",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("carol"))]))
                    .when(revoke_link(5), by("stranger"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "code not_found: nor of a missing one, alike",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("carol"))]))
                    .when(rotate(99), by("stranger"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "code not_found: a stranger resending an existing invitation",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(resend(7), by("stranger"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "code not_found: an unregistered resource",
            Box::new(move || {
                r(vec![])
                    .when(create_link("viewer"), admin())
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "code not_found: removing a non-member",
            Box::new(move || {
                r(team())
                    .when(remove("nobody"), by("alice"))
                    .then_error("not_found")
            }) as Case,
        ),
        (
            "code not_found: an unknown invitation id",
            Box::new(move || r(team()).when(resend(99), admin()).then_error("not_found")) as Case,
        ),
        (
            "code invitation_not_found: a code naming nothing",
            Box::new(move || {
                r(team())
                    .when(accept(42, 1), by("zoe"))
                    .then_error("invitation_not_found")
            }) as Case,
        ),
        (
            "code conflict: a schema change removing a held role",
            Box::new(move || {
                given::<SchemaState>([])
                    .when(
                        schema_of(&["owner", "viewer"], "viewer"),
                        admin().kind_usage(held(&["owner", "editor"])),
                    )
                    .then_error("conflict")
            }) as Case,
        ),
        (
            "code conflict: a new highest role for a kind with resources",
            Box::new(move || {
                given::<SchemaState>([])
                    .when(
                        schema_of(&["boss", "viewer"], "viewer"),
                        admin().kind_usage(held(&["viewer"])),
                    )
                    .then_error("conflict")
            }) as Case,
        ),
        (
            "code conflict: unused roles may go and roles may be added",
            Box::new(move || {
                given::<SchemaState>([])
                    .when(
                        schema_of(&["owner", "viewer", "guest"], "guest"),
                        admin().kind_usage(held(&["owner", "viewer"])),
                    )
                    .then_events_matching("RoleSchemaDefined", |e| {
                        is_types(e, &["RoleSchemaDefined"])
                    })
            }) as Case,
        ),
        (
            "code already_exists: registering twice",
            Box::new(move || {
                r(team())
                    .when(register("bob"), admin())
                    .then_error("already_exists")
            }) as Case,
        ),
        (
            "code already_exists: an API key id taken",
            Box::new(move || {
                given::<ApiKeysState>([key_issued("k1", "rk_a")])
                    .when(issue_key("k1", "rk_b"), admin())
                    .then_error("already_exists")
            }) as Case,
        ),
        (
            "code invalid_url: a webhook URL with a password in it",
            Box::new(move || {
                given::<WebhooksState>([])
                    .when(
                        WebhookCommand::Subscribe {
                            url: "https://hook:secret@receiver.example/in".into(),
                            events: vec![],
                        },
                        admin(),
                    )
                    .then_error("invalid_url")
            }) as Case,
        ),
        (
            "code invalid_request: an expiry in the past",
            Box::new(move || {
                r(team())
                    .when(
                        create_link_with(Some("viewer"), Some(t0()), None),
                        by("alice"),
                    )
                    .then_error("invalid_request")
            }) as Case,
        ),
        (
            "code invalid_request: a use limit of zero",
            Box::new(move || {
                r(team())
                    .when(create_link_with(Some("viewer"), None, Some(0)), by("alice"))
                    .then_error("invalid_request")
            }) as Case,
        ),
        (
            "code limit_reached: active links per resource",
            Box::new(move || {
                r(team_and([link(5, "viewer", None)]))
                    .when(
                        create_link("viewer"),
                        admin().limits(|l| l.active_links_max = 1),
                    )
                    .then_error("limit_reached")
            }) as Case,
        ),
        (
            "code limit_reached: emails per request",
            Box::new(move || {
                r(team())
                    .when(
                        invite("a@x.io, b@x.io, c@x.io", None),
                        admin().limits(|l| l.emails_per_request_max = 2),
                    )
                    .then_error("limit_reached")
            }) as Case,
        ),
        (
            "code limit_reached: pending invitations per resource",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(
                        invite("a@x.io", None),
                        admin().limits(|l| l.pending_invitations_max = 1),
                    )
                    .then_error("limit_reached")
            }) as Case,
        ),
        (
            "code invalid_email: nobody could be invited",
            Box::new(move || {
                r(team())
                    .when(invite("not-an-email, also bad", None), by("alice"))
                    .then_error("invalid_email")
            }) as Case,
        ),
        (
            "code invalid_email: everyone is invited already",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(invite("ZOE@x.io", None), by("alice"))
                    .then_error("invalid_email")
            }) as Case,
        ),
        (
            "code unknown_role: a role the schema lacks",
            Box::new(move || {
                r(team())
                    .when(set_role("bob", "wizard"), by("alice"))
                    .then_error("unknown_role")
            }) as Case,
        ),
        (
            "code unknown_role: an unknown link role",
            Box::new(move || {
                r(team())
                    .when(create_link("wizard"), admin())
                    .then_error("unknown_role")
            }) as Case,
        ),
        // The rest of the commands' happy paths.
        (
            "registering gives the owner the highest role",
            Box::new(move || {
                r(vec![])
                    .when(register("alice"), by("alice").at(at_days(1)))
                    .then_events(vec![Event::ResourceRegistered {
                        resource: space(),
                        owner: p("alice"),
                        role: role("owner"),
                        parent: None,
                        at: at_days(1),
                    }])
            }) as Case,
        ),
        (
            "setting the same role again records nothing",
            Box::new(move || {
                r(team())
                    .when(set_role("erin", "editor"), by("alice"))
                    .then_no_events()
            }) as Case,
        ),
        (
            "revoking a revoked link records nothing",
            Box::new(move || {
                r(team_and([
                    link(5, "viewer", None),
                    Event::InviteLinkRevoked {
                        number: 5,
                        revoked_by: None,
                    },
                ]))
                .when(revoke_link(5), admin())
                .then_no_events()
            }) as Case,
        ),
        (
            "an editor may revoke its own link",
            Box::new(move || {
                r(team_and([link(5, "viewer", Some("erin"))]))
                    .when(revoke_link(5), by("erin"))
                    .then_events(vec![Event::InviteLinkRevoked {
                        number: 5,
                        revoked_by: Some(p("erin")),
                    }])
            }) as Case,
        ),
        (
            "a resend rotates the code and moves the expiry to now plus the validity",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", Some("erin"))]))
                    .when(resend(7), by("erin").at(at_days(3)))
                    .then_events(vec![Event::InvitationResent {
                        number: 7,
                        generation: 2,
                        expires_at: at_days(10),
                        resent_by: Some(p("erin")),
                    }])
            }) as Case,
        ),
        (
            "revoking an invitation",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(revoke_invitation(7), by("carol"))
                    .then_events(vec![Event::InvitationRevoked {
                        number: 7,
                        revoked_by: Some(p("carol")),
                    }])
            }) as Case,
        ),
        (
            "an API key is revoked once",
            Box::new(move || {
                given::<ApiKeysState>([key_issued("k1", "rk_a")])
                    .when(
                        ApiKeyCommand::RevokeApiKey {
                            key_id: ApiKeyId::parse("k1").unwrap(),
                        },
                        admin(),
                    )
                    .then_events(vec![Event::ApiKeyRevoked {
                        key_id: ApiKeyId::parse("k1").unwrap(),
                    }])
            }) as Case,
        ),
        (
            "a delivery is recorded once per generation",
            Box::new(move || {
                r(team_and([
                    invited(7, "zoe@x.io", "viewer", None),
                    Event::InvitationDelivered {
                        number: 7,
                        generation: 1,
                        attempt: 1,
                    },
                ]))
                .when(
                    ResourceCommand::RecordDelivery {
                        resource: space(),
                        invitation: 7,
                        generation: 1,
                        attempt: 2,
                        outcome: DeliveryOutcome::Delivered,
                    },
                    admin(),
                )
                .then_no_events()
            }) as Case,
        ),
        (
            "only the delivery worker records deliveries",
            Box::new(move || {
                r(team_and([invited(7, "zoe@x.io", "viewer", None)]))
                    .when(
                        ResourceCommand::RecordDelivery {
                            resource: space(),
                            invitation: 7,
                            generation: 1,
                            attempt: 1,
                            outcome: DeliveryOutcome::Failed {
                                error: "421".into(),
                            },
                        },
                        by("alice"),
                    )
                    .then_error("forbidden")
            }) as Case,
        ),
        (
            "code conflict: an API key digest issued twice",
            Box::new(move || {
                given::<ApiKeysState>([key_issued("k1", "rk_a")])
                    .when(issue_key("k2", "rk_a"), admin())
                    .then_error("conflict")
            }) as Case,
        ),
        (
            "the same schema again records nothing",
            Box::new(move || {
                given::<SchemaState>([Event::RoleSchemaDefined {
                    kind: Kind::parse("space").unwrap(),
                    roles: vec![
                        RoleDef {
                            name: role("owner"),
                            privileges: BTreeSet::from([Privilege::ViewMembers]),
                        },
                        RoleDef {
                            name: role("viewer"),
                            privileges: BTreeSet::from([Privilege::ViewMembers]),
                        },
                    ],
                    default_role: role("viewer"),
                }])
                .when(schema_of(&["owner", "viewer"], "viewer"), admin())
                .then_no_events()
            }) as Case,
        ),
    ]
}

/// The table keeps covering every rule and every code as it grows or shrinks.
fn every_rule_and_every_error_code_has_a_case() {
    let cases = cases();
    for rule in 1..=8 {
        let prefix = format!("rule {rule}:");
        assert!(
            cases.iter().any(|(name, _)| name.starts_with(&prefix)),
            "no case for rule {rule}"
        );
    }
    let covered: BTreeSet<&str> = cases
        .iter()
        .filter_map(|(_, case)| case().expected_code)
        .collect();
    let missing: Vec<&str> = DomainError::ALL_CODES
        .iter()
        .copied()
        .filter(|c| !covered.contains(c))
        .collect();
    assert!(missing.is_empty(), "no case expects {missing:?}");
}

/// Each case of the table, then the tests written out, each a test of its own.
fn main() {
    let arguments = Arguments::from_args();
    let mut trials: Vec<Trial> = cases()
        .into_iter()
        .map(|(name, case)| Trial::test(name, move || case().outcome.map_err(Failed::from)))
        .collect();
    let written: [(&str, fn()); 6] = [
        (
            "every rule and every error code has a case",
            every_rule_and_every_error_code_has_a_case,
        ),
        (
            "invitations report one outcome per email",
            invitations_report_one_outcome_per_email,
        ),
        (
            "preview shows kind, status and inviter",
            preview_shows_kind_status_and_inviter,
        ),
        (
            "every event round-trips through its envelope parts",
            every_event_round_trips_through_its_envelope_parts,
        ),
        (
            "a malformed code is invitation_not_found",
            a_malformed_code_is_invitation_not_found,
        ),
        ("names are unique", names_are_unique),
    ];
    trials.extend(written.into_iter().map(|(name, test)| {
        Trial::test(name, move || {
            test();
            Ok(())
        })
    }));
    libtest_mimic::run(&arguments, trials).exit();
}

/// Two cases of one name could not be run apart.
fn names_are_unique() {
    let mut names: Vec<&str> = cases().iter().map(|(name, _)| *name).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "two cases share a name");
}

fn invitations_report_one_outcome_per_email() {
    let state: ResourceState = fold(&team_and([
        invited(7, "pending@x.io", "viewer", None),
        Event::MemberAdded {
            principal: p("mia"),
            role: role("viewer"),
            granted_by: None,
            via: Via::Direct,
            at: t0(),
        },
    ]));
    let command = ResourceCommand::CreateInvitations {
        resource: space(),
        emails: EmailList::Items(vec![
            "New@x.io".into(),
            "pending@X.io".into(),
            "mia@x.io".into(),
            "broken".into(),
            "new@x.io".into(),
        ]),
        role: None,
        expires_at: Some(at_days(2)),
        message: Some("join us".into()),
    };
    let schema = RoleSchema::builtin(space().kind());
    let numbers = NumberSequence::starting_at(100);
    let known = std::collections::BTreeMap::from([(email("mia@x.io"), p("mia"))]);
    let ctx = Context::new(t0(), Actor::Admin, &schema)
        .with_numbers(&numbers)
        .with_known_emails(&known);
    let batch = create_invitations(&state, &command, &ctx).unwrap();
    assert_eq!(batch.invited, vec![(email("new@x.io"), 100)]);
    assert_eq!(batch.already_invited, vec![(email("pending@x.io"), 7)]);
    assert_eq!(batch.already_members, vec![email("mia@x.io")]);
    assert_eq!(batch.email_errors.len(), 1);
    assert_eq!(
        batch.events,
        vec![Event::InvitationCreated {
            number: 100,
            generation: 1,
            email: email("new@x.io"),
            role: role("viewer"),
            expires_at: at_days(2),
            validity_ms: 2 * DAY_MS,
            invited_by: None,
            message: Some("join us".into()),
        }]
    );
}

fn preview_shows_kind_status_and_inviter() {
    let state: ResourceState = fold(&team_and([
        link_with(5, "editor", Some("erin"), Some(at_days(1)), Some(3)),
        invited(7, "zoe@x.io", "viewer", Some("carol")),
        Event::InvitationResent {
            number: 7,
            generation: 2,
            expires_at: at_days(8),
            resent_by: None,
        },
    ]));
    let link = preview(&state, &code(5, 1), t0()).unwrap();
    assert_eq!(
        (link.kind, link.status, link.role.as_str()),
        (CodeKind::Link, CodeStatus::Active, "editor")
    );
    assert_eq!(link.inviter, Some(p("erin")));
    assert_eq!(
        preview(&state, &code(5, 1), at_days(1)).unwrap().status,
        CodeStatus::Expired
    );
    let invitation = preview(&state, &code(7, 2), t0()).unwrap();
    assert_eq!(
        (invitation.kind, invitation.status),
        (CodeKind::Email, CodeStatus::Pending)
    );
    assert_eq!(
        preview(&state, &code(7, 1), t0()).unwrap().status,
        CodeStatus::Revoked
    );
    assert_eq!(
        preview(&state, &code(8, 1), t0()).unwrap_err().code(),
        "invitation_not_found"
    );
}

fn every_event_round_trips_through_its_envelope_parts() {
    let mut events = team_and([
        link_with(5, "editor", Some("erin"), Some(at_days(1)), Some(3)),
        used(5, "zoe", 1),
        Event::InviteLinkChanged {
            number: 5,
            role: role("viewer"),
            expires_at: None,
            max_uses: None,
            changed_by: None,
        },
        Event::InviteLinkRotated {
            number: 5,
            generation: 2,
            rotated_by: Some(p("alice")),
        },
        Event::InviteLinkRevoked {
            number: 5,
            revoked_by: None,
        },
        invited(7, "zoe@x.io", "viewer", Some("carol")),
        Event::InvitationResent {
            number: 7,
            generation: 2,
            expires_at: at_days(8),
            resent_by: None,
        },
        Event::InvitationDelivered {
            number: 7,
            generation: 2,
            attempt: 1,
        },
        Event::InvitationDeliveryFailed {
            number: 7,
            generation: 2,
            attempt: 2,
            error: "timeout".into(),
        },
        accepted(7, "zoe@x.io", "zoe"),
        Event::InvitationDeclined {
            number: 8,
            declined_by: None,
        },
        Event::InvitationRevoked {
            number: 9,
            revoked_by: None,
        },
        changed("zoe", "viewer", "editor", None),
        removed("zoe", "editor", None, false),
        key_issued("k1", "rk_a"),
        Event::ApiKeyRevoked {
            key_id: ApiKeyId::parse("k1").unwrap(),
        },
    ]);
    if let Ok(events_of_schema) = given::<SchemaState>([])
        .when(schema_of(&["owner", "viewer"], "viewer"), admin())
        .result
    {
        events.extend(events_of_schema);
    }
    let types: BTreeSet<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(types.len(), 19, "every event type is exercised: {types:?}");
    for event in &events {
        let data = event.to_data();
        let text = data.to_string();
        assert!(!text.contains("rk_a"), "no raw key in {text}");
        let back = Event::from_parts(event.event_type(), event.schema(), data).unwrap();
        assert_eq!(&back, event);
    }
    assert!(Event::from_parts("MemberAdded", 2, serde_json::json!({})).is_err());
    assert!(Event::from_parts("NoSuchEvent", 1, serde_json::json!({})).is_err());
    let sample = added("bob", "viewer", None).to_data();
    assert_eq!(sample["at"], "2026-11-22T10:00:00.000Z");
    assert_eq!(sample["via"], serde_json::json!({ "kind": "direct" }));
}

fn a_malformed_code_is_invitation_not_found() {
    assert_eq!(
        InviteCode::parse("nope").unwrap_err().code(),
        "invitation_not_found"
    );
}
