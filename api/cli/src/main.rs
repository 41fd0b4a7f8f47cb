//! The `roster` binary: parses the command line and calls the library. Nothing else lives here.

/// mimalloc instead of the system allocator: a third of the CPU of a replay and a sixth of an
/// accept went to glibc's malloc and free (PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "roster",
    version,
    about = "Roster: an event-sourced invitation and membership engine"
)]
struct Cli {
    /// The data directory.
    #[arg(
        long,
        global = true,
        env = "ROSTER_DATA_DIR",
        default_value = "./roster-data"
    )]
    data: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (native and the seed products' routes).
    Serve(Box<ServeArgs>),
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

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Where invitation URLs point: `{public_url}/invite/{code}`.
    #[arg(long, env = "ROSTER_PUBLIC_URL")]
    public_url: Option<String>,
    /// `sync` (acknowledged means on stable storage) or `relaxed`.
    #[arg(long, env = "ROSTER_DURABILITY", default_value = "sync")]
    durability: roster_eventstore::Durability,
    /// Log format: `text` or `json`.
    #[arg(long, env = "ROSTER_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ROSTER_BODY_BYTES_MAX", default_value_t = 64 * 1024)]
    body_bytes_max: usize,
    /// Emails one invitation request may name.
    #[arg(long, env = "ROSTER_EMAILS_PER_REQUEST_MAX", default_value_t = 100)]
    emails_per_request_max: usize,
    /// Pending email invitations one resource may have.
    #[arg(long, env = "ROSTER_PENDING_INVITATIONS_MAX", default_value_t = 1000)]
    pending_invitations_max: usize,
    /// Active invite links one resource may have.
    #[arg(long, env = "ROSTER_ACTIVE_LINKS_MAX", default_value_t = 100)]
    active_links_max: usize,
    /// Time a request may take, in milliseconds.
    #[arg(long, env = "ROSTER_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    request_timeout_ms: u64,
    /// Connections open at once.
    #[arg(long, env = "ROSTER_CONNECTIONS_MAX", default_value_t = 1024)]
    connections_max: usize,
    /// Time a connection has to send a complete request head, in milliseconds: from its start,
    /// and from the first byte of each later request on it.
    #[arg(long, env = "ROSTER_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Time a kept-alive connection may wait for its next request, and an answer may wait for
    /// a client that reads none of it, in milliseconds.
    #[arg(long, env = "ROSTER_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// The SMTP server invitations are mailed through, e.g. `smtp://127.0.0.1:2525` or
    /// `smtps://user:password@mail.example`; mail is sent only with `--mail-from` too.
    #[arg(long, env = "ROSTER_SMTP_URL")]
    smtp_url: Option<String>,
    /// The sender of invitation mails, e.g. `Roster <invites@example.com>`.
    #[arg(long, env = "ROSTER_MAIL_FROM")]
    mail_from: Option<String>,
    /// First wait before retrying a mail or a webhook, in milliseconds; it doubles each time.
    #[arg(long, env = "ROSTER_RETRY_BACKOFF_MS", default_value_t = 1000)]
    retry_backoff_ms: u64,
    /// Longest wait between retries, in milliseconds.
    #[arg(long, env = "ROSTER_RETRY_BACKOFF_MAX_MS", default_value_t = 60_000)]
    retry_backoff_max_ms: u64,
    /// Attempts at one mail or one webhook delivery before giving up.
    #[arg(long, env = "ROSTER_RETRY_ATTEMPTS_MAX", default_value_t = 10)]
    retry_attempts_max: u32,
    /// Failed code checks (unknown, malformed or wrong codes) one client address may make per
    /// window before its code checks are answered 429; 0 turns the address limit off.
    #[arg(
        long,
        env = "ROSTER_CODE_FAILURES_PER_ADDRESS_MAX",
        default_value_t = 20
    )]
    code_failures_per_address_max: u32,
    /// The same per acting principal; 0 turns it off.
    #[arg(
        long,
        env = "ROSTER_CODE_FAILURES_PER_PRINCIPAL_MAX",
        default_value_t = 20
    )]
    code_failures_per_principal_max: u32,
    /// The window of those limits, in milliseconds.
    #[arg(long, env = "ROSTER_CODE_FAILURES_WINDOW_MS", default_value_t = 60_000)]
    code_failures_window_ms: u64,
    /// Addresses and principals the limiter tracks at once.
    #[arg(long, env = "ROSTER_RATE_LIMIT_KEYS_MAX", default_value_t = 65_536)]
    rate_limit_keys_max: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed, comma-separated IP addresses;
    /// without any, the TCP peer is the client address.
    #[arg(long, env = "ROSTER_TRUSTED_PROXIES", value_delimiter = ',')]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Browser origins allowed to call the API from their pages (CORS), comma-separated,
    /// e.g. `https://app.example`; none by default.
    #[arg(long, env = "ROSTER_CORS_ORIGINS", value_delimiter = ',')]
    cors_origins: Vec<String>,
}

