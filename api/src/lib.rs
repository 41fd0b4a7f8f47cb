//! Roster's ways in: the `Engine` (Roster as a library), the command line's operations over
//! the log, and the benchmarks. (The HTTP server joins this crate in a later issue.)

#![forbid(unsafe_code)]

pub mod bench;
#[cfg(feature = "server")]
pub mod bench_http;
pub mod bench_replay;
pub mod data_dir;
pub mod engine;
#[cfg(feature = "server")]
pub mod http;
pub mod log_tools;
#[cfg(feature = "server")]
pub mod workers;

#[cfg(feature = "server")]
pub use http::serve;

/// Strategies for commands and sessions, for hosts' own property tests (feature `proptest`).
#[cfg(feature = "proptest")]
pub use roster_domain::strategies;

/// Where an invitation's code is redeemed: `{public_url}/invite/{code}`.
pub fn invite_url(public_url: &str, code: &str) -> String {
    format!("{}/invite/{code}", public_url.trim_end_matches('/'))
}

/// `docs/EMBEDDING.md`, whose example runs as a doctest so the document stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/EMBEDDING.md")]
pub struct EmbeddingDocument;
