//! Roster's ways in: the command line's operations over the log, and the benchmarks.
//! (The `Engine` and the HTTP server join this crate in later issues.)

#![forbid(unsafe_code)]

pub mod bench;
pub mod log_tools;
