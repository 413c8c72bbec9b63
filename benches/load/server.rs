//! The server under test (the release binary on a temporary SQLite file) and one turn as a
//! client sees it, through the server and straight to the mock provider.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::model::{ChatMessage, Role};
use actors::provider::{ChatProvider, CompletionRequest, MockProvider, Purpose};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{REQUEST_TIMEOUT, note};

// ---------------------------------------------------------------------------------------------
// The server under test

/// The release binary, started with a scenario's config; killed on drop.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) base: String,
    pub(crate) _dir: tempfile::TempDir,
}

#[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Which backend a scenario's server stores on.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// A fresh SQLite file (the default).
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL (`--database postgres://…`).
    Postgres(String),
}

impl Backend {
    /// The name in the report.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The `database.url` for a server whose files are in `dir`: the SQLite file there, or a
    /// new database created on the PostgreSQL server.
    #[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
    fn fresh_url(&self, dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite:{}", dir.join("load.db").display()),
            Backend::Postgres(url) => {
                let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
                // On a plain thread: the sync client blocks on its own runtime.
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let mut admin = postgres::Client::connect(url, postgres::NoTls).expect("connect to PostgreSQL");
                        admin
                            .batch_execute(&format!("CREATE DATABASE {name}"))
                            .expect("create the bench database");
                    })
                    .join()
                    .expect("create the bench database");
                });
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
                format!("{server}/{name}?{query}")
            }
        }
    }
}

impl Server {
    /// Starts the binary with a 0-limit, allow-all config plus `extra` TOML and waits for `/ready`.
    pub(crate) async fn start(mock_delay_ms: u64, extra: &str) -> Self {
        Self::start_on(&Backend::Sqlite, mock_delay_ms, extra).await
    }

    /// Like `start`, on a fresh database of `backend`.
    #[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
    pub(crate) async fn start_on(backend: &Backend, mock_delay_ms: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = backend.fresh_url(dir.path());
        Self::start_at(dir, &url, mock_delay_ms, extra).await
    }

    /// Two nodes on one fresh PostgreSQL database (`node_id` bench-a and bench-b).
    #[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
    pub(crate) async fn pair_on(backend: &Backend, mock_delay_ms: u64, flush_ms: u64) -> (Self, Self) {
        let first = tempfile::tempdir().expect("temp dir");
        let second = tempfile::tempdir().expect("temp dir");
        let url = backend.fresh_url(first.path());
        let node = |id: &str| format!("[cluster]\nnode_id = \"{id}\"\nflush_ms = {flush_ms}\n");
        let a = Self::start_at(first, &url, mock_delay_ms, &node("bench-a")).await;
        let b = Self::start_at(second, &url, mock_delay_ms, &node("bench-b")).await;
        (a, b)
    }

    /// Like `start`, on the database `load.db` already in `dir` (if any).
    pub(crate) async fn start_in(dir: tempfile::TempDir, mock_delay_ms: u64, extra: &str) -> Self {
        let url = Backend::Sqlite.fresh_url(dir.path());
        Self::start_at(dir, &url, mock_delay_ms, extra).await
    }

    /// Starts the binary on the database at `url` (given in the environment: a PostgreSQL URL
    /// may carry a password, which never goes in a config file).
    #[expect(clippy::expect_used, reason = "a benchmark that cannot set up should stop loudly")]
    async fn start_at(dir: tempfile::TempDir, url: &str, mock_delay_ms: u64, extra: &str) -> Self {
        let port = free_port();
        let config = format!(
            r#"
[server]
listen_address = "127.0.0.1"
port = {port}
[mock]
chunk_delay_ms = {mock_delay_ms}
[limits]
max_concurrent_turns_per_user = 0
turns_per_minute_per_user = 0
[approval]
default = "allow"
[log]
level = "warn"
{extra}
"#
        );
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_aichat"))
            .arg("--config")
            .arg(&path)
            .env("AICHAT_DATABASE_URL", url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the server");
        // Forward the server's warnings, prefixed, so a failing run explains itself.
        if let Some(stderr) = child.stderr.take() {
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    note(&format!("  [server] {line}"));
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}/v1/chat");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client.get(format!("{base}/ready")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(Instant::now() < deadline, "the server did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base, _dir: dir }
    }

    /// The server's resident memory in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The database file.
    pub(crate) fn db(&self) -> std::path::PathBuf {
        self._dir.path().join("load.db")
    }