fn main() -> ExitCode {
    // Whatever this process writes is for its user only: sled's files hold invitees' email
    // addresses, and sled creates them with the default mode (0644 under the usual umask).
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let cli = Cli::parse();
    let json_logs = matches!(&cli.command, Command::Serve(args) if args.log_format == "json");
    // The server logs its requests; the other subcommands only their warnings.
    let default_filter = if matches!(cli.command, Command::Serve(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ROSTER_LOG")
        .unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => {
            eprintln!("roster: {reason}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    match cli.command {
        Command::Serve(args) => {
            let served = runtime.block_on(serve(cli.data.clone(), *args));
            // Every task holding the engine ends with the runtime; then the log can be settled.
            drop(runtime);
            if served.is_ok() {
                if let Err(error) = roster_eventstore::SledStore::settle(&cli.data) {
                    tracing::warn!(%error, "the log was not settled; the next start scans it");
                }
            }
            served
        }
        Command::Verify { quiet } => {
            let store = roster_cli::log_tools::open(&cli.data)?;
            let checked =
                roster_cli::log_tools::verify(&cli.data, &store, runtime.handle(), quiet)?;
            println!(
                "ok: {} events in {} streams, {} resources, head hash {}",
                checked.report.events,
                checked.report.streams,
                checked.resources,
                checked.report.head_hash
            );
            Ok(())
        }
        Command::Replay { verify } => {
            let store = roster_cli::log_tools::open(&cli.data)?;
            let done = runtime.block_on(roster_cli::log_tools::replay(&store, verify, false))?;
            println!("{done}");
            Ok(())
        }
        Command::Audit {
            resource,
            as_of,
            principal,
        } => {
            let store = roster_cli::log_tools::open(&cli.data)?;
            let tables = runtime.block_on(roster_cli::log_tools::audit(
                &cli.data,
                &store,
                &resource,
                as_of.as_deref(),
                principal.as_deref(),
            ))?;
            print!("{tables}");
            Ok(())
        }
        Command::Export { file } => {
            let store = roster_cli::log_tools::open(&cli.data)?;
            let mut out: Box<dyn std::io::Write> = match &file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot create {}: {e}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let events = runtime.block_on(roster_cli::log_tools::export(
                &store,
                &mut out,
                file.is_none(),
            ))?;
            if file.is_some() {
                eprintln!("exported {events} events");
            }
            Ok(())
        }
        Command::Probe => {
            if !roster_server::data_dir::holds_log(&cli.data) {
                return Err(roster_server::data_dir::no_log(&cli.data));
            }
            println!(
                "{}",
                runtime.block_on(roster_cli::bench_replay::probe(&cli.data))?
            );
            Ok(())
        }
        Command::Import {
            file,
            secret_from,
            new_secret,
        } => {
            use roster_cli::log_tools::ImportSecret;
            let secret = match secret_from {
                Some(dir) => ImportSecret::CopyFrom(dir),
                None if new_secret => ImportSecret::New,
                None if std::env::var_os("ROSTER_SECRET").is_some() => ImportSecret::Environment,
                None => {
                    return Err("import needs the server secret the log's codes were made \
                        with: pass --secret-from DIR (the data directory it was exported from) \
                        or set ROSTER_SECRET, or pass --new-secret to make a new one, which \
                        stops every existing code and webhook secret from working"
                        .into())
                }
            };
            let said = roster_cli::log_tools::import(&cli.data, file.as_deref(), &secret, false)?;
            eprintln!("{said}");
            Ok(())
        }
        Command::Bench {
            scenarios,
            seconds,
            writers,
            events,
            members,
            unsettled,
            json,
        } => {
            drop(runtime);
            std::fs::create_dir_all(&cli.data)
                .map_err(|e| format!("cannot create {}: {e}", cli.data.display()))?;
            for scenario in scenarios {
                match scenario.as_str() {
                    "append" => {
                        let figures =
                            roster_cli::bench::append_scenario(&cli.data, &writers, seconds)?;
                        if json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&figures).map_err(|e| e.to_string())?
                            );
                        } else {
                            print!("{}", roster_cli::bench::append_table(&figures));
                        }
                    }
                    "accept" => {
                        let figures =
                            roster_cli::bench_http::accept_scenario(&cli.data, 64, seconds)?;
                        if json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&figures).map_err(|e| e.to_string())?
                            );
                        } else {
                            print!("{}", roster_cli::bench_http::accept_table(&figures));
                        }
                    }
                    "replay" => {
                        let figure = roster_cli::bench_replay::replay_scenario(&cli.data, events)?;
                        if json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&figure).map_err(|e| e.to_string())?
                            );
                        } else {
                            print!("{}", roster_cli::bench_replay::replay_table(&figure));
                        }
                    }
                    "as-of" => {
                        let figure = roster_cli::bench_replay::as_of_scenario(
                            &cli.data,
                            events.min(20_000),
                            200,
                        )?;
                        if json {
                            println!(
                                "{}",
                                serde_json::to_string_pretty(&figure).map_err(|e| e.to_string())?
                            );
                        } else {
                            print!("{}", roster_cli::bench_replay::as_of_table(&figure));
                        }
                    }
                    "startup" => {
                        let figure = roster_cli::bench_replay::startup_scenario(
                            &cli.data, events, members, !unsettled,
                        )?;
                        if json {
                            println!("{}", serde_json::to_string_pretty(&figure).map_err(|e| e.to_string())?);
                        } else {
                            print!("{}", roster_cli::bench_replay::startup_table(&figure));
                        }
                    }
                    other => {
                        return Err(format!(
                            "unknown scenario `{other}` (known: append, accept, replay, as-of, startup)"
                        ))
                    }
                }
            }
            Ok(())
        }
    }
}

