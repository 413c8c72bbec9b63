//! The approval engine over real HTTP and SSE with the demo MCP server: `touch` writes a file, so
//! a test can prove that a call ran, or that it never did.

use std::path::Path;

use actors::approval::{ApprovalRule, Policy};
use actors::mcp::McpServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{SseEvent, TestApp, eventually, executions, stored_with_role, text_of};
use crate::restart::Binary;

fn demo() -> McpServerConfig {
    McpServerConfig::stdio("demo", env!("CARGO_BIN_EXE_aichat"), &["mcp-demo", "--test-tools"])
}

async fn app_with(adjust: impl FnOnce(&mut aichat::config::Config)) -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![demo()];
        c.approval.default = Policy::Ask;
        c.approval.rules = vec![
            ApprovalRule {
                tool: "demo__current_time".into(),
                policy: Policy::Allow,
            },
            ApprovalRule {
                tool: "demo__fail".into(),
                policy: Policy::Deny,
            },
        ];
        adjust(c);
    })
    .await;
    app.wait_for_server("demo").await;
    app
}

fn touch(path: &str) -> Value {
    json!({"name": "demo__touch", "arguments": {"path": path}})
}

fn script(calls: &[Value]) -> String {
    format!("/mock tools {}", Value::Array(calls.to_vec()))
}

