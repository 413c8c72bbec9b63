//! Elicitation over real HTTP and SSE with the demo MCP server: its `reserve_table` asks the
//! person for the party size and date (an "input required" result: the demo speaks 2026-07-28
//! with us). The turn pauses on the question, the answer resumes the tool on a new stream.

use actors::approval::{ApprovalRule, Policy};
use actors::mcp::McpServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::database::{Backend, Database, on_both_backends};
use crate::common::{SseEvent, TestApp, executions, stored_with_role};
use crate::restart::Binary;

fn demo() -> McpServerConfig {
    McpServerConfig::stdio("demo", env!("CARGO_BIN_EXE_aichat"), &["mcp-demo", "--test-tools"])
}

async fn app_with(enabled: bool, adjust: impl FnOnce(&mut aichat::config::Config)) -> TestApp {
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![demo()];
        c.mcp.elicitation.enabled = enabled;
        c.approval.rules = vec![ApprovalRule {
            tool: "demo__*".into(),
            policy: Policy::Allow,
        }];
        adjust(c);
    })
    .await;
    app.wait_for_server("demo").await;
    app
}

fn reserve(restaurant: &str) -> Value {
    json!({"name": "demo__reserve_table", "arguments": {"restaurant": restaurant}})
}

fn script(calls: &[Value]) -> String {
    format!("/mock tools {}", Value::Array(calls.to_vec()))
}

