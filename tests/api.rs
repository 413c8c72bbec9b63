//! Sessions, messages, validation and isolation over real HTTP.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{TestApp, eventually, text_of};

#[actix_web::test]
async fn session_crud_and_pagination() {
    let app = TestApp::spawn().await;
    let (status, created) = app.post("/sessions", 1, json!({ "title": "First" })).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(created["title"], "First");
    assert_eq!(created["user_id"], "1");
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, untitled) = app.post("/sessions", 1, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(untitled["title"], "New Chat Session");

    for i in 0..23 {
        app.post("/sessions", 1, json!({ "title": format!("s{i}") })).await;
    }
    let (status, page) = app.get("/sessions?page=1&limit=10", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 10);
    assert_eq!(
        page["pagination"],
        json!({ "page": 1, "limit": 10, "offset": 0, "total": 25 })
    );
    assert_eq!(page["sessions"][0]["title"], "s22", "newest first");
    let (_, last) = app.get("/sessions?page=3&limit=10", 1).await;
    assert_eq!(last["sessions"].as_array().unwrap().len(), 5);
    let (_, defaults) = app.get("/sessions?page=0&limit=1000", 1).await;
    assert_eq!(defaults["pagination"]["page"], 1);
    assert_eq!(
        defaults["pagination"]["limit"], 20,
        "out-of-range limits fall back like the original"
    );

    let (status, got) = app.get(&format!("/sessions/{id}"), 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["title"], "First");
    let (status, body) = app
        .put(&format!("/sessions/{id}"), 1, json!({ "title": "Renamed" }))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::OK, Some("Session updated successfully"))
    );
    assert_eq!(app.get(&format!("/sessions/{id}"), 1).await.1["title"], "Renamed");
    let (status, body) = app.put(&format!("/sessions/{id}"), 1, json!({ "title": "  " })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field"))
    );

    let (status, _) = app.delete(&format!("/sessions/{id}"), 1).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.get(&format!("/sessions/{id}"), 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
    assert_eq!(body["error"], "Session not found");
    assert_eq!(app.get("/sessions", 1).await.1["pagination"]["total"], 24);
}

#[actix_web::test]
async fn users_are_isolated_on_every_route() {
    let app = TestApp::spawn().await;
    let (session, events) = app.turn(1, "secret plans", None).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
    let (stream_id, _) = app.start_stream(1, "more plans", Some(&session)).await;
    app.sse(1, &stream_id, None).await;

    let foreign = [
        (Method::GET, format!("/sessions/{session}")),
        (Method::PUT, format!("/sessions/{session}")),
        (Method::DELETE, format!("/sessions/{session}")),
        (Method::GET, format!("/sessions/{session}/messages")),
        (Method::DELETE, format!("/sessions/{session}/messages")),
        (Method::DELETE, format!("/clear?session_id={session}")),
        (Method::GET, format!("/stream/{stream_id}")),
    ];
    for (method, path) in foreign {
        let body = (method == Method::PUT).then(|| json!({ "title": "stolen" }));
        let (status, reply) = app.request(method.clone(), &path, Some("2"), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {reply}");
        assert!(reply["code"].as_str().unwrap().ends_with("not_found"), "{reply}");
    }
    assert_eq!(app.get("/sessions", 2).await.1["sessions"], json!([]));

    // Sending into another user's session starts a new session of one's own.
    let (other_session, _) = app.turn(2, "hello", Some(&session)).await;
    assert_ne!(other_session, session);

    let (status, mine) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        mine["messages"].as_array().unwrap().len(),
        4,
        "user 1's history is untouched: {mine}"
    );
    assert_eq!(app.get(&format!("/sessions/{session}"), 1).await.0, StatusCode::OK);
}

