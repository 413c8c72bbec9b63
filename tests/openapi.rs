//! The OpenAPI document: served, complete, and true. Schemathesis (PyPI) fuzzes every documented
//! operation of a real server: no answer may be a 5xx, every answer must match the document, and a
//! method a path does not document gets 405 with an exact `Allow`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use actors::mcp::McpServerConfig;
use reqwest::{Method, StatusCode};

use crate::common::TestApp;

#[actix_web::test]
async fn the_document_lists_every_route_and_other_methods_get_405() {
    let app = TestApp::spawn().await;
    // Public, like health: a client reads it before it has credentials.
    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| format!("{m} {path}")))
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "delete /v1/chat/admin/mcp/servers/{name}",
            "delete /v1/chat/admin/providers/{name}",
            "delete /v1/chat/clear",
            "delete /v1/chat/grants/{id}",
            "delete /v1/chat/sessions/{id}",
            "delete /v1/chat/sessions/{id}/messages",
            "get /metrics",
            "get /v1/chat/admin/mcp/servers",
            "get /v1/chat/admin/providers",
            "get /v1/chat/approvals",
            "get /v1/chat/elicitations",
            "get /v1/chat/grants",
            "get /v1/chat/health",
            "get /v1/chat/mcp/servers",
            "get /v1/chat/mcp/tools",
            "get /v1/chat/openapi.json",
            "get /v1/chat/providers",
            "get /v1/chat/ready",
            "get /v1/chat/sessions",
            "get /v1/chat/sessions/{id}",
            "get /v1/chat/sessions/{id}/messages",
            "get /v1/chat/stream",
            "get /v1/chat/stream/{stream_id}",
            "post /v1/chat/admin/mcp/servers",
            "post /v1/chat/admin/providers",
            "post /v1/chat/admin/reload",
            "post /v1/chat/approvals/{request_id}",
            "post /v1/chat/elicitations/{request_id}",
            "post /v1/chat/send",
            "post /v1/chat/send-with-files",
            "post /v1/chat/sessions",
            "post /v1/chat/stream/{stream_id}/cancel",
            "put /v1/chat/admin/mcp/servers/{name}",
            "put /v1/chat/admin/providers/{name}",
            "put /v1/chat/sessions/{id}",
        ]
    );

    let resp = app
        .client
        .request(Method::PATCH, app.url("/sessions/abc"))
        .header("X-User-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, PUT, DELETE");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "method_not_allowed");
    let (status, body) = app.request(Method::GET, "/send", Some("1"), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed"))
    );
    // Query flags are booleans as documented: an empty value is not `false`.
    for query in ["?streaming=", "?streaming=1", "?streaming=maybe"] {
        let (status, body) = app
            .request(
                Method::POST,
                &format!("/send{query}"),
                Some("1"),
                Some(serde_json::json!({"message": "hi"})),
            )
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{query}"
        );
    }
    let (status, body) = app.get("/sessions/a/b/c", 1).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
}

fn schemathesis() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-servers/venv/bin/schemathesis");
    assert!(
        bin.exists(),
        "schemathesis is missing: run scripts/install-test-servers.sh (scripts/test.sh does)"
    );
    bin
}

/// Every check schemathesis has but one (see below), over every operation, with a bounded number of examples per
/// operation and a fixed seed (`SCHEMATHESIS_SEED` overrides it; the run prints the seed).
#[actix_web::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let bin = schemathesis();
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![McpServerConfig::stdio(
            "demo",
            env!("CARGO_BIN_EXE_aichat"),
            &["mcp-demo"],
        )];
        c.approval.default = actors::approval::Policy::Ask;
        c.limits.turns_per_minute_per_user = 100_000;
        // Room for any message schemathesis makes too long, so it gets the 400 that names the
        // field (`message_too_long`) rather than the body limit's 413, which it does not count
        // as a rejection; tests/api.rs covers the body limit.
        c.server.max_body_bytes = 16 * 1024 * 1024;
        c.limits.max_concurrent_turns_per_user = 64;
        // The admin routes are fuzzed too (as user 1).
        c.auth.admin_users = vec![1];
    })
    .await;
    app.wait_for_server("demo").await;
    #[expect(clippy::disallowed_methods, reason = "a test knob, not configuration")]
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261125".into());
    let work = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(bin)
        .current_dir(work.path())
        .args([
            "run",
            &app.url("/openapi.json"),
            "--checks",
            "all",
            "--max-examples",
            "25",
        ])
        // `use_after_free` takes DELETE /sessions/{id}/messages (clearing the history) for deleting
        // a resource, and the empty list read afterwards for a deleted resource still served.
        // tests/api.rs checks that a deleted session's routes answer 404.
        .args(["--exclude-checks", "use_after_free"])
        // Whether an upload is valid depends on its bytes (an image must be one), which a schema
        // cannot say; tests/attachments.rs covers the route's good and bad bodies.
        .args(["--exclude-path", "/v1/chat/send-with-files"])
        // The legacy single-request stream answers with SSE whose frames (the `retry:` frame
        // first) schemathesis 4.32 validates as events; tests/streaming.rs reads it with a real
        // SSE client.
        .args(["--exclude-path", "/v1/chat/stream"])
        .args([
            "--seed",
            &seed,
            // One worker: with two threads, hypothesis's lambda-source cache parses Python
            // source on both at once, which CPython 3.11 can fail with "AST constructor recursion
            // depth mismatch" (a runtime error of the tool, not a finding).
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ])
        .args(["--header", "X-User-ID: 1"])
        // No update checks or telemetry: CI has no internet.
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("HYPOTHESIS_STORAGE_DIRECTORY", work.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("schemathesis finished within 10 minutes")
        .expect("schemathesis ran");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis failed ({}):\n{report}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // It really tested every operation (a wrong URL or an empty document would also "pass"): all
    // 32 selected (the document's 34 operations under /v1/chat less the two excluded above).
    assert!(report.contains("Tested: 32"), "{report}");
}
