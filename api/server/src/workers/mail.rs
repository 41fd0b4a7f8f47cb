//! The mail worker: sends every new or resent email invitation through SMTP, and records
//! each attempt as `InvitationDelivered` or `InvitationDeliveryFailed` in the invitation's
//! resource stream.
//!
//! Its place in the log is the read models': at start it takes every invitation still owed a
//! mail from them (open, not expired, its current generation not delivered, attempts left),
//! then follows the log from their checkpoint. A mail the SMTP server accepted is recorded
//! after the fact, so a crash in between sends it again (at least once); once recorded, that
//! generation is never sent again, across restarts.

use std::collections::BTreeMap;

use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use roster_domain::{
    Actor, Command, DeliveryOutcome, Event, InvitationStatus, ResourceCommand, StreamId,
};
use roster_projections::{InvitationRecord, InviteRecord};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Retry, WorkerError};
use roster_engine::{Engine, EngineError, Request};

/// Where and how mail is sent.
#[derive(Debug, Clone)]
pub struct MailConfig {
    /// `smtp://host:port`, `smtps://…` or `smtp://…?tls=required`, with credentials if any.
    pub smtp_url: String,
    pub from: String,
    pub public_url: String,
    pub retry: Retry,
    /// The workers' lease this run holds: every outcome it records carries it.
    pub fence: Option<roster_eventstore::Fence>,
}

/// An invitation owed a mail.
#[derive(Debug, Clone)]
struct Owed {
    generation: u32,
    attempt: u32,
    due: Instant,
}

