//! The server's settings. `roster serve`'s flags are derived from [`ServerConfig`] itself (each
//! flag also read from its `ROSTER_*` variable), and every default is named once, in
//! [`defaults`], so that [`ServerConfig::new`] (what tests and embedding hosts start from) and
//! the command line cannot disagree.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use roster_domain::Limits;
use roster_eventstore::Durability;

use crate::workers::Retry;

/// Each setting's default, named once: the flags' defaults and [`ServerConfig::new`] both read
/// them. The domain's limits default to [`Limits::DEFAULT`] and the retry schedules to
/// [`Retry::DEFAULT`], where those types are defined.
pub mod defaults {
    use super::Families;
    use roster_eventstore::Durability;

    /// Where `roster serve` listens (the listener is the binary's: `serve` is handed one).
    pub const LISTEN: &str = "127.0.0.1:8080";
    pub const DURABILITY: Durability = Durability::Sync;
    pub const BODY_BYTES_MAX: usize = 64 * 1024;
    pub const REQUEST_TIMEOUT_MS: u64 = 10_000;
    pub const CONNECTIONS_MAX: usize = 1024;
    pub const HEADER_TIMEOUT_MS: u64 = 10_000;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const FAMILIES: Families = Families::ALL;
    pub const WEBHOOK_TIMEOUT_MS: u64 = 10_000;
    pub const CODE_FAILURES_PER_ADDRESS_MAX: u32 = 20;
    pub const CODE_FAILURES_PER_PRINCIPAL_MAX: u32 = 20;
    pub const CODE_FAILURES_WINDOW_MS: u64 = 60_000;
    pub const RATE_LIMIT_KEYS_MAX: usize = 65_536;
    pub const PAGE_ITEMS_DEFAULT: usize = 100;
    pub const PAGE_ITEMS_MAX: usize = 1000;
    pub const STORE_SCHEMA: &str = "roster";
    pub const STORE_POOL_SIZE: usize = 16;
    pub const STORE_POLL_MS: u64 = 500;
    pub const STORE_LOCK_TIMEOUT_MS: u64 = 2_000;
    pub const MIN_POSITION_WAIT_MS: u64 = 5_000;
    pub const WORKER_LEASE_MS: u64 = 10_000;
    pub const READY_LAG_MAX: u64 = 10_000;
}

/// Where the log is: the embedded sled log in the data directory (the default), or a
/// PostgreSQL store that many nodes share (DESIGN section 10).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreChoice {
    #[default]
    Sled,
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

impl FromStr for StoreChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreChoice, String> {
        match text {
            "" | "sled" => Ok(StoreChoice::Sled),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreChoice::Postgres(url.to_string()))
            }
            _ => Err("`sled`, or a PostgreSQL URL (postgres://user@host:port/database)".into()),
        }
    }
}

impl fmt::Display for StoreChoice {
    /// Never the URL, which may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Sled => f.write_str("sled"),
            StoreChoice::Postgres(_) => f.write_str("postgres"),
        }
    }
}

