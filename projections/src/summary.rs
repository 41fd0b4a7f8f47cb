//! One-line summaries of events for histories: what happened, in the words of the domain.

use roster_domain::{Event, Principal, ResourceId, Via};

fn who(principal: &Option<Principal>) -> String {
    principal
        .as_ref()
        .map_or_else(|| "the admin".to_string(), |p| p.to_string())
}

fn via(via: &Via) -> String {
    match via {
        Via::Direct => "directly".to_string(),
        Via::Link { number } => format!("through link {number}"),
        Via::Invitation { number } => format!("through invitation {number}"),
    }
}

/// "bob joined space/spc_42 as editor through link 3", and so on.
pub fn summarize(event: &Event, resource: &ResourceId) -> String {
    match event {
        Event::ResourceRegistered { owner, role, .. } => {
            format!("{resource} registered with {owner} as {role}")
        }
        Event::MemberAdded {
            principal,
            role,
            granted_by,
            via: how,
            ..
        } => match how {
            Via::Direct => format!("{} added {principal} as {role}", who(granted_by)),
            _ => format!(
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
            format!(
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
                format!("{principal} left ({role})")
            } else {
                format!("{} removed {principal} ({role})", who(removed_by))
            }
        }
        Event::InviteLinkCreated {
            number,
            role,
            created_by,
            ..
        } => {
            format!("{} created link {number} for {role}", who(created_by))
        }
        Event::InviteLinkChanged {
            number,
            role,
            changed_by,
            ..
        } => {
            format!("{} changed link {number} (role {role})", who(changed_by))
        }
        Event::InviteLinkRotated {
            number, rotated_by, ..
        } => format!("{} rotated link {number}", who(rotated_by)),
        Event::InviteLinkRevoked { number, revoked_by } => {
            format!("{} revoked link {number}", who(revoked_by))
        }
        Event::InviteLinkUsed {
            number,
            used_by,
            uses,
            ..
        } => format!("{used_by} used link {number} (use {uses})"),
        Event::InvitationCreated {
            number,
            email,
            role,
            invited_by,
            ..
        } => {
            format!(
                "{} invited {email} as {role} (invitation {number})",
                who(invited_by)
            )
        }
        Event::InvitationResent {
            number, resent_by, ..
        } => format!("{} resent invitation {number}", who(resent_by)),
        Event::InvitationAccepted {
            number,
            email,
            accepted_by,
            ..
        } => {
            format!("{accepted_by} accepted invitation {number} for {email}")
        }
        Event::InvitationDeclined {
            number,
            declined_by,
        } => format!("{} declined invitation {number}", who(declined_by)),
        Event::InvitationRevoked { number, revoked_by } => {
            format!("{} revoked invitation {number}", who(revoked_by))
        }
        Event::InvitationDelivered {
            number, attempt, ..
        } => format!("invitation {number} delivered (attempt {attempt})"),
        Event::InvitationDeliveryFailed {
            number,
            attempt,
            error,
            ..
        } => {
            format!("invitation {number} not delivered (attempt {attempt}): {error}")
        }
        Event::RoleSchemaDefined { kind, .. } => format!("role schema of {kind} defined"),
        Event::ApiKeyIssued {
            key_id, principal, ..
        } => format!("API key {key_id} issued to {principal}"),
        Event::ApiKeyRevoked { key_id } => format!("API key {key_id} revoked"),
        Event::WebhookSubscribed { webhook, url, .. } => {
            format!("webhook {webhook} subscribed for {url}")
        }
        Event::WebhookRemoved { webhook } => format!("webhook {webhook} removed"),
        Event::WebhookDelivered {
            webhook,
            position,
            attempt,
            status,
        } => {
            format!("event {position} delivered to webhook {webhook} (attempt {attempt}, status {status})")
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
            format!("event {position} not delivered to webhook {webhook} (attempt {attempt}{last}): {error}")
        }
    }
}
