//! The `roster` binary: parses the command line, starts logging and calls the library.
//! Nothing else lives here.

/// mimalloc instead of the system allocator: a third of the CPU of a replay and a sixth of an
/// accept went to glibc's malloc and free (PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;
use roster_cli::Cli;

fn main() -> ExitCode {
    // Whatever this process writes is for its user only: sled's files hold invitees' email
    // addresses, and sled creates them with the default mode (0644 under the usual umask).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROSTER_LOG")
        .unwrap_or_else(|_| cli.command.default_log_filter().into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if cli.command.json_logs() {
        logs.json().init();
    } else {
        logs.init();
    }
    match roster_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("roster: {reason}");
            ExitCode::FAILURE
        }
    }
}
