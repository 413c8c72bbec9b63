//! Streams that survive: resume after disconnects, cancel that stops the upstream and the tools,
//! graceful shutdown with turns in flight, and recovery after SIGKILL.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{SseEvent, TestApp, eventually, text_of};
use crate::restart::Binary;

/// Reads at most `limit` events after `last_event_id`, then drops the connection.
async fn read_some(app: &TestApp, user: i64, stream_id: &str, last_event_id: u64, limit: usize) -> Vec<SseEvent> {
    app.sse_events(user, stream_id, Some(last_event_id), limit).await
}

fn is_terminal(event: &SseEvent) -> bool {
    matches!(event.data["type"].as_str(), Some("done" | "error"))
}

fn demo() -> actors::mcp::McpServerConfig {
    actors::mcp::McpServerConfig::stdio("demo", env!("CARGO_BIN_EXE_aichat"), &["mcp-demo", "--test-tools"])
}

#[actix_web::test]
async fn a_client_that_keeps_disconnecting_reassembles_every_byte() {
    let app = TestApp::spawn_with(|c| {
        c.mock.chunk_delay_ms = 3;
        c.mcp.servers = vec![demo()];
    })
    .await;
    app.wait_for_server("demo").await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    let mut session: Option<String> = None;
    for run in 0..16 {
        let message = if run % 3 == 0 {
            r#"/mock tools [{"name":"demo__echo","arguments":{"text":"über ✓"}},{"name":"demo__sleep_ms","arguments":{"ms":30}}]"#
                .to_owned()
        } else {
            format!("run {run}: naïve café 😀 text")
        };
        let (stream_id, session_id) = app.start_stream(1, &message, session.as_deref()).await;
        session = Some(session_id);
        let mut seen: Vec<SseEvent> = Vec::new();
        let mut reconnects = 0;
        while !seen.last().is_some_and(is_terminal) {
            let last = seen.last().and_then(|e| e.id).unwrap_or(0);
            let limit = 1 + next(4) as usize;
            seen.extend(read_some(&app, 1, &stream_id, last, limit).await);
            reconnects += 1;
            assert!(reconnects < 200, "the stream never ended");
        }
        let whole = app.sse(1, &stream_id, None).await;
        let ids: Vec<_> = seen.iter().map(|e| e.id.unwrap()).collect();
        assert_eq!(
            ids,
            (1..=whole.len() as u64).collect::<Vec<_>>(),
            "no gap, no duplicate (run {run})"
        );
        assert_eq!(text_of(&seen), text_of(&whole), "run {run}");
        let datas = |events: &[SseEvent]| events.iter().map(|e| e.data.clone()).collect::<Vec<Value>>();
        assert_eq!(datas(&seen), datas(&whole));
        assert_eq!(whole.last().unwrap().data["type"], "done");
    }
}

#[actix_web::test]
async fn cancel_aborts_the_provider_and_keeps_the_partial_answer() {
    let app = TestApp::spawn_with(|c| c.mock.chunk_delay_ms = 1000).await;
    let (stream_id, session) = app.start_stream(1, "a long answer please", None).await;
    let first = read_some(&app, 1, &stream_id, 0, 1).await;
    assert_eq!(first[0].data["content"], "Mock ");
    let (status, body) = app.post(&format!("/stream/{stream_id}/cancel"), 2, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the owner may cancel: {body}");
    let (status, body) = app.post(&format!("/stream/{stream_id}/cancel"), 1, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let events = app.sse(1, &stream_id, None).await;
    let last = &events.last().unwrap().data;
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("cancelled"))
    );
    // The mock would stream for 7 more seconds; the aborted call leaves the provider at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let (_, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
        if health["providers"][0]["streams_in_flight"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the provider stream was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let answer = &stored["messages"][1];
    assert_eq!(answer["status"], "cancelled");
    assert_eq!(
        answer["content"].as_str().unwrap(),
        text_of(&events),
        "what the person saw is kept"
    );
    let (status, body) = app.post(&format!("/stream/{stream_id}/cancel"), 1, json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("turn_finished"))
    );
    // The session goes on, with the partial answer in its context.
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(
        text_of(&events),
        "Messages in context: 3",
        "user, cancelled answer, user"
    );
}

