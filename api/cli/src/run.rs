//! What each subcommand does once `main` has parsed the command line and started logging: the
//! server, the log tools and the benchmarks, each a call into the libraries, and what it prints.

use serde::Serialize;

use roster_server::data_dir::DataDirError;
use roster_server::http::config::public_url_for;
use roster_server::http::ServerConfig;

use crate::bench::BenchError;
use crate::cli::{Cli, Command};
use crate::log_tools::{ImportSecret, ToolError};
use crate::{bench, bench_http, bench_replay, log_tools};

/// Why a subcommand failed; `main` prints it after `roster: ` and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// `bench` and `probe` measure the embedded log; they take no PostgreSQL store yet.
    #[error("`{0}` runs on the embedded sled log only: leave out --store (ROSTER_STORE)")]
    SledOnly(&'static str),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The async runtime could not start.
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot catch {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
    /// The server stopped with this reason.
    #[error(transparent)]
    Serve(#[from] roster_server::ServeError),
    #[error(
        "import needs the server secret the log's codes were made with: pass --secret-from DIR \
         (the data directory it was exported from) or set ROSTER_SECRET, or pass --new-secret \
         to make a new one, which stops every existing code and webhook secret from working"
    )]
    NoSecretNamed,
    #[error("unknown scenario `{0}` (known: append, accept, replay, as-of, startup)")]
    UnknownScenario(String),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// Runs the subcommand `cli` names.
pub fn run(cli: Cli) -> Result<(), RunError> {
    let data = cli.data.as_path();
    let runtime = tokio::runtime::Runtime::new().map_err(RunError::Runtime)?;
    match cli.command {
        Command::Serve {
            listen,
            log_format: _,
            config,
        } => {
            let config = with_public_url(*config, &listen);
            let served = runtime.block_on(serve(&listen, config));
            // Every task holding the engine ends with the runtime; then the log can be settled.
            drop(runtime);
            if served.is_ok() && cli.store == roster_server::StoreChoice::Sled {
                if let Err(error) = roster_eventstore::SledStore::settle(data) {
                    tracing::warn!(%error, "the log was not settled; the next start scans it");
                }
            }
            served
        }
        Command::Verify { quiet } => {
            let log = log_tools::open(data, &cli.store, runtime.handle())?;
            let checked = log_tools::verify(data, log.store.as_ref(), runtime.handle(), quiet)?;
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
            let log = log_tools::open(data, &cli.store, runtime.handle())?;
            let done = runtime.block_on(log_tools::replay(&log, verify, false))?;
            println!("{done}");
            Ok(())
        }
        Command::Audit {
            resource,
            as_of,
            principal,
        } => {
            let log = log_tools::open(data, &cli.store, runtime.handle())?;
            let tables = runtime.block_on(log_tools::audit(
                data,
                &log,
                &resource,
                as_of.as_deref(),
                principal.as_deref(),
            ))?;
            print!("{tables}");
            Ok(())
        }
        Command::Export { file } => {
            let log = log_tools::open(data, &cli.store, runtime.handle())?;
            let mut out: Box<dyn std::io::Write> = match &file {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path).map_err(|source| RunError::Create {
                        path: path.clone(),
                        source,
                    })?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let events = runtime.block_on(log_tools::export(
                log.store.as_ref(),
                &mut out,
                file.is_none(),
            ))?;
            if file.is_some() {
                eprintln!("exported {events} events");
            }
            Ok(())
        }
        Command::Migrate => {
            let roster_server::StoreChoice::Postgres(url) = &cli.store else {
                println!("nothing to migrate: the sled log needs no migration");
                return Ok(());
            };
            let applied = runtime
                .block_on(roster_eventstore::PgStore::migrate(&log_tools::pg_options(
                    url,
                )))
                .map_err(log_tools::ToolError::from)?;
            if applied.is_empty() {
                println!("the store is up to date");
            } else {
                let list: Vec<String> = applied.iter().map(ToString::to_string).collect();
                println!("applied migrations {}", list.join(", "));
            }
            Ok(())
        }
        Command::Probe => {
            if cli.store != roster_server::StoreChoice::Sled {
                return Err(RunError::SledOnly("probe"));
            }
            if !roster_server::data_dir::holds_log(data) {
                return Err(roster_server::data_dir::no_log(data).into());
            }
            println!("{}", runtime.block_on(bench_replay::probe(data))?);
            Ok(())
        }
        Command::Import {
            file,
            secret_from,
            new_secret,
        } => {
            let secret = match secret_from {
                Some(dir) => ImportSecret::CopyFrom(dir),
                None if new_secret => ImportSecret::New,
                None if std::env::var_os("ROSTER_SECRET").is_some() => ImportSecret::Environment,
                None => return Err(RunError::NoSecretNamed),
            };
            let said = log_tools::import_into(
                data,
                &cli.store,
                Some(runtime.handle()),
                file.as_deref(),
                &secret,
                false,
            )?;
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
            if cli.store != roster_server::StoreChoice::Sled {
                return Err(RunError::SledOnly("bench"));
            }
            // Each scenario starts the runtimes it measures on.
            drop(runtime);
            std::fs::create_dir_all(data).map_err(|source| RunError::Create {
                path: data.to_path_buf(),
                source,
            })?;
            for scenario in scenarios {
                match scenario.as_str() {
                    "append" => report(
                        bench::append_scenario(data, &writers, seconds)?.as_slice(),
                        bench::append_table,
                        json,
                    )?,
                    "accept" => report(
                        bench_http::accept_scenario(data, 64, seconds)?.as_slice(),
                        bench_http::accept_table,
                        json,
                    )?,
                    "replay" => report(
                        &bench_replay::replay_scenario(data, events)?,
                        bench_replay::replay_table,
                        json,
                    )?,
                    "as-of" => report(
                        &bench_replay::as_of_scenario(data, events.min(20_000), 200)?,
                        bench_replay::as_of_table,
                        json,
                    )?,
                    "startup" => report(
                        &bench_replay::startup_scenario(data, events, members, !unsettled)?,
                        bench_replay::startup_table,
                        json,
                    )?,
                    _ => return Err(RunError::UnknownScenario(scenario)),
                }
            }
            Ok(())
        }
    }
}

/// `config` with its public URL, when `--public-url` gave none, pointing at where `roster
/// serve` listens (`listen`).
pub fn with_public_url(mut config: ServerConfig, listen: &str) -> ServerConfig {
    if config.public_url.is_empty() {
        config.public_url = public_url_for(listen);
    }
    config
}

/// Prints a scenario's figures: as JSON with `--json`, else as the scenario's table.
fn report<F: Serialize + ?Sized>(
    figures: &F,
    table: fn(&F) -> String,
    json: bool,
) -> Result<(), RunError> {
    if json {
        println!("{}", serde_json::to_string_pretty(figures)?);
    } else {
        print!("{}", table(figures));
    }
    Ok(())
}

/// Listens on `listen` and serves until SIGTERM or Ctrl-C.
async fn serve(listen: &str, config: ServerConfig) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| RunError::Listen {
            address: listen.to_string(),
            source,
        })?;
    roster_server::serve(listener, config, shutdown_signal()?)
        .await
        .map_err(RunError::Serve)
}

/// Completes on SIGTERM or Ctrl-C (SIGINT). Both are caught from the moment this returns,
/// before the server says it listens: caught only once the server polled the future, a
/// SIGTERM sent as soon as it listened met the default action and ended the process without
/// a clean stop.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, RunError> {
    use tokio::signal::unix::{signal, SignalKind};
    let catch = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| RunError::Signal {
            signal: name,
            source,
        })
    };
    let mut terminate = catch(SignalKind::terminate(), "SIGTERM")?;
    let mut interrupt = catch(SignalKind::interrupt(), "SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down: finishing the requests in flight");
    })
}
