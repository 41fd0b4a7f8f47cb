//! The delivery workers: process managers that read the log like a projector and write
//! events like a command (DESIGN section 8). The mail worker sends email invitations over
//! SMTP; the webhook worker POSTs signed events to subscribers.

pub mod mail;
pub mod webhooks;

use std::time::Duration;

/// When to try again: exponential back-off from `initial_ms`, doubling, capped at `max_ms`,
/// for at most `attempts_max` attempts.
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

    /// The wait after failed attempt number `attempt` (counting from 1).
    pub fn after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        let ms = self
            .initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_the_cap() {
        let retry = Retry::default();
        let waits: Vec<u64> = (1..=8)
            .map(|a| u64::try_from(retry.after(a).as_millis()).unwrap_or(0))
            .collect();
        assert_eq!(
            waits,
            vec![1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(retry.after(u32::MAX), Duration::from_secs(60));
    }
}