/// A node on a PostgreSQL store: its connections and how it follows the shared log.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "PostgreSQL store")]
pub struct PostgresConfig {
    /// The schema that holds Roster's tables.
    #[arg(long = "store-schema", env = "ROSTER_STORE_SCHEMA", default_value = defaults::STORE_SCHEMA)]
    pub schema: String,
    /// Connections this node's reads share (the writer and the follower have one each).
    #[arg(long = "store-pool-size", env = "ROSTER_STORE_POOL_SIZE", default_value_t = defaults::STORE_POOL_SIZE)]
    pub pool_size: usize,
    /// How often the node reads the shared log when no notification woke it, in ms.
    #[arg(long = "store-poll-ms", env = "ROSTER_STORE_POLL_MS", default_value_t = defaults::STORE_POLL_MS)]
    pub poll_ms: u64,
    /// Whether the node listens for notifications of new events (`false` leaves polling).
    #[arg(long = "store-notifications", env = "ROSTER_STORE_NOTIFICATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub notifications: bool,
    /// The longest a write waits for the log's lock or a connection, in ms; a session idle
    /// in a transaction twice as long is ended by PostgreSQL.
    #[arg(long = "store-lock-timeout-ms", env = "ROSTER_STORE_LOCK_TIMEOUT_MS", default_value_t = defaults::STORE_LOCK_TIMEOUT_MS)]
    pub lock_timeout_ms: u64,
    /// How long a request with `min_position` waits for this node to apply it, in ms, before
    /// it answers 503.
    #[arg(long = "min-position-wait-ms", env = "ROSTER_MIN_POSITION_WAIT_MS", default_value_t = defaults::MIN_POSITION_WAIT_MS)]
    pub min_position_wait_ms: u64,
    /// How long the workers' lease lasts unrenewed, in ms: the mail and webhook workers run on
    /// the node that holds it, and another takes over within about this long after it stops.
    #[arg(long = "worker-lease-ms", env = "ROSTER_WORKER_LEASE_MS", default_value_t = defaults::WORKER_LEASE_MS)]
    pub worker_lease_ms: u64,
    /// How many events the read models may be behind what the node has read of the log
    /// before `/readyz` answers 503.
    #[arg(long = "ready-lag-max", env = "ROSTER_READY_LAG_MAX", default_value_t = defaults::READY_LAG_MAX)]
    pub ready_lag_max: u64,
}

impl Default for PostgresConfig {
    fn default() -> PostgresConfig {
        PostgresConfig {
            schema: defaults::STORE_SCHEMA.into(),
            pool_size: defaults::STORE_POOL_SIZE,
            poll_ms: defaults::STORE_POLL_MS,
            notifications: true,
            lock_timeout_ms: defaults::STORE_LOCK_TIMEOUT_MS,
            min_position_wait_ms: defaults::MIN_POSITION_WAIT_MS,
            worker_lease_ms: defaults::WORKER_LEASE_MS,
            ready_lag_max: defaults::READY_LAG_MAX,
        }
    }
}

impl PostgresConfig {
    /// The store's options for `url`.
    pub fn options(&self, url: &str) -> roster_eventstore::PgOptions {
        roster_eventstore::PgOptions {
            schema: self.schema.clone(),
            pool_size: self.pool_size,
            poll_interval: std::time::Duration::from_millis(self.poll_ms.max(1)),
            notifications: self.notifications,
            lock_timeout: std::time::Duration::from_millis(self.lock_timeout_ms.max(1)),
            ..roster_eventstore::PgOptions::new(url)
        }
    }
}