#[actix_web::test]
async fn bad_input_gets_4xx_codes_and_changes_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_body_bytes = 2048;
        c.server.max_message_chars = 100;
    })
    .await;
    let (session, _) = app.turn(1, "keep me", None).await;
    let before = app.get(&format!("/sessions/{session}/messages"), 1).await.1;

    let raw = |body: &'static str, user: Option<&'static str>| {
        let mut req = app
            .client
            .post(app.url("/send?streaming=true"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(user) = user {
            req = req.header("X-User-ID", user);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = raw("{\"message\": ", Some("1")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let (status, body) = raw("{\"session_id\": \"x\"}", Some("1")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field"))
    );
    let (status, body) = raw("{\"message\": 42}", Some("1")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    for user in [None, Some("abc"), Some("0"), Some("-4"), Some("1.5")] {
        let (status, body) = raw("{\"message\": \"hi\"}", user).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{user:?}");
        assert_eq!(body["error"], "Authentication required: missing or invalid user ID");
        assert_eq!(body["code"], "unauthenticated");
    }
    let huge = json!({ "message": "x".repeat(4096), "session_id": session });
    let (status, body) = app.post("/send", 1, huge).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    let long = json!({ "message": "y".repeat(101), "session_id": session });
    let (status, body) = app.post("/send", 1, long).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("message_too_long"))
    );
    let (status, body) = app.get("/sessions?page=two", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
    // A page past 2^32 does not wrap to page 1; a bad approval state names its parameter.
    for (path, name) in [
        ("/sessions?page=4294967296", "`page`"),
        ("/approvals?status=bogus", "`status`"),
    ] {
        let (status, body) = app.get(path, 1).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{path}"
        );
        assert!(body["error"].as_str().unwrap().contains(name), "{path}: {body}");
    }
    let (status, body) = app.get("/sessions/no-such-session/messages", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
    let (status, body) = app.get("/stream/stream_nope", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("stream_not_found"))
    );
    let (status, body) = app.delete("/clear", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field"))
    );
    let (status, body) = app.get("/nowhere", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, body) = app.request(Method::POST, "/sessions", Some("1"), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let after = app.get(&format!("/sessions/{session}/messages"), 1).await.1;
    assert_eq!(before, after);
    assert_eq!(app.get("/sessions", 1).await.1["pagination"]["total"], 1);
}

#[actix_web::test]
async fn non_streaming_send_returns_the_answer_and_the_real_session_id() {
    let app = TestApp::spawn().await;
    let (status, reply) = app
        .post(
            "/send",
            1,
            json!({ "message": "ping", "session_id": "qan_overview_123" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["message"]["role"], "assistant");
    assert_eq!(
        reply["message"]["content"],
        "Mock streaming response to: 'ping'. Available tools: 0"
    );
    assert!(reply["message"]["id"].as_str().unwrap().starts_with("collected_"));
    let session = reply["session_id"].as_str().unwrap();
    assert_ne!(session, "qan_overview_123", "client ids are replaced by the server's");
    let (_, messages) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let roles: Vec<_> = messages["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, vec![json!("user"), json!("assistant")]);
}

#[actix_web::test]
async fn provider_failures_surface_as_errors_not_empty_answers() {
    let app = TestApp::spawn().await;
    let (status, body) = app.post("/send", 1, json!({ "message": "/mock error 429" })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("rate_limited")),
        "{body}"
    );
    let (status, body) = app.post("/send", 1, json!({ "message": "/mock error 500" })).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("upstream_error"))
    );

    let (session, events) = app.turn(1, "/mock error 401", None).await;
    let last = &events.last().unwrap().data;
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "auth_failed");
    assert!(events.iter().all(|e| e.data["type"] != "done"));
    let (_, messages) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let messages = messages["messages"].as_array().unwrap().clone();
    assert_eq!(
        messages.len(),
        1,
        "the user's message is kept, no empty answer is stored"
    );
    assert_eq!(messages[0]["role"], "user");
}

#[actix_web::test]
async fn both_clear_routes_clear_history_and_model_context() {
    let app = TestApp::spawn().await;
    let (session, _) = app.turn(1, "one", None).await;
    app.turn(1, "two", Some(&session)).await;
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(text_of(&events), "Messages in context: 5");

    let (status, body) = app.delete(&format!("/sessions/{session}/messages"), 1).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::OK, Some("Session messages cleared successfully"))
    );
    assert_eq!(
        app.get(&format!("/sessions/{session}/messages"), 1).await.1["messages"],
        json!([])
    );
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(text_of(&events), "Messages in context: 1");

    let (status, body) = app.delete(&format!("/clear?session_id={session}"), 1).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::OK, Some("Chat history cleared successfully"))
    );
    let (_, events) = app.turn(1, "/mock context", Some(&session)).await;
    assert_eq!(text_of(&events), "Messages in context: 1");
}

#[actix_web::test]
async fn titles_are_generated_once_and_never_replace_user_titles() {
    let app = TestApp::spawn().await;
    let (session, _) = app.turn(1, "why is replication slow", None).await;
    eventually("a generated title", || async {
        app.get(&format!("/sessions/{session}"), 1).await.1["title"] == "Mock title: why is replication slow"
    })
    .await;

    let (_, created) = app.post("/sessions", 1, json!({ "title": "Mine" })).await;
    let mine = created["id"].as_str().unwrap();
    app.turn(1, "hello there", Some(mine)).await;
    let (other, _) = app.turn(1, "a third chat", None).await;
    // The later session's title shows the background title work has run past ours.
    eventually("the later title", || async {
        app.get(&format!("/sessions/{other}"), 1).await.1["title"] == "Mock title: a third chat"
    })
    .await;
    assert_eq!(app.get(&format!("/sessions/{mine}"), 1).await.1["title"], "Mine");
}

