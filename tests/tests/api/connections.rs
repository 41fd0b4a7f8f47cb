//! Limits on connections over raw TCP: the cap on open connections (past it, a new connection
//! waits in the kernel's accept queue until one closes), the request time limit (a request
//! that takes longer, here one whose body trickles in, is answered 503 `timeout`), and the
//! header and idle limits (a connection that does not complete a request's head in time, or
//! waits too long for its next request, is closed, freeing its place under the cap).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use roster_tests::poll::{self, PATIENCE};

use crate::helpers::*;

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

/// Waits until the server's sockets on `address` are as `done` wants them.
async fn until(address: &str, what: &str, done: impl Fn(&Sockets) -> bool) {
    poll::until(what, || async {
        let now = sockets(address);
        if done(&now) {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await
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

/// Reads until the server closes `stream` (end of stream, or a reset), failing after a minute;
/// returns what arrived before.
async fn until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let read = async {
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return bytes,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the server closed the connection within a minute")
}

/// Longer than any test waits: a limit set to it never closes a connection in these tests.
const NEVER_MS: u64 = 600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_half_a_head_and_then_nothing_is_closed_after_the_header_limit() {
    // The idle limit cannot be what closes it.
    let app = spawn_app_with(|c| {
        c.header_timeout_ms = 1_000;
        c.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let address = socket_address(&app);
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: ros")
        .await
        .expect("sends");
    let answered = until_closed(&mut stream).await;
    assert!(
        answered.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&answered)
    );
    // The server goes on serving.
    let response = app.get("/healthz", &As::Admin).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_trickles_in_is_closed_after_the_header_limit_however_often_bytes_come() {
    let app = spawn_app_with(|c| {
        c.header_timeout_ms = 1_000;
        c.idle_timeout_ms = NEVER_MS;
    })
    .await;
    let address = socket_address(&app);
    let stream = TcpStream::connect(&address).await.expect("connects");
    let (mut reader, mut writer) = stream.into_split();
    // Slowloris: a head that never ends, one byte at a time, each well inside the limit.
    let trickle = tokio::spawn(async move {
        if writer
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: roster\r\nX-Slow: ")
            .await
            .is_err()
        {
            return;
        }
        // The pace of a slow client, not a synchronisation: the test waits for the close.
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        loop {
            pace.tick().await;
            if writer.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    let answered = until_closed(&mut reader).await;
    trickle.abort();
    assert!(
        answered.is_empty(),
        "closed without an answer: {}",
        String::from_utf8_lossy(&answered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_limit() {
    // The header limit cannot be what closes it.
    let app = spawn_app_with(|c| {
        c.header_timeout_ms = NEVER_MS;
        c.idle_timeout_ms = 1_000;
    })
    .await;
    let address = socket_address(&app);
    // Kept alive: a second request on the same connection is answered.
    let (mut stream, answer) = open_and_get(&address, "/healthz").await;
    assert_eq!(answer.status, 200);
    stream
        .write_all(get("/healthz").as_bytes())
        .await
        .expect("sends");
    assert_eq!(read_answer(&mut stream).await.status, 200);
    // Then nothing more: the server closes it, having nothing left to answer.
    let answered = until_closed(&mut stream).await;
    assert!(
        answered.is_empty(),
        "nothing after the answers: {}",
        String::from_utf8_lossy(&answered)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_taking_longer_than_the_header_and_idle_limits_is_still_answered() {
    // Both limits are for a connection waiting for a request; once the head is in, only the
    // request time limit applies.
    let app = spawn_app_with(|c| {
        c.header_timeout_ms = 200;
        c.idle_timeout_ms = 200;
    })
    .await;
    let address = socket_address(&app);
    let body =
        br#"{"resource":"space/slow","owner":"alice"}                                        "#;
    let head = format!(
        "POST /v1/resources HTTP/1.1\r\nHost: roster\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    stream.write_all(head.as_bytes()).await.expect("sends");
    let (mut reader, mut writer) = stream.into_split();
    // The body's bytes come one at a time, far longer in all than either limit.
    let trickle = tokio::spawn(async move {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for byte in body {
            pace.tick().await;
            writer.write_all(&[*byte]).await.expect("sends the body");
        }
        writer
    });
    let answer = read_answer(&mut reader).await;
    let _writer = trickle.await.expect("the body was sent");
    assert_eq!(answer.status, 201, "{}", answer.body);
    let response = app.get("/v1/resources/space/slow", &As::Admin).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_holding_every_place_are_closed_and_a_waiting_client_is_then_served() {
    let mut app = spawn_app_with(|c| {
        c.connections_max = 2;
        c.header_timeout_ms = 1_000;
        c.idle_timeout_ms = 1_000;
    })
    .await;
    let address = socket_address(&app);
    // As in the cap's test: let go of the pooled connection of `spawn_app`.
    app.client = reqwest::Client::new();
    until(&address, "closed the pooled connections", |s| s.open == 0).await;
    // Two clients connect and say nothing; the kernel's queue is first in, first out, so
    // they are accepted first and hold both places.
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&address).await.expect("connects"));
    }
    // A third sends its request; it can only be accepted once a silent one is gone.
    let mut third = TcpStream::connect(&address).await.expect("connects");
    third
        .write_all(get("/healthz").as_bytes())
        .await
        .expect("sends");
    let answer = read_answer(&mut third).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for mut stream in silent {
        let answered = until_closed(&mut stream).await;
        assert!(answered.is_empty(), "a silent client gets no answer");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_none_of_its_answers_is_closed_and_its_place_freed() {
    let mut app = spawn_app_with(|c| {
        c.connections_max = 1;
        c.header_timeout_ms = NEVER_MS;
        c.idle_timeout_ms = 1_000;
    })
    .await;
    let document = app.get("/openapi.json", &As::Nobody).await;
    assert_eq!(document.status(), 200);
    let document_bytes = document.bytes().await.expect("reads").len();
    let address = socket_address(&app);
    app.client = reqwest::Client::new();
    until(&address, "closed the pooled connections", |s| s.open == 0).await;
    // Asks for far more than the socket buffers hold at once, then reads nothing: the
    // server's writes wait on it, with a request in flight all along.
    let asked = 256;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(4096)
        .expect("a small receive buffer");
    let mut greedy = socket
        .connect(address.parse().expect("an address"))
        .await
        .expect("connects");
    greedy
        .write_all(get("/openapi.json").repeat(asked).as_bytes())
        .await
        .expect("sends");
    // The only place is the greedy client's: the next one is served once the server lets
    // the greedy one go.
    let mut next = TcpStream::connect(&address).await.expect("connects");
    next.write_all(get("/healthz").as_bytes())
        .await
        .expect("sends");
    let answer = read_answer(&mut next).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let taken = until_closed(&mut greedy).await;
    assert!(
        taken.len() < asked * document_bytes,
        "the greedy client got {} bytes of {} asked",
        taken.len(),
        asked * document_bytes
    );
}
