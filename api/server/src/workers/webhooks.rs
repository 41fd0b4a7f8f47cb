//! The webhook worker: POSTs each event a subscription wants, as its envelope's JSON, signed
//! with `Roster-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, and
//! records every attempt in the `webhooks` stream.
//!
//! One deliverer per subscription goes through the log in order, so events reach a receiver
//! in log order (and so in order per resource); a failing event is retried with back-off and
//! holds the ones behind it until it is delivered or given up on. After a restart each
//! deliverer resumes after its last settled event (delivered or given up): an event sent but
//! not yet recorded when the process died is sent again (at least once).

use std::collections::HashMap;
use std::time::Duration;

use hmac::{Hmac, Mac};
use roster_domain::{Actor, Command, Event, WebhookCommand, WebhookOutcome};
use roster_eventstore::Envelope;
use sha2::Sha256;
use tokio::sync::watch;

use super::{Retry, WorkerError};
use roster_engine::{Engine, Request};

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub retry: Retry,
    pub timeout_ms: u64,
    /// The workers' lease this run holds: every outcome it records carries it.
    pub fence: Option<roster_eventstore::Fence>,
}

/// A subscription's signing secret, derived from the server secret (never stored).
pub fn secret(engine: &Engine, webhook: u64) -> String {
    hex::encode(engine.secret().derive_key("webhook", webhook))
}

/// The `Roster-Signature` header's value for a body sent at `unix_s`.
pub fn signature(secret: &str, unix_s: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(unix_s.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={unix_s},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Runs the deliverers until `stop` turns true, starting and stopping one per subscription
/// as they come and go.
pub async fn run(
    engine: Engine,
    config: WebhookConfig,
    mut stop: watch::Receiver<bool>,
) -> Result<(), WorkerError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .build()
        .map_err(WorkerError::WebhookClient)?;
    let start = engine.applied();
    let mut deliverers: HashMap<u64, tokio::task::JoinHandle<()>> = HashMap::new();
    for hook in engine.webhooks()? {
        if !hook.removed {
            let task = tokio::spawn(deliver(
                engine.clone(),
                client.clone(),
                config.clone(),
                hook.id,
                hook.settled_position,
                stop.clone(),
            ));
            deliverers.insert(hook.id, task);
        }
    }
    let mut tail = engine.subscribe(start);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            envelope = tail.next() => {
                let Ok(envelope) = envelope else { break };
                if envelope.stream != "webhooks" {
                    continue;
                }
                match Event::from_parts(&envelope.event_type, envelope.schema, envelope.data.clone()) {
                    Ok(Event::WebhookSubscribed { webhook, .. }) => {
                        let task = tokio::spawn(deliver(engine.clone(), client.clone(), config.clone(), webhook, envelope.position, stop.clone()));
                        deliverers.insert(webhook, task);
                    }
                    Ok(Event::WebhookRemoved { webhook }) => {
                        if let Some(task) = deliverers.remove(&webhook) {
                            task.abort();
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    for (_, task) in deliverers {
        task.abort();
    }
    Ok(())
}

/// Delivers, in log order, every event after `after` that the subscription wants.
async fn deliver(
    engine: Engine,
    client: reqwest::Client,
    config: WebhookConfig,
    webhook: u64,
    after: u64,
    mut stop: watch::Receiver<bool>,
) {
    let secret = secret(&engine, webhook);
    let mut tail = engine.subscribe(after);
    loop {
        let envelope = tokio::select! {
            envelope = tail.next() => match envelope {
                Ok(envelope) => envelope,
                Err(_) => return,
            },
            _ = stop.changed() => return,
        };
        // Its own records would feed back into it forever.
        if envelope.stream == "webhooks" {
            continue;
        }
        let Ok(Some(hook)) = engine.webhook(webhook) else {
            return;
        };
        if hook.removed {
            return;
        }
        if !hook.events.is_empty() && !hook.events.contains(&envelope.event_type) {
            continue;
        }
        for attempt in 1..=config.retry.attempts_max.max(1) {
            let (outcome, delivered) = post(&client, &hook.url, &secret, webhook, &envelope).await;
            let gave_up = !delivered && attempt >= config.retry.attempts_max.max(1);
            let outcome = match outcome {
                Ok(status) => WebhookOutcome::Delivered { status },
                Err((status, error)) => WebhookOutcome::Failed {
                    status,
                    error,
                    gave_up,
                },
            };
            let command = WebhookCommand::RecordDelivery {
                webhook,
                position: envelope.position,
                attempt,
                outcome,
            };
            if let Err(error) = engine
                .execute(
                    Request::new(Actor::Admin, Command::Webhooks(command))
                        .fenced(config.fence.clone()),
                )
                .await
            {
                tracing::error!(%error, webhook, "a webhook delivery could not be recorded");
            }
            if delivered || gave_up {
                break;
            }
            tokio::select! {
                () = tokio::time::sleep(config.retry.after(attempt)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// One POST; `Ok(status)` for a 2xx, else the status (if any) and what went wrong.
async fn post(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    webhook: u64,
    envelope: &Envelope,
) -> (Result<u16, (Option<u16>, String)>, bool) {
    let body = serde_json::to_vec(envelope).unwrap_or_default();
    let now = roster_eventstore::Timestamp::now().unix_ms() / 1000;
    let sent = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("Roster-Signature", signature(secret, now, &body))
        .header("Roster-Webhook", webhook.to_string())
        .header("Roster-Event-Position", envelope.position.to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => (Ok(response.status().as_u16()), true),
        Ok(response) => {
            let status = response.status().as_u16();
            (
                Err((Some(status), format!("the receiver answered {status}"))),
                false,
            )
        }
        Err(error) => (Err((None, error.without_url().to_string())), false),
    }
}