/// Sends `calls`; the turn must end on a question. Returns (session, the question event).
async fn asked(app: &TestApp, user: i64, calls: &[Value]) -> (String, Value) {
    let (session, events) = app.turn(user, &script(calls), None).await;
    let kinds: Vec<_> = events.iter().map(|e| e.data["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["elicitation_request", "done"], "{events:?}");
    // Its own SSE event name: clients of the original (reading `message` events) never see it.
    assert_eq!(events[0].event.as_deref(), Some("elicitation_request"));
    assert_eq!(events[1].event.as_deref(), Some("message"));
    (session, events[0].data.clone())
}

async fn answer(app: &TestApp, user: i64, id: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/elicitations/{id}"), user, body).await
}

/// Answers, expecting a refusal: its status, code and the failing path (empty unless the answer
/// does not fit the question).
async fn refused(app: &TestApp, user: i64, id: &str, body: Value) -> (StatusCode, String, String) {
    let (status, body) = answer(app, user, id, body).await;
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    (status, text("code"), text("path"))
}

/// A refusal as [`refused`] reads it.
fn refusal(status: StatusCode, code: &str, path: &str) -> (StatusCode, String, String) {
    (status, code.to_owned(), path.to_owned())
}

async fn answer_and_read(app: &TestApp, user: i64, id: &str, body: Value) -> Vec<SseEvent> {
    let (status, reply) = answer(app, user, id, body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    app.sse(user, reply["stream_id"].as_str().unwrap(), None).await
}

#[actix_web::test]
async fn a_tools_question_pauses_the_turn_and_the_answer_resumes_it() {
    let app = app_with(true, |_| {}).await;
    let (session, event) = asked(&app, 1, &[reserve("Chez Rust")]).await;
    let id = event["request_id"].as_str().unwrap();
    assert!(id.starts_with("elicitation_"), "{event}");
    assert_eq!(event["tool_name"], "demo__reserve_table");
    assert_eq!(event["session_id"], json!(session));
    let question = &event["question"];
    assert_eq!(question["mode"], "form");
    assert!(
        question["message"].as_str().unwrap().contains("Chez Rust"),
        "{question}"
    );
    assert_eq!(question["requested_schema"]["required"], json!(["date"]));
    // It waits in the list of the user's questions (not another user's).
    let (_, pending) = app.get("/elicitations", 1).await;
    assert_eq!(pending["elicitations"][0]["request_id"], json!(id), "{pending}");
    assert_eq!(pending["elicitations"][0]["session_id"], json!(session));
    assert_eq!(pending["elicitations"][0]["question"], event["question"]);
    assert_eq!(app.get("/elicitations", 2).await.1["elicitations"], json!([]));
    // Not an approval: the approval list and route do not know it.
    assert_eq!(app.get("/approvals", 1).await.1["approvals"], json!([]));
    let (status, body) = app
        .post(&format!("/approvals/{id}"), 1, json!({"approved": true}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("approval_not_found"))
    );
    // Another user's question is not found; a bad answer names its path; nothing is lost.
    assert_eq!(
        refused(
            &app,
            2,
            id,
            json!({"action": "accept", "content": {"date": "2026-12-24"}})
        )
        .await,
        refusal(StatusCode::NOT_FOUND, "elicitation_not_found", "")
    );
    assert_eq!(
        refused(&app, 1, id, json!({"action": "accept", "content": {"guests": 40}})).await,
        refusal(StatusCode::BAD_REQUEST, "elicitation_answer_invalid", "/content/date")
    );
    assert_eq!(
        refused(
            &app,
            1,
            id,
            json!({"action": "accept", "content": {"date": "2026-12-24", "guests": 40}})
        )
        .await,
        refusal(StatusCode::BAD_REQUEST, "elicitation_answer_invalid", "/content/guests")
    );
    assert_eq!(
        refused(&app, 1, id, json!({"content": {}})).await,
        refusal(StatusCode::BAD_REQUEST, "missing_field", "")
    );

    // The answer (the schema's default fills `guests`) resumes the tool on a new stream.
    let events = answer_and_read(
        &app,
        1,
        id,
        json!({"action": "accept", "content": {"date": "2026-12-24"}}),
    )
    .await;
    let ran = executions(&events);
    assert_eq!(ran.len(), 1, "{events:?}");
    assert_eq!(ran[0]["result"], "Reserved a table at Chez Rust for 2 on 2026-12-24");
    assert_eq!(events.last().unwrap().data["type"], "done");
    assert_eq!(
        refused(&app, 1, id, json!({"action": "cancel"})).await,
        refusal(StatusCode::CONFLICT, "elicitation_answered", "")
    );
    assert_eq!(app.get("/elicitations", 1).await.1["elicitations"], json!([]));
    // History: the model's call and its one result, as for any tool round.
    let results = stored_with_role(&app, 1, &session, "tool").await;
    assert_eq!(results.len(), 1);
    assert!(
        results[0]["content"].as_str().unwrap().contains("Reserved a table"),
        "{results:?}"
    );
}

#[actix_web::test]
async fn a_sibling_call_keeps_its_result_while_the_question_waits_and_order_holds() {
    let app = app_with(true, |_| {}).await;
    let echo = json!({"name": "demo__echo", "arguments": {"text": "first"}});
    let (_, event) = asked(&app, 1, &[echo, reserve("Nowhere")]).await;
    let id = event["request_id"].as_str().unwrap();
    let events = answer_and_read(&app, 1, id, json!({"action": "decline"})).await;
    let ran = executions(&events);
    let results: Vec<_> = ran.iter().map(|e| e["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["first", "No reservation: the person chose decline"]);
    // Content goes with `accept` of a form only.
    let (_, event) = asked(&app, 1, &[reserve("Again")]).await;
    let id = event["request_id"].as_str().unwrap();
    assert_eq!(
        refused(
            &app,
            1,
            id,
            json!({"action": "cancel", "content": {"date": "2026-01-01"}})
        )
        .await,
        refusal(StatusCode::BAD_REQUEST, "elicitation_answer_invalid", "/content")
    );
}

#[actix_web::test]
async fn a_question_nobody_answers_expires_as_cancel() {
    let app = app_with(true, |c| c.mcp.elicitation.expiry_secs = 1).await;
    let (session, event) = asked(&app, 1, &[reserve("Late")]).await;
    let id = event["request_id"].as_str().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    assert_eq!(
        refused(
            &app,
            1,
            id,
            json!({"action": "accept", "content": {"date": "2026-12-24"}})
        )
        .await,
        refusal(StatusCode::CONFLICT, "elicitation_expired", "")
    );
    // The next message settles it: the call's result says the question was cancelled.
    app.turn(1, "hello again", Some(&session)).await;
    let results = stored_with_role(&app, 1, &session, "tool").await;
    assert_eq!(results.len(), 1, "{results:?}");
    let text = results[0]["content"].as_str().unwrap();
    assert!(text.contains("not answered") && text.contains("cancel"), "{text}");
}

#[actix_web::test]
async fn without_elicitation_enabled_servers_are_not_offered_it() {
    let app = app_with(false, |_| {}).await;
    let (_, events) = app.turn(1, &script(&[reserve("Closed")]), None).await;
    let ran = executions(&events);
    assert_eq!(ran.len(), 1, "{events:?}");
    assert!(
        ran[0]["error"]
            .as_str()
            .unwrap()
            .contains("needs a client that can ask"),
        "the capability was not declared: {ran:?}"
    );
}

on_both_backends!(a_question_and_its_answer_survive_a_restart);

async fn a_question_and_its_answer_survive_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(backend, dir.path());
    let config = format!(
        "[mcp.elicitation]\nenabled = true\n[approval]\ndefault = \"allow\"\n[[mcp.servers]]\nname = \"demo\"\ncommand = \"{}\"\nargs = [\"mcp-demo\"]\n",
        env!("CARGO_BIN_EXE_aichat")
    );
    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let (_, event) = asked(&app, 1, &[reserve("Durable")]).await;
    let id = event["request_id"].as_str().unwrap().to_owned();
    server.kill();

    // The server keeps nothing between rounds (the state travels with the question), so the
    // answer given to the next process finishes the call.
    let server = Binary::start_on(&db, &config, &[]);
    let app = TestApp::client_for(&server.base);
    app.wait_for_server("demo").await;
    let events = answer_and_read(
        &app,
        1,
        &id,
        json!({"action": "accept", "content": {"date": "2027-01-02", "guests": 4}}),
    )
    .await;
    assert_eq!(
        executions(&events)[0]["result"],
        "Reserved a table at Durable for 4 on 2027-01-02"
    );
    server.kill();
}

/// server-everything (2025-11-25, over stdio) with the question tool it offers only to clients
/// that declare elicitation.
async fn everything_app(expiry_secs: u64) -> TestApp {
    let entry = crate::mcp::everything_entry();
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![McpServerConfig::stdio("everything", "node", &[&entry, "stdio"])];
        c.mcp.elicitation.enabled = true;
        c.mcp.elicitation.expiry_secs = expiry_secs;
        c.approval.rules = vec![ApprovalRule {
            tool: "everything__*".into(),
            policy: Policy::Allow,
        }];
    })
    .await;
    app.wait_for_server("everything").await;
    app
}

fn trigger() -> String {
    script(&[json!({"name": "everything__trigger-elicitation-request", "arguments": {}})])
}

#[actix_web::test]
async fn a_question_asked_during_a_call_is_answered_on_the_same_stream() {
    let app = everything_app(600).await;
    let (stream, _session) = app.start_stream(1, &trigger(), None).await;
    // The server holds its call open for the answer: the stream shows the question and waits.
    let first = app.sse_events(1, &stream, None, 1).await;
    assert_eq!(first[0].event.as_deref(), Some("elicitation_request"), "{first:?}");
    let event = &first[0].data;
    let id = event["request_id"].as_str().unwrap();
    assert_eq!(event["tool_name"], "everything__trigger-elicitation-request");
    assert_eq!(event["question"]["requested_schema"]["required"], json!(["name"]));
    // Only its user may answer it; the answer is checked against the server's schema.
    assert_eq!(
        refused(&app, 2, id, json!({"action": "accept", "content": {"name": "Mallory"}})).await,
        refusal(StatusCode::NOT_FOUND, "elicitation_not_found", "")
    );
    assert_eq!(
        refused(&app, 1, id, json!({"action": "accept", "content": {"integer": 7}})).await,
        refusal(StatusCode::BAD_REQUEST, "elicitation_answer_invalid", "/content/name")
    );
    let (status, body) = answer(
        &app,
        1,
        id,
        json!({"action": "accept", "content": {"name": "Ada", "email": "ada@example.org", "untitledMultipleSelectEnum": ["Piano"]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], json!(stream), "the same turn goes on");
    let rest = app.sse(1, &stream, first[0].id).await;
    let ran = executions(&rest);
    let result = ran[0]["result"].as_str().unwrap();
    assert!(result.contains("User provided the requested information"), "{result}");
    assert!(
        result.contains("- Name: Ada") && result.contains("- Email: ada@example.org"),
        "{result}"
    );
    assert!(
        result.contains("- Favorite Integer: 42"),
        "the schema's default was sent: {result}"
    );
    assert_eq!(rest.last().unwrap().data["type"], "done");
    assert_eq!(
        refused(&app, 1, id, json!({"action": "cancel"})).await,
        refusal(StatusCode::CONFLICT, "elicitation_answered", "")
    );
}

#[actix_web::test]
async fn a_question_asked_during_a_call_expires_as_cancel_and_the_call_goes_on() {
    let app = everything_app(1).await;
    let (_, events) = app.turn(1, &trigger(), None).await;
    let kinds: Vec<_> = events.iter().map(|e| e.data["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[..2], ["elicitation_request", "tool_execution"], "{events:?}");
    let id = events[0].data["request_id"].as_str().unwrap();
    let result = executions(&events)[0]["result"].as_str().unwrap().to_owned();
    assert!(result.contains("User cancelled"), "{result}");
    assert_eq!(
        refused(&app, 1, id, json!({"action": "decline"})).await,
        refusal(StatusCode::CONFLICT, "elicitation_expired", "")
    );
}

/// Two nodes on one PostgreSQL database, each with the demo (2026-07-28) and server-everything
/// (2025-11-25): a question is answered on the node that did not ask it.
#[actix_web::test]
async fn a_question_is_answered_on_another_node() {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::fresh(Backend::Postgres, dir.path());
    let config = format!(
        "[mcp.elicitation]\nenabled = true\n[approval]\ndefault = \"allow\"\n\
         [[mcp.servers]]\nname = \"demo\"\ncommand = \"{}\"\nargs = [\"mcp-demo\"]\n\
         [[mcp.servers]]\nname = \"everything\"\ncommand = \"node\"\nargs = [\"{}\", \"stdio\"]\n",
        env!("CARGO_BIN_EXE_aichat"),
        crate::mcp::everything_entry()
    );
    let a = Binary::start_on(&db, &config, &[("AICHAT_NODE_ID", "node-a")]);
    let b = Binary::start_on(&db, &config, &[("AICHAT_NODE_ID", "node-b")]);
    let (on_a, on_b) = (TestApp::client_for(&a.base), TestApp::client_for(&b.base));
    for app in [&on_a, &on_b] {
        app.wait_for_server("demo").await;
        app.wait_for_server("everything").await;
    }

    // Paused (2026-07-28): asked on A, answered on B; the continuation runs where it was answered.
    let (_, event) = asked(&on_a, 1, &[reserve("Two Nodes")]).await;
    let id = event["request_id"].as_str().unwrap();
    let events = answer_and_read(
        &on_b,
        1,
        id,
        json!({"action": "accept", "content": {"date": "2027-03-04"}}),
    )
    .await;
    assert_eq!(
        executions(&events)[0]["result"],
        "Reserved a table at Two Nodes for 2 on 2027-03-04"
    );

    // Waiting (2025-11-25): the call runs on A; the answer given on B is stored there and reaches
    // A's call through the database.
    let (stream, _) = on_a.start_stream(1, &trigger(), None).await;
    let first = on_a.sse_events(1, &stream, None, 1).await;
    assert_eq!(first[0].event.as_deref(), Some("elicitation_request"), "{first:?}");
    let id = first[0].data["request_id"].as_str().unwrap();
    assert_eq!(
        refused(&on_b, 2, id, json!({"action": "decline"})).await,
        refusal(StatusCode::NOT_FOUND, "elicitation_not_found", ""),
        "only its user"
    );
    let (status, body) = answer(&on_b, 1, id, json!({"action": "accept", "content": {"name": "Grace"}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stream_id"], json!(stream));
    let rest = on_b.sse(1, &stream, first[0].id).await;
    let result = executions(&rest)[0]["result"].as_str().unwrap().to_owned();
    assert!(result.contains("- Name: Grace"), "{result}");
    assert_eq!(
        refused(&on_a, 1, id, json!({"action": "cancel"})).await,
        refusal(StatusCode::CONFLICT, "elicitation_answered", ""),
        "answered once"
    );
}
