//! Several nodes on one PostgreSQL database, as real processes on loopback: a turn started on one
//! node is read live on the others and cancelled from another; two nodes racing on one session
//! give one turn and one 409; an approval asked on one node is decided on another; a node killed
//! mid-turn loses it to the others, whose readers get every event after their `Last-Event-ID`
//! and the terminal `interrupted` event, byte-exact; the session then continues anywhere, and a
//! node never answers from a copy of a session another node changed. A user's cap on running
//! turns counts every node.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::database::{Backend, Database};
use crate::common::{SseEvent, TestApp, executions, text_of};
use crate::restart::Binary;

/// Short leases so a dead node's turns are taken over within seconds; one turn at a time per user.
fn config() -> String {
    format!(
        "[mock]\nchunk_delay_ms = 100\n[cluster]\nlease_secs = 2\n[limits]\nmax_concurrent_turns_per_user = 1\n\
         [approval]\ndefault = \"ask\"\n\
         [[mcp.servers]]\nname = \"demo\"\ncommand = \"{}\"\nargs = [\"mcp-demo\", \"--test-tools\"]\n",
        env!("CARGO_BIN_EXE_aichat")
    )
}

fn node(db: &Database, id: &str) -> (Binary, TestApp) {
    let binary = Binary::start_on(db, &config(), &[("AICHAT_NODE_ID", id)]);
    let app = TestApp::client_for(&binary.base);
    (binary, app)
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.unwrap()).collect()
}

fn frames(events: &[SseEvent]) -> Vec<(Option<u64>, Value)> {
    events.iter().map(|e| (e.id, e.data.clone())).collect()
}

fn is_terminal(event: &SseEvent) -> bool {
    matches!(event.data["type"].as_str(), Some("done" | "error"))
}

async fn messages(app: &TestApp, session: &str) -> Vec<Value> {
    let (status, body) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["messages"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn three_nodes_share_sessions_streams_approvals_and_a_dead_nodes_turns() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(Backend::Postgres, dir.path());
    let (a, on_a) = node(&db, "node-a");
    let (b, on_b) = node(&db, "node-b");
    let (c, on_c) = node(&db, "node-c");
    let (_, health) = on_b.get("/health", 1).await;
    assert_eq!(health["node"]["id"], "node-b", "{health}");
    let (session, _) = on_a.turn(1, "before", None).await;

    // A turn on A, read live on C and cancelled from C.
    let (stream, _) = on_a.start_stream(1, "/mock words 200", Some(&session)).await;
    let live = on_c.sse_events(1, &stream, None, 2).await;
    assert_eq!(ids(&live), [1, 2]);
    assert!(!live.iter().any(is_terminal), "read while the turn runs on A");
    let (status, body) = on_c.post(&format!("/stream/{stream}/cancel"), 2, json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "only the owner cancels: {body}");
    let (status, body) = on_c.post(&format!("/stream/{stream}/cancel"), 1, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let cancelled = on_a.sse(1, &stream, None).await;
    assert_eq!(cancelled.last().unwrap().data["code"], "cancelled", "{cancelled:?}");
    assert_eq!(
        frames(&on_c.sse(1, &stream, None).await),
        frames(&cancelled),
        "C ends the stream with the same events"
    );

    // Two nodes racing on one session: one turn, one 409.
    for _ in 0..2 {
        let body = json!({ "message": "/mock words 8", "session_id": session });
        let (from_b, from_c) = tokio::join!(
            on_b.post("/send?streaming=true", 1, body.clone()),
            on_c.post("/send?streaming=true", 1, body.clone())
        );
        let mut statuses = [from_b.0, from_c.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{from_b:?} {from_c:?}"
        );
        let (winner, loser) = if from_b.0 == StatusCode::OK {
            (&from_b.1, &from_c.1)
        } else {
            (&from_c.1, &from_b.1)
        };
        assert_eq!(loser["code"], "turn_in_progress");
        let done = on_a.sse(1, winner["stream_id"].as_str().unwrap(), None).await;
        assert_eq!(done.last().unwrap().data["type"], "done");
    }
    let stored = messages(&on_a, &session).await;
    assert_eq!(stored.len(), 2 + 2 + 2 * 2, "one turn per race: {stored:?}");

    // An approval asked on A is decided on B.
    on_a.wait_for_server("demo").await;
    on_b.wait_for_server("demo").await;
    let touched = dir.path().join("touched.txt").display().to_string();
    let ask = format!(
        "/mock tools {}",
        json!([{"name": "demo__touch", "arguments": {"path": touched}}])
    );
    let (_, asked) = on_a.turn(1, &ask, Some(&session)).await;
    let request_id = asked[0].data["request_id"].as_str().unwrap().to_owned();
    let (status, reply) = on_b
        .post(&format!("/approvals/{request_id}"), 1, json!({"approved": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let continued = on_b.sse(1, reply["stream_id"].as_str().unwrap(), None).await;
    assert_eq!(executions(&continued)[0]["result"], json!(format!("touched {touched}")));
    let (status, _) = on_a
        .post(&format!("/approvals/{request_id}"), 1, json!({"approved": true}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "decided once, cluster-wide");

    // A turn on A, read live on B and C; A dies; B's reader resumes and gets the rest.
    let (stream, _) = on_a.start_stream(1, "/mock words 400", Some(&session)).await;
    let seen = on_b.sse_events(1, &stream, None, 5).await;
    let on_c_live = on_c.sse_events(1, &stream, None, 3).await;
    assert_eq!(ids(&seen), [1, 2, 3, 4, 5]);
    assert_eq!(frames(&on_c_live), frames(&seen[..3]));
    assert!(!seen.iter().any(is_terminal));
    // The user's cap counts the turn running on A from B too.
    let (status, body) = on_b
        .post("/send?streaming=true", 1, json!({"message": "elsewhere"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("too_many_turns")),
        "{body}"
    );
    a.kill();
    let last_seen = seen.last().unwrap().id.unwrap();
    let rest = on_b.sse(1, &stream, Some(last_seen)).await;
    let terminal = rest.last().unwrap();
    assert_eq!(
        (terminal.data["type"].as_str(), terminal.data["code"].as_str()),
        (Some("error"), Some("interrupted")),
        "{rest:?}"
    );
    assert!(ids(&rest).iter().all(|id| *id > last_seen), "{rest:?}");
    let whole = on_c.sse(1, &stream, None).await;
    let mut expected = frames(&seen);
    expected.extend(frames(&rest));
    assert_eq!(frames(&whole), expected, "byte-exact on every node");
    let stored = messages(&on_c, &session).await;
    let answer = stored.last().unwrap();
    assert_eq!(answer["status"], "interrupted", "{answer}");
    assert_eq!(answer["content"].as_str().unwrap(), text_of(&whole));

    // The session goes on from C with its whole context (approval rows are not sent to models).
    let context = stored.iter().filter(|m| m["role"] != "tool_approval").count();
    let (same, events) = on_c.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(same, session);
    assert_eq!(text_of(&events), format!("Messages in context: {}", context + 1));
    // Cleared on B: C's copy of the session is stale and never used.
    let (status, body) = on_b.delete(&format!("/sessions/{session}/messages"), 1).await;
    assert!(status.is_success(), "{status} {body}");
    let (_, events) = on_c.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(
        text_of(&events),
        "Messages in context: 1",
        "C read the cleared session again"
    );
    let mut takeovers = 0.0;
    for base in [&b.base, &c.base] {
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        takeovers += text
            .lines()
            .filter(|l| l.starts_with("aichat_lease_takeovers_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    assert_eq!(takeovers, 1.0, "one node took A's turn over");
}
