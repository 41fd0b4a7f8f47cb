//! `roster serve` through the library, as a child process the delivery crash test can kill.
//!
//! Usage: `crash-serve DATA_DIR LISTEN SMTP_URL` (`-` for no mail). The admin token is
//! `ROSTER_ADMIN_TOKEN`; with `ROSTER_STORE` (a PostgreSQL URL) and `ROSTER_SECRET` it is one
//! node of many on that store.
//! It prints `listening ADDRESS` when it accepts requests.

use roster_server::http::ServerConfig;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(listen), Some(smtp_url)) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: crash-serve DATA_DIR LISTEN SMTP_URL");
        std::process::exit(2);
    };
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("crash-serve: {error}");
            std::process::exit(1);
        }
    };
    let address = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut config = ServerConfig::new(dir.into());
    config.admin_token = std::env::var("ROSTER_ADMIN_TOKEN").ok();
    config.secret = std::env::var("ROSTER_SECRET").ok();
    if let Ok(store) = std::env::var("ROSTER_STORE") {
        config.store = store.parse().unwrap_or_else(|error| {
            eprintln!("crash-serve: ROSTER_STORE: {error}");
            std::process::exit(2);
        });
    }
    if smtp_url != "-" {
        config.smtp_url = Some(smtp_url);
        config.mail_from = Some("Roster <invites@roster.example>".into());
    }
    config.retry.delivery = roster_server::workers::Retry {
        initial_ms: 20,
        max_ms: 200,
        attempts_max: 50,
    };
    println!("listening {address}");
    if let Err(error) = roster_server::serve(listener, config, std::future::pending()).await {
        eprintln!("crash-serve: {error}");
        std::process::exit(1);
    }
}