#[actix_web::test]
async fn cancel_during_a_slow_tool_cancels_the_call_on_the_server() {
    // One permit: the abandoned call must give it back to its pool, or the next call is refused.
    let app = TestApp::spawn_with(|c| {
        let mut server = demo();
        server.max_concurrency = 1;
        c.mcp.servers = vec![server];
    })
    .await;
    app.wait_for_server("demo").await;
    let marker = app.path("cancelled.txt");
    let script = format!(r#"/mock tools [{{"name":"demo__wait_for_cancel","arguments":{{"marker":"{marker}"}}}}]"#);
    let (stream_id, session) = app.start_stream(1, &script, None).await;
    eventually("the tool call to be in flight", || async {
        app.get("/mcp/servers", 1).await.1["servers"][0]["calls_in_flight"] == 1
    })
    .await;
    let (status, _) = app.post(&format!("/stream/{stream_id}/cancel"), 1, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let events = app.sse(1, &stream_id, None).await;
    assert_eq!(events.last().unwrap().data["code"], "cancelled");
    eventually("the server to see notifications/cancelled", || async {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "cancelled")
    })
    .await;
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let roles: Vec<_> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    // The call leaves its trace, answered: it may have acted before the cancel reached it.
    assert_eq!(
        roles,
        vec![json!("user"), json!("assistant"), json!("tool")],
        "{stored}"
    );
    let error = stored["messages"][2]["tool_executions"][0]["error"].as_str().unwrap();
    assert!(error.contains("outcome is unknown: the turn was stopped"), "{error}");
    eventually("the pool to count no call in flight", || async {
        app.get("/mcp/servers", 1).await.1["servers"][0]["calls_in_flight"] == 0
    })
    .await;
    let echo = r#"/mock tools [{"name":"demo__echo","arguments":{"text":"after"}}]"#;
    let (_, events) = app.turn(1, echo, Some(&session)).await;
    let ran = events.iter().find(|e| e.data["type"] == "tool_execution").unwrap();
    assert_eq!(
        ran.data["tool_executions"][0]["result"], "after",
        "the permit came back"
    );
    assert_eq!(events.last().unwrap().data["type"], "done");
}

on_both_backends!(sigterm_drains_turns_in_flight_and_loses_nothing);

async fn sigterm_drains_turns_in_flight_and_loses_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let config = "[mock]\nchunk_delay_ms = 700\n[server]\nshutdown_grace_secs = 1\n";
    let server = Binary::start_on(&db, config, &[]);
    let app = TestApp::client_for(&server.base);
    let (done_session, _) = app.turn(1, "/mock context", None).await;
    let (stream_id, session) = app.start_stream(1, "this answer takes five seconds", None).await;
    let seen = read_some(&app, 1, &stream_id, 0, 1).await;
    server.terminate();
    eventually("readiness to drop", || async {
        app.request(reqwest::Method::GET, "/ready", None, None).await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (status, body) = app.post("/send", 1, json!({ "message": "too late" })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("shutting_down"))
    );
    let rest = read_some(&app, 1, &stream_id, seen[0].id.unwrap(), 100).await;
    let last = &rest.last().unwrap().data;
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("interrupted"))
    );
    assert!(server.wait_exit().await, "a clean exit");

    let again = Binary::start_on(&db, config, &[]);
    let app = TestApp::client_for(&again.base);
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], "this answer takes five seconds");
    assert_eq!(messages[1]["status"], "interrupted");
    assert!(messages[1]["content"].as_str().unwrap().starts_with("Mock "));
    assert_eq!(
        app.get(&format!("/sessions/{done_session}/messages"), 1).await.1["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let replay = app.sse(1, &stream_id, None).await;
    assert_eq!(replay.last().unwrap().data["code"], "interrupted");
    again.kill();
}

on_both_backends!(after_sigkill_the_interrupted_turn_is_marked_and_resumable);

async fn after_sigkill_the_interrupted_turn_is_marked_and_resumable(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let config = "[mock]\nchunk_delay_ms = 250\n";
    let server = Binary::start_on(&db, config, &[]);
    let app = TestApp::client_for(&server.base);
    let (first_session, _) = app.turn(1, "before the crash", None).await;
    let (stream_id, session) = app.start_stream(1, "cut me off", None).await;
    let seen = read_some(&app, 1, &stream_id, 0, 5).await;
    // Five chunks took more than a second: the periodic flush has stored some of them.
    server.kill();

    let again = Binary::start_on(&db, config, &[]);
    let app = TestApp::client_for(&again.base);
    assert_eq!(
        app.get(&format!("/sessions/{first_session}/messages"), 1).await.1["messages"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let messages = stored["messages"].as_array().unwrap();
    assert_eq!(messages[0]["content"], "cut me off");
    assert_eq!(messages[1]["status"], "interrupted", "{stored}");
    let replay = app.sse(1, &stream_id, None).await;
    assert_eq!(replay.last().unwrap().data["code"], "interrupted");
    let replayed_text = text_of(&replay);
    assert!(!replayed_text.is_empty());
    assert!(text_of(&seen).starts_with(&replayed_text) || replayed_text.starts_with(&text_of(&seen)));
    assert_eq!(messages[1]["content"].as_str().unwrap(), replayed_text);
    // Resuming after what the client saw gives the terminal event.
    let last_seen = seen.last().unwrap().id.unwrap();
    let rest = app.sse(1, &stream_id, Some(last_seen)).await;
    assert_eq!(rest.last().unwrap().data["code"], "interrupted");
    again.kill();
}

/// Killed at several points of a stream (some events sent but not yet stored): an id the client
/// saw is never reused for other content, and a resume after the last id it saw ends with the
/// terminal event.
#[actix_web::test]
async fn after_sigkill_no_seen_id_is_reused_and_every_resume_ends() {
    for (delay_ms, read) in [(30, 2), (90, 6), (170, 11), (45, 19)] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("chat.db");
        let config = format!("[mock]\nchunk_delay_ms = {delay_ms}\n");
        let server = Binary::start_with(&db, &config);
        let app = TestApp::client_for(&server.base);
        let (stream_id, _) = app.start_stream(1, "/mock words 400", None).await;
        let seen = read_some(&app, 1, &stream_id, 0, read).await;
        assert_eq!(seen.len(), read);
        server.kill();

        let again = Binary::start_with(&db, &config);
        let app = TestApp::client_for(&again.base);
        let last_seen = seen.last().unwrap().id.unwrap();
        let rest = app.sse(1, &stream_id, Some(last_seen)).await;
        let terminal = rest.last().expect("a resume is never empty");
        assert_eq!(terminal.data["code"], "interrupted", "killed after {read} events");
        assert!(rest.iter().all(|e| e.id.unwrap() > last_seen), "{rest:?}");
        let replay = app.sse(1, &stream_id, None).await;
        let ids: Vec<u64> = replay.iter().map(|e| e.id.unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        for event in &replay {
            if let Some(same) = seen.iter().find(|s| s.id == event.id) {
                assert_eq!(same.data, event.data, "id {:?} was reused", event.id);
            }
        }
        assert_eq!(replay.last().unwrap().id, terminal.id);
        again.kill();
    }
}

#[actix_web::test]
async fn a_disconnect_alone_does_not_cancel_unless_configured() {
    let app = TestApp::spawn_with(|c| c.mock.chunk_delay_ms = 100).await;
    let (stream_id, session) = app.start_stream(1, "keep going", None).await;
    read_some(&app, 1, &stream_id, 0, 1).await;
    let events = app.sse(1, &stream_id, None).await;
    assert_eq!(
        events.last().unwrap().data["type"],
        "done",
        "the turn finished without a reader"
    );
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert!(stored["messages"][1].get("status").is_none());

    let app = TestApp::spawn_with(|c| {
        c.mock.chunk_delay_ms = 400;
        c.server.cancel_on_disconnect_secs = 1;
    })
    .await;
    let (stream_id, session) = app.start_stream(1, "stop when I leave", None).await;
    read_some(&app, 1, &stream_id, 0, 1).await;
    eventually("the abandoned turn to be cancelled", || async {
        let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
        stored["messages"][1]["status"] == "cancelled"
    })
    .await;
    let events = app.sse(1, &stream_id, None).await;
    assert_eq!(events.last().unwrap().data["code"], "cancelled");
}

fn act(path: &str) -> String {
    format!(r#"/mock tools [{{"name":"demo__act_then_wait","arguments":{{"path":"{path}"}}}}]"#)
}

/// The binary's config for the crash tests: the demo server with its test tools, and `policy` as
/// the approval default.
fn demo_with_policy(policy: &str) -> String {
    format!(
        "[approval]\ndefault = \"{policy}\"\n[[mcp.servers]]\nname = \"demo\"\ncommand = \"@self\"\nargs = [\"mcp-demo\", \"--test-tools\"]\n"
    )
}

fn acted_lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

on_both_backends!(after_sigkill_an_approved_call_that_may_have_acted_never_runs_again);

/// kill -9 while an approved tool runs: the decision and the call were stored before it ran, so
/// after the restart the request is decided (a second approval is refused), the call's outcome is
/// `unknown` in the request and in history, and the tool never runs again.
async fn after_sigkill_an_approved_call_that_may_have_acted_never_runs_again(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let marker = dir.path().join("acted.txt");
    let config = demo_with_policy("ask");
    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let (session, events) = app.turn(1, &act(&marker.display().to_string()), None).await;
    let request_id = events[0].data["request_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .post(&format!("/approvals/{request_id}"), 1, json!({"approved": true}))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("the tool to act", || async { acted_lines(&marker) == 1 }).await;
    server.kill();

    let again = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&again.base);
    app.wait_for_server("demo").await;
    let (_, approvals) = app.get("/approvals", 1).await;
    let record = &approvals["approvals"][0];
    assert_eq!(record["status"], "approved", "{record}");
    assert_eq!(record["tool_calls"][0]["outcome"], "unknown", "{record}");
    for attempt in [
        app.post(&format!("/approvals/{request_id}"), 1, json!({"approved": true}))
            .await,
        app.post(
            "/send?streaming=true",
            1,
            json!({"message": format!("[APPROVE_TOOLS:{request_id}]"), "session_id": session}),
        )
        .await,
    ] {
        assert_eq!(
            (attempt.0, attempt.1["code"].as_str()),
            (StatusCode::CONFLICT, Some("approval_decided"))
        );
    }
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let messages = stored["messages"].as_array().unwrap();
    let roles: Vec<_> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool_approval", "tool"], "{stored}");
    let error = messages[3]["tool_executions"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("outcome is unknown") && error.contains("not run again"),
        "{error}"
    );
    // The history is whole: the model is called with it, and the tool did not run again.
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["type"], "done", "{events:?}");
    assert_eq!(acted_lines(&marker), 1);
    again.kill();
}

/// kill -9 while a tool the policy allows runs: the model's `tool_calls` message was stored before
/// the call was sent, so the call leaves its trace, its outcome is unknown, and nothing re-runs it.
#[actix_web::test]
async fn after_sigkill_a_running_call_leaves_its_trace_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let marker = dir.path().join("acted.txt");
    let config = demo_with_policy("allow");
    let server = Binary::start_with(&db, &config);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let (_, session) = app.start_stream(1, &act(&marker.display().to_string()), None).await;
    eventually("the tool to act", || async { acted_lines(&marker) == 1 }).await;
    server.kill();

    let again = Binary::start_with(&db, &config);
    let app = TestApp::client_for(&again.base);
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let messages = stored["messages"].as_array().unwrap();
    let roles: Vec<_> = messages.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool"], "{stored}");
    assert_eq!(messages[1]["tool_calls"][0]["function"]["name"], "demo__act_then_wait");
    let error = messages[2]["tool_executions"][0]["error"].as_str().unwrap();
    assert!(error.contains("outcome is unknown"), "{error}");
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
    assert_eq!(acted_lines(&marker), 1);
    again.kill();
}

/// The database files deleted under a running server: storage reports unhealthy and every write
/// is refused with 503 instead of being acknowledged into an unlinked file.
#[actix_web::test]
async fn a_database_deleted_under_the_server_is_reported_and_writes_are_refused() {
    let app = TestApp::spawn().await;
    let (session, _) = app.turn(1, "before", None).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(app.path(&format!("chat.db{suffix}")));
    }
    eventually("storage to be reported lost", || async {
        let (_, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
        health["storage"] == "unavailable"
    })
    .await;
    let (status, _) = app.request(reqwest::Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    for body in [
        json!({"message": "after"}),
        json!({"message": "after", "session_id": session}),
    ] {
        let (status, reply) = app.post("/send?streaming=true", 1, body).await;
        assert_eq!(
            (status, reply["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable")),
            "{reply}"
        );
    }
}

/// Storage failing on every request (here: its file deleted) logs one line per period, not one
/// per request.
#[actix_web::test]
async fn repeated_storage_failures_are_not_logged_once_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let server = Binary::start_with(&db, "");
    let app = TestApp::client_for(&server.base);
    app.turn(1, "before", None).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("chat.db{suffix}")));
    }
    eventually("storage to be reported lost", || async {
        app.request(reqwest::Method::GET, "/health", None, None).await.1["storage"] == "unavailable"
    })
    .await;
    for _ in 0..30 {
        let (status, _) = app.post("/send?streaming=true", 1, json!({"message": "hello"})).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let lines = server
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("storage failed"))
        .count();
    assert!((1..=2).contains(&lines), "{lines} lines for 30 failures");
    server.kill();
}

