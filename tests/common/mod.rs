//! `TestApp`: the real server in-process on 127.0.0.1:0 with a temporary SQLite file, and
//! helpers that return `(StatusCode, Value)`; `sse()` reads a stream with a real SSE parser.

pub mod browser;
pub mod database;
pub mod outage;

use std::time::Duration;

use aichat::config::Config;
use aichat::server::Running;
use futures::StreamExt;
use reqwest::StatusCode;
use russe::reqwest_0_13::ReqwestExt;
use serde_json::{Value, json};

/// Every wait in a test is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: Option<String>,
    pub data: Value,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
    handle: Option<actix_web::dev::ServerHandle>,
    arbiters: Vec<actix::Arbiter>,
}

pub fn test_config(db: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.server.port = 0;
    config.server.workers = 2;
    config.database.url = format!("sqlite:{}", db.display());
    config.mock.chunk_delay_ms = 0;
    // Most tests are about other things: tools run without asking unless a test says otherwise.
    config.approval.default = actors::approval::Policy::Allow;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    #[expect(
        clippy::unused_async,
        reason = "it must run inside the test's actix runtime (the server spawns on it); async says so"
    )]
    pub async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir.path().join("chat.db"));
        adjust(&mut config);
        config.finish(&|_| None).expect("valid test config");
        Self::spawn_in(dir, &config)
    }

    pub fn spawn_in(dir: tempfile::TempDir, config: &Config) -> Self {
        Self::spawn_reloadable(dir, config, aichat::reload::Loader::fixed(config.clone()))
    }

    /// A server whose reloads read the configuration through `loader`.
    pub fn spawn_reloadable(dir: tempfile::TempDir, config: &Config, loader: aichat::reload::Loader) -> Self {
        aichat::install_crypto_provider();
        let Running {
            addr,
            server,
            handle,
            arbiters,
            ..
        } = aichat::server::start(config, loader).expect("server starts");
        actix_web::rt::spawn(server);
        Self {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            _dir: dir,
            handle: Some(handle),
            arbiters,
        }
    }

    /// A client for a server started elsewhere (e.g. the real binary).
    pub fn client_for(base: &str) -> Self {
        aichat::install_crypto_provider();
        Self {
            base: base.to_owned(),
            client: reqwest::Client::new(),
            _dir: tempfile::tempdir().unwrap(),
            handle: None,
            arbiters: Vec::new(),
        }
    }

    /// A path inside the test's temporary directory.
    pub fn path(&self, name: &str) -> String {
        self._dir.path().join(name).display().to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/v1/chat{path}", self.base)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(user) = user {
            req = req.header("X-User-ID", user);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = tokio::time::timeout(TIMEOUT, req.send())
            .await
            .expect("no timeout")
            .expect("request sent");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    pub async fn get(&self, path: &str, user: i64) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, Some(&user.to_string()), None)
            .await
    }

    pub async fn post(&self, path: &str, user: i64, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::POST, path, Some(&user.to_string()), Some(body))
            .await
    }

    pub async fn put(&self, path: &str, user: i64, body: Value) -> (StatusCode, Value) {
        self.request(reqwest::Method::PUT, path, Some(&user.to_string()), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, user: i64) -> (StatusCode, Value) {
        self.request(reqwest::Method::DELETE, path, Some(&user.to_string()), None)
            .await
    }

    /// `POST /send?streaming=true`; returns `(stream_id, session_id)`.
    pub async fn start_stream(&self, user: i64, message: &str, session_id: Option<&str>) -> (String, String) {
        let mut body = json!({ "message": message });
        if let Some(id) = session_id {
            body["session_id"] = json!(id);
        }
        let (status, reply) = self.post("/send?streaming=true", user, body).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        let stream_id = reply["stream_id"].as_str().unwrap().to_owned();
        assert_eq!(reply["stream_url"], json!(format!("/v1/chat/stream/{stream_id}")));
        (stream_id, reply["session_id"].as_str().unwrap().to_owned())
    }

    /// Reads a whole stream (to its terminal event) with a real SSE parser.
    pub async fn sse(&self, user: i64, stream_id: &str, last_event_id: Option<u64>) -> Vec<SseEvent> {
        self.sse_events(user, stream_id, last_event_id, usize::MAX).await
    }

    /// Reads at most `limit` events of a stream (after `last_event_id`), then drops the connection.
    pub async fn sse_events(
        &self,
        user: i64,
        stream_id: &str,
        last_event_id: Option<u64>,
        limit: usize,
    ) -> Vec<SseEvent> {
        let mut req = self
            .client
            .get(self.url(&format!("/stream/{stream_id}")))
            .header("X-User-ID", user.to_string());
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let read = async {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
            assert!(content_type.starts_with("text/event-stream"), "{content_type}");
            let mut events = Vec::new();
            let mut frames = resp.sse_stream();
            while events.len() < limit {
                let Some(frame) = frames.next().await else { break };
                if let russe::Event::Message(message) = frame.unwrap() {
                    events.push(SseEvent {
                        id: message.id.as_deref().map(|id| id.parse().unwrap()),
                        event: message.event.as_deref().map(str::to_owned),
                        data: serde_json::from_str(&message.data).unwrap(),
                    });
                }
            }
            events
        };
        tokio::time::timeout(TIMEOUT, read).await.expect("stream ends in time")
    }

    /// Waits until the MCP server `name` is ready.
    pub async fn wait_for_server(&self, name: &str) {
        eventually(&format!("MCP server {name} ready"), || async {
            let servers = self.get("/mcp/servers", 1).await.1;
            servers["servers"]
                .as_array()
                .is_some_and(|all| all.iter().any(|s| s["name"] == name && s["state"] == "ready"))
        })
        .await;
    }

    /// Sends a message and reads its stream to the end.
    pub async fn turn(&self, user: i64, message: &str, session_id: Option<&str>) -> (String, Vec<SseEvent>) {
        let (stream_id, session_id) = self.start_stream(user, message, session_id).await;
        (session_id, self.sse(user, &stream_id, None).await)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(false));
        }
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
        }
    }
}

/// The session's stored messages with this role, in order.
pub async fn stored_with_role(app: &TestApp, user: i64, session: &str, role: &str) -> Vec<Value> {
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), user).await;
    stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == role)
        .cloned()
        .collect()
}

/// Every tool execution of a stream, in order.
pub fn executions(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.data["type"] == "tool_execution")
        .flat_map(|e| e.data["tool_executions"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The text of a stream's `message` events.
pub fn text_of(events: &[SseEvent]) -> String {
    events
        .iter()
        .filter(|e| e.data["type"] == "message")
        .map(|e| e.data["content"].as_str().unwrap_or(""))
        .collect()
}

/// A loopback port nothing listens on (it was free a moment ago).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the lines a binary logged say what `done` looks for; returns them joined.
pub async fn eventually_log(
    log: &std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let text = log.lock().unwrap().join("\n");
        if done(&text) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `check` holds, polling; fails after `TIMEOUT`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
