//! The real provider adapters against a local fake upstream that replays each vendor's streaming
//! format (built from the vendors' documented and recorded framing), at full speed and dribbled a
//! few bytes at a time, and records what our adapters send. Each vendor's full loop runs through
//! the server: user message → parallel tool calls → demo MCP tools → results sent back → text.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use aichat::config::Secret;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, executions, text_of};

const KEY: &str = "sk-test-secret-key-123";

/// One scripted answer of the fake upstream.
#[derive(Clone)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
    /// Bytes per chunk (0: all at once).
    chunk: usize,
    /// Stop sending (but keep the connection) after this many bytes.
    stall_after: Option<usize>,
    retry_after: Option<&'static str>,
}

impl Reply {
    fn ok(content_type: &'static str, body: String, chunk: usize) -> Self {
        Self {
            status: 200,
            content_type,
            body,
            chunk,
            stall_after: None,
            retry_after: None,
        }
    }

    fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: body.to_owned(),
            chunk: 0,
            stall_after: None,
            retry_after: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Recorded {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Upstream {
    replies: Arc<Mutex<VecDeque<Reply>>>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

async fn serve(req: HttpRequest, body: web::Bytes, upstream: web::Data<Upstream>) -> HttpResponse {
    let path = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    upstream.requests.lock().unwrap().push(Recorded { path, headers, body });
    let Some(reply) = upstream.replies.lock().unwrap().pop_front() else {
        return HttpResponse::InternalServerError().body("no scripted reply");
    };
    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap());
    response.content_type(reply.content_type);
    if let Some(after) = reply.retry_after {
        response.insert_header(("retry-after", after));
    }
    let bytes = reply.body.into_bytes();
    let size = if reply.chunk == 0 {
        bytes.len().max(1)
    } else {
        reply.chunk
    };
    let stall = reply.stall_after;
    let chunks: Vec<web::Bytes> = bytes.chunks(size).map(web::Bytes::copy_from_slice).collect();
    let mut sent = 0usize;
    let stream = futures::stream::iter(chunks).then(move |chunk| {
        sent += chunk.len();
        let stalled = stall.is_some_and(|s| sent > s);
        async move {
            if stalled {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            tokio::task::yield_now().await;
            Ok::<_, actix_web::Error>(chunk)
        }
    });
    response.streaming(stream)
}

use futures::StreamExt;

impl Upstream {
    fn start() -> (Self, String) {
        let upstream = Upstream::default();
        let data = web::Data::new(upstream.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 24))
                .default_service(web::to(serve))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        (upstream, format!("http://{addr}"))
    }

    fn push(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn sse(events: &[Value]) -> String {
    events.iter().map(|e| format!("data: {e}\n\n")).collect()
}

fn named_sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
        .collect()
}

/// (tool-call answer, final text answer, content type) in each vendor's format.
fn transcripts(vendor: &str) -> (String, String, &'static str) {
    let args_one = r#"{"text": "one"}"#;
    let args_two = r#"{"a": 6, "b": 7, "op": "multiply"}"#;
    match vendor {
        "openai" => {
            let chunk = |delta: Value, finish: Value| json!({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
            let mut calls = vec![chunk(json!({"role": "assistant", "content": null}), Value::Null)];
            calls.push(chunk(json!({"tool_calls": [{"index": 0, "id": "call_A", "type": "function", "function": {"name": "demo__echo", "arguments": ""}}]}), Value::Null));
            for piece in [&args_one[..5], &args_one[5..]] {
                calls.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
            calls.push(chunk(json!({"tool_calls": [{"index": 1, "id": "call_B", "type": "function", "function": {"name": "demo__calculator", "arguments": args_two}}]}), Value::Null));
            calls.push(chunk(json!({}), json!("tool_calls")));
            calls.push(json!({"id": "c1", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}));
            let mut text = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
            for piece in ["All ", "done", "."] {
                text.push(chunk(json!({"content": piece}), Value::Null));
            }
            text.push(chunk(json!({}), json!("stop")));
            (
                format!("{}data: [DONE]\n\n", sse(&calls)),
                format!(": keep-alive\n\n{}data: [DONE]\n\n", sse(&text)),
                "text/event-stream",
            )
        }
        "anthropic" => {
            let start =
                json!({"type": "message_start", "message": {"id": "m1", "content": [], "usage": {"input_tokens": 11}}});
            let calls = vec![
                start.clone(),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "ping"}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check. "}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_A", "name": "demo__echo", "input": {}}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": &args_one[..6]}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": &args_one[6..]}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_B", "name": "demo__calculator", "input": {}}}),
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": args_two}}),
                json!({"type": "content_block_stop", "index": 2}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
                json!({"type": "message_stop"}),
            ];
            let mut text = vec![
                start,
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ];
            for piece in ["All ", "done", "."] {
                text.push(
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                );
            }
            text.extend([
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}}),
                json!({"type": "message_stop"}),
            ]);
            // CRLF framing, as some servers send it.
            (
                named_sse(&calls).replace('\n', "\r\n"),
                named_sse(&text),
                "text/event-stream",
            )
        }
        "gemini" => {
            let calls = vec![
                json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "demo__echo", "args": {"text": "one"}, "id": "call_A"}, "thoughtSignature": "c2lnbmF0dXJl"}], "role": "model"}, "index": 0}]}),
                json!({"candidates": [{"content": {"parts": [{"functionCall": {"name": "demo__calculator", "args": {"a": 6, "b": 7, "op": "multiply"}, "id": "call_B"}}], "role": "model"}, "finishReason": "STOP", "index": 0}], "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 7}}),
            ];
            let text = vec![
                json!({"candidates": [{"content": {"parts": [{"text": "All "}], "role": "model"}, "index": 0}]}),
                json!({"candidates": [{"content": {"parts": [{"text": "done."}], "role": "model"}, "finishReason": "STOP", "index": 0}]}),
            ];
            (
                sse(&calls).replace('\n', "\r\n"),
                sse(&text).replace('\n', "\r\n"),
                "text/event-stream",
            )
        }
        _ => {
            let line =
                |message: Value, done: bool| json!({"model": "m", "message": message, "done": done}).to_string() + "\n";
            let calls = [
                line(json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_A", "function": {"index": 0, "name": "demo__echo", "arguments": {"text": "one"}}}]}), false),
                line(json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"index": 1, "name": "demo__calculator", "arguments": {"a": 6, "b": 7, "op": "multiply"}}}]}), false),
                json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop", "prompt_eval_count": 11, "eval_count": 7}).to_string() + "\n",
            ]
            .concat();
            let text = [
                line(json!({"role": "assistant", "content": "All "}), false),
                line(json!({"role": "assistant", "content": "done."}), false),
                json!({"model": "m", "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop"}).to_string() + "\n",
            ]
            .concat();
            (calls, text, "application/x-ndjson")
        }
    }
}

