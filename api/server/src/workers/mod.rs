//! The delivery workers: process managers that read the log like a projector and write
//! events like a command (DESIGN section 8). The mail worker sends email invitations over
//! SMTP; the webhook worker POSTs signed events to subscribers.

pub mod lease;
pub mod mail;
pub mod webhooks;

use std::time::Duration;

use roster_engine::EngineError;

/// Waits for each worker to end, logging how any ended other than asked.
pub async fn join(workers: Vec<tokio::task::JoinHandle<Result<(), WorkerError>>>) {
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "a delivery worker stopped"),
            Err(error) => tracing::error!(%error, "a delivery worker failed"),
        }
    }
}

/// Why a worker stopped before it was told to.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("ROSTER_MAIL_FROM: {0}")]
    MailFrom(#[from] lettre::address::AddressError),
    #[error("ROSTER_SMTP_URL: {0}")]
    SmtpUrl(#[from] lettre::transport::smtp::Error),
    #[error("the webhook client: {0}")]
    WebhookClient(#[from] reqwest::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// When to try again: exponential back-off from `initial_ms`, doubling, capped at `max_ms`,
/// for at most `attempts_max` attempts, each wait drawn between half its ceiling and the whole
/// of it ("equal jitter"), so that deliveries that failed together (a mail server down, a
/// subscriber restarting) do not all come back at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub attempts_max: u32,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry::DEFAULT
    }
}

impl Retry {
    /// The schedule both workers keep unless told otherwise (`roster serve`'s retry flags
    /// default to it): a minute between attempts at most, ten attempts, about eight minutes.
    pub const DEFAULT: Retry = Retry {
        initial_ms: 1000,
        max_ms: 60_000,
        attempts_max: 10,
    };

    /// The wait after failed attempt number `attempt` (counting from 1), jittered.
    pub fn after(&self, attempt: u32) -> Duration {
        self.after_drawn(attempt, rand::random::<f64>())
    }

    /// The longest wait after attempt `attempt`: the back-off before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let ms = self
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        Duration::from_millis(ms)
    }

    /// The wait after attempt `attempt` for a draw `unit` in `[0, 1)`: half the ceiling plus
    /// `unit` of the other half.
    fn after_drawn(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(wait: Duration) -> u64 {
        u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
    }

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let retry = Retry::default();
        let ceilings: Vec<u64> = (1..=8).map(|a| ms(retry.ceiling(a))).collect();
        assert_eq!(
            ceilings,
            vec![1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(retry.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_wait_lies_between_half_its_ceiling_and_the_whole() {
        let retry = Retry::default();
        assert_eq!(ms(retry.after_drawn(3, 0.0)), 2000);
        assert_eq!(ms(retry.after_drawn(3, 0.5)), 3000);
        assert_eq!(ms(retry.after_drawn(3, 1.0)), 4000);
        for attempt in 1..=12 {
            let wait = retry.after(attempt);
            assert!(wait >= retry.ceiling(attempt) / 2 && wait <= retry.ceiling(attempt));
        }
    }

    #[test]
    fn two_draws_differ() {
        // A thousand waits of one attempt take more than one value: the jitter is there.
        let retry = Retry::default();
        let waits: std::collections::BTreeSet<Duration> =
            (0..1000).map(|_| retry.after(7)).collect();
        assert!(waits.len() > 1, "every wait was {waits:?}");
    }
}