/// Asks for `calls`; returns (session, request id, the approval request event's tool calls).
async fn ask(app: &TestApp, user: i64, calls: &[Value], session: Option<&str>) -> (String, String, Vec<Value>) {
    let (session, events) = app.turn(user, &script(calls), session).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e.data["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["tool_approval_request", "done"], "{events:?}");
    let request = &events[0].data;
    assert!(request["content"].as_str().unwrap().contains("Do you approve?"));
    let id = request["request_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("approval_"));
    (session, id, request["tool_calls"].as_array().unwrap().clone())
}

async fn decide(app: &TestApp, user: i64, id: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/approvals/{id}"), user, body).await
}

async fn decide_and_read(app: &TestApp, user: i64, id: &str, body: Value) -> Vec<SseEvent> {
    let (status, reply) = decide(app, user, id, body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    app.sse(user, reply["stream_id"].as_str().unwrap(), None).await
}

#[actix_web::test]
async fn ask_then_approve_runs_the_batch_in_call_order() {
    let app = app_with(|_| {}).await;
    let a = app.path("a.txt");
    let (session, id, asked) = ask(&app, 1, &[touch(&a), json!({"name": "demo__current_time"})], None).await;
    assert_eq!(asked.len(), 1, "only the `ask` call is shown for approval");
    assert!(!Path::new(&a).exists(), "nothing ran before the decision");
    let (_, pending) = app.get("/approvals?status=pending", 1).await;
    assert_eq!(pending["approvals"][0]["request_id"], json!(id));
    let approval = stored_with_role(&app, 1, &session, "tool_approval").await.remove(0);
    assert_eq!(approval["approval_request"]["request_id"], json!(id));
    assert_eq!(approval["approval_request"]["status"], "pending");

    let events = decide_and_read(&app, 1, &id, json!({"approved": true})).await;
    let kinds: Vec<_> = events.iter().map(|e| e.data["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"tool_execution"));
    assert_eq!(kinds.last(), Some(&"done"));
    let done = executions(&events);
    assert_eq!(done[0]["tool_name"], "demo__touch");
    assert_eq!(
        done[1]["tool_name"], "demo__current_time",
        "the allowed sibling waited with the batch"
    );
    assert!(Path::new(&a).exists());
    assert!(text_of(&events).starts_with("Tool results:"));
    let approval = stored_with_role(&app, 1, &session, "tool_approval").await.remove(0);
    assert_eq!(approval["approval_request"]["status"], "approved");
    assert_eq!(approval["approval_request"]["processed"], true);
    let (status, body) = decide(&app, 1, &id, json!({"approved": true})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("approval_decided"))
    );
    let (_, all) = app.get("/approvals", 1).await;
    assert_eq!(all["approvals"][0]["decided_by"], "user:1");
}

#[actix_web::test]
async fn denials_by_the_user_and_by_policy_never_run() {
    let app = app_with(|_| {}).await;
    let a = app.path("a.txt");
    let (_, id, _) = ask(&app, 1, &[touch(&a), json!({"name": "demo__fail"})], None).await;
    let events = decide_and_read(&app, 1, &id, json!({"approved": false})).await;
    let done = executions(&events);
    assert!(
        done[0]["error"].as_str().unwrap().contains("denied by the user"),
        "{}",
        done[0]
    );
    assert!(
        done[1]["error"].as_str().unwrap().contains("denied by policy"),
        "{}",
        done[1]
    );
    assert!(!Path::new(&a).exists());
    assert_eq!(
        events.last().unwrap().data["type"],
        "done",
        "the model continues after denials"
    );

    // A batch of policy-denied calls asks nobody and runs nothing.
    let (_, events) = app.turn(1, &script(&[json!({"name": "demo__fail"})]), None).await;
    let done = executions(&events);
    assert!(
        done[0]["error"]
            .as_str()
            .unwrap()
            .contains("denied by policy (rule `demo__fail`)")
    );
}

#[actix_web::test]
async fn a_subset_can_be_approved_and_bypasses_fail() {
    let app = app_with(|_| {}).await;
    let (a, b) = (app.path("a.txt"), app.path("b.txt"));
    let (session, id, asked) = ask(&app, 1, &[touch(&a), touch(&b), json!({"name": "demo__fail"})], None).await;
    let first = asked[0]["id"].as_str().unwrap();
    // Other users cannot decide it; another session's in-band message cannot either.
    let (status, _) = decide(&app, 2, &id, json!({"approved": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (other_session, _) = app.turn(1, "elsewhere", None).await;
    let (status, body) = app
        .post(
            "/send?streaming=true",
            1,
            json!({"message": format!("[APPROVE_TOOLS:{id}]"), "session_id": other_session}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("approval_not_found"))
    );
    // Without a session id the message is for a new session: no request of this one is there.
    let (status, body) = app
        .post(
            "/send?streaming=true",
            1,
            json!({"message": format!("[APPROVE_TOOLS:{id}]")}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("approval_not_found"))
    );
    assert!(!Path::new(&a).exists() && !Path::new(&b).exists());
    let (_, history) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert_eq!(
        history["messages"].as_array().unwrap().len(),
        3,
        "user, assistant, tool_approval"
    );

    // The policy-denied call's id in approved_ids does not make it run.
    let all_ids: Vec<Value> = vec![json!(first), json!("not-a-call")];
    let events = decide_and_read(&app, 1, &id, json!({"approved": true, "approved_ids": all_ids})).await;
    let done = executions(&events);
    assert!(done[0]["error"].is_null());
    assert!(done[1]["error"].as_str().unwrap().contains("denied by the user"));
    assert!(done[2]["error"].as_str().unwrap().contains("denied by policy"));
    assert!(Path::new(&a).exists());
    assert!(!Path::new(&b).exists());
    let (_, all) = app.get("/approvals", 1).await;
    assert_eq!(all["approvals"][0]["status"], "partially_approved");
}

#[actix_web::test]
async fn the_original_in_band_strings_work() {
    let app = app_with(|_| {}).await;
    let a = app.path("a.txt");
    let (session, id, _) = ask(&app, 1, &[touch(&a)], None).await;
    let (status, reply) = app
        .post(
            "/send?streaming=true",
            1,
            json!({"message": format!("[APPROVE_TOOLS:{id}]"), "session_id": session}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["session_id"], json!(session));
    let events = app.sse(1, reply["stream_id"].as_str().unwrap(), None).await;
    assert_eq!(executions(&events)[0]["result"], json!(format!("touched {a}")));
    let (_, id2, _) = ask(&app, 1, &[touch(&app.path("b.txt"))], Some(&session)).await;
    let (status, reply) = app
        .post(
            "/send?streaming=true",
            1,
            json!({"message": format!("[DENY_TOOLS:{id2}]"), "session_id": session}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = app.sse(1, reply["stream_id"].as_str().unwrap(), None).await;
    assert!(executions(&events)[0]["error"].as_str().unwrap().contains("denied"));
    assert!(!Path::new(&app.path("b.txt")).exists());
    let (_, history) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let user_texts: Vec<_> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(user_texts.len(), 2, "control messages are not stored: {user_texts:?}");
}

#[actix_web::test]
async fn remembered_grants_cover_siblings_and_can_be_revoked() {
    let app = app_with(|_| {}).await;
    let (a, b, c) = (app.path("a.txt"), app.path("b.txt"), app.path("c.txt"));
    let (session, id, asked) = ask(&app, 1, &[touch(&a), touch(&b)], None).await;
    let first = asked[0]["id"].clone();
    let events = decide_and_read(
        &app,
        1,
        &id,
        json!({"approved": true, "approved_ids": [first], "remember": "session"}),
    )
    .await;
    assert_eq!(
        executions(&events).iter().filter(|e| e["error"].is_null()).count(),
        2,
        "the grant covers the sibling"
    );
    assert!(Path::new(&b).exists());
    let (_, events) = app.turn(1, &script(&[touch(&c)]), Some(&session)).await;
    assert_eq!(
        executions(&events)[0]["result"],
        json!(format!("touched {c}")),
        "no question in the same session"
    );
    ask(&app, 1, &[touch(&app.path("d.txt"))], None).await;
    let (_, grants) = app.get("/grants", 1).await;
    let grant = grants["grants"][0].clone();
    assert_eq!(
        (grant["tool"].as_str(), grant["scope"].as_str()),
        (Some("demo__touch"), Some("session"))
    );
    let (status, _) = app
        .delete(&format!("/grants/{}", grant["id"].as_str().unwrap()), 2)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another user's grant");
    let (status, _) = app
        .delete(&format!("/grants/{}", grant["id"].as_str().unwrap()), 1)
        .await;
    assert_eq!(status, StatusCode::OK);
    ask(&app, 1, &[touch(&app.path("e.txt"))], Some(&session)).await;
}

#[actix_web::test]
async fn expired_requests_count_as_denied() {
    let app = app_with(|c| c.approval.expiry_secs = 1).await;
    let a = app.path("a.txt");
    let (session, id, _) = ask(&app, 1, &[touch(&a)], None).await;
    eventually("the request to expire", || async {
        app.get("/approvals?status=expired", 1).await.1["approvals"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    // Shown as expiry decided it, in the list and on its history row.
    let (_, listed) = app.get("/approvals?status=expired", 1).await;
    assert_eq!(listed["approvals"][0]["decided_by"], "expiry", "{listed}");
    assert!(listed["approvals"][0]["decided_at"].is_string(), "{listed}");
    let row = stored_with_role(&app, 1, &session, "tool_approval").await.remove(0);
    assert_eq!(row["approval_request"]["status"], "expired", "{row}");
    let (status, body) = decide(&app, 1, &id, json!({"approved": true})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("approval_expired"))
    );
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    // user, assistant (calls), denied tool result, user: the approval message is not for the model.
    assert_eq!(text_of(&events), "Messages in context: 4");
    assert!(!Path::new(&a).exists());
    let tool = stored_with_role(&app, 1, &session, "tool").await.remove(0);
    assert!(tool["content"].as_str().unwrap().contains("denied by expiry"));
}

on_both_backends!(pending_requests_and_user_grants_survive_a_restart);

async fn pending_requests_and_user_grants_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let config = format!(
        "[approval]\ndefault = \"ask\"\n[[mcp.servers]]\nname = \"demo\"\ncommand = \"{}\"\nargs = [\"mcp-demo\", \"--test-tools\"]\n",
        env!("CARGO_BIN_EXE_aichat")
    );
    let a = dir.path().join("a.txt").display().to_string();
    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let (session, id, _) = ask(&app, 1, &[touch(&a)], None).await;
    server.kill();

    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    assert_eq!(
        app.get("/approvals?status=pending", 1).await.1["approvals"][0]["request_id"],
        json!(id)
    );
    let events = decide_and_read(&app, 1, &id, json!({"approved": true, "remember": "user"})).await;
    assert_eq!(executions(&events)[0]["result"], json!(format!("touched {a}")));
    server.kill();

    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let b = dir.path().join("b.txt").display().to_string();
    let (_, events) = app.turn(1, &script(&[touch(&b)]), None).await;
    assert_eq!(
        executions(&events)[0]["result"],
        json!(format!("touched {b}")),
        "a user grant outlives restarts"
    );
    assert_eq!(
        app.get(&format!("/sessions/{session}/messages"), 1).await.0,
        StatusCode::OK
    );
    server.kill();
}

#[actix_web::test]
async fn a_non_streaming_send_shows_the_approval_request() {
    let app = app_with(|_| {}).await;
    let a = app.path("a.txt");
    let (status, reply) = app.post("/send", 1, json!({"message": script(&[touch(&a)])})).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert!(
        reply["message"]["content"]
            .as_str()
            .unwrap()
            .contains("Do you approve?")
    );
    let request = &reply["message"]["approval_request"];
    assert_eq!(request["tool_calls"][0]["function"]["name"], "demo__touch");
    let id = request["request_id"].as_str().unwrap();
    assert!(!Path::new(&a).exists());
    let events = decide_and_read(&app, 1, id, json!({"approved": true})).await;
    assert_eq!(executions(&events)[0]["result"], json!(format!("touched {a}")));
}

/// Every state-changing route, sent by another user while user 1's turn runs and an approval of
/// user 1's waits, changes nothing of user 1's: the turn ends with `done` and is stored, the
/// session keeps its title and history, the approval stays pending and its tool never runs.
#[actix_web::test]
async fn another_user_touches_nothing_of_a_running_turn() {
    let app = app_with(|c| c.server.cancel_on_disconnect_secs = 1).await;
    let a = app.path("a.txt");
    let (asking, id, _) = ask(&app, 1, &[touch(&a)], None).await;
    let (stream, running) = app.start_stream(1, "/mock slow 3000", None).await;
    let (_, grant) = app.get("/grants", 1).await;
    assert_eq!(grant["grants"], json!([]));

    use reqwest::Method;
    let in_band = |text: &str, session: Option<&str>| {
        let mut body = json!({ "message": text });
        if let Some(s) = session {
            body["session_id"] = json!(s);
        }
        body
    };
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::DELETE, format!("/clear?session_id={running}"), None),
        (Method::DELETE, format!("/sessions/{running}/messages"), None),
        (Method::DELETE, format!("/sessions/{running}"), None),
        (
            Method::PUT,
            format!("/sessions/{running}"),
            Some(json!({"title": "taken"})),
        ),
        (Method::POST, format!("/stream/{stream}/cancel"), None),
        (
            Method::POST,
            format!("/approvals/{id}"),
            Some(json!({"approved": true})),
        ),
        (
            Method::POST,
            "/send".into(),
            Some(in_band(&format!("[APPROVE_TOOLS:{id}]"), None)),
        ),
        (
            Method::POST,
            "/send".into(),
            Some(in_band(&format!("[APPROVE_TOOLS:{id}]"), Some(&asking))),
        ),
        (
            Method::POST,
            "/send".into(),
            Some(in_band(&format!("[DENY_TOOLS:{id}]"), Some(&running))),
        ),
        (Method::DELETE, "/grants/1".into(), None),
        (Method::DELETE, format!("/clear?session_id={asking}"), None),
        (Method::DELETE, format!("/sessions/{asking}"), None),
    ];
    for (method, path, body) in attempts {
        let (status, reply) = app.request(method.clone(), &path, Some("2"), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {reply}");
    }
    // Naming user 1's session in a send starts a session of user 2's own.
    let (status, reply) = app.post("/send?streaming=true", 2, in_band("hi", Some(&running))).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_ne!(reply["session_id"], json!(running));
    // A reader of user 2 on user 1's stream is refused (so its disconnect cancels nothing).
    let resp = app
        .client
        .get(app.url(&format!("/stream/{stream}")))
        .header("X-User-ID", "2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let events = app.sse(1, &stream, None).await;
    let last = &events.last().unwrap().data;
    assert_eq!(last["type"], "done", "user 1's turn ran to its end: {last}");
    assert!(text_of(&events).starts_with("Mock streaming response"));
    let (_, session) = app.get(&format!("/sessions/{running}"), 1).await;
    assert!(session["title"].as_str().unwrap() != "taken", "{session}");
    let answers = stored_with_role(&app, 1, &running, "assistant").await;
    assert_eq!(answers.len(), 1);
    assert!(
        answers[0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Mock streaming response")
    );
    let (_, pending) = app.get("/approvals?status=pending", 1).await;
    assert_eq!(pending["approvals"][0]["request_id"], json!(id));
    assert!(!Path::new(&a).exists(), "no other user's decision ran the tool");
}

/// The QAN dialogs decide the moment `tool_approval_request` arrives, before `done`: the request
/// is stored before it is announced, and a decision that arrives while the asking turn is still
/// ending waits for it, so the decision is never refused.
#[actix_web::test]
async fn a_decision_sent_the_instant_the_request_arrives_is_taken() {
    use futures::StreamExt;
    use russe::reqwest_0_13::ReqwestExt;
    let app = app_with(|c| c.limits.turns_per_minute_per_user = 0).await;
    let calc = json!({"name": "demo__calculator", "arguments": {"a": 2, "b": 3, "op": "add"}});
    for round in 0..200 {
        let (stream, session) = app.start_stream(1, &script(std::slice::from_ref(&calc)), None).await;
        let resp = app
            .client
            .get(app.url(&format!("/stream/{stream}")))
            .header("X-User-ID", "1")
            .send()
            .await
            .unwrap();
        let mut frames = resp.sse_stream();
        let request_id = loop {
            let frame = tokio::time::timeout(crate::common::TIMEOUT, frames.next())
                .await
                .expect("event in time")
                .expect("an approval request before the end")
                .unwrap();
            if let russe::Event::Message(m) = frame {
                let data: Value = serde_json::from_str(&m.data).unwrap();
                if data["type"] == "tool_approval_request" {
                    break data["request_id"].as_str().unwrap().to_owned();
                }
            }
        };
        let message = if round % 2 == 0 {
            format!("[APPROVE_TOOLS:{request_id}]")
        } else {
            format!("[DENY_TOOLS:{request_id}]")
        };
        let (status, reply) = app
            .post(
                "/send?streaming=true",
                1,
                json!({"message": message, "session_id": session}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {reply}");
        let events = app.sse(1, reply["stream_id"].as_str().unwrap(), None).await;
        assert_eq!(events.last().unwrap().data["type"], "done", "round {round}");
        let ran = executions(&events);
        assert_eq!(ran[0]["error"].is_null(), round % 2 == 0, "round {round}: {}", ran[0]);
    }
}

/// The widget's Approve button on a reloaded history carries the `tool_approval` row's id, or
/// `historical_<row id>` after a session is reopened: both name the request the row records,
/// for its user and session only, once.
#[actix_web::test]
async fn approval_ids_taken_from_history_decide_their_request() {
    let app = app_with(|_| {}).await;
    let (a, b) = (app.path("a.txt"), app.path("b.txt"));
    for (file, alias) in [(&a, "row"), (&b, "historical")] {
        let (session, request_id, _) = ask(&app, 1, &[touch(file)], None).await;
        let row = stored_with_role(&app, 1, &session, "tool_approval").await.remove(0);
        let row_id = row["id"].as_str().unwrap();
        assert_eq!(row["approval_request"]["request_id"], json!(request_id));
        let named = match alias {
            "row" => row_id.to_owned(),
            _ => format!("historical_{row_id}"),
        };
        // Not another user's, not from another session.
        let (status, _) = decide(&app, 2, &named, json!({"approved": true})).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (elsewhere, _) = app.turn(1, "elsewhere", None).await;
        let (status, _) = app
            .post(
                "/send?streaming=true",
                1,
                json!({"message": format!("[APPROVE_TOOLS:{named}]"), "session_id": elsewhere}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!Path::new(file).exists());

        let (status, reply) = app
            .post(
                "/send?streaming=true",
                1,
                json!({"message": format!("[APPROVE_TOOLS:{named}]"), "session_id": session}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{alias}: {reply}");
        let events = app.sse(1, reply["stream_id"].as_str().unwrap(), None).await;
        assert!(executions(&events)[0]["error"].is_null());
        assert!(Path::new(file).exists(), "{alias}: the approved call ran");
        let (status, body) = decide(&app, 1, &named, json!({"approved": true})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("approval_decided")),
            "single use through the alias too"
        );
        let (status, _) = decide(&app, 1, &format!("historical_{request_id}"), json!({"approved": true})).await;
        assert_eq!(status, StatusCode::CONFLICT);
    }
}