async fn app_for(vendor: &str, base: &str, adjust: impl FnOnce(&mut aichat::config::Config)) -> TestApp {
    let base = if vendor == "openai" {
        format!("{base}/v1")
    } else {
        base.to_owned()
    };
    let vendor = vendor.to_owned();
    let app = TestApp::spawn_with(move |c| {
        c.llm.provider = vendor;
        c.llm.base_url = base;
        c.llm.model = "test-model".into();
        c.llm.api_key = Some(Secret::new(KEY));
        c.llm.max_retries = 2;
        c.mcp.servers = vec![actors::mcp::McpServerConfig::stdio(
            "demo",
            env!("CARGO_BIN_EXE_aichat"),
            &["mcp-demo", "--test-tools"],
        )];
        adjust(c);
    })
    .await;
    app.wait_for_server("demo").await;
    app
}

/// A session with a title of the person's: no title request goes to the fake upstream.
async fn titled(app: &TestApp) -> String {
    let (_, session) = app.post("/sessions", 1, json!({"title": "provider test"})).await;
    session["id"].as_str().unwrap().to_owned()
}

fn check_follow_up(vendor: &str, first: &Recorded, second: &Recorded) {
    let b = &second.body;
    match vendor {
        "openai" => {
            assert_eq!(first.path, "/v1/chat/completions");
            assert_eq!(first.header("authorization"), Some(&*format!("Bearer {KEY}")));
            assert_eq!(first.body["stream"], true);
            assert_eq!(first.body["tools"][0]["type"], "function");
            let messages = b["messages"].as_array().unwrap();
            let n = messages.len();
            assert_eq!(messages[n - 3]["role"], "assistant");
            assert_eq!(
                messages[n - 3]["tool_calls"][0]["function"]["arguments"],
                r#"{"text": "one"}"#
            );
            assert_eq!(
                messages[n - 2],
                json!({"role": "tool", "tool_call_id": "call_A", "content": "one"})
            );
            assert_eq!(
                messages[n - 1],
                json!({"role": "tool", "tool_call_id": "call_B", "content": "42"})
            );
        }
        "anthropic" => {
            assert_eq!(first.path, "/v1/messages");
            assert_eq!(first.header("x-api-key"), Some(KEY));
            assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
            assert!(first.body["max_tokens"].as_u64().unwrap() > 0);
            assert!(first.body["tools"][0]["input_schema"].is_object());
            let messages = b["messages"].as_array().unwrap();
            let assistant = &messages[messages.len() - 2];
            assert_eq!(
                assistant["content"][1],
                json!({"type": "tool_use", "id": "toolu_A", "name": "demo__echo", "input": {"text": "one"}})
            );
            let results = &messages[messages.len() - 1];
            assert_eq!(results["role"], "user");
            assert_eq!(
                results["content"][0],
                json!({"type": "tool_result", "tool_use_id": "toolu_A", "content": "one"})
            );
            assert_eq!(results["content"][1]["tool_use_id"], "toolu_B");
        }
        "gemini" => {
            assert_eq!(first.path, "/v1beta/models/test-model:streamGenerateContent?alt=sse");
            assert_eq!(first.header("x-goog-api-key"), Some(KEY));
            assert!(first.body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"].is_object());
            let contents = b["contents"].as_array().unwrap();
            let model = &contents[contents.len() - 2];
            assert_eq!(model["role"], "model");
            assert_eq!(
                model["parts"][0]["thoughtSignature"], "c2lnbmF0dXJl",
                "signatures go back where they came"
            );
            assert!(model["parts"][1].get("thoughtSignature").is_none());
            let replies = &contents[contents.len() - 1];
            assert_eq!(
                replies["parts"][0]["functionResponse"],
                json!({"name": "demo__echo", "id": "call_A", "response": {"result": "one"}})
            );
            assert_eq!(
                replies["parts"][1]["functionResponse"]["response"],
                json!({"result": "42"})
            );
        }
        _ => {
            assert_eq!(first.path, "/api/chat");
            let messages = b["messages"].as_array().unwrap();
            let n = messages.len();
            assert_eq!(
                messages[n - 3]["tool_calls"][1]["function"]["arguments"],
                json!({"a": 6, "b": 7, "op": "multiply"})
            );
            assert_eq!(messages[n - 2]["role"], "tool");
            assert_eq!(messages[n - 2]["tool_name"], "demo__echo");
            assert_eq!(messages[n - 1]["content"], "42");
        }
    }
}

#[actix_web::test]
async fn every_vendor_runs_the_full_tool_loop_at_any_chunking() {
    for vendor in ["openai", "anthropic", "gemini", "ollama"] {
        for chunk in [0, 3] {
            let (upstream, base) = Upstream::start();
            let (calls, text, content_type) = transcripts(vendor);
            upstream.push(Reply::ok(content_type, calls, chunk));
            upstream.push(Reply::ok(content_type, text, chunk));
            let app = app_for(vendor, &base, |_| {}).await;
            let session = titled(&app).await;
            let (_, events) = app.turn(1, "use the tools", Some(&session)).await;
            let done = executions(&events);
            assert_eq!(done.len(), 2, "{vendor}/{chunk}: {events:?}");
            assert_eq!(done[0]["result"], "one", "{vendor}");
            assert_eq!(done[1]["result"], "42", "{vendor}");
            assert!(
                text_of(&events).ends_with("All done."),
                "{vendor}/{chunk}: {}",
                text_of(&events)
            );
            assert_eq!(events.last().unwrap().data["type"], "done");
            let requests = upstream.requests();
            assert_eq!(requests.len(), 2, "{vendor}");
            check_follow_up(vendor, &requests[0], &requests[1]);
            let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
            let messages = stored["messages"].as_array().unwrap();
            assert!(
                messages.last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .ends_with("All done.")
            );
            let asked = messages.iter().find(|m| m.get("tool_calls").is_some()).unwrap();
            assert_eq!(
                asked["usage"],
                json!({"input_tokens": 11, "output_tokens": 7}),
                "{vendor}: usage recorded"
            );
        }
    }
}

#[actix_web::test]
async fn retries_honour_retry_after_and_stop_at_the_limit() {
    let (upstream, base) = Upstream::start();
    let (_, text, content_type) = transcripts("openai");
    upstream.push(Reply {
        retry_after: Some("0"),
        ..Reply::status(429, r#"{"error":{"message":"slow down"}}"#)
    });
    upstream.push(Reply::status(500, r#"{"error":{"message":"oops"}}"#));
    upstream.push(Reply::ok(content_type, text, 0));
    let app = app_for("openai", &base, |_| {}).await;
    let session = titled(&app).await;
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(text_of(&events), "All done.");
    assert_eq!(upstream.requests().len(), 3, "429, 500, then success");

    for _ in 0..3 {
        upstream.push(Reply::status(503, "{}"));
    }
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["code"], "upstream_error");
    assert_eq!(upstream.requests().len(), 6, "one try and two retries");

    upstream.push(Reply::status(401, r#"{"error":{"message":"bad key"}}"#));
    let (status, body) = app
        .post("/send", 1, json!({"message": "hi", "session_id": session}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("auth_failed"))
    );
    assert_eq!(upstream.requests().len(), 7, "no retry on 401");
    assert!(!body.to_string().contains(KEY));

    upstream.push(Reply::status(
        400,
        r#"{"error":{"code":"context_length_exceeded","message":"too long"}}"#,
    ));
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["code"], "context_length_exceeded");
}

#[actix_web::test]
async fn broken_streams_are_errors_never_half_answers() {
    let (upstream, base) = Upstream::start();
    let app = app_for("anthropic", &base, |c| {
        c.session.chunk_gap_timeout_secs = 1;
        c.session.first_token_timeout_secs = 3;
    })
    .await;
    let (calls, _, content_type) = transcripts("anthropic");
    // Cut off in the middle: no message_stop.
    let cut = calls[..calls.len() / 2].to_owned();
    upstream.push(Reply::ok(content_type, cut, 0));
    let session = titled(&app).await;
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["code"], "upstream_protocol_error");
    // A mid-stream error event.
    let error = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    upstream.push(Reply::ok(content_type, error.to_owned(), 0));
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["code"], "upstream_error");
    // A stall after the first chunk hits the gap timeout.
    let (_, text, _) = transcripts("anthropic");
    upstream.push(Reply {
        stall_after: Some(320),
        ..Reply::ok(content_type, text, 40)
    });
    let (_, events) = app.turn(1, "hi", Some(&session)).await;
    assert_eq!(events.last().unwrap().data["code"], "timeout");
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    assert!(
        stored["messages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["role"] == "user"),
        "no half answer stored"
    );

    // Nobody listening: a clear error after the retries.
    let closed = crate::common::free_port();
    let app = app_for("ollama", &format!("http://127.0.0.1:{closed}"), |c| {
        c.llm.max_retries = 1
    })
    .await;
    let (_, events) = app.turn(1, "hi", None).await;
    assert_eq!(events.last().unwrap().data["code"], "upstream_unreachable");
}

#[actix_web::test]
async fn fallback_and_the_circuit_breaker() {
    let (upstream, base) = Upstream::start();
    let app = app_for("openai", &base, |c| {
        c.llm.max_retries = 0;
        c.llm.fallback = vec!["backup".into()];
        c.llm.breaker_threshold = 2;
        c.llm.breaker_cooldown_secs = 1;
        c.providers = vec![
            toml::from_str(
                r#"name = "backup"
kind = "mock""#,
            )
            .unwrap(),
        ];
    })
    .await;
    let session = titled(&app).await;
    for (turn, expected_requests) in [(1, 1), (2, 2)] {
        upstream.push(Reply::status(500, "{}"));
        let (_, events) = app.turn(1, &format!("turn {turn}"), Some(&session)).await;
        assert!(
            text_of(&events).starts_with(&format!("Mock streaming response to: 'turn {turn}'.")),
            "fell back to the mock"
        );
        assert_eq!(upstream.requests().len(), expected_requests);
    }
    let (_, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(health["providers"][0]["name"], "openai");
    assert_eq!(health["providers"][0]["status"], "unhealthy", "{health}");
    let (_, events) = app.turn(1, "turn 3", Some(&session)).await;
    assert!(text_of(&events).starts_with("Mock streaming response"));
    assert_eq!(upstream.requests().len(), 2, "an open breaker skips the provider");
    crate::common::eventually("the cool-down to end", || async {
        app.request(reqwest::Method::GET, "/health", None, None).await.1["providers"][0]["status"] == "ok"
    })
    .await;
    let (_, text, content_type) = transcripts("openai");
    upstream.push(Reply::ok(content_type, text, 0));
    let (_, events) = app.turn(1, "turn 4", Some(&session)).await;
    assert_eq!(text_of(&events), "All done.");
    assert_eq!(upstream.requests().len(), 3);

    // A request may name a provider; an unknown name is refused before anything is stored.
    let (status, reply) = app
        .post(
            "/send",
            1,
            json!({"message": "direct", "provider": "backup", "session_id": session}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        reply["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("Mock streaming response to: 'direct'")
    );
    let (status, body) = app
        .post(
            "/send",
            1,
            json!({"message": "x", "provider": "nope", "session_id": session}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_parameter"))
    );
}

/// Files sent with `/send-with-files` reach each vendor in its own format (images, PDFs where the
/// vendor reads them, text files inlined with their name), on the turn and again from history on
/// the next one; a PDF for Ollama is refused before anything is stored.
#[actix_web::test]
async fn attachments_reach_every_vendor_in_its_own_format() {
    use crate::attachments::{PDF, PNG, part, send_files};
    use base64::Engine;
    let png64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    let pdf64 = base64::engine::general_purpose::STANDARD.encode(PDF);
    let note = "File: notes.csv (text/csv)\n```\na,b\n1,2\n```";
    for vendor in ["openai", "anthropic", "gemini", "ollama"] {
        let (upstream, base) = Upstream::start();
        let (_, text, content_type) = transcripts(vendor);
        let app = app_for(vendor, &base, |_| {}).await;
        let session = titled(&app).await;
        let mut files = vec![
            part("pixel.png", PNG, "image/png"),
            part("notes.csv", b"a,b\n1,2", "text/csv"),
        ];
        if vendor == "ollama" {
            let (status, body) = send_files(
                &app,
                Some("read it"),
                Some(&session),
                vec![part("doc.pdf", PDF, "application/pdf")],
                false,
            )
            .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some("attachment_not_supported_by_provider")
                ),
                "{body}"
            );
            assert!(body["error"].as_str().unwrap().contains("provider ollama"), "{body}");
            let (_, history) = app.get(&format!("/sessions/{session}/messages"), 1).await;
            assert_eq!(history["messages"], json!([]), "nothing stored for a refused request");
        } else {
            files.push(part("doc.pdf", PDF, "application/pdf"));
        }
        upstream.push(Reply::ok(content_type, text.clone(), 0));
        let (status, reply) = send_files(&app, Some("read it"), Some(&session), files, false).await;
        assert_eq!(status, StatusCode::OK, "{vendor}: {reply}");
        assert_eq!(reply["message"]["content"], "All done.", "{vendor}");
        upstream.push(Reply::ok(content_type, text.clone(), 0));
        let (status, _) = app
            .post("/send", 1, json!({"message": "and now?", "session_id": session}))
            .await;
        assert_eq!(status, StatusCode::OK);
        let requests = upstream.requests();
        assert_eq!(requests.len(), 2, "{vendor}");
        for (i, request) in requests.iter().enumerate() {
            let b = &request.body;
            let user = match vendor {
                "gemini" => b["contents"][0].clone(),
                _ => b["messages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["role"] == "user")
                    .unwrap()
                    .clone(),
            };
            let context = format!("{vendor}, request {i}: {user}");
            match vendor {
                "openai" => assert_eq!(
                    user["content"],
                    json!([
                        {"type": "text", "text": "read it"},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png64}")}},
                        {"type": "text", "text": note},
                        {"type": "file", "file": {"filename": "doc.pdf", "file_data": format!("data:application/pdf;base64,{pdf64}")}},
                    ]),
                    "{context}"
                ),
                "anthropic" => assert_eq!(
                    user["content"],
                    json!([
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png64}},
                        {"type": "text", "text": note},
                        {"type": "document", "title": "doc.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf64}},
                        {"type": "text", "text": "read it"},
                    ]),
                    "{context}"
                ),
                "gemini" => assert_eq!(
                    user["parts"],
                    json!([
                        {"text": "read it"},
                        {"inlineData": {"mimeType": "image/png", "data": png64}},
                        {"text": note},
                        {"inlineData": {"mimeType": "application/pdf", "data": pdf64}},
                    ]),
                    "{context}"
                ),
                _ => {
                    assert_eq!(user["images"], json!([png64]), "{context}");
                    assert_eq!(user["content"], json!(format!("read it\n\n{note}")), "{context}");
                }
            }
        }
    }
}

/// A provider's failure, as the operator and the person see it (the real binary, its log read):
/// the log names the provider, model, base URL and the cause (the vendor's message, or the chain
/// down to "Connection refused") with the key removed; the person gets the stable code, the
/// provider's name and a short reason; no key anywhere. The start-up block says what runs.
#[actix_web::test]
async fn provider_failures_are_explained_to_the_operator_and_named_to_the_person() {
    let (upstream, base) = Upstream::start();
    upstream.push(Reply::status(
        401,
        &format!(r#"{{"error":{{"message":"Incorrect API key provided: {KEY}.","type":"invalid_request_error"}}}}"#),
    ));
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[llm]\nprovider = \"openai\"\nmodel = \"gpt-test\"\nbase_url = \"{base}/v1\"\nmax_retries = 0\n\
         [[providers]]\nname = \"backup\"\nkind = \"ollama\"\nbase_url = \"http://127.0.0.1:1\"\nmodel = \"tiny\"\n\
         max_retries = 0\n"
    );
    let server =
        crate::restart::Binary::start_with_env(&dir.path().join("chat.db"), &config, &[("AICHAT_API_KEY", KEY)]);
    let app = TestApp::client_for(&server.base);

    let (status, body) = app.post("/send", 1, json!({"message": "hi"})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("auth_failed")),
        "{body}"
    );
    let said = body["error"].as_str().unwrap();
    assert!(said.contains("openai"), "the person reads which provider: {said}");
    let (status, body) = app
        .post("/send", 1, json!({"message": "hi", "provider": "backup"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_GATEWAY, Some("upstream_unreachable")),
        "{body}"
    );
    let said = body["error"].as_str().unwrap();
    assert!(said.contains("backup") && said.contains("connection refused"), "{said}");

    let log = crate::common::eventually_log(&server.log, "the second provider failure", |log| {
        log.contains("provider=backup")
    })
    .await;
    let openai = log
        .lines()
        .find(|l| l.contains("provider=openai") && l.contains("WARN"))
        .unwrap();
    for part in [
        "model=gpt-test",
        &format!("base_url={base}/v1"),
        "HTTP 401",
        "Incorrect API key provided: [redacted]",
    ] {
        assert!(openai.contains(part), "{part:?} missing from: {openai}");
    }
    let backup = log.lines().find(|l| l.contains("provider=backup")).unwrap();
    assert!(
        backup.contains("Connection refused"),
        "the cause chain reaches the root: {backup}"
    );
    assert!(!log.contains(KEY), "the key reached the log");
    assert!(!log.contains('\u{1b}'), "no colours when the log is not a terminal");

    let start = log.find("listening on http://").map(|at| &log[at..]).unwrap();
    for part in [
        "chat.toml (named by --config",
        "chat.db",
        "openai (openai, gpt-test, default); backup (ollama, tiny)",
    ] {
        assert!(
            start.contains(part),
            "{part:?} missing from the start-up block:\n{start}"
        );
    }
    for label in ["config", "database", "providers", "MCP"] {
        assert!(
            start.lines().any(|l| l.trim_start().starts_with(label)),
            "no {label} line in the start-up block:\n{start}"
        );
    }
    server.kill();
}
