//! The HTTP server over the engine. One module per job:
//!
//! - `serve`: [`serve`], which prepares the data directory, opens the engine and serves a
//!   listener until shutdown;
//! - `supervise`: the engine in force with its workers and router, and the supervisor that
//!   reopens the log after a failed write and swaps a new engine in;
//! - `router`: every route with the layers around them;
//! - `middleware`: what runs around every request (its time limit, the position header, the
//!   metrics and the log line; idempotency keys; unknown query parameters);
//! - `listener`: connections (the cap on them, their header and idle time limits, and the
//!   per-connection and per-request services that hand each request to the router in force);
//! - the handlers (`routes`, `webhook_routes`, `compat`), what they share (`auth`, `extract`,
//!   `support`, `paging`, `views`, `state`), and `error`, `metrics`, `openapi`, `rate_limit`.

mod auth;
mod compat;
pub mod config;
mod error;
mod extract;
mod listener;
mod metrics;
mod middleware;
mod openapi;
mod paging;
mod rate_limit;
mod router;
mod routes;
mod serve;
mod state;
mod supervise;
mod support;
mod views;
mod webhook_routes;

pub use config::{Families, PostgresConfig, ServerConfig, StoreChoice};
pub use error::{ApiCode, ApiError, Problem};
pub use openapi::document as openapi_document;
pub use router::router;
pub use serve::{serve, ServeError};

/// The header every response carries: the position the read models had applied when it left.
pub const POSITION_HEADER: &str = "x-roster-position";
