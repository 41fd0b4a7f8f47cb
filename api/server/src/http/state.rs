//! What every handler shares: the engine, the configuration, the admin token's digest and
//! the metrics, and the limiter of failed code checks.

use std::ops::Deref;
use std::sync::Arc;

use roster_engine::Engine;

use super::config::ServerConfig;
use super::metrics::Metrics;

pub struct Shared {
    pub engine: Engine,
    pub config: ServerConfig,
    /// SHA-256 of the admin token: the token itself is not kept in memory longer than needed.
    pub admin_digest: [u8; 32],
    pub metrics: Metrics,
    pub code_failures: super::rate_limit::FailureLimiter,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}
