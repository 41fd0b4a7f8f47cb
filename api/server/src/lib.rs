//! Roster's HTTP server over the engine: the native `/v1` routes and the seed products' own,
//! auth, limits, metrics and problem+json errors, the supervisor that reopens a failed store,
//! and the delivery and webhook workers. The only crate that knows HTTP.

#![forbid(unsafe_code)]

pub mod data_dir;
pub mod http;
pub mod workers;

pub use http::{serve, ServeError, StoreChoice};

/// Where an invitation's code is redeemed: `{public_url}/invite/{code}`.
pub fn invite_url(public_url: &str, code: &str) -> String {
    format!("{}/invite/{code}", public_url.trim_end_matches('/'))
}
