//! One-line summaries of events for histories: what happened, in the words of the domain.

use std::fmt::{self, Display, Write};

use roster_domain::{Event, Principal, ResourceId, Via};

/// Who acted, in words.
struct Who<'a>(&'a Option<Principal>);

impl Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(principal) => f.write_str(principal.as_str()),
            None => f.write_str("the admin"),
        }
    }
}

fn who(principal: &Option<Principal>) -> Who<'_> {
    Who(principal)
}

/// How a member came by a role, in words.
struct How<'a>(&'a Via);

impl Display for How<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Via::Direct => f.write_str("directly"),
            Via::Link { number } => write!(f, "through link {number}"),
            Via::Invitation { number } => write!(f, "through invitation {number}"),
        }
    }
}

fn via(via: &Via) -> How<'_> {
    How(via)
}

/// "bob joined space/spc_42 as editor through link 3", and so on.
pub fn summarize(event: &Event, resource: &ResourceId) -> String {
    let mut summary = String::new();
    // Writing into a `String` cannot fail.
    let _ = write_summary(&mut summary, event, resource);
    summary
}

/// `summarize`, written straight into `out`: the history model writes it into its row,
/// without a `String` (and the `String`s of its parts) per event.
pub(crate) fn write_summary(
    out: &mut impl Write,
    event: &Event,
    resource: &ResourceId,
) -> fmt::Result {
    match event {
        Event::ResourceRegistered { owner, role, .. } => {
            write!(out, "{resource} registered with {owner} as {role}")
        }
        Event::MemberAdded {
            principal,
            role,
            granted_by,
            via: how,
            ..
        } => match how {
            Via::Direct => write!(out, "{} added {principal} as {role}", who(granted_by)),
            _ => write!(
                out,
                "{principal} joined as {role} {}, granted by {}",
                via(how),
                who(granted_by)
            ),
        },
        Event::MemberRoleChanged {
            principal,
            from_role,
            role,
            changed_by,
            via: how,
            ..
        } => {
            write!(
                out,
                "{} changed {principal} from {from_role} to {role} {}",
                who(changed_by),
                via(how)
            )
        }
        Event::MemberRemoved {
            principal,
            role,
            removed_by,
            left,
        } => {
            if *left {
                write!(out, "{principal} left ({role})")
            } else {
                write!(out, "{} removed {principal} ({role})", who(removed_by))
            }
        }
        Event::InviteLinkCreated {
            number,
            role,
            created_by,
            ..
        } => {
            write!(out, "{} created link {number} for {role}", who(created_by))
        }
        Event::InviteLinkChanged {
            number,
            role,
            changed_by,
            ..
        } => {
            write!(
                out,
                "{} changed link {number} (role {role})",
                who(changed_by)
            )
        }
        Event::InviteLinkRotated {
            number, rotated_by, ..
        } => write!(out, "{} rotated link {number}", who(rotated_by)),
        Event::InviteLinkRevoked { number, revoked_by } => {
            write!(out, "{} revoked link {number}", who(revoked_by))
        }
        Event::InviteLinkUsed {
            number,
            used_by,
            uses,
            ..
        } => write!(out, "{used_by} used link {number} (use {uses})"),
        Event::InvitationCreated {
            number,
            email,
            role,
            invited_by,
            ..
        } => {
            write!(
                out,
                "{} invited {email} as {role} (invitation {number})",
                who(invited_by)
            )
        }
        Event::InvitationResent {
            number, resent_by, ..
        } => write!(out, "{} resent invitation {number}", who(resent_by)),
        Event::InvitationAccepted {
            number,
            email,
            accepted_by,
            ..
        } => {
            write!(
                out,
                "{accepted_by} accepted invitation {number} for {email}"
            )
        }
        Event::InvitationDeclined {
            number,
            declined_by,
        } => write!(out, "{} declined invitation {number}", who(declined_by)),
        Event::InvitationRevoked { number, revoked_by } => {
            write!(out, "{} revoked invitation {number}", who(revoked_by))
        }
        Event::InvitationDelivered {
            number, attempt, ..
        } => write!(out, "invitation {number} delivered (attempt {attempt})"),
        Event::InvitationDeliveryFailed {
            number,
            attempt,
            error,
            ..
        } => {
            write!(
                out,
                "invitation {number} not delivered (attempt {attempt}): {error}"
            )
        }
        Event::RoleSchemaDefined { kind, .. } => write!(out, "role schema of {kind} defined"),
        Event::ApiKeyIssued {
            key_id, principal, ..
        } => write!(out, "API key {key_id} issued to {principal}"),
        Event::ApiKeyRevoked { key_id } => write!(out, "API key {key_id} revoked"),
        Event::WebhookSubscribed { webhook, url, .. } => {
            write!(out, "webhook {webhook} subscribed for {url}")
        }
        Event::WebhookRemoved { webhook } => write!(out, "webhook {webhook} removed"),
        Event::WebhookDelivered {
            webhook,
            position,
            attempt,
            status,
        } => {
            write!(out, "event {position} delivered to webhook {webhook} (attempt {attempt}, status {status})")
        }
        Event::WebhookDeliveryFailed {
            webhook,
            position,
            attempt,
            error,
            gave_up,
            ..
        } => {
            let last = if *gave_up { ", gave up" } else { "" };
            write!(out, "event {position} not delivered to webhook {webhook} (attempt {attempt}{last}): {error}")
        }
    }
}
