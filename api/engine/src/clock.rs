//! Where the engine gets the time and new ids: injectable, so a run can be deterministic.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use roster_domain::Timestamp;

/// The engine's only source of time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = roster_eventstore::Timestamp::now().unix_ms();
        // The system clock is always within the calendar the domain accepts.
        Timestamp::from_unix_ms(ms)
            .unwrap_or_else(|_| unreachable!("the system clock is in 0000..=9999"))
    }
}

/// A clock that moves only when told to: for tests and seeded runs.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn at(start: Timestamp) -> ManualClock {
        ManualClock {
            ms: AtomicI64::new(start.unix_ms()),
        }
    }

    pub fn advance_ms(&self, ms: i64) {
        self.ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_ms(self.ms.load(Ordering::SeqCst))
            .unwrap_or_else(|_| unreachable!("kept in range"))
    }
}

/// The engine's only source of new ids (event ids, command ids, API key ids and secrets).
pub trait IdSource: Send + Sync {
    /// A ULID, as text.
    fn ulid(&self, now: Timestamp) -> String;
    /// 32 random bytes, for API keys.
    fn secret_bytes(&self) -> [u8; 32];
}

/// Ids from the operating system's randomness.
#[derive(Debug, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn ulid(&self, _now: Timestamp) -> String {
        ulid::Ulid::new().to_string()
    }

    fn secret_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
        bytes
    }
}

/// Ids from a seed: the same seed gives the same ids, so a whole run replays exactly.
#[derive(Debug)]
pub struct SeededIds {
    state: Mutex<u64>,
    counter: AtomicU64,
}

impl SeededIds {
    pub fn new(seed: u64) -> SeededIds {
        SeededIds {
            state: Mutex::new(seed),
            counter: AtomicU64::new(0),
        }
    }

    /// splitmix64: small, fast, and good enough to make distinct ids from a seed.
    fn next(&self) -> u64 {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl IdSource for SeededIds {
    fn ulid(&self, now: Timestamp) -> String {
        let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
        let count = self.counter.fetch_add(1, Ordering::SeqCst);
        let random = (u128::from(self.next()) << 64 | u128::from(count)) & ((1u128 << 80) - 1);
        ulid::Ulid::from_parts(ms, random).to_string()
    }

    fn secret_bytes(&self) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_be_bytes());
        }
        bytes
    }
}