    /// Waits until a MCP server is ready.
    pub(crate) async fn wait_for_tools(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body: Value = match client
                .get(format!("{}/mcp/servers", self.base))
                .header("X-User-ID", "1")
                .send()
                .await
            {
                Ok(resp) => resp.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            if body["servers"][0]["state"] == "ready" {
                return;
            }
            assert!(Instant::now() < deadline, "the demo MCP server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A process's resident memory in KiB (Linux `/proc`; 0 when unreadable).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client(max_idle: usize) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(max_idle)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// One turn as a client sees it

/// What a client measured of one turn.
pub(crate) struct Turn {
    /// From sending the message to the first text event.
    pub(crate) first_token: Duration,
    /// From sending the message to `done` (the answer is stored by then).
    pub(crate) total: Duration,
    /// The session, to continue it.
    pub(crate) session_id: String,
    /// Text events received, and how many of them came later than `late_after` after the previous.
    pub(crate) frames: u64,
    pub(crate) late: u64,
    /// Whether event ids had no gap.
    pub(crate) contiguous: bool,
}

/// The complete SSE frames at the front of `pending` (taken out of it) that carry data: each
/// one's `id:` (if any) and `data:`. `retry:` and keep-alive frames are dropped.
pub(crate) fn take_frames(pending: &mut Vec<u8>) -> Vec<(Option<u64>, String)> {
    let mut frames = Vec::new();
    while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
        let frame: Vec<u8> = pending.drain(..end + 2).collect();
        let frame = String::from_utf8_lossy(&frame);
        let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
            continue;
        };
        let id = frame
            .lines()
            .find_map(|l| l.strip_prefix("id: "))
            .map(|id| id.trim().parse().unwrap_or(0));
        frames.push((id, data.to_owned()));
    }
    frames
}

/// `GET /stream/{id}` as `user`: the response, once it says 2xx.
pub(crate) async fn open_stream(
    client: &reqwest::Client,
    base: &str,
    user: u64,
    stream_id: &str,
) -> Result<reqwest::Response, String> {
    let resp = client
        .get(format!("{base}/stream/{stream_id}"))
        .header("X-User-ID", user.to_string())
        .send()
        .await
        .map_err(|e| format!("stream: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("stream: {}", resp.status()));
    }
    Ok(resp)
}

/// One streamed turn: `POST /send?streaming=true`, then read the SSE stream to its end.
pub(crate) async fn turn(
    client: &reqwest::Client,
    base: &str,
    user: u64,
    session: Option<&str>,
    message: &str,
    late_after: Duration,
) -> Result<Turn, String> {
    let started = Instant::now();
    let mut body = json!({ "message": message });
    if let Some(session) = session {
        body["session_id"] = json!(session);
    }
    let resp = client
        .post(format!("{base}/send?streaming=true"))
        .header("X-User-ID", user.to_string())
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("send: {}", resp.status()));
    }
    let started_reply: Value = resp.json().await.map_err(|e| format!("send body: {e}"))?;
    let stream_id = started_reply["stream_id"].as_str().unwrap_or_default().to_owned();
    let session_id = started_reply["session_id"].as_str().unwrap_or_default().to_owned();
    let mut bytes = open_stream(client, base, user, &stream_id).await?.bytes_stream();
    let mut pending: Vec<u8> = Vec::new();
    let (mut first_token, mut frames, mut late, mut last_id, mut contiguous) = (None, 0u64, 0u64, 0u64, true);
    let mut last_frame = Instant::now();
    while let Some(chunk) = bytes.next().await {
        let chunk = chunk.map_err(|e| format!("stream body: {e}"))?;
        pending.extend_from_slice(&chunk);
        for (id, data) in take_frames(&mut pending) {
            if let Some(id) = id {
                contiguous &= id == last_id + 1;
                last_id = id;
            }
            let now = Instant::now();
            if data.contains(r#""type":"message""#) {
                first_token.get_or_insert_with(|| started.elapsed());
                if frames > 0 && now - last_frame > late_after {
                    late += 1;
                }
                frames += 1;
                last_frame = now;
            } else if data.contains(r#""type":"done""#) {
                return Ok(Turn {
                    first_token: first_token.unwrap_or_else(|| started.elapsed()),
                    total: started.elapsed(),
                    session_id,
                    frames,
                    late,
                    contiguous,
                });
            } else if data.contains(r#""type":"error""#) {
                return Err(format!("error event: {data}"));
            }
        }
    }
    Err(format!(
        "the stream ended without done after {frames} text events (last id {last_id}; unparsed: {:?})",
        String::from_utf8_lossy(&pending)
    ))
}

/// The same request straight to the mock provider, in-process: (first token, whole answer).
pub(crate) async fn direct(mock: &MockProvider, message: &str) -> (Duration, Duration) {
    let started = Instant::now();
    let request = CompletionRequest {
        messages: vec![Arc::new(ChatMessage::new(Role::User, message))],
        tools: Default::default(),
        purpose: Purpose::Chat,
    };
    let mut events = mock.stream(request);
    let mut first = None;
    while let Some(event) = events.next().await {
        first.get_or_insert_with(|| started.elapsed());
        if event.is_err() {
            break;
        }
    }
    (first.unwrap_or_else(|| started.elapsed()), started.elapsed())
}
