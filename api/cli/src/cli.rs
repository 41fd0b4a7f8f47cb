//! The `roster` command line, derived with clap: every subcommand and flag. `serve`'s settings
//! are `roster_server::http::ServerConfig`'s own flags, flattened in, so they are declared once.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use roster_server::http::config::defaults;
use roster_server::http::ServerConfig;

#[derive(Debug, Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: an event-sourced invitation and membership engine"
)]
pub struct Cli {
    /// The data directory.
    // Global: `ServerConfig::data_dir` reads it from here.
    #[arg(
        long,
        global = true,
        env = "ROSTER_DATA_DIR",
        default_value = "./roster-data"
    )]
    pub data: PathBuf,
    /// Where the log is: `sled` (the embedded log in the data directory) or a PostgreSQL URL
    /// (postgres://user@host:port/database) shared by many nodes; then the data directory
    /// holds only this node's read models, snapshots and admin token.
    // Global: `ServerConfig::store` reads it from here.
    #[arg(
        long,
        global = true,
        env = "ROSTER_STORE",
        default_value = "sled",
        hide_env_values = true
    )]
    pub store: roster_server::StoreChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (native and the seed products' routes).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "ROSTER_LISTEN", default_value = defaults::LISTEN)]
        listen: String,
        /// Log format: `text` or `json`.
        #[arg(long, env = "ROSTER_LOG_FORMAT", default_value = "text")]
        log_format: String,
        #[command(flatten)]
        config: Box<ServerConfig>,
    },
    /// Check the hash chain, gap-free positions and contiguous versions, and the domain's
    /// invariants, over the whole log; exit 1 naming the first bad position.
    Verify {
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Rebuild every read model from the log.
    Replay {
        /// Rebuild into scratch trees and compare with the live ones instead.
        #[arg(long)]
        verify: bool,
    },
    /// The history of a resource and its rolemap, now or as of a time, as tables.
    Audit {
        /// The resource, as `kind/id`.
        resource: String,
        /// An RFC 3339 time.
        #[arg(long)]
        as_of: Option<String>,
        /// Only what concerns this principal.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Write the log as NDJSON envelopes, one per line, to FILE or standard output.
    Export { file: Option<PathBuf> },
    /// Read a log exported as NDJSON into an empty data directory, checking it first as
    /// `verify` would. The server secret must move with the log: name where it comes from.
    Import {
        /// The export; standard input when absent.
        file: Option<PathBuf>,
        /// Copy `secret.key` from this data directory (the one the log was exported from),
        /// so that the log's invitation codes, links and webhook secrets keep working.
        #[arg(long, value_name = "DIR", conflicts_with = "new_secret")]
        secret_from: Option<PathBuf>,
        /// Copy no secret: the next start makes a new one, and every existing code and webhook
        /// secret of the log stops working.
        #[arg(long)]
        new_secret: bool,
    },
    /// Create or upgrade a PostgreSQL store's tables (`serve` does it too, at start).
    Migrate,
    /// Open the engine on an existing data directory and report start-up time and peak memory
    /// as JSON (used by `bench startup`).
    #[command(hide = true)]
    Probe,
    /// Run the performance scenarios, each beside its baseline.
    Bench {
        /// Scenarios to run: `append`, `accept`, `replay`, `as-of`, `startup`.
        #[arg(default_values_t = vec!["append".to_string()])]
        scenarios: Vec<String>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Writer counts for the append scenario.
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
        writers: Vec<usize>,
        /// Events in the log for the replay scenario, and in the stream for `as-of`.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Members in the log for the startup scenario.
        #[arg(long, default_value_t = 100_000)]
        members: u64,
        /// Startup scenario: start after the populating engine stopped without settling the
        /// log (as after a crash) instead of after a clean stop.
        #[arg(long)]
        unsettled: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

impl Command {
    /// Whether the logs are JSON lines (`serve --log-format json`) rather than text.
    pub fn json_logs(&self) -> bool {
        matches!(self, Command::Serve { log_format, .. } if log_format == "json")
    }

    /// The log filter when `ROSTER_LOG` sets none: the server logs its requests, the other
    /// subcommands only their warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve { .. } => "info",
            _ => "warn",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `roster serve` with no flag (and no variable read) runs with what `ServerConfig::new`
    /// gives, once the public URL is taken from the listen address as `run` does.
    #[test]
    fn serve_without_flags_runs_with_the_defaults_of_server_config_new() {
        use clap::FromArgMatches;
        let command = Cli::command()
            .mut_subcommand("serve", |serve| serve.mut_args(|arg| arg.env(None::<&str>)));
        let command = command.mut_args(|arg| arg.env(None::<&str>));
        let matches = command
            .try_get_matches_from(["roster", "--data", "/srv/roster", "serve"])
            .expect("parses");
        let Command::Serve {
            listen,
            log_format,
            config,
        } = Cli::from_arg_matches(&matches).expect("reads").command
        else {
            panic!("not serve");
        };
        assert_eq!(
            (listen.as_str(), log_format.as_str()),
            (defaults::LISTEN, "text")
        );
        let config = crate::run::with_public_url(*config, &listen);
        let new = ServerConfig::new(PathBuf::from("/srv/roster"));
        assert_eq!(format!("{config:?}"), format!("{new:?}"));
    }
}
