//! The real binary, stopped and started again on the same SQLite file: sessions, messages and the
//! model's context survive.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use reqwest::StatusCode;
use serde_json::json;

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{TIMEOUT, TestApp, text_of};

pub struct Binary {
    child: Child,
    pub base: String,
    /// Every line the binary logged.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A test that fails part-way must not leave its server running.
impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    /// Starts the binary with `config` (TOML text) as its config file, beside the database.
    pub fn start_with(db: &std::path::Path, config: &str) -> Self {
        Self::start_with_env(db, config, &[])
    }

    /// Like `start_with`, with extra environment variables.
    pub fn start_with_env(db: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_on(&Database::sqlite_file(db), config, env)
    }

    /// Starts the binary on `db` (either backend) with `config` as its config file.
    pub fn start_on(db: &Database, config: &str, env: &[(&str, &str)]) -> Self {
        Self::launch(db, config, env, &["--log-level", "info"])
    }

    /// Like `start_on`, with `flags` instead of `--log-level info` (the log level must let the
    /// start-up block through: its "listening on" line tells the address).
    pub fn launch(db: &Database, config: &str, env: &[(&str, &str)], flags: &[&str]) -> Self {
        let config_path = db.config_path();
        std::fs::write(config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_aichat"))
            .arg("--config")
            .arg(config_path)
            .args(["--port", "0"])
            .args(flags)
            .arg("--database-url")
            .arg(db.url())
            // Not a terminal: the log has no colours without being told (a test checks).
            .env_remove("NO_COLOR")
            // A restart in these tests is the same node coming back (on PostgreSQL it then ends
            // its own interrupted turns at once); cluster tests name each node.
            .env("AICHAT_NODE_ID", "test-node")
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line.clone());
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx.recv_timeout(TIMEOUT).expect("the binary logs its address");
        Self {
            child,
            base: format!("http://{addr}"),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, without waiting.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit by itself (bounded) and returns whether it exited cleanly
    /// (`false` after killing it when it did not exit in time).
    pub async fn wait_exit(mut self) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            if tokio::time::Instant::now() > deadline {
                self.child.kill().unwrap();
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

on_both_backends!(a_restart_keeps_sessions_messages_and_the_model_context);

async fn a_restart_keeps_sessions_messages_and_the_model_context(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let first = Binary::start_on(&db, "", &[]);
    let app = TestApp::client_for(&first.base);
    let (session, _) = app.turn(3, "first question", None).await;
    app.turn(3, "second question", Some(&session)).await;
    let (_, before) = app.get(&format!("/sessions/{session}/messages"), 3).await;
    first.kill();

    let second = Binary::start_on(&db, "", &[]);
    let app = TestApp::client_for(&second.base);
    let (status, after) = app.get(&format!("/sessions/{session}/messages"), 3).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(after, before);
    assert_eq!(after["messages"].as_array().unwrap().len(), 4);
    let (same, events) = app.turn(3, "/mock context", Some(&session)).await;
    assert_eq!(same, session);
    assert_eq!(
        text_of(&events),
        "Messages in context: 5",
        "the context was rebuilt from storage"
    );
    let (_, sessions) = app.get("/sessions", 3).await;
    assert_eq!(sessions["sessions"][0]["id"], json!(session));
    second.kill();
}

/// A second instance started by mistake on the same database fails (on the taken port, or on the
/// database lock) before it touches the database, so the first one's running turn is not marked
/// interrupted in storage.
#[actix_web::test]
async fn a_second_instance_on_a_taken_port_fails_without_touching_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    // Finished streams leave memory after a second: the replay below comes from the database.
    let first = Binary::start_with(&db, "[server]\nstream_retention_secs = 1\n");
    let app = TestApp::client_for(&first.base);
    let (stream_id, _) = app.start_stream(1, "/mock slow 1500", None).await;
    let port = first.base.rsplit(':').next().unwrap().to_owned();
    // Another instance on the same database: exits with an error, and its stderr.
    let another = |port: &str| {
        let run = Command::new(env!("CARGO_BIN_EXE_aichat"))
            .args(["--config", db.with_extension("toml").to_str().unwrap(), "--port", port])
            .arg("--database-url")
            .arg(format!("sqlite:{}", db.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(!run.status.success());
        String::from_utf8_lossy(&run.stderr).into_owned()
    };
    let refused = another(&port);
    assert!(
        refused.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{refused}"
    );
    // On a free port it gets as far as the database, which is locked by the first.
    assert!(another("0").contains("in use by another aichat process"));
    let live = app.sse(1, &stream_id, None).await;
    assert_eq!(live.last().unwrap().data["type"], "done", "{live:?}");
    crate::common::eventually("the finished stream to leave memory", || async {
        app.get("/health", 1).await.1["streams_in_memory"] == 0
    })
    .await;
    let stored = app.sse(1, &stream_id, None).await;
    let data: Vec<_> = stored.iter().map(|e| e.data.clone()).collect();
    assert_eq!(data, live.iter().map(|e| e.data.clone()).collect::<Vec<_>>());
    first.kill();
}

/// The processes whose parent is `pid` (started by any of its threads).
fn children_of(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(Result::ok)
        .flat_map(|task| {
            std::fs::read_to_string(task.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// Whether a process still runs (a zombie waiting to be reaped has ended).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .is_ok_and(|status| status.lines().any(|l| l.starts_with("State:") && !l.contains("zombie")))
}

/// The demo MCP server started over stdio dies with the server, even with SIGKILL, which gives
/// the server no chance to stop it.
#[actix_web::test]
async fn the_demo_mcp_server_dies_with_a_killed_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::start_with(
        &db,
        "[[mcp.servers]]\nname = \"demo\"\ncommand = \"@self\"\nargs = [\"mcp-demo\"]\n",
    );
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let children = children_of(server.pid());
    assert_eq!(children.len(), 1, "one demo server process");
    server.kill();
    crate::common::eventually("the demo server to exit", || async { !running(children[0]) }).await;
}

/// SIGHUP used to stop the server without a drain. Now it reloads the configuration: valid and
/// unchanged; valid with changes — turn limits and the approval policy apply to new turns at once,
/// sections that cannot change live are named as needing a restart; or invalid (refused with the reason, the running
/// one stays) — and the server keeps serving through all of it.
#[actix_web::test]
async fn sighup_reloads_what_can_change_live_and_never_stops_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::sqlite_file(&dir.path().join("chat.db"));
    let demo = "[[mcp.servers]]\nname = \"demo\"\ncommand = \"@self\"\nargs = [\"mcp-demo\"]\n";
    let before = format!("[limits]\nturns_per_minute_per_user = 60\n[approval]\ndefault = \"allow\"\n{demo}");
    let server = Binary::start_on(&db, &before, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let hangup = || {
        let status = Command::new("kill")
            .args(["-s", "HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    hangup();
    crate::common::eventually_log(&server.log, "the unchanged check", |log| {
        log.lines()
            .any(|l| l.contains("the configuration is valid and unchanged") && l.contains("SIGHUP"))
    })
    .await;

    let after = format!(
        "[limits]\nturns_per_minute_per_user = 1\n[approval]\ndefault = \"deny\"\n[attachments]\nmax_files = 3\n{demo}"
    );
    std::fs::write(db.config_path(), after).unwrap();
    hangup();
    crate::common::eventually_log(&server.log, "the reload", |log| {
        log.lines().any(|l| {
            l.contains("configuration reloaded")
                && l.contains("by=\"SIGHUP\"")
                && l.contains("applied=approval, limits")
                && l.contains("needs_restart=attachments")
        })
    })
    .await;
    // The new policy: a tool call is denied without asking.
    let call = r#"/mock tools [{"name":"demo__echo","arguments":{"text":"hi"}}]"#;
    let (_, events) = app.turn(1, call, None).await;
    let done = crate::common::executions(&events);
    assert!(done[0]["error"].as_str().unwrap_or("").contains("denied"), "{done:?}");
    // The new limit: one turn a minute, already taken.
    let (status, body) = app.post("/send", 1, json!({"message": "again"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_turns")),
        "{body}"
    );

    std::fs::write(db.config_path(), "[limits]\nturns_per_minute = 5\n").unwrap();
    hangup();
    crate::common::eventually_log(&server.log, "the refusal", |log| {
        log.lines()
            .any(|l| l.contains("SIGHUP: the configuration was refused") && l.contains("turns_per_minute"))
    })
    .await;
    assert_eq!(app.get("/sessions", 2).await.0, StatusCode::OK, "still serving");
    server.kill();
}