/// Where invitation URLs point when no public URL is given: the address the server listens on.
pub fn public_url_for(listen: &str) -> String {
    format!("http://{listen}")
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerConfig {
    /// `roster`'s global `--data` (`ROSTER_DATA_DIR`): a command line that flattens this must
    /// define that argument, global, because every subcommand takes it.
    #[arg(id = "data", from_global)]
    pub data_dir: PathBuf,
    /// `roster`'s global `--store` (`ROSTER_STORE`): `sled`, the embedded log in the data
    /// directory, or a PostgreSQL URL shared by many nodes.
    #[arg(id = "store", from_global)]
    pub store: StoreChoice,
    #[command(flatten)]
    pub postgres: PostgresConfig,
    /// Where invitation URLs point: `{public_url}/invite/{code}`. By default `http://` and the
    /// `--listen` address.
    // Empty on the command line when not given, so that `roster serve` can put its own listen
    // address there; `ServerConfig::new` puts the default one.
    #[arg(
        long,
        env = "ROSTER_PUBLIC_URL",
        value_name = "URL",
        default_value = "",
        hide_default_value = true
    )]
    pub public_url: String,
    /// `sync` (acknowledged means on stable storage) or `relaxed` (sled's flusher makes it
    /// durable within milliseconds; a crash may lose the last moments, never corrupt the log).
    #[arg(long, env = "ROSTER_DURABILITY", default_value_t = defaults::DURABILITY)]
    pub durability: Durability,
    /// The admin key, at least 16 characters; without it, the one in `admin-token` in the data
    /// directory, made at first start. Prefer the variable: a flag is visible to other users in
    /// `ps`.
    #[arg(
        long,
        env = "ROSTER_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Secrets"
    )]
    pub admin_token: Option<String>,
    /// The secret invitation codes, link codes and webhook signing secrets are derived from, at
    /// least 16 characters; without it, `secret.key` in the data directory, made at first
    /// start. Prefer the variable: a flag is visible to other users in `ps`.
    #[arg(
        long,
        env = "ROSTER_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        help_heading = "Secrets"
    )]
    pub secret: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ROSTER_BODY_BYTES_MAX", default_value_t = defaults::BODY_BYTES_MAX, help_heading = "Limits")]
    pub body_bytes_max: usize,
    #[command(flatten)]
    pub limits: LimitsConfig,
    #[command(flatten)]
    pub paging: Paging,
    /// Time a request may take, in milliseconds.
    #[arg(long, env = "ROSTER_REQUEST_TIMEOUT_MS", default_value_t = defaults::REQUEST_TIMEOUT_MS, help_heading = "Limits")]
    pub request_timeout_ms: u64,
    /// Connections open at once.
    #[arg(long, env = "ROSTER_CONNECTIONS_MAX", default_value_t = defaults::CONNECTIONS_MAX, help_heading = "Limits")]
    pub connections_max: usize,
    /// Time a connection has to send a complete request head, in milliseconds: from its start,
    /// and from the first byte of each later request on it.
    #[arg(long, env = "ROSTER_HEADER_TIMEOUT_MS", default_value_t = defaults::HEADER_TIMEOUT_MS, help_heading = "Limits")]
    pub header_timeout_ms: u64,
    /// Time a kept-alive connection may wait for its next request, and an answer may wait for a
    /// client that reads none of it, in milliseconds.
    #[arg(long, env = "ROSTER_IDLE_TIMEOUT_MS", default_value_t = defaults::IDLE_TIMEOUT_MS, help_heading = "Limits")]
    pub idle_timeout_ms: u64,
    /// The seed products' route families served, comma-separated: `teable`, `calcom`,
    /// `onehub`, `onedata`, or `none`; a family left out has no routes (its paths answer 404).
    #[arg(long, env = "ROSTER_FAMILIES", value_name = "LIST", default_value_t = defaults::FAMILIES)]
    pub families: Families,
    /// The SMTP server invitations are mailed through, e.g. `smtp://127.0.0.1:2525` or
    /// `smtps://user:password@mail.example`; mail is sent only with `--mail-from` too.
    // The URL may hold a password: its variable's value is not shown in `--help`.
    #[arg(
        long,
        env = "ROSTER_SMTP_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Mail and webhooks"
    )]
    pub smtp_url: Option<String>,
    /// The sender of invitation mails, e.g. `Roster <invites@example.com>`.
    #[arg(
        long,
        env = "ROSTER_MAIL_FROM",
        value_name = "ADDRESS",
        help_heading = "Mail and webhooks"
    )]
    pub mail_from: Option<String>,
    #[command(flatten)]
    pub retry: RetrySchedules,
    /// Time one webhook delivery may take, in milliseconds.
    #[arg(long, env = "ROSTER_WEBHOOK_TIMEOUT_MS", default_value_t = defaults::WEBHOOK_TIMEOUT_MS, help_heading = "Mail and webhooks")]
    pub webhook_timeout_ms: u64,
    /// Failed code checks (unknown, malformed or wrong codes) one client address may make per
    /// window before its code checks are answered 429; 0 turns the address limit off.
    #[arg(long, env = "ROSTER_CODE_FAILURES_PER_ADDRESS_MAX", default_value_t = defaults::CODE_FAILURES_PER_ADDRESS_MAX, help_heading = "Failed code checks")]
    pub code_failures_per_address_max: u32,
    /// The same per acting principal (the admin acting as nobody counts as one); 0 turns it
    /// off.
    #[arg(long, env = "ROSTER_CODE_FAILURES_PER_PRINCIPAL_MAX", default_value_t = defaults::CODE_FAILURES_PER_PRINCIPAL_MAX, help_heading = "Failed code checks")]
    pub code_failures_per_principal_max: u32,
    /// The window of those limits, in milliseconds.
    #[arg(long, env = "ROSTER_CODE_FAILURES_WINDOW_MS", default_value_t = defaults::CODE_FAILURES_WINDOW_MS, help_heading = "Failed code checks")]
    pub code_failures_window_ms: u64,
    /// Addresses and principals the limiter tracks at once.
    #[arg(long, env = "ROSTER_RATE_LIMIT_KEYS_MAX", default_value_t = defaults::RATE_LIMIT_KEYS_MAX, help_heading = "Failed code checks")]
    pub rate_limit_keys_max: usize,
    /// Reverse proxies whose `X-Forwarded-For` is believed, comma-separated IP addresses; from
    /// anyone else the header is ignored, and without any the TCP peer is the client address.
    #[arg(
        long,
        env = "ROSTER_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "ADDRESSES"
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Browser origins allowed to call the API from their pages (CORS), comma-separated, e.g.
    /// `https://app.example`; none by default, so no page of another origin can use a key a
    /// browser holds.
    #[arg(
        long,
        env = "ROSTER_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_origins: Vec<String>,
}

