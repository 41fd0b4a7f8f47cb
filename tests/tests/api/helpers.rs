//! `spawn_app()`: the real server on port 0 with a temporary data directory, and typed
//! request helpers. Logs are captured (for the secrets test) and shown only with `TEST_LOG`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use reqwest::{Method, Response, StatusCode};
use roster_server::http::ServerConfig;
use roster_tests::poll;
use serde_json::{json, Value};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Every log line the servers of this test binary wrote.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(
        &log_buffer()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        log_buffer()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        if std::env::var_os("TEST_LOG").is_some() {
            std::io::stderr().write_all(bytes)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,sled=warn,hyper=warn",
            ))
            .try_init();
    });
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub dir: PathBuf,
    _temp: Option<Arc<tempfile::TempDir>>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<Result<(), roster_server::ServeError>>>,
}

/// The server on a fresh temporary data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// The same, with the configuration changed first.
pub async fn spawn_app_with(tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
    let temp = Arc::new(tempfile::tempdir().expect("temporary directory"));
    let mut app = spawn_app_in(temp.path(), tweak).await;
    app._temp = Some(temp);
    app
}

/// The server on an existing data directory (to restart one).
pub async fn spawn_app_in(dir: &Path, tweak: impl FnOnce(&mut ServerConfig)) -> TestApp {
    init_logs();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds port 0");
    let address = format!("http://{}", listener.local_addr().expect("address"));
    let mut config = ServerConfig::new(dir.to_path_buf());
    config.public_url = "https://roster.example".into();
    config.admin_token = Some(ADMIN_TOKEN.into());
    tweak(&mut config);
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(roster_server::serve(listener, config, async move {
        let _ = stop.await;
    }));
    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        dir: dir.to_path_buf(),
        _temp: None,
        shutdown: Some(shutdown),
        server: Some(server),
    };
    // Ready when it answers; `serve` opens the engine before it accepts.
    let stopped = poll::until("the server answered /healthz", || async {
        if app.server.as_ref().is_some_and(|s| s.is_finished()) {
            return Ok(true);
        }
        match app
            .client
            .get(format!("{}/healthz", app.address))
            .send()
            .await
        {
            Ok(response) if response.status() == StatusCode::OK => Ok(false),
            Ok(response) => Err(response.status().to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    if stopped {
        let mut app = app;
        let outcome = app.server.take().expect("a server").await;
        panic!("the server stopped before it answered: {outcome:?}");
    }
    app
}

/// Who sends a request.
#[derive(Debug, Clone)]
pub enum As {
    Nobody,
    Admin,
    /// The admin token acting for a principal.
    AdminFor(String),
    Key(String),
    /// A service key acting for a principal (and optionally its verified email).
    KeyFor(String, String, Option<String>),
    Raw(String),
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        who: &As,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path));
        request = match who {
            As::Nobody => request,
            As::Admin => request.bearer_auth(ADMIN_TOKEN),
            As::AdminFor(p) => request.bearer_auth(ADMIN_TOKEN).header("X-Roster-Actor", p),
            As::Key(key) => request.bearer_auth(key),
            As::KeyFor(key, p, email) => {
                let request = request.bearer_auth(key).header("X-Roster-Actor", p);
                match email {
                    Some(email) => request.header("X-Roster-Actor-Email", email),
                    None => request,
                }
            }
            As::Raw(value) => request.header("Authorization", value),
        };
        if let Some(body) = body {
            request = request.json(&body);
        }
        request
            .send()
            .await
            .expect("the request reaches the server")
    }

    pub async fn get(&self, path: &str, who: &As) -> Response {
        self.send(Method::GET, path, who, None).await
    }

    pub async fn post(&self, path: &str, who: &As, body: Value) -> Response {
        self.send(Method::POST, path, who, Some(body)).await
    }

    pub async fn put(&self, path: &str, who: &As, body: Value) -> Response {
        self.send(Method::PUT, path, who, Some(body)).await
    }

    pub async fn patch(&self, path: &str, who: &As, body: Value) -> Response {
        self.send(Method::PATCH, path, who, Some(body)).await
    }

    pub async fn delete(&self, path: &str, who: &As) -> Response {
        self.send(Method::DELETE, path, who, None).await
    }

    /// A GET as the admin that must answer 200, as JSON.
    pub async fn read(&self, path: &str) -> Value {
        let response = self.get(path, &As::Admin).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        json_of(response).await
    }

    /// The log's last position, as `/healthz` reports it.
    pub async fn head(&self) -> u64 {
        self.read("/healthz").await["position"]
            .as_u64()
            .expect("a position")
    }

    /// Issues a key with the admin token and returns its id and the key.
    pub async fn key_with_id(
        &self,
        principal: &str,
        scopes: &[&str],
        act_as: bool,
        email: Option<&str>,
    ) -> (String, String) {
        let body =
            json!({ "principal": principal, "scopes": scopes, "act_as": act_as, "email": email });
        let response = self.post("/v1/api-keys", &As::Admin, body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let issued = json_of(response).await;
        (
            issued["id"].as_str().expect("an id").to_string(),
            issued["key"].as_str().expect("a key").to_string(),
        )
    }

    /// Creates an invite link on `resource` (a `kind/id`) and returns it.
    pub async fn link(&self, resource: &str, who: &As, body: Value) -> Value {
        let response = self
            .post(&format!("/v1/resources/{resource}/invite-links"), who, body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "creating a link on {resource}"
        );
        json_of(response).await
    }

    /// Invites `emails` to `resource` and returns the per-email outcome.
    pub async fn invite(&self, resource: &str, who: &As, body: Value) -> Value {
        let response = self
            .post(&format!("/v1/resources/{resource}/invitations"), who, body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "inviting to {resource}"
        );
        json_of(response).await
    }

    /// Invites one email and returns its invitation (with its code).
    pub async fn invite_one(
        &self,
        resource: &str,
        who: &As,
        email: &str,
        role: Option<&str>,
    ) -> Value {
        let outcome = self
            .invite(resource, who, json!({ "emails": [email], "role": role }))
            .await;
        outcome["invited"][0]["invitation"].clone()
    }

    /// Accepts `code` as `who` and returns the response.
    pub async fn accept(&self, code: &str, who: &As) -> Response {
        self.post("/v1/invitations/accept", who, json!({ "code": code }))
            .await
    }

    /// The members of `resource` now, as `(principal, role)` pairs in order.
    pub async fn members(&self, resource: &str) -> Vec<(String, String)> {
        let list = self
            .read(&format!("/v1/resources/{resource}/members"))
            .await;
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|m| {
                (
                    m["principal"].as_str().expect("principal").to_string(),
                    m["role"].as_str().expect("role").to_string(),
                )
            })
            .collect()
    }

    /// Makes `principal` a member of `resource` at `role` whose email the server knows (its
    /// key's), so an invitation to that email finds a member already.
    pub async fn member_with_email(
        &self,
        resource: &str,
        principal: &str,
        email: &str,
        role: &str,
    ) {
        self.key(principal, &["read"], false, Some(email)).await;
        let response = self
            .put(
                &format!("/v1/resources/{resource}/members/{principal}"),
                &As::Admin,
                json!({ "role": role }),
            )
            .await;
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Issues a key with the admin token and returns it.
    pub async fn key(
        &self,
        principal: &str,
        scopes: &[&str],
        act_as: bool,
        email: Option<&str>,
    ) -> String {
        let body =
            json!({ "principal": principal, "scopes": scopes, "act_as": act_as, "email": email });
        let response = self.post("/v1/api-keys", &As::Admin, body).await;
        assert_eq!(response.status(), StatusCode::CREATED);
        json_of(response).await["key"]
            .as_str()
            .expect("a key")
            .to_string()
    }

    /// Registers `resource` owned by `owner`.
    /// Gives each `(principal, role)` its role on `resource`, as the admin; each must be 200.
    pub async fn grant(&self, resource: &str, roles: &[(&str, &str)]) {
        for (principal, role) in roles {
            let response = self
                .put(
                    &format!("/v1/resources/{resource}/members/{principal}"),
                    &As::Admin,
                    json!({ "role": role }),
                )
                .await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "granting {principal} {role} on {resource}"
            );
        }
    }

    /// Registers `resource` owned by `owner`; the position the write answered.
    pub async fn register(&self, resource: &str, owner: &str) -> u64 {
        let response = self
            .post(
                "/v1/resources",
                &As::Admin,
                json!({ "resource": resource, "owner": owner }),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "registering {resource}"
        );
        position(&response)
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task")
                .expect("the server stopped cleanly");
        }
    }
}

