//! Authentication modes, per-user turn and stream limits, and stalled request bodies.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::common::{TestApp, eventually};

const KEY: &str = "ak_live_0123456789abcdef";

pub(crate) fn hash_entry(key: &str, user: i64) -> String {
    let hex: String = Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}:{user}")
}

#[actix_web::test]
async fn api_key_mode_accepts_keys_and_refuses_the_user_header() {
    let app = TestApp::spawn_with(|c| {
        c.auth.mode = "api_key".into();
        c.auth.api_keys = vec![hash_entry(KEY, 5)];
    })
    .await;
    let call = |auth: Option<&'static str>, user: Option<&'static str>| {
        let mut req = app.client.post(app.url("/sessions")).json(&json!({"title": "t"}));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(user) = user {
            req = req.header("X-User-ID", user);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = call(Some("Bearer ak_live_0123456789abcdef"), None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user_id"], "5");
    for (auth, user) in [
        (Some("Bearer wrong"), None),
        (None, Some("5")),
        (Some("Bearer ak_live_0123456789abcdef"), Some("5")),
        (None, None),
    ] {
        let (status, body) = call(auth, user).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
            "{auth:?} {user:?}"
        );
        assert!(!body.to_string().contains(KEY));
        // The 401 says what this mode expects: a key, not a user id.
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("API key") && !error.contains("user ID"), "{error}");
    }
}

#[actix_web::test]
async fn turns_are_capped_per_user_with_retry_after() {
    let app = TestApp::spawn_with(|c| {
        c.limits.max_concurrent_turns_per_user = 1;
        c.limits.turns_per_minute_per_user = 3;
    })
    .await;
    let (stream_id, _) = app.start_stream(1, "/mock slow 2000", None).await;
    let resp = app
        .client
        .post(app.url("/send?streaming=true"))
        .header("X-User-ID", "1")
        .json(&json!({"message": "another"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "too_many_turns");
    // Another user is not affected.
    let (status, _) = app.post("/send", 2, json!({"message": "hi"})).await;
    assert_eq!(status, StatusCode::OK);
    app.sse(1, &stream_id, None).await;
    // Two more turns fit in the minute (three in all), the fourth does not.
    for _ in 0..2 {
        let (status, _) = app.post("/send", 1, json!({"message": "hi"})).await;
        assert_eq!(status, StatusCode::OK);
    }
    let resp = app
        .client
        .post(app.url("/send"))
        .header("X-User-ID", "1")
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        app.get("/sessions", 1).await.1["pagination"]["total"],
        3,
        "refused turns store nothing"
    );
}

fn counter(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The server's Prometheus text.
async fn scrape(app: &TestApp) -> String {
    let metrics = app.client.get(format!("{}/metrics", app.base)).send().await.unwrap();
    metrics.text().await.unwrap()
}

#[actix_web::test]
async fn metrics_move_and_requests_carry_ids() {
    let app = TestApp::spawn().await;
    let scrape = || scrape(&app);
    let before = scrape().await;
    let resp = app
        .client
        .post(app.url("/send"))
        .header("X-User-ID", "1")
        .header("X-Request-ID", "trace-me-42")
        .json(&json!({"message": "count me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["x-request-id"],
        "trace-me-42",
        "the request id is echoed"
    );
    let generated = app.get("/sessions", 1).await;
    assert_eq!(generated.0, StatusCode::OK);
    let after = scrape().await;
    let done = r#"aichat_turns_finished_total{outcome="done"}"#;
    assert!(counter(&after, done) >= counter(&before, done) + 1.0, "{after}");
    let sends = r#"aichat_http_requests_total{route="/v1/chat/send",method="POST",status="200"}"#;
    assert!(counter(&after, sends) >= counter(&before, sends) + 1.0, "{after}");
    assert!(after.contains("aichat_time_to_first_token_seconds_bucket"));
    assert!(after.contains("aichat_turn_overhead_seconds_count"));
    assert!(after.contains("aichat_provider_healthy{provider=\"mock\"} 1"));
    // The turn went through every kind of actor; each has its backlog gauge.
    for actor in ["storage", "registry", "session", "provider"] {
        let gauge = format!("aichat_mailbox_backlog{{actor=\"{actor}\"}}");
        assert!(after.contains(&gauge), "{gauge} missing in {after}");
    }
}

#[actix_web::test]
async fn logs_carry_ids_but_never_keys_or_message_text() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chat.db");
    let closed = crate::common::free_port();
    let config =
        format!("[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{closed}/v1\"\nmax_retries = 0\n");
    let planted_key = "sk-planted-4f9a1c77e2";
    let server = crate::restart::Binary::start_with_env(&db, &config, &[("AICHAT_API_KEY", planted_key)]);
    let app = TestApp::client_for(&server.base);
    let message = "my very private message 8d1e";
    let (_, events) = app.turn(1, message, None).await;
    assert_eq!(events.last().unwrap().data["code"], "upstream_unreachable");
    crate::common::eventually("the request line to be logged", || async {
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("request_id=") && l.contains("/v1/chat/send"))
    })
    .await;
    // The log is read by another thread: wait (bounded) for the turn's line before checking it.
    crate::common::eventually("the turn's line to be logged", || async {
        server.log.lock().unwrap().iter().any(|l| l.contains("stream_id="))
    })
    .await;
    let log = server.log.lock().unwrap().join("\n");
    assert!(log.contains("stream_id="), "turn lines carry the stream id:\n{log}");
    assert!(
        !log.contains("database is locked"),
        "start-up logged a lock error:\n{log}"
    );
    assert!(!log.contains(planted_key), "the API key leaked into the log");
    assert!(!log.contains("8d1e"), "message text leaked into the log");
    server.kill();
}

#[actix_web::test]
async fn cors_allows_only_the_configured_origins() {
    let app = TestApp::spawn_with(|c| c.server.cors_origins = vec!["https://pmm.example".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/sessions"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type, x-user-id")
            .send()
    };
    let ok = preflight("https://pmm.example").await.unwrap();
    assert_eq!(ok.headers()["access-control-allow-origin"], "https://pmm.example");
    assert!(
        ok.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());
    // A state-changing request from another site is refused before it runs (CSRF); the listed
    // origin, the server's own and programs without an Origin header are served.
    let create = |origin: Option<String>| {
        let mut req = app
            .client
            .post(app.url("/sessions"))
            .header("X-User-ID", "7")
            .json(&serde_json::json!({"title": "t"}));
        if let Some(origin) = origin {
            req = req.header("Origin", origin);
        }
        req.send()
    };
    let forged = create(Some("https://evil.example".into())).await.unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = forged.json().await.unwrap();
    assert_eq!(body["code"], "origin_not_allowed", "{body}");
    assert_eq!(
        app.get("/sessions", 7).await.1["pagination"]["total"],
        0,
        "nothing was created"
    );
    let own = app.base.trim_end_matches('/').to_owned();
    for origin in [Some("https://pmm.example".to_owned()), Some(own), None] {
        let resp = create(origin.clone()).await.unwrap();
        assert!(resp.status().is_success(), "{origin:?}: {}", resp.status());
    }
    assert_eq!(app.get("/sessions", 7).await.1["pagination"]["total"], 3);
    // Without configured origins, same-origin requests (which carry Origin too) still work.
    let plain = TestApp::spawn().await;
    let resp = plain
        .client
        .get(plain.url("/sessions"))
        .header("X-User-ID", "1")
        .header("Origin", "http://127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
}

/// A bounded slowloris: request heads whose bodies stall after 10 of 100 bytes. Each is answered
/// 408 and closed once `server.body_timeout_secs` passes, and `/health` answers meanwhile.
#[actix_web::test]
async fn stalled_request_bodies_are_timed_out_and_health_answers_meanwhile() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(|c| c.server.body_timeout_secs = 1).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = "POST /v1/chat/send HTTP/1.1\r\nHost: test\r\nX-User-ID: 1\r\nContent-Type: application/json\r\n\
                    Content-Length: 100\r\n\r\n{\"message\"";
        socket.write_all(head.as_bytes()).await.unwrap();
        stalled.push(socket);
    }
    let (status, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    for mut socket in stalled {
        let mut answer = Vec::new();
        // The server closes the connection: reading ends (a held connection fails by timeout).
        tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer))
            .await
            .expect("the server closes a stalled connection")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("request_timeout"), "{answer}");
    }
}

