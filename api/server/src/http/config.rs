//! The server's settings, each from a flag or a `ROSTER_*` variable (see `main.rs`).

use std::net::IpAddr;
use std::path::PathBuf;

use roster_domain::Limits;
use roster_eventstore::Durability;

/// Which seed products' own routes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub teable: bool,
    pub calcom: bool,
    pub onehub: bool,
    pub onedata: bool,
}

impl Default for Families {
    fn default() -> Families {
        Families {
            teable: true,
            calcom: true,
            onehub: true,
            onedata: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    /// Where invitation URLs point: `{public_url}/invite/{code}`.
    pub public_url: String,
    pub durability: Durability,
    /// `ROSTER_ADMIN_TOKEN`; when absent, the token in the data directory (made at first start).
    pub admin_token: Option<String>,
    /// `ROSTER_SECRET`; when absent, `secret.key` in the data directory.
    pub secret: Option<String>,
    pub body_bytes_max: usize,
    pub limits: Limits,
    pub request_timeout_ms: u64,
    pub connections_max: usize,
    /// Time a connection has to send a complete request head: from its start, and from the
    /// first byte of each later request on it.
    pub header_timeout_ms: u64,
    /// Time a kept-alive connection may wait for its next request after a response.
    pub idle_timeout_ms: u64,
    pub families: Families,
    /// `ROSTER_SMTP_URL` and `ROSTER_MAIL_FROM`: invitations are mailed when both are set.
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub delivery_retry: crate::workers::Retry,
    pub webhook_retry: crate::workers::Retry,
    pub webhook_timeout_ms: u64,
    /// Failed code checks (unknown, malformed or wrong codes) one client address may make per
    /// `code_failures_window_ms` before its code checks are answered 429; 0 turns it off.
    pub code_failures_per_address_max: u32,
    /// The same per acting principal (the admin acting as nobody counts as one).
    pub code_failures_per_principal_max: u32,
    pub code_failures_window_ms: u64,
    /// Addresses and principals the limiter tracks at once.
    pub rate_limit_keys_max: usize,
    /// Peers whose `X-Forwarded-For` is believed (a reverse proxy in front of Roster); from
    /// anyone else the header is ignored and the TCP peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Browser origins allowed to call the API across origins (`https://app.example`); none
    /// by default, so no page of another origin can use a key a browser holds.
    pub cors_origins: Vec<String>,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            public_url: "http://127.0.0.1:8080".into(),
            durability: Durability::Sync,
            admin_token: None,
            secret: None,
            body_bytes_max: 64 * 1024,
            limits: Limits::default(),
            request_timeout_ms: 10_000,
            connections_max: 1024,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            families: Families::default(),
            smtp_url: None,
            mail_from: None,
            delivery_retry: crate::workers::Retry::default(),
            webhook_retry: crate::workers::Retry::default(),
            webhook_timeout_ms: 10_000,
            code_failures_per_address_max: 20,
            code_failures_per_principal_max: 20,
            code_failures_window_ms: 60_000,
            rate_limit_keys_max: 65_536,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}