/// The `X-Roster-Position` a response carries.
/// Awaits every future, spawned so they run at once; their outputs in order.
pub async fn join_all<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("the task finished"));
    }
    out
}

pub fn position(response: &Response) -> u64 {
    response
        .headers()
        .get("x-roster-position")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("an X-Roster-Position header")
}

/// `(principal, role)` pairs, for comparing member lists.
pub fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

/// The string at `pointer` (a JSON pointer) in `value`.
pub fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
        .to_string()
}

pub async fn json_of(response: Response) -> Value {
    let text = response.text().await.expect("a body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts a problem+json error with this status and code.
pub async fn assert_problem(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_string());
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body = json_of(response).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// Every route of DESIGN section 5, as `(method, path template)`.
pub const ROUTES: [(&str, &str); 35] = [
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/api-keys"),
    ("GET", "/v1/api-keys"),
    ("DELETE", "/v1/api-keys/{id}"),
    ("PUT", "/v1/role-schemas/{kind}"),
    ("GET", "/v1/role-schemas/{kind}"),
    ("POST", "/v1/resources"),
    ("GET", "/v1/resources"),
    ("GET", "/v1/resources/{kind}/{id}"),
    ("POST", "/v1/resources/{kind}/{id}/invite-links"),
    ("GET", "/v1/resources/{kind}/{id}/invite-links"),
    ("GET", "/v1/resources/{kind}/{id}/invite-links/{link_id}"),
    ("PATCH", "/v1/resources/{kind}/{id}/invite-links/{link_id}"),
    (
        "POST",
        "/v1/resources/{kind}/{id}/invite-links/{link_id}/rotate",
    ),
    ("DELETE", "/v1/resources/{kind}/{id}/invite-links/{link_id}"),
    ("POST", "/v1/resources/{kind}/{id}/invitations"),
    ("GET", "/v1/resources/{kind}/{id}/invitations"),
    (
        "POST",
        "/v1/resources/{kind}/{id}/invitations/{invitation_id}/resend",
    ),
    (
        "GET",
        "/v1/resources/{kind}/{id}/invitations/{invitation_id}",
    ),
    (
        "DELETE",
        "/v1/resources/{kind}/{id}/invitations/{invitation_id}",
    ),
    ("POST", "/v1/invitations/preview"),
    ("POST", "/v1/invitations/accept"),
    ("POST", "/v1/invitations/{invitation_id}/accept"),
    ("POST", "/v1/invitations/decline"),
    ("GET", "/v1/resources/{kind}/{id}/members"),
    ("PUT", "/v1/resources/{kind}/{id}/members/{principal}"),
    ("DELETE", "/v1/resources/{kind}/{id}/members/{principal}"),
    ("GET", "/v1/principals/{principal}/memberships"),
    ("GET", "/v1/invitations"),
    ("GET", "/v1/check"),
    ("GET", "/v1/resources/{kind}/{id}/history"),
    ("GET", "/v1/principals/{principal}/history"),
    ("GET", "/v1/events"),
];

/// A route template with its parameters filled in for `space/s`, link and invitation 1 and
/// principal `alice`.
pub fn concrete(template: &str) -> String {
    template
        .replace("{kind}", "space")
        .replace("{id}/", "s/")
        .replace("{link_id}", "1")
        .replace("{invitation_id}", "1")
        .replace("{principal}", "alice")
        .replace("api-keys/{id}", "api-keys/key_01hzzzzzzzzzzzzzzzzzzzzzzz")
        .replace("{id}", "s")
}

pub fn method(name: &str) -> Method {
    Method::from_bytes(name.as_bytes()).expect("a method")
}

/// The SMTP server process, and the messages it has printed.
pub struct Sink {
    child: std::process::Child,
    address: String,
    messages: std::sync::mpsc::Receiver<Value>,
}

impl Sink {
    pub fn start(address: &str) -> Sink {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_smtp-sink"))
            .arg(address)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the SMTP server starts");
        let mut lines = std::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = lines.next().expect("a first line").expect("text");
        let address = first
            .strip_prefix("listening ")
            .expect("it says where it listens")
            .to_string();
        let (sender, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(message) = serde_json::from_str::<Value>(&line) {
                    if sender.send(message).is_err() {
                        return;
                    }
                }
            }
        });
        Sink {
            child,
            address,
            messages,
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://{}", self.address)
    }

    /// The next message, waiting for it.
    pub async fn next(&self) -> Value {
        poll::until("a message arrived", || async {
            match self.messages.try_recv() {
                Ok(message) => Ok(message),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("the SMTP server stopped")
                }
                Err(error @ std::sync::mpsc::TryRecvError::Empty) => Err(error),
            }
        })
        .await
    }

    pub fn received_so_far(&self) -> Vec<Value> {
        self.messages.try_iter().collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