impl ServerConfig {
    /// Every setting at its default, on `data_dir`: what `roster serve` runs with when given
    /// no flag and no variable, listening on [`defaults::LISTEN`].
    pub fn new(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            data_dir,
            store: StoreChoice::Sled,
            postgres: PostgresConfig::default(),
            public_url: public_url_for(defaults::LISTEN),
            durability: defaults::DURABILITY,
            admin_token: None,
            secret: None,
            body_bytes_max: defaults::BODY_BYTES_MAX,
            limits: LimitsConfig::default(),
            paging: Paging::default(),
            request_timeout_ms: defaults::REQUEST_TIMEOUT_MS,
            connections_max: defaults::CONNECTIONS_MAX,
            header_timeout_ms: defaults::HEADER_TIMEOUT_MS,
            idle_timeout_ms: defaults::IDLE_TIMEOUT_MS,
            families: defaults::FAMILIES,
            smtp_url: None,
            mail_from: None,
            retry: RetrySchedules::default(),
            webhook_timeout_ms: defaults::WEBHOOK_TIMEOUT_MS,
            code_failures_per_address_max: defaults::CODE_FAILURES_PER_ADDRESS_MAX,
            code_failures_per_principal_max: defaults::CODE_FAILURES_PER_PRINCIPAL_MAX,
            code_failures_window_ms: defaults::CODE_FAILURES_WINDOW_MS,
            rate_limit_keys_max: defaults::RATE_LIMIT_KEYS_MAX,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
        }
    }
}

/// The domain's limits (DESIGN section 5), one flag each. `roster_domain::Limits` is the
/// domain's own type and knows no command line; this one mirrors it field for field (the
/// conversions below name every field, so a new limit fails to compile until it has a flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitsConfig {
    /// Emails one invitation request may name.
    #[arg(long, env = "ROSTER_EMAILS_PER_REQUEST_MAX", default_value_t = Limits::DEFAULT.emails_per_request_max)]
    pub emails_per_request_max: usize,
    /// Pending email invitations one resource may have.
    #[arg(long, env = "ROSTER_PENDING_INVITATIONS_MAX", default_value_t = Limits::DEFAULT.pending_invitations_max)]
    pub pending_invitations_max: usize,
    /// Active invite links one resource may have.
    #[arg(long, env = "ROSTER_ACTIVE_LINKS_MAX", default_value_t = Limits::DEFAULT.active_links_max)]
    pub active_links_max: usize,
    /// Characters of an invitation's personal message (copied into the log and into mails).
    #[arg(long, env = "ROSTER_MESSAGE_CHARS_MAX", default_value_t = Limits::DEFAULT.message_chars_max)]
    pub message_chars_max: usize,
    /// Characters of an API key's display name.
    #[arg(long, env = "ROSTER_KEY_NAME_CHARS_MAX", default_value_t = Limits::DEFAULT.key_name_chars_max)]
    pub key_name_chars_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        Limits::DEFAULT.into()
    }
}

