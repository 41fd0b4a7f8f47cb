//! The command line's library half: its definition (`cli`), what each subcommand does (`run`),
//! the operations over a log (verify, export, import, replay, audit) and the benchmarks, which
//! `main.rs` calls and tests drive directly.

#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_http;
pub mod bench_replay;
pub mod cli;
pub mod log_tools;
pub mod run;

pub use cli::Cli;
pub use run::{run, RunError};