/// Runs until `stop` turns true.
pub async fn run(
    engine: Engine,
    config: MailConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let from: Mailbox = config.from.parse().map_err(WorkerError::MailFrom)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&config.smtp_url)
        .map_err(WorkerError::SmtpUrl)?
        .timeout(Some(std::time::Duration::from_secs(10)))
        .build();
    let start = engine.applied();
    let mut owed = owed_at_start(&engine, &config.retry)?;
    let mut tail = engine.subscribe(start);
    let mut seen = start;
    loop {
        let next_due = owed.values().map(|o| o.due).min();
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(());
                }
            }
            envelope = tail.next() => {
                let envelope = envelope.map_err(EngineError::from)?;
                seen = envelope.position;
                note(&mut owed, &envelope);
            }
            () = sleep_until(next_due) => {
                // What is due is read from the read models, which must have caught up with
                // every event this worker has seen.
                if engine.wait_applied(seen).await.is_err() {
                    return Ok(());
                }
                let now = Instant::now();
                let due: Vec<u64> = owed.iter().filter(|(_, o)| o.due <= now).map(|(n, _)| *n).collect();
                for number in due {
                    let Some(item) = owed.remove(&number) else { continue };
                    if let Some(again) = attempt(&engine, &config, &transport, &from, number, item).await {
                        owed.insert(number, again);
                    }
                }
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

fn owed_at_start(engine: &Engine, retry: &Retry) -> Result<BTreeMap<u64, Owed>, EngineError> {
    let now = engine.now();
    let mut owed = BTreeMap::new();
    for invitation in engine.all_invitations()? {
        let delivered = invitation.delivery.delivered_generation == Some(invitation.generation);
        let open = invitation.status(now) == InvitationStatus::Pending;
        if open && !delivered && invitation.delivery.attempts < retry.attempts_max {
            let attempt = invitation.delivery.attempts + 1;
            owed.insert(
                invitation.number,
                Owed {
                    generation: invitation.generation,
                    attempt,
                    due: Instant::now(),
                },
            );
        }
    }
    Ok(owed)
}

/// Follows the invitations' lives: a new code is owed a mail, a closed invitation nothing.
fn note(owed: &mut BTreeMap<u64, Owed>, envelope: &roster_eventstore::Envelope) {
    if !matches!(StreamId::parse(&envelope.stream), Ok(StreamId::Resource(_))) {
        return;
    }
    let Ok(event) = Event::from_parts(&envelope.event_type, envelope.schema, envelope.data.clone())
    else {
        return;
    };
    match event {
        Event::InvitationCreated {
            number, generation, ..
        }
        | Event::InvitationResent {
            number, generation, ..
        } => {
            owed.insert(
                number,
                Owed {
                    generation,
                    attempt: 1,
                    due: Instant::now(),
                },
            );
        }
        Event::InvitationAccepted { number, .. }
        | Event::InvitationDeclined { number, .. }
        | Event::InvitationRevoked { number, .. } => {
            owed.remove(&number);
        }
        Event::InvitationDelivered {
            number, generation, ..
        } if owed
            .get(&number)
            .is_some_and(|o| o.generation == generation) =>
        {
            owed.remove(&number);
        }
        _ => {}
    }
}

/// One attempt; what is still owed afterwards, if anything.
async fn attempt(
    engine: &Engine,
    config: &MailConfig,
    transport: &AsyncSmtpTransport<Tokio1Executor>,
    from: &Mailbox,
    number: u64,
    item: Owed,
) -> Option<Owed> {
    let invitation = match engine.invite(number) {
        Ok(Some(InviteRecord::Email(invitation))) => invitation,
        _ => return None,
    };
    // A rotated, closed or expired invitation is not sent: its code would not work.
    let current = invitation.generation == item.generation
        && invitation.status(engine.now()) == InvitationStatus::Pending
        && invitation.delivery.delivered_generation != Some(item.generation);
    if !current {
        return None;
    }
    let outcome = match message(engine, config, from, &invitation) {
        Ok(message) => match transport.send(message).await {
            Ok(_) => DeliveryOutcome::Delivered,
            Err(error) => DeliveryOutcome::Failed {
                error: error.to_string(),
            },
        },
        Err(error) => DeliveryOutcome::Failed { error },
    };
    let delivered = outcome == DeliveryOutcome::Delivered;
    if !delivered {
        tracing::warn!(
            invitation = number,
            attempt = item.attempt,
            "an invitation mail was not accepted"
        );
    }
    let command = ResourceCommand::RecordDelivery {
        resource: invitation.resource.clone(),
        invitation: number,
        generation: item.generation,
        attempt: item.attempt,
        outcome,
    };
    if let Err(error) = engine
        .execute(
            Request::new(Actor::Admin, Command::Resource(command)).fenced(config.fence.clone()),
        )
        .await
    {
        tracing::error!(%error, invitation = number, "a delivery could not be recorded");
    }
    if delivered || item.attempt >= config.retry.attempts_max {
        return None;
    }
    Some(Owed {
        generation: item.generation,
        attempt: item.attempt + 1,
        due: Instant::now() + config.retry.after(item.attempt),
    })
}

/// The invitation mail: who invites whom to what, with which role, the link, the expiry.
fn message(
    engine: &Engine,
    config: &MailConfig,
    from: &Mailbox,
    invitation: &InvitationRecord,
) -> Result<Message, String> {
    // The address as the inviter wrote it: its normal form only decides what equals what.
    let to: Mailbox = invitation
        .email
        .written()
        .parse()
        .map_err(|e| format!("the address: {e}"))?;
    let code = engine
        .code(invitation.number, invitation.generation)
        .encode_base64();
    let url = crate::invite_url(&config.public_url, &code);
    let inviter = invitation
        .invited_by
        .as_ref()
        .map_or_else(|| "An administrator".to_string(), |p| p.to_string());
    let resource = invitation.resource.to_string();
    let role = invitation.role.to_string();
    let expires = invitation.expires_at.to_string();
    let note = invitation
        .message
        .as_deref()
        .map(|m| format!("\n\n{inviter} wrote: {m}"))
        .unwrap_or_default();
    let text = format!(
        "{inviter} invited you to {resource} as {role}.{note}\n\nAccept the invitation: {url}\n\nThe invitation expires at {expires}.\n"
    );
    let html = format!(
        "<p>{} invited you to <b>{}</b> as <b>{}</b>.</p>{}<p><a href=\"{}\">Accept the invitation</a></p><p>The invitation expires at {}.</p>",
        escape(&inviter),
        escape(&resource),
        escape(&role),
        invitation.message.as_deref().map(|m| format!("<blockquote>{}</blockquote>", escape(m))).unwrap_or_default(),
        escape(&url),
        escape(&expires)
    );
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!("{inviter} invited you to {resource}"))
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(text),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html),
                ),
        )
        .map_err(|e| e.to_string())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