impl From<Limits> for LimitsConfig {
    fn from(limits: Limits) -> LimitsConfig {
        let Limits {
            emails_per_request_max,
            pending_invitations_max,
            active_links_max,
            message_chars_max,
            key_name_chars_max,
        } = limits;
        LimitsConfig {
            emails_per_request_max,
            pending_invitations_max,
            active_links_max,
            message_chars_max,
            key_name_chars_max,
        }
    }
}

impl From<LimitsConfig> for Limits {
    fn from(limits: LimitsConfig) -> Limits {
        let LimitsConfig {
            emails_per_request_max,
            pending_invitations_max,
            active_links_max,
            message_chars_max,
            key_name_chars_max,
        } = limits;
        Limits {
            emails_per_request_max,
            pending_invitations_max,
            active_links_max,
            message_chars_max,
            key_name_chars_max,
        }
    }
}

/// How long a page of a list is (DESIGN section 5): every list answers at most `items_max`
/// items, whatever `limit` asks (a bound on what one response holds and the server reads for
/// it), and `items_default` when no `limit` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct Paging {
    /// Items on a page of a list when the request names no `limit`.
    #[arg(long = "page-items-default", env = "ROSTER_PAGE_ITEMS_DEFAULT", default_value_t = defaults::PAGE_ITEMS_DEFAULT)]
    pub items_default: usize,
    /// Most items one page of a list answers, whatever `limit` asks.
    #[arg(long = "page-items-max", env = "ROSTER_PAGE_ITEMS_MAX", default_value_t = defaults::PAGE_ITEMS_MAX)]
    pub items_max: usize,
}

impl Default for Paging {
    fn default() -> Paging {
        Paging {
            items_default: defaults::PAGE_ITEMS_DEFAULT,
            items_max: defaults::PAGE_ITEMS_MAX,
        }
    }
}

/// The retry schedules of the mail worker (`delivery`) and the webhook worker (`webhook`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySchedules {
    pub delivery: Retry,
    pub webhook: Retry,
}

/// The flags of [`RetrySchedules`] as clap reads them: `--retry-*` set both schedules (the
/// flags as they have always been), and `--delivery-retry-*` and `--webhook-retry-*` one of
/// them, over the shared value. Not kept: [`RetrySchedules`] implements clap's traits through it,
/// so that what the server reads is the two schedules and nothing else.
#[derive(clap::Args)]
#[command(next_help_heading = "Mail and webhooks")]
struct RetryFlags {
    /// First wait before retrying a mail or a webhook, in milliseconds; it doubles each time.
    #[arg(long, env = "ROSTER_RETRY_BACKOFF_MS", default_value_t = Retry::DEFAULT.initial_ms)]
    retry_backoff_ms: u64,
    /// Longest wait between retries, in milliseconds.
    #[arg(long, env = "ROSTER_RETRY_BACKOFF_MAX_MS", default_value_t = Retry::DEFAULT.max_ms)]
    retry_backoff_max_ms: u64,
    /// Attempts at one mail or one webhook delivery before giving up.
    #[arg(long, env = "ROSTER_RETRY_ATTEMPTS_MAX", default_value_t = Retry::DEFAULT.attempts_max)]
    retry_attempts_max: u32,
    /// `--retry-backoff-ms` for mails only.
    #[arg(long, env = "ROSTER_DELIVERY_RETRY_BACKOFF_MS", value_name = "MS")]
    delivery_retry_backoff_ms: Option<u64>,
    /// `--retry-backoff-max-ms` for mails only.
    #[arg(long, env = "ROSTER_DELIVERY_RETRY_BACKOFF_MAX_MS", value_name = "MS")]
    delivery_retry_backoff_max_ms: Option<u64>,
    /// `--retry-attempts-max` for mails only.
    #[arg(
        long,
        env = "ROSTER_DELIVERY_RETRY_ATTEMPTS_MAX",
        value_name = "ATTEMPTS"
    )]
    delivery_retry_attempts_max: Option<u32>,
    /// `--retry-backoff-ms` for webhooks only.
    #[arg(long, env = "ROSTER_WEBHOOK_RETRY_BACKOFF_MS", value_name = "MS")]
    webhook_retry_backoff_ms: Option<u64>,
    /// `--retry-backoff-max-ms` for webhooks only.
    #[arg(long, env = "ROSTER_WEBHOOK_RETRY_BACKOFF_MAX_MS", value_name = "MS")]
    webhook_retry_backoff_max_ms: Option<u64>,
    /// `--retry-attempts-max` for webhooks only.
    #[arg(
        long,
        env = "ROSTER_WEBHOOK_RETRY_ATTEMPTS_MAX",
        value_name = "ATTEMPTS"
    )]
    webhook_retry_attempts_max: Option<u32>,
}

