//! The server's settings, each from a flag or a `ROSTER_*` variable (see `main.rs`).

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
    pub families: Families,
    /// `ROSTER_SMTP_URL` and `ROSTER_MAIL_FROM`: invitations are mailed when both are set.
    pub smtp_url: Option<String>,
    pub mail_from: Option<String>,
    pub delivery_retry: crate::workers::Retry,
    pub webhook_retry: crate::workers::Retry,
    pub webhook_timeout_ms: u64,
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
            families: Families::default(),
            smtp_url: None,
            mail_from: None,
            delivery_retry: crate::workers::Retry::default(),
            webhook_retry: crate::workers::Retry::default(),
            webhook_timeout_ms: 10_000,
        }
    }
}
