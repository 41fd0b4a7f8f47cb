//! `roster bench accept`: `POST /v1/invitations/accept` over real HTTP with 64 connections,
//! beside the same server's `GET /healthz` measured in the same run, in two shapes: many
//! users joining through one link of one resource (a hot stream), and users joining many
//! resources.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use roster_server::http::ServerConfig;

use crate::bench::BenchError;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub requests: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AcceptFigure {
    /// `one link` (a hot stream) or `many resources`.
    pub shape: String,
    pub resources: usize,
    pub connections: usize,
    pub accept: Throughput,
    pub healthz: Throughput,
}

/// Runs both shapes on a fresh server in `scratch`, `seconds` per measurement.
pub fn accept_scenario(
    scratch: &std::path::Path,
    connections: usize,
    seconds: f64,
) -> Result<Vec<AcceptFigure>, BenchError> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut figures = Vec::new();
        for (shape, resources) in [("one link", 1usize), ("many resources", 1000)] {
            figures.push(
                run_shape(
                    scratch,
                    shape,
                    resources,
                    connections,
                    Duration::from_secs_f64(seconds),
                )
                .await?,
            );
        }
        Ok(figures)
    })
}

async fn run_shape(
    scratch: &std::path::Path,
    shape: &str,
    resources: usize,
    connections: usize,
    duration: Duration,
) -> Result<AcceptFigure, BenchError> {
    let dir = tempfile::tempdir_in(scratch)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.admin_token = Some(ADMIN_TOKEN.into());
    config.connections_max = connections.max(1) * 2;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(roster_server::serve(listener, config, async move {
        let _ = stopped.await;
    }));
    let setup = reqwest::Client::new();
    // Ready when it answers.
    while setup.get(format!("{base}/healthz")).send().await.is_err() {
        tokio::task::yield_now().await;
    }
    let mut codes = Vec::with_capacity(resources);
    for r in 0..resources {
        let resource = format!("space/bench-{r}");
        let registered = setup
            .post(format!("{base}/v1/resources"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"resource": resource, "owner": "owner"}))
            .send()
            .await?;
        if !registered.status().is_success() {
            return Err(BenchError::Register {
                resource,
                status: registered.status(),
            });
        }
        let link: serde_json::Value = setup
            .post(format!("{base}/v1/resources/{resource}/invite-links"))
            .bearer_auth(ADMIN_TOKEN)
            .header("X-Roster-Actor", "owner")
            .json(&json!({"role": "editor"}))
            .send()
            .await?
            .json()
            .await?;
        codes.push(
            link["code"]
                .as_str()
                .ok_or(BenchError::LinkWithoutCode)?
                .to_string(),
        );
    }
    let codes = Arc::new(codes);
    let healthz = drive(&base, connections, duration, |_, _| None).await?;
    let accept = drive(&base, connections, duration, move |connection, n| {
        let code = &codes[(n * 7919 + connection) % codes.len()];
        Some((format!("u{connection}-{n}"), json!({ "code": code })))
    })
    .await?;
    let _ = stop.send(());
    server.await?.map_err(BenchError::Server)?;
    Ok(AcceptFigure {
        shape: shape.into(),
        resources,
        connections,
        accept,
        healthz,
    })
}

/// `connections` clients, each on its own keep-alive connection, sending requests back to
/// back for `duration`: `GET /healthz` when `body` gives nothing, else an accept as the
/// principal it names.
///
/// The client is a few lines of HTTP/1.1 over a `TcpStream` rather than a full client
/// library, so that, like pgbench beside PostgreSQL, the load costs the machine little and
/// the figure is the server's.
async fn drive(
    base: &str,
    connections: usize,
    duration: Duration,
    body: impl Fn(usize, usize) -> Option<(String, serde_json::Value)> + Send + Sync + 'static,
) -> Result<Throughput, BenchError> {
    let address = base.trim_start_matches("http://").to_string();
    let body = Arc::new(body);
    let done = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for connection in 0..connections.max(1) {
        let (address, body, done, errors) = (
            address.clone(),
            Arc::clone(&body),
            Arc::clone(&done),
            Arc::clone(&errors),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let Ok(stream) = tokio::net::TcpStream::connect(&address).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            };
            let _ = stream.set_nodelay(true);
            let mut stream = tokio::io::BufStream::new(stream);
            let mut n = 0;
            while !done.load(Ordering::Relaxed) {
                let request = match body(connection, n) {
                    None => format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n"),
                    Some((principal, payload)) => {
                        let payload = payload.to_string();
                        format!(
                            "POST /v1/invitations/accept HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
                             X-Roster-Actor: {principal}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{payload}",
                            payload.len()
                        )
                    }
                };
                let sent = Instant::now();
                match exchange(&mut stream, request.as_bytes()).await {
                    Ok(status) if (200..300).contains(&status) => latencies.push(sent.elapsed()),
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                }
                n += 1;
            }
            latencies
        }));
    }
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let at = |fraction: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let last = latencies.len() - 1;
        let index = (0..=last)
            .find(|i| count(*i) >= count(last) * fraction)
            .unwrap_or(last);
        latencies[index].as_secs_f64() * 1000.0
    };
    let requests = u64::try_from(latencies.len()).unwrap_or(u64::MAX);
    Ok(Throughput {
        requests,
        per_s: count(latencies.len()) / elapsed,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        errors: errors.load(Ordering::Relaxed),
    })
}

/// Writes one request and reads its response (status line, headers, a `Content-Length`
/// body); returns the status.
async fn exchange(
    stream: &mut tokio::io::BufStream<tokio::net::TcpStream>,
    request: &[u8],
) -> std::io::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}

fn count(n: usize) -> f64 {
    crate::bench::to_f64(u64::try_from(n).unwrap_or(u64::MAX))
}

pub fn accept_table(figures: &[AcceptFigure]) -> String {
    let mut out = String::from(
        "accept over HTTP (sync durability)\n\
         shape           connections  accepts/s  p50 ms  p99 ms  errors  healthz/s  ratio\n",
    );
    for f in figures {
        out.push_str(&format!(
            "{:<15} {:>11}  {:>9.0}  {:>6.2}  {:>6.2}  {:>6}  {:>9.0}  {:>5.2}\n",
            f.shape,
            f.connections,
            f.accept.per_s,
            f.accept.p50_ms,
            f.accept.p99_ms,
            f.accept.errors,
            f.healthz.per_s,
            f.accept.per_s / f.healthz.per_s
        ));
    }
    out
}
