//! `aichat mcp-demo`: a small MCP server over stdio, so the quick start has tools with no extra
//! install. Tools: `current_time`, `calculator`, `sleep_ms`, `echo`, `fail` (answers `isError`),
//! `reserve_table` (asks the person for the party size and date: an "input required" result to a
//! 2026-07-28 client, an `elicitation/create` request during the call to an older one).
//! With `--test-tools` it adds tools the tests and benchmarks use: `gate` (waits until N calls of
//! the same gate have started: proves calls run at once without a clock), `crash` (the process
//! exits mid-call), `add_tool` (announces `tools/list_changed`) and `wait_for_cancel` (records a
//! `notifications/cancelled` in a file), `act_then_wait` (a side effect, then a long wait) and
//! `freeze` (hangs the whole server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, InputRequest,
    InputRequiredResult, JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, ServerRequest, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

/// The demo server's state.
#[derive(Clone, Default)]
pub struct DemoServer {
    test_tools: bool,
    label: Option<String>,
    gates: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    added: Arc<Mutex<Vec<String>>>,
}

fn schema(value: Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

fn tool(name: &str, description: &str, input: Value) -> Tool {
    Tool::new(name.to_owned(), description.to_owned(), schema(input))
}

fn text(result: impl Into<String>) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(result.into())])
}

fn failure(result: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(result.into())])
}

impl DemoServer {
    /// A server; `test_tools` adds the tools for tests; a `label` prefixes `echo` answers (so
    /// tests can tell two demo servers apart).
    pub fn new(test_tools: bool, label: Option<String>, extra_tools: usize) -> Self {
        Self {
            test_tools,
            label,
            added: Arc::new(Mutex::new((0..extra_tools).map(|i| format!("extra_{i}")).collect())),
            ..Self::default()
        }
    }

    fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                "reserve_table",
                "Reserves a table at a restaurant; asks the person for the party size and the date",
                json!({"type": "object", "properties": {"restaurant": {"type": "string"}}, "required": ["restaurant"]}),
            ),
            tool(
                "current_time",
                "The current date and time in UTC (RFC 3339)",
                json!({"type": "object", "properties": {}}),
            ),
            tool(
                "calculator",
                "Adds, subtracts, multiplies or divides two numbers",
                json!({"type": "object", "properties": {
                    "a": {"type": "number"}, "b": {"type": "number"},
                    "op": {"type": "string", "enum": ["add", "subtract", "multiply", "divide"]}
                }, "required": ["a", "b", "op"], "additionalProperties": false}),
            ),
            tool(
                "sleep_ms",
                "Waits the given number of milliseconds (at most 60000), then answers",
                json!({"type": "object", "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 60000}}, "required": ["ms"]}),
            ),
            tool(
                "echo",
                "Answers with the given text",
                json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            ),
            tool(
                "fail",
                "Always fails (an isError result)",
                json!({"type": "object", "properties": {"message": {"type": "string"}}}),
            ),
        ];
        if self.test_tools {
            tools.extend([
                tool(
                    "gate",
                    "Waits until `count` calls of the gate `name` have started (10 s at most)",
                    json!({"type": "object", "properties": {"name": {"type": "string"}, "count": {"type": "integer", "minimum": 1}}, "required": ["name", "count"]}),
                ),
                tool("crash", "Exits the server process in the middle of the call", json!({"type": "object", "properties": {}})),
                tool(
                    "add_tool",
                    "Adds an echo tool with the given name and announces tools/list_changed",
                    json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}),
                ),
                tool(
                    "progress",
                    "Reports progress `steps` times, `interval_ms` apart, then answers",
                    json!({"type": "object", "properties": {"steps": {"type": "integer"}, "interval_ms": {"type": "integer"}}, "required": ["steps", "interval_ms"]}),
                ),
                tool(
                    "touch",
                    "Writes `touched` to the file `path` (proves that a call ran)",
                    json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
                ),
                tool(
                    "act_then_wait",
                    "Appends a line `acted` to the file `path` (a side effect), then waits up to 60 s",
                    json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
                ),
                tool(
                    "freeze",
                    "Blocks the whole server for `secs` seconds (it answers nothing, not even pings)",
                    json!({"type": "object", "properties": {"secs": {"type": "integer"}}, "required": ["secs"]}),
                ),
                tool(
                    "big",
                    "Answers with `chars` characters: a head of `a`s and a tail of `z`s",
                    json!({"type": "object", "properties": {"chars": {"type": "integer"}}, "required": ["chars"]}),
                ),
                tool(
                    "wait_for_cancel",
                    "Waits up to 60 s; when the call is cancelled, writes `cancelled` to `marker`",
                    json!({"type": "object", "properties": {"marker": {"type": "string"}}, "required": ["marker"]}),
                ),
            ]);
            let added = self.added.lock().map(|a| a.clone()).unwrap_or_default();
            tools.extend(added.iter().map(|name| {
                tool(
                    name,
                    "An added echo tool",
                    json!({"type": "object", "properties": {"text": {"type": "string"}}}),
                )
            }));
        }
        tools
    }

    async fn gate(&self, name: String, count: u64) -> CallToolResult {
        let mut arrivals = {
            let Ok(mut gates) = self.gates.lock() else {
                return failure("gate state is poisoned");
            };
            let sender = gates.entry(name.clone()).or_insert_with(|| watch::channel(0).0);
            sender.send_modify(|n| *n += 1);
            sender.subscribe()
        };
        let opened = tokio::time::timeout(Duration::from_secs(10), arrivals.wait_for(|n| *n >= count))
            .await
            .is_ok_and(|waited| waited.is_ok());
        if opened {
            text(format!("gate {name} opened with {count} calls"))
        } else {
            failure(format!(
                "gate {name} timed out with {} of {count} calls",
                *arrivals.borrow()
            ))
        }
    }

    /// `reserve_table`: the person's answers are asked for in the client's era. Asked again
    /// (with `inputResponses`), it reads them; asked in flight, it waits for them.
    async fn reserve(&self, request: &CallToolRequestParams, context: &RequestContext<RoleServer>) -> CallToolResponse {
        let restaurant = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("restaurant"))
            .and_then(Value::as_str)
            .unwrap_or("the restaurant")
            .to_owned();
        // A 2026-07-28 client says who it is on every request; an older one said it once.
        let info = context.peer.peer_info();
        let capabilities = context
            .meta
            .client_capabilities()
            .or_else(|| info.as_ref().map(|i| i.capabilities.clone()));
        let version = context
            .meta
            .protocol_version()
            .or_else(|| info.as_ref().map(|i| i.protocol_version.clone()));
        if capabilities.is_none_or(|c| c.elicitation.is_none()) {
            return failure("reserve_table needs a client that can ask the person (elicitation)").into();
        }
        let params = json!({
            "mode": "form",
            "message": format!("Reserve a table at {restaurant}: how many guests, and when?"),
            "requestedSchema": {"type": "object", "properties": {
                "guests": {"type": "integer", "title": "Guests", "minimum": 1, "maximum": 12, "default": 2},
                "date": {"type": "string", "title": "Date", "format": "date"}
            }, "required": ["date"]}
        });
        let answer = if version.is_some_and(|v| v >= rmcp::model::ProtocolVersion::V_2026_07_28) {
            match request.input_responses.as_ref().and_then(|r| r.get("booking")) {
                Some(answer) => answer.clone(),
                None => {
                    let asked = serde_json::from_value(json!({"method": "elicitation/create", "params": params}));
                    let Ok(asked) = asked else {
                        return failure("cannot build the question").into();
                    };
                    let requests = std::iter::once(("booking".to_owned(), InputRequest::Elicitation(asked))).collect();
                    return InputRequiredResult::new(Some(requests), Some(format!("reserve:{restaurant}"))).into();
                }
            }
        } else {
            let asked = serde_json::from_value(json!({"method": "elicitation/create", "params": params}));
            let Ok(asked) = asked else {
                return failure("cannot build the question").into();
            };
            match context.peer.send_request(ServerRequest::ElicitRequest(asked)).await {
                Ok(result) => serde_json::to_value(result).unwrap_or_default(),
                Err(err) => return failure(format!("the question failed: {err}")).into(),
            }
        };
        let content = answer.get("content").cloned().unwrap_or_default();
        match answer.get("action").and_then(Value::as_str) {
            Some("accept") => text(format!(
                "Reserved a table at {restaurant} for {} on {}",
                content.get("guests").and_then(Value::as_i64).unwrap_or(2),
                content.get("date").and_then(Value::as_str).unwrap_or("?")
            ))
            .into(),
            Some(action) => text(format!("No reservation: the person chose {action}")).into(),
            None => failure("the answer has no action").into(),
        }
    }

    async fn run(&self, name: &str, args: &JsonObject, context: RequestContext<RoleServer>) -> CallToolResult {
        let number = |key: &str| args.get(key).and_then(Value::as_f64);
        let string = |key: &str| args.get(key).and_then(Value::as_str).map(str::to_owned);
        match name {
            "current_time" => text(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            "calculator" => {
                let (Some(a), Some(b), Some(op)) = (number("a"), number("b"), string("op")) else {
                    return failure("calculator needs numbers `a`, `b` and an `op`");
                };
                let value = match op.as_str() {
                    "add" => a + b,
                    "subtract" => a - b,
                    "multiply" => a * b,
                    "divide" if b == 0.0 => return failure("division by zero"),
                    "divide" => a / b,
                    other => return failure(format!("unknown op {other:?}")),
                };
                text(value.to_string())
            }
            "sleep_ms" => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0).min(60_000);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text(format!("slept {ms} ms"))
            }
            "echo" => match &self.label {
                Some(label) => text(format!("[{label}] {}", string("text").unwrap_or_default())),
                None => text(string("text").unwrap_or_default()),
            },
            "fail" => failure(format!("failed on purpose: {}", string("message").unwrap_or_default())),
            "gate" if self.test_tools => {
                let count = args.get("count").and_then(Value::as_u64).unwrap_or(1);
                self.gate(string("name").unwrap_or_default(), count).await
            }
            "crash" if self.test_tools => std::process::exit(3),
            "add_tool" if self.test_tools => {
                let name = string("name").unwrap_or_else(|| "added".into());
                if let Ok(mut added) = self.added.lock() {
                    added.push(name.clone());
                }
                let _ = context.peer.notify_tool_list_changed().await;
                text(format!("added {name}"))
            }
            "progress" if self.test_tools => {
                let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(1).min(1000);
                let interval = args
                    .get("interval_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(100)
                    .min(10_000);
                let token = context.meta.get_progress_token();
                for step in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                    if let Some(token) = &token {
                        let mut note = ProgressNotificationParam::new(token.clone(), step as f64);
                        note.total = Some(steps as f64);
                        note.message = Some(format!("step {step} of {steps}"));
                        let _ = context.peer.notify_progress(note).await;
                    }
                }
                text(format!("done after {steps} steps"))
            }
            "touch" if self.test_tools => {
                let path = string("path").unwrap_or_default();
                match std::fs::write(&path, "touched") {
                    Ok(()) => text(format!("touched {path}")),
                    Err(err) => failure(format!("cannot write {path}: {err}")),
                }
            }
            "act_then_wait" if self.test_tools => {
                use std::io::Write;
                let path = string("path").unwrap_or_default();
                let acted = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut file| file.write_all(b"acted\n"));
                match acted {
                    Err(err) => failure(format!("cannot write {path}: {err}")),
                    Ok(()) => tokio::select! {
                        () = context.ct.cancelled() => failure("cancelled"),
                        () = tokio::time::sleep(Duration::from_secs(60)) => text("acted and waited"),
                    },
                }
            }
            "freeze" if self.test_tools => {
                let secs = args.get("secs").and_then(Value::as_u64).unwrap_or(0).min(600);
                freeze(Duration::from_secs(secs));
                text(format!("was frozen for {secs} s"))
            }
            "big" if self.test_tools => {
                let chars = args.get("chars").and_then(Value::as_u64).unwrap_or(0).min(10_000_000) as usize;
                let half = chars / 2;
                text(format!("{}{}", "a".repeat(half), "z".repeat(chars - half)))
            }
            "wait_for_cancel" if self.test_tools => {
                let marker = string("marker").unwrap_or_default();
                tokio::select! {
                    () = context.ct.cancelled() => {
                        let _ = std::fs::write(&marker, "cancelled");
                        failure("cancelled")
                    }
                    () = tokio::time::sleep(Duration::from_secs(60)) => text("not cancelled"),
                }
            }
            other if self.added.lock().map(|a| a.iter().any(|n| n == other)).unwrap_or(false) => {
                text(string("text").unwrap_or_default())
            }
            _ => failure(format!("unknown tool {name:?}")),
        }
    }
}

impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .build(),
        )
        .with_server_info(Implementation::new("aichat-demo", env!("CARGO_PKG_VERSION")))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name == "reserve_table" {
            return Ok(self.reserve(&request, &context).await);
        }
        let args = request.arguments.unwrap_or_default();
        Ok(self.run(&request.name, &args, context).await.into())
    }
}

/// Serves the demo tools on stdin/stdout until the client goes away.
pub async fn serve_stdio(test_tools: bool, label: Option<String>, extra_tools: usize) -> anyhow::Result<()> {
    let running = DemoServer::new(test_tools, label, extra_tools)
        .serve(rmcp::transport::stdio())
        .await?;
    tokio::select! {
        ended = running.waiting() => {
            ended?;
        }
        () = parent_gone() => tracing::warn!("the parent process is gone: the demo server exits"),
    }
    Ok(())
}

/// Resolves when this process's parent has died (it was re-parented), so a server killed with
/// SIGKILL, which cannot close its children, does not leave the demo server behind.
async fn parent_gone() {
    let parent = std::os::unix::process::parent_id();
    while std::os::unix::process::parent_id() == parent {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Blocks the thread the server runs on: a hung server, for the health-ping test.
#[expect(clippy::disallowed_methods, reason = "`freeze` exists to hang the whole server")]
fn freeze(how_long: Duration) {
    std::thread::sleep(how_long);
}