impl From<RetryFlags> for RetrySchedules {
    fn from(flags: RetryFlags) -> RetrySchedules {
        let shared = Retry {
            initial_ms: flags.retry_backoff_ms,
            max_ms: flags.retry_backoff_max_ms,
            attempts_max: flags.retry_attempts_max,
        };
        RetrySchedules {
            delivery: Retry {
                initial_ms: flags.delivery_retry_backoff_ms.unwrap_or(shared.initial_ms),
                max_ms: flags.delivery_retry_backoff_max_ms.unwrap_or(shared.max_ms),
                attempts_max: flags
                    .delivery_retry_attempts_max
                    .unwrap_or(shared.attempts_max),
            },
            webhook: Retry {
                initial_ms: flags.webhook_retry_backoff_ms.unwrap_or(shared.initial_ms),
                max_ms: flags.webhook_retry_backoff_max_ms.unwrap_or(shared.max_ms),
                attempts_max: flags
                    .webhook_retry_attempts_max
                    .unwrap_or(shared.attempts_max),
            },
        }
    }
}

impl clap::FromArgMatches for RetrySchedules {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<RetrySchedules, clap::Error> {
        RetryFlags::from_arg_matches(matches).map(RetrySchedules::from)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = RetrySchedules::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for RetrySchedules {
    fn augment_args(command: clap::Command) -> clap::Command {
        RetryFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        RetryFlags::augment_args_for_update(command)
    }
}

/// Which seed products' own routes are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    pub teable: bool,
    pub calcom: bool,
    pub onehub: bool,
    pub onedata: bool,
}

impl Families {
    pub const ALL: Families = Families {
        teable: true,
        calcom: true,
        onehub: true,
        onedata: true,
    };

    pub const NONE: Families = Families {
        teable: false,
        calcom: false,
        onehub: false,
        onedata: false,
    };

    /// Each family's name on the command line, and whether it is on.
    fn named(&self) -> [(&'static str, bool); 4] {
        [
            ("teable", self.teable),
            ("calcom", self.calcom),
            ("onehub", self.onehub),
            ("onedata", self.onedata),
        ]
    }
}

impl Default for Families {
    fn default() -> Families {
        defaults::FAMILIES
    }
}

/// The list `--families` takes: the families on, comma-separated, or `none`.
impl fmt::Display for Families {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on: Vec<&str> = self
            .named()
            .into_iter()
            .filter_map(|(name, on)| on.then_some(name))
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

impl FromStr for Families {
    type Err = String;

