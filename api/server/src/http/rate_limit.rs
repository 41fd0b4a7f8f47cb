//! Limits on failed code checks, per client address and per acting principal (issue 9, item 6).
//!
//! A code carries a 160-bit MAC, so guessing one is hopeless; the limit is there so that a
//! guesser costs nothing but its own failures, and so that a flood of them shows up in the
//! metrics and is stopped early. Only failures spend budget: a check that opens something is
//! never counted, so a host calling for thousands of users from one address is throttled only
//! when its callers present wrong codes. Once a key's budget is spent, every code check of that
//! key is refused with 429 before the code is looked at, including ones that would have
//! succeeded: answering a right code while refusing wrong ones would tell the guesser which of
//! its guesses was right, and the limit would protect nothing.
//!
//! Each key holds one number, the GCRA's theoretical arrival time (a token bucket in one
//! value): a failure moves it `window / max` further; a key is over its limit while it lies
//! more than `window - window / max` ahead of now. A key whose time has passed holds nothing
//! a fresh key would not, so it is dropped; past `keys_max` keys the ones nearest to a full
//! budget are dropped first, so memory stays bounded even under a spread-out attack (whose
//! keys then start again with a full budget: the limit fails open rather than lock out
//! everyone).
//!
//! The clock is monotonic and handed in (`*_at(now)`), so the tests move time by arithmetic
//! rather than by sleeping.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use roster_domain::Actor;

use super::listener::Peer;
use super::state::AppState;

/// The limits, from `ServerConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimits {
    /// Failed checks an address may make per window; 0 switches the address limit off.
    pub per_address_max: u32,
    /// Failed checks an acting principal may make per window; 0 switches it off.
    pub per_principal_max: u32,
    pub window_ms: u64,
    /// Keys (addresses and principals) tracked at once.
    pub keys_max: usize,
}

/// Whose budget a failure spends. IPv6 addresses count by their /64, the block one host is
/// usually given, so a guesser cannot take a fresh budget from each of its 2^64 addresses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Address(IpAddr),
    Principal(String),
    /// The admin key acting as nobody: a principal of its own.
    Admin,
}

impl Key {
    pub fn address(ip: IpAddr) -> Key {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => {
                    let mut segments = v6.segments();
                    for segment in &mut segments[4..] {
                        *segment = 0;
                    }
                    IpAddr::V6(Ipv6Addr::from(segments))
                }
            },
            v4 => v4,
        };
        Key::Address(ip)
    }

    pub fn actor(actor: &Actor) -> Key {
        match actor.principal() {
            Some(principal) => Key::Principal(principal.to_string()),
            None => Key::Admin,
        }
    }

    /// Which limit the key is under, for the metrics.
    pub fn scope(&self) -> &'static str {
        match self {
            Key::Address(_) => "address",
            Key::Principal(_) | Key::Admin => "principal",
        }
    }
}

/// The keys one code check spends from: its address (when known) and its acting principal.
#[derive(Debug, Clone, Default)]
pub struct CodeAttempt {
    pub keys: Vec<Key>,
}

/// A refusal: which limit, and how long until one more failure is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub scope: &'static str,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds for `Retry-After`, rounded up and at least 1, so that a client that
    /// waits that long is let through.
    pub fn retry_after_s(&self) -> u64 {
        let whole = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 || whole == 0 {
            whole.saturating_add(1)
        } else {
            whole
        }
    }
}

pub struct FailureLimiter {
    limits: FailureLimits,
    /// The origin of the monotonic times kept per key.
    origin: Instant,
    /// Key → theoretical arrival time, as time since `origin`.
    keys: Mutex<HashMap<Key, Duration>>,
}

impl FailureLimiter {
    pub fn new(limits: FailureLimits) -> FailureLimiter {
        FailureLimiter::starting_at(limits, Instant::now())
    }

    /// A limiter whose clock starts at `origin`: the tests hand in their own instants.
    pub fn starting_at(limits: FailureLimits, origin: Instant) -> FailureLimiter {
        FailureLimiter {
            limits,
            origin,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.limits.window_ms.max(1))
    }

    /// `window / max`, the budget one failure spends; `None` when the key's limit is off.
    fn interval(&self, key: &Key) -> Option<Duration> {
        let max = match key {
            Key::Address(_) => self.limits.per_address_max,
            Key::Principal(_) | Key::Admin => self.limits.per_principal_max,
        };
        self.window().checked_div(max)
    }