/// One user reads at most `server.max_streams_per_user` streams at once; a freed place is
/// taken again, and other users are not counted against it.
#[actix_web::test]
async fn one_user_reads_a_bounded_number_of_streams_at_once() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_streams_per_user = 3;
        c.mock.chunk_delay_ms = 100;
    })
    .await;
    let (stream_id, _) = app.start_stream(1, "/mock words 200", None).await;
    let open = |user: i64| {
        let request = app
            .client
            .get(app.url(&format!("/stream/{stream_id}")))
            .header("X-User-ID", user.to_string());
        async move { request.send().await.unwrap() }
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let reader = open(1).await;
        assert_eq!(reader.status(), StatusCode::OK);
        readers.push(reader);
    }
    let refused = open(1).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "too_many_streams");
    // Another user is not counted against user 1 (and cannot read user 1's stream).
    assert_eq!(open(2).await.status(), StatusCode::NOT_FOUND);
    readers.pop();
    eventually("a freed place to be taken again", || async {
        open(1).await.status() == StatusCode::OK
    })
    .await;
}

/// Clearing a session while its turn runs cancels the turn (as the document says: 200, no 409),
/// ends its stream with `cancelled`, and counts it among the finished turns.
#[actix_web::test]
async fn clearing_a_running_turn_cancels_and_counts_it() {
    let app = TestApp::spawn_with(|c| c.mock.chunk_delay_ms = 100).await;
    let scrape = || scrape(&app);
    let cancelled = r#"aichat_turns_finished_total{outcome="cancelled"}"#;
    let before = counter(&scrape().await, cancelled);
    let (stream_id, session) = app.start_stream(1, "/mock words 100", None).await;
    app.sse_events(1, &stream_id, None, 1).await;
    let (status, _) = app
        .request(
            reqwest::Method::DELETE,
            &format!("/sessions/{session}/messages"),
            Some("1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let events = app.sse(1, &stream_id, None).await;
    assert_eq!(events.last().unwrap().data["code"], "cancelled", "{events:?}");
    assert!(counter(&scrape().await, cancelled) >= before + 1.0);
}

/// The chat page is served with a strict Content-Security-Policy (no inline script, nothing from
/// elsewhere), its modules as JavaScript; an unknown asset is 404; `server.ui = false` turns it off.
#[actix_web::test]
async fn the_chat_page_is_served_with_a_strict_policy_and_can_be_turned_off() {
    let app = TestApp::spawn().await;
    let page = app.client.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("object-src 'none'"),
        "{policy}"
    );
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script type="module" src="/ui/app.js">"#));
    let module = app.client.get(format!("{}/ui/app.js", app.base)).send().await.unwrap();
    assert_eq!(module.status(), StatusCode::OK);
    assert!(
        module.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let missing = app.client.get(format!("{}/ui/nope.js", app.base)).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let off = TestApp::spawn_with(|c| c.server.ui = false).await;
    let page = off.client.get(format!("{}/", off.base)).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
}