    fn from_str(list: &str) -> Result<Families, String> {
        if list.trim() == "none" {
            return Ok(Families::NONE);
        }
        let mut families = Families::NONE;
        for name in list.split(',').map(str::trim) {
            let family = match name {
                "teable" => &mut families.teable,
                "calcom" => &mut families.calcom,
                "onehub" => &mut families.onehub,
                "onedata" => &mut families.onedata,
                other => {
                    return Err(format!(
                        "no route family `{other}` (known: teable, calcom, onehub, onedata; \
                         or none)"
                    ))
                }
            };
            *family = true;
        }
        Ok(families)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    /// `ServerConfig`'s flags under a command that defines the globals `--data` and `--store`.
    fn command_with_variables() -> clap::Command {
        let data = clap::Arg::new("data")
            .long("data")
            .global(true)
            .value_parser(clap::value_parser!(PathBuf))
            .default_value("./roster-data");
        let store = clap::Arg::new("store")
            .long("store")
            .global(true)
            .value_parser(clap::value_parser!(StoreChoice))
            .default_value("sled");
        ServerConfig::augment_args(clap::Command::new("serve").arg(data).arg(store))
    }

    /// The same reading no variable: the caller's environment must not decide what a test
    /// sees.
    fn command() -> clap::Command {
        command_with_variables().mut_args(|arg| arg.env(None::<&str>))
    }

    fn parse(args: &[&str]) -> ServerConfig {
        let matches = command()
            .try_get_matches_from(std::iter::once("serve").chain(args.iter().copied()))
            .expect("parses");
        ServerConfig::from_arg_matches(&matches).expect("reads")
    }

    #[test]
    fn no_flag_gives_what_new_gives() {
        let mut parsed = parse(&["--data", "/srv/roster"]);
        assert_eq!(parsed.public_url, "", "left for serve's listen address");
        parsed.public_url = public_url_for(defaults::LISTEN);
        let new = ServerConfig::new(PathBuf::from("/srv/roster"));
        assert_eq!(format!("{parsed:?}"), format!("{new:?}"));
    }

    #[test]
    fn shared_retry_flags_set_both_schedules_and_each_worker_its_own() {
        let parsed = parse(&["--retry-backoff-ms", "5", "--retry-attempts-max", "3"]);
        let shared = Retry {
            initial_ms: 5,
            max_ms: Retry::DEFAULT.max_ms,
            attempts_max: 3,
        };
        assert_eq!(parsed.retry.delivery, shared);
        assert_eq!(parsed.retry.webhook, shared);

        let parsed = parse(&[
            "--retry-backoff-ms",
            "5",
            "--webhook-retry-backoff-ms",
            "7",
            "--delivery-retry-attempts-max",
            "2",
        ]);
        assert_eq!(parsed.retry.delivery.initial_ms, 5);
        assert_eq!(parsed.retry.delivery.attempts_max, 2);
        assert_eq!(parsed.retry.webhook.initial_ms, 7);
        assert_eq!(
            parsed.retry.webhook.attempts_max,
            Retry::DEFAULT.attempts_max
        );
    }

    #[test]
    fn families_are_a_list_or_none() {
        assert_eq!(parse(&[]).families, Families::ALL);
        let some = parse(&["--families", "teable,onedata"]).families;
        assert_eq!(
            some,
            Families {
                teable: true,
                calcom: false,
                onehub: false,
                onedata: true,
            }
        );
        assert_eq!(parse(&["--families", "none"]).families, Families::NONE);
        for families in [Families::ALL, Families::NONE, some] {
            assert_eq!(families.to_string().parse(), Ok(families));
        }
        let refused = command()
            .try_get_matches_from(["serve", "--families", "teable,jira"])
            .expect_err("refused");
        assert!(
            refused.to_string().contains("no route family `jira`"),
            "{refused}"
        );
        assert!("".parse::<Families>().is_err());
    }

    #[test]
    fn every_setting_has_a_flag_and_a_variable() {
        let command = command_with_variables();
        let flags: Vec<_> = command
            .get_arguments()
            .filter(|arg| arg.get_id() != "data" && arg.get_id() != "store")
            .collect();
        assert!(flags.len() > 30, "{flags:?}");
        for arg in flags {
            let long = arg.get_long().expect("a long flag");
            let variable = arg.get_env().expect("a variable");
            assert_eq!(
                variable.to_str(),
                Some(format!("ROSTER_{}", long.replace('-', "_").to_uppercase()).as_str()),
                "--{long}"
            );
        }
    }

    #[test]
    fn limits_convert_both_ways_unchanged() {
        assert_eq!(Limits::from(LimitsConfig::default()), Limits::DEFAULT);
        let limits = LimitsConfig {
            emails_per_request_max: 1,
            pending_invitations_max: 2,
            active_links_max: 3,
            message_chars_max: 4,
            key_name_chars_max: 5,
        };
        assert_eq!(LimitsConfig::from(Limits::from(limits)), limits);
    }
}