#[actix_web::test]
async fn one_turn_at_a_time_per_session() {
    let app = TestApp::spawn().await;
    let (stream_id, session) = app.start_stream(1, "/mock slow 3000", None).await;
    let (status, body) = app
        .post(
            "/send?streaming=true",
            1,
            json!({ "message": "again", "session_id": session }),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("turn_in_progress"))
    );
    let events = app.sse(1, &stream_id, None).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
    let (_, events) = app.turn(1, "again", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["type"], "done");
}

#[actix_web::test]
async fn health_and_tools_keep_the_original_shape() {
    let app = TestApp::spawn().await;
    let (status, health) = app.request(Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert!(health["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(health["version"].is_string());
    let (status, _) = app.request(Method::GET, "/ready", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, tools) = app.get("/mcp/tools?force_refresh=true", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tools, json!({ "tools": [], "force_refresh": true }));
    let (status, _) = app.request(Method::GET, "/mcp/tools", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[actix_web::test]
async fn hostile_input_on_every_route_never_gets_a_5xx() {
    let app = TestApp::spawn().await;
    let (session, _) = app.turn(1, "seed", None).await;
    let long = "x".repeat(5000);
    let ids = [
        session.as_str(),
        long.as_str(),
        "..%2F..%2Fetc",
        "%00",
        "'; DROP TABLE chat_sessions; --",
        "ünïcødé😀",
    ];
    let bodies = [
        None,
        Some(json!(null)),
        Some(json!([])),
        Some(json!("text")),
        Some(json!({"message": null})),
        Some(json!({"message": ["a"]})),
        Some(json!({"message": "\u{0000}nul", "session_id": 12})),
        Some(json!({"title": {"nested": true}})),
        Some(json!({"approved": "yes", "approved_ids": "all", "remember": "forever"})),
    ];
    let mut routes = Vec::new();
    for id in ids {
        let id = id.replace('/', "%2F");
        routes.extend([
            (Method::GET, format!("/sessions/{id}")),
            (Method::PUT, format!("/sessions/{id}")),
            (Method::GET, format!("/sessions/{id}/messages?page=-1&limit=abc")),
            (Method::DELETE, format!("/sessions/{id}/messages")),
            (Method::GET, format!("/stream/{id}?last_event_id=-5")),
            (Method::POST, format!("/stream/{id}/cancel")),
            (Method::POST, format!("/approvals/{id}")),
            (Method::DELETE, format!("/grants/{id}")),
            (Method::DELETE, format!("/clear?session_id={id}")),
        ]);
    }
    routes.extend([
        (Method::POST, "/send?streaming=maybe".to_owned()),
        (Method::POST, "/sessions".to_owned()),
        (Method::GET, "/sessions?page=99999999999999999999&limit=-1".to_owned()),
        (Method::GET, "/approvals?status=%00".to_owned()),
        (Method::GET, "/mcp/tools?force_refresh=%FF".to_owned()),
    ]);
    for (method, path) in &routes {
        for body in &bodies {
            let (status, reply) = app.request(method.clone(), path, Some("1"), body.clone()).await;
            assert!(status.as_u16() < 500, "{method} {path} {body:?} -> {status} {reply}");
            if !status.is_success() {
                assert!(
                    reply["code"].is_string(),
                    "{method} {path} -> {status}: no error code in {reply}"
                );
            }
        }
    }
    // The sweep cleared the seed session's messages on purpose, but nothing bad renamed or lost it.
    let (status, kept) = app.get(&format!("/sessions/{session}"), 1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(kept["title"].as_str().unwrap().len() < 200);
}

/// `GET /providers`: what a client may put in a message's `provider`, the default first, with
/// vendor, model and health; no key, no URL.
#[actix_web::test]
async fn the_providers_a_person_may_pick_are_listed() {
    let app = TestApp::spawn_with(|c| {
        c.providers = vec![
            toml::from_str(
                r#"name = "backup"
kind = "ollama"
base_url = "http://127.0.0.1:1""#,
            )
            .unwrap(),
        ];
    })
    .await;
    let (status, body) = app.get("/providers", 1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["providers"],
        serde_json::json!([
            {"name": "mock", "vendor": "mock", "model": "mock-model", "default": true, "status": "ok"},
            {"name": "backup", "vendor": "ollama", "model": "llama3.1:8b", "default": false, "status": "ok"},
        ])
    );
    assert_eq!(app.get("/providers", 0).await.0, StatusCode::UNAUTHORIZED);
}
