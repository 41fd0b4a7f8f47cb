//! Limits on connections over raw TCP: the cap on open connections (past it, a new connection
//! waits in the kernel's accept queue until one closes) and the request time limit (a request
//! that takes longer, here one whose body trickles in, is answered 503 `timeout`).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// A deadline that turns a hang into a failure; no assertion depends on it.
const PATIENCE: Duration = Duration::from_secs(60);

/// `host:port` of the server.
fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
}

/// A raw HTTP/1.1 response: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (headers, then a `Content-Length` body) from `stream`.
async fn read_answer(stream: &mut (impl AsyncRead + Unpin)) -> Answer {
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            let n = stream.read(&mut chunk).await.expect("reads the answer");
            assert!(n > 0, "the connection closed before an answer");
            bytes.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|line| line.split(' ').nth(1))
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a content-length");
        let mut body = bytes[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream.read(&mut chunk).await.expect("reads the body");
            assert!(n > 0, "the connection closed inside the body");
            body.extend_from_slice(&chunk[..n]);
        }
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("an answer within a minute")
}

/// A GET on a connection of its own that stays open afterwards (HTTP/1.1 keep-alive).
async fn open_and_get(address: &str, path: &str) -> (TcpStream, Answer) {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(get(path).as_bytes()).await.expect("sends");
    let answer = read_answer(&mut stream).await;
    (stream, answer)
}

/// The server's side of its connections, from /proc/net/tcp (Linux): `queued` completed
/// the handshake and wait for the server to accept them (the listening socket's accept
/// queue, its `rx_queue`); `open` counts every socket of the server's address but the
/// listening one, accepted or queued, including those still closing.
#[derive(Debug, PartialEq, Eq)]
struct Sockets {
    queued: usize,
    open: usize,
}

fn sockets(address: &str) -> Sockets {
    let port: u16 = address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("a port");
    // 127.0.0.1 as /proc/net/tcp writes it: the address's bytes in host (little-endian) order.
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let mut found = Sockets { queued: 0, open: 0 };
    for line in table.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) != Some(&local.as_str()) {
            continue;
        }
        // State 0A is LISTEN; its rx_queue is the accept queue's length.
        if fields.get(3) == Some(&"0A") {
            found.queued = fields
                .get(4)
                .and_then(|queues| queues.split_once(':'))
                .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
                .expect("the listening socket's queues");
        } else {
            found.open += 1;
        }
    }
    found
}

/// Polls `sockets` until `done` holds, failing after a minute.
async fn until(address: &str, what: &str, done: impl Fn(&Sockets) -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = sockets(address);
        if done(&now) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {what}: {now:?}"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_connection_waits_and_is_served_once_one_closes() {
    let mut app = spawn_app_with(|c| c.connections_max = 2).await;
    let address = socket_address(&app);
    // `spawn_app` asked /healthz over a pooled connection that holds a place: close it, and
    // wait until the server has closed its side too, so both places are free.
    app.client = reqwest::Client::new();
    until(&address, "closed the pooled connections", |s| s.open == 0).await;
    let (mut first, answer) = open_and_get(&address, "/healthz").await;
    assert_eq!(answer.status, 200);
    let (mut second, answer) = open_and_get(&address, "/healthz").await;
    assert_eq!(answer.status, 200);
    // The third connection completes its handshake (the kernel's backlog takes it) but the
    // server does not accept it: its request waits, unanswered.
    let mut third = TcpStream::connect(&address).await.expect("connects");
    third
        .write_all(get("/v1/resources/space/held").as_bytes())
        .await
        .expect("sends");
    until(&address, "queued the third", |s| s.queued == 1).await;
    // The two open connections are still served, and the third still waits.
    for stream in [&mut first, &mut second] {
        stream
            .write_all(get("/healthz").as_bytes())
            .await
            .expect("sends");
        assert_eq!(read_answer(stream).await.status, 200);
    }
    assert_eq!(sockets(&address).queued, 1, "the third still waits");
    let mut nothing = [0u8; 1];
    assert!(
        matches!(third.try_read(&mut nothing), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no answer on a connection the server has not accepted"
    );
    // One closes: the third is accepted and its request answered.
    drop(first);
    let answer = read_answer(&mut third).await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body.contains("\"not_found\""), "{}", answer.body);
    assert_eq!(sockets(&address).queued, 0, "the third was accepted");
    // And the cap holds again: a fourth waits until another closes.
    let mut fourth = TcpStream::connect(&address).await.expect("connects");
    fourth
        .write_all(get("/healthz").as_bytes())
        .await
        .expect("sends");
    until(&address, "queued the fourth", |s| s.queued == 1).await;
    drop(second);
    assert_eq!(read_answer(&mut fourth).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_trickles_in_past_the_time_limit_is_answered_503_timeout() {
    let app = spawn_app_with(|c| c.request_timeout_ms = 300).await;
    let address = socket_address(&app);
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    // A body announced at 1,000 bytes (well under the body limit) that arrives one byte at
    // a time: the handler waits for it inside the time limit.
    let head = format!(
        "POST /v1/resources HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"resource\":"
    );
    stream.write_all(head.as_bytes()).await.expect("sends");
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        // The pace of a slow client, not a synchronisation: the test waits for the answer.
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        loop {
            pace.tick().await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    });
    let answer = read_answer(&mut reader).await;
    trickle.abort();
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert!(answer.header("x-roster-position").is_some());
    let problem: serde_json::Value = serde_json::from_str(&answer.body).expect("problem+json");
    assert_eq!(problem["code"], "timeout", "{problem}");
    assert_eq!(problem["status"], 503);
    // Nothing was registered, and the server answers others as before.
    let response = app.get("/v1/resources/space/never", &As::Admin).await;
    assert_eq!(response.status(), 404);
}