    fn since_origin(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Duration>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a code check may go ahead now.
    pub fn admit(&self, attempt: &CodeAttempt) -> Result<(), Limited> {
        self.admit_at(attempt, Instant::now())
    }

    pub fn admit_at(&self, attempt: &CodeAttempt, now: Instant) -> Result<(), Limited> {
        let now = self.since_origin(now);
        let keys = self.lock();
        let mut worst: Option<Limited> = None;
        for key in &attempt.keys {
            let (Some(interval), Some(tat)) = (self.interval(key), keys.get(key)) else {
                continue;
            };
            // Over the limit while the arrival time lies further ahead than the burst allows.
            let allowed_until = now + self.window().saturating_sub(interval);
            if *tat > allowed_until {
                let limited = Limited {
                    scope: key.scope(),
                    retry_after: *tat - allowed_until,
                };
                if worst.is_none_or(|w| w.retry_after < limited.retry_after) {
                    worst = Some(limited);
                }
            }
        }
        worst.map_or(Ok(()), Err)
    }

    /// Spends one failure from each of the attempt's keys.
    pub fn failed(&self, attempt: &CodeAttempt) {
        self.failed_at(attempt, Instant::now());
    }

    pub fn failed_at(&self, attempt: &CodeAttempt, now: Instant) {
        let now = self.since_origin(now);
        let mut keys = self.lock();
        for key in &attempt.keys {
            let Some(interval) = self.interval(key) else {
                continue;
            };
            if !keys.contains_key(key) && keys.len() >= self.limits.keys_max.max(1) {
                self.make_room(&mut keys, now);
            }
            let tat = keys.entry(key.clone()).or_insert(now);
            // Failures that slip past the limit (checks admitted together) cannot push the
            // wait beyond one window: the penalty stays bounded and `Retry-After` honest.
            *tat = ((*tat).max(now) + interval).min(now + self.window());
        }
    }

    /// Drops keys back at a full budget; if that frees nothing, the half nearest to a full
    /// budget. One pass frees half the map, so the cost per insertion stays constant.
    fn make_room(&self, keys: &mut HashMap<Key, Duration>, now: Duration) {
        keys.retain(|_, tat| *tat > now);
        if keys.len() < self.limits.keys_max.max(1) {
            return;
        }
        let mut times: Vec<Duration> = keys.values().copied().collect();
        let middle = times.len() / 2;
        let (_, median, _) = times.select_nth_unstable(middle);
        let median = *median;
        keys.retain(|_, tat| *tat > median);
    }

    /// Keys tracked now, for the metrics.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// The client's address: the TCP peer, or, when the peer is one of the configured trusted
/// proxies, the address it forwarded in `X-Forwarded-For` (the rightmost one that is not
/// itself a trusted proxy, since a client can write anything to the left of what its proxy
/// appends). `None` when the server was not started with peer addresses (a router driven
/// in-process by a test); then only the principal's limit applies.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub Option<IpAddr>);

impl ClientAddress {
    pub fn resolve(peer: Option<SocketAddr>, headers: &HeaderMap, trusted: &[IpAddr]) -> Self {
        let Some(peer) = peer.map(|p| p.ip()) else {
            return ClientAddress(None);
        };
        if !trusted.contains(&peer) {
            return ClientAddress(Some(peer));
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let client = forwarded
            .iter()
            .rev()
            .map(|text| text.parse::<IpAddr>().ok())
            .find(|ip| ip.is_none_or(|ip| !trusted.contains(&ip)));
        match client {
            Some(Some(ip)) => ClientAddress(Some(ip)),
            // Garbage where an address should be: the proxy itself is the best we know.
            Some(None) | None => ClientAddress(Some(peer)),
        }
    }
}

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(peer)| peer.0);
        Ok(ClientAddress::resolve(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: u32, window_ms: u64) -> FailureLimits {
        FailureLimits {
            per_address_max: max,
            per_principal_max: max,
            window_ms,
            keys_max: 1000,
        }
    }

    fn from(ip: &str) -> CodeAttempt {
        CodeAttempt {
            keys: vec![Key::address(ip.parse().unwrap())],
        }
    }

    #[test]
    fn the_budget_is_spent_by_failures_and_refills_with_time() {
        let start = Instant::now();
        let limiter = FailureLimiter::starting_at(limits(3, 60_000), start);
        let a = from("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(limiter.admit_at(&a, start), Ok(()));
            limiter.failed_at(&a, start);
        }
        let refused = limiter.admit_at(&a, start).unwrap_err();
        // One failure's worth (20 s) comes back after 20 s.
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert_eq!(refused.retry_after_s(), 20);
        assert_eq!(refused.scope, "address");
        let almost = start + Duration::from_millis(19_999);
        assert!(limiter.admit_at(&a, almost).is_err());
        let later = start + Duration::from_secs(20);
        assert_eq!(limiter.admit_at(&a, later), Ok(()));
        limiter.failed_at(&a, later);
        assert!(limiter.admit_at(&a, later).is_err());
        // After a whole window the full budget is back.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(limiter.admit_at(&a, much_later), Ok(()));
            limiter.failed_at(&a, much_later);
        }
        assert!(limiter.admit_at(&a, much_later).is_err());
    }

    #[test]
    fn another_address_or_a_limit_switched_off_is_not_affected() {
        let start = Instant::now();
        let limiter = FailureLimiter::starting_at(limits(1, 60_000), start);
        limiter.failed_at(&from("192.0.2.1"), start);
        assert!(limiter.admit_at(&from("192.0.2.1"), start).is_err());
        assert_eq!(limiter.admit_at(&from("192.0.2.2"), start), Ok(()));
        let off = FailureLimiter::starting_at(limits(0, 60_000), start);
        for _ in 0..100 {
            off.failed_at(&from("192.0.2.1"), start);
        }
        assert_eq!(off.admit_at(&from("192.0.2.1"), start), Ok(()));
        assert_eq!(off.tracked(), 0);
    }

    #[test]
    fn ipv6_counts_by_its_64_block_and_mapped_ipv4_as_ipv4() {
        assert_eq!(
            Key::address("2001:db8:1:2:aaaa::1".parse().unwrap()),
            Key::address("2001:db8:1:2:bbbb::9".parse().unwrap())
        );
        assert_ne!(
            Key::address("2001:db8:1:2::1".parse().unwrap()),
            Key::address("2001:db8:1:3::1".parse().unwrap())
        );
        assert_eq!(
            Key::address("::ffff:192.0.2.7".parse().unwrap()),
            Key::address("192.0.2.7".parse().unwrap())
        );
    }

    #[test]
    fn slipped_failures_cannot_push_the_wait_past_one_window() {
        let start = Instant::now();
        let limiter = FailureLimiter::starting_at(limits(2, 10_000), start);
        let a = from("192.0.2.1");
        for _ in 0..50 {
            limiter.failed_at(&a, start);
        }
        let refused = limiter.admit_at(&a, start).unwrap_err();
        assert!(
            refused.retry_after <= Duration::from_secs(10),
            "{refused:?}"
        );
    }

    #[test]
    fn memory_stays_bounded_and_refilled_keys_go_first() {
        let start = Instant::now();
        let mut config = limits(5, 60_000);
        config.keys_max = 100;
        let limiter = FailureLimiter::starting_at(config, start);
        for i in 0..10_000u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            limiter.failed_at(
                &CodeAttempt {
                    keys: vec![Key::address(ip)],
                },
                start + Duration::from_millis(u64::from(i)),
            );
            assert!(limiter.tracked() <= 100);
        }
        // The newest keys, furthest from a full budget, are the ones kept.
        let last = IpAddr::from(9_999u32.to_be_bytes());
        assert!(limiter.lock().contains_key(&Key::address(last)));
    }

    #[test]
    fn forwarded_addresses_count_only_from_a_trusted_proxy() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().unwrap(),
        );
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = Some(SocketAddr::new(proxy, 4000));
        // Untrusted: the header is the client's own words and is ignored.
        assert_eq!(ClientAddress::resolve(peer, &headers, &[]).0, Some(proxy));
        // Trusted: the rightmost address the proxy appended.
        assert_eq!(
            ClientAddress::resolve(peer, &headers, &[proxy]).0,
            Some("198.51.100.4".parse().unwrap())
        );
        assert_eq!(ClientAddress::resolve(None, &headers, &[proxy]).0, None);
    }
}