async fn serve(data: PathBuf, args: ServeArgs) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let mut config = roster_server::http::ServerConfig::new(data);
    config.public_url = args
        .public_url
        .unwrap_or_else(|| format!("http://{}", args.listen));
    config.durability = args.durability;
    config.admin_token = std::env::var("ROSTER_ADMIN_TOKEN").ok();
    config.secret = std::env::var("ROSTER_SECRET").ok();
    config.body_bytes_max = args.body_bytes_max;
    config.limits.emails_per_request_max = args.emails_per_request_max;
    config.limits.pending_invitations_max = args.pending_invitations_max;
    config.limits.active_links_max = args.active_links_max;
    config.request_timeout_ms = args.request_timeout_ms;
    config.connections_max = args.connections_max;
    config.header_timeout_ms = args.header_timeout_ms;
    config.idle_timeout_ms = args.idle_timeout_ms;
    config.smtp_url = args.smtp_url;
    config.mail_from = args.mail_from;
    let retry = roster_server::workers::Retry {
        initial_ms: args.retry_backoff_ms,
        max_ms: args.retry_backoff_max_ms,
        attempts_max: args.retry_attempts_max,
    };
    config.delivery_retry = retry;
    config.webhook_retry = retry;
    config.code_failures_per_address_max = args.code_failures_per_address_max;
    config.code_failures_per_principal_max = args.code_failures_per_principal_max;
    config.code_failures_window_ms = args.code_failures_window_ms;
    config.rate_limit_keys_max = args.rate_limit_keys_max;
    config.trusted_proxies = args.trusted_proxies;
    config.cors_origins = args.cors_origins;
    roster_server::serve(listener, config, shutdown_signal()?).await
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). Both are caught from the moment this returns,
/// before the server says it listens: caught only once the server polled the future, a
/// SIGTERM sent as soon as it listened met the default action and ended the process without
/// a clean stop.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot catch SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot catch SIGINT: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: finishing the requests in flight");
    })
}