/// PostgreSQL "stops" (its connections close, new ones fail) during a turn: the turn ends with
/// `storage_unavailable`, the server keeps answering (503 with the stable code where storage is
/// needed), and once the database is back it serves again by itself with nothing committed lost.
#[actix_web::test]
async fn a_stopped_postgres_fails_the_turn_and_the_server_recovers_by_itself() {
    use crate::common::database::{cluster_url, fresh_postgres_database, host_port};
    use crate::common::outage::Outage;
    let dir = tempfile::tempdir().unwrap();
    let direct = fresh_postgres_database();
    let outage = Outage::relay_to(host_port(&cluster_url()));
    let db = Database::at(direct.replace(host_port(&direct), &outage.addr), dir.path());
    let server = Binary::start_on(&db, "[mock]\nchunk_delay_ms = 150\n", &[]);
    let app = TestApp::client_for(&server.base);
    let (before, _) = app.turn(1, "stored before the outage", None).await;
    let (stream_id, _) = app
        .start_stream(1, "a long question whose answer the database outage cuts short", None)
        .await;
    let seen = read_some(&app, 1, &stream_id, 0, 2).await;
    outage.cut();

    let rest = read_some(&app, 1, &stream_id, seen.last().unwrap().id.unwrap(), 1_000).await;
    let last = &rest.last().unwrap().data;
    assert_eq!(
        (last["type"].as_str(), last["code"].as_str()),
        (Some("error"), Some("storage_unavailable")),
        "{last}"
    );
    let (status, body) = app.get("/sessions", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("storage_unavailable"))
    );
    let (status, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(
        (status, health["storage"].as_str()),
        (StatusCode::OK, Some("unavailable"))
    );

    outage.restore();
    eventually("the server to serve again", || async {
        app.get("/sessions", 1).await.0 == StatusCode::OK
    })
    .await;
    let (_, stored) = app.get(&format!("/sessions/{before}/messages"), 1).await;
    assert_eq!(stored["messages"].as_array().unwrap().len(), 2, "{stored}");
    let (_, events) = app.turn(1, "after the outage", Some(&before)).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
    // The LISTEN connection (other nodes' notices) came back by itself too.
    eventually("the listener to reconnect", || async {
        let metrics = reqwest::get(format!("{}/metrics", server.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .any(|l| l.starts_with("aichat_notify_reconnects_total") && !l.ends_with(" 0"))
    })
    .await;
    server.kill();
}
