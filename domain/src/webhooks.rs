//! Webhook subscriptions and the record of their deliveries: the `webhooks` stream.
//!
//! A subscription names a URL and the event types it wants (every type when the list is
//! empty). Its signing secret is derived from the server secret and its number by the API,
//! never stored, like invitation codes. Each delivery attempt is an event, so the history
//! of who was told what, and when, is in the log like everything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Context, DomainError, Event};

/// Longest webhook URL accepted.
pub const WEBHOOK_URL_CHARS_MAX: usize = 2048;
/// Most subscriptions at once: each one is a worker delivering every event it wants.
pub const WEBHOOKS_MAX: usize = 100;

/// The event types a webhook can ask for.
pub const WEBHOOK_EVENT_TYPES: [&str; 17] = [
    "ResourceRegistered",
    "MemberAdded",
    "MemberRoleChanged",
    "MemberRemoved",
    "InviteLinkCreated",
    "InviteLinkChanged",
    "InviteLinkRotated",
    "InviteLinkRevoked",
    "InviteLinkUsed",
    "InvitationCreated",
    "InvitationResent",
    "InvitationAccepted",
    "InvitationDeclined",
    "InvitationRevoked",
    "InvitationDelivered",
    "InvitationDeliveryFailed",
    "RoleSchemaDefined",
];

/// How one attempt to deliver an event to a webhook went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx with this status.
    Delivered { status: u16 },
    /// No 2xx: the status if there was an answer, what went wrong, and whether this was the
    /// last attempt.
    Failed {
        status: Option<u16>,
        error: String,
        gave_up: bool,
    },
}

/// Commands on the `webhooks` stream; only the admin issues them (checked by the API's scope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookCommand {
    Subscribe {
        url: String,
        events: Vec<String>,
    },
    Remove {
        webhook: u64,
    },
    RecordDelivery {
        webhook: u64,
        position: u64,
        attempt: u32,
        outcome: WebhookOutcome,
    },
}

/// One subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub number: u64,
    pub url: String,
    pub events: Vec<String>,
    pub removed: bool,
}

impl Webhook {
    /// Whether the webhook wants events of this type.
    pub fn wants(&self, event_type: &str) -> bool {
        !self.removed && (self.events.is_empty() || self.events.iter().any(|e| e == event_type))
    }
}

/// The state of the `webhooks` stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhooksState {
    hooks: BTreeMap<u64, Webhook>,
}

impl WebhooksState {
    pub fn hooks(&self) -> &BTreeMap<u64, Webhook> {
        &self.hooks
    }

    pub fn evolve(mut self, event: &Event) -> WebhooksState {
        self.apply(event);
        self
    }

    /// Applies one event in place: what [`WebhooksState::evolve`] does, without moving the state.
    pub fn apply(&mut self, event: &Event) {
        match event {
            Event::WebhookSubscribed {
                webhook,
                url,
                events,
            } => {
                self.hooks.insert(
                    *webhook,
                    Webhook {
                        number: *webhook,
                        url: url.clone(),
                        events: events.clone(),
                        removed: false,
                    },
                );
            }
            Event::WebhookRemoved { webhook } => {
                if let Some(hook) = self.hooks.get_mut(webhook) {
                    hook.removed = true;
                }
            }
            _ => {}
        }
    }

    pub fn decide(
        &self,
        command: WebhookCommand,
        ctx: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        if ctx.actor.principal().is_some() {
            return Err(DomainError::Forbidden(
                "only the admin manages webhooks".into(),
            ));
        }
        match command {
            WebhookCommand::Subscribe { url, events } => {
                let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
                if !scheme_ok
                    || url.chars().count() > WEBHOOK_URL_CHARS_MAX
                    || url.chars().any(char::is_whitespace)
                {
                    return Err(DomainError::InvalidRequest(format!(
                        "a webhook URL is http:// or https://, without spaces, at most {WEBHOOK_URL_CHARS_MAX} characters"
                    )));
                }
                if url_userinfo(&url).is_some() {
                    // A password in the URL would sit in the log and every listing in clear.
                    return Err(DomainError::InvalidUrl(
                        "a webhook URL carries no user or password (user:password@): a \
                         receiver authenticates Roster by the Roster-Signature header"
                            .into(),
                    ));
                }
                if let Some(unknown) = events
                    .iter()
                    .find(|e| !WEBHOOK_EVENT_TYPES.contains(&e.as_str()))
                {
                    return Err(DomainError::InvalidRequest(format!(
                        "{unknown:?} is not an event type a webhook can want"
                    )));
                }
                if self.hooks.values().filter(|h| !h.removed).count() >= WEBHOOKS_MAX {
                    return Err(DomainError::LimitReached(format!(
                        "at most {WEBHOOKS_MAX} webhooks"
                    )));
                }
                let mut events = events;
                events.sort();
                events.dedup();
                Ok(vec![Event::WebhookSubscribed {
                    webhook: ctx.numbers.next_number()?,
                    url,
                    events,
                }])
            }
            WebhookCommand::Remove { webhook } => match self.hooks.get(&webhook) {
                None => Err(DomainError::NotFound(format!("webhook {webhook}"))),
                Some(hook) if hook.removed => Ok(vec![]),
                Some(_) => Ok(vec![Event::WebhookRemoved { webhook }]),
            },
            WebhookCommand::RecordDelivery {
                webhook,
                position,
                attempt,
                outcome,
            } => {
                if !self.hooks.contains_key(&webhook) {
                    return Err(DomainError::NotFound(format!("webhook {webhook}")));
                }
                if attempt == 0 {
                    return Err(DomainError::InvalidRequest("attempts count from 1".into()));
                }
                Ok(vec![match outcome {
                    WebhookOutcome::Delivered { status } => Event::WebhookDelivered {
                        webhook,
                        position,
                        attempt,
                        status,
                    },
                    WebhookOutcome::Failed {
                        status,
                        error,
                        gave_up,
                    } => Event::WebhookDeliveryFailed {
                        webhook,
                        position,
                        attempt,
                        status,
                        error,
                        gave_up,
                    },
                }])
            }
        }
    }
}

impl crate::Aggregate for WebhooksState {
    type Command = WebhookCommand;

    fn decide(
        &self,
        command: WebhookCommand,
        ctx: &Context<'_>,
    ) -> Result<Vec<Event>, DomainError> {
        WebhooksState::decide(self, command, ctx)
    }

    fn evolve(self, event: &Event) -> Self {
        WebhooksState::evolve(self, event)
    }
}

/// The `user:password@` part of an http(s) URL's authority, if it has one.
pub fn url_userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(userinfo, _)| userinfo)
}
