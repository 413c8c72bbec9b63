//! `McpTools`: every MCP server's tools as one [`ToolCatalog`]. Tools are exposed to models as
//! `<server>__<tool>` in a stable sorted order; a call is routed back to its server's pool actor
//! as a `CallTool` message.

use std::sync::Arc;
use std::time::Duration;

use actix::{Addr, ArbiterHandle};
use futures::future::BoxFuture;
use rmcp::model::CallToolResult;
use tokio::sync::{oneshot, watch};

use super::config::ServerSpec;
use super::connection::ConnState;
use super::pool::{CallTool, McpPool, PoolView, RefreshPool, RetirePool, ServerStatus};
use crate::backlog::Queued;
use crate::model::ToolCall;
use crate::tools::{CallHooks, InputReply, ToolCatalog, ToolOutcome, ToolSpec};

/// One server: its pool actor and what the pool publishes.
#[derive(Clone)]
pub struct McpServer {
    name: String,
    pool: Addr<McpPool>,
    view: watch::Receiver<PoolView>,
    /// Longest a call may take, progress included (the pool's own bound, plus a margin); none
    /// when the server may ask the person during a call (a person takes longer than a tool: the
    /// pool's clock stands while they are asked, and each question has its own expiry).
    limit: Option<Duration>,
}

impl McpServer {
    /// Starts the server's pool and connections on `arbiter`.
    pub fn start(spec: ServerSpec, arbiter: &ArbiterHandle) -> Self {
        let name = spec.name.clone();
        // Waiting for a permit, then the request with progress: the pool bounds both.
        let limit = (!spec.elicitation).then(|| spec.call_timeout.saturating_mul(11) + Duration::from_secs(5));
        let (pool, view) = McpPool::start(spec, arbiter);
        Self {
            name,
            pool,
            view,
            limit,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tools of its first ready connection.
    pub fn tools(&self) -> Arc<Vec<rmcp::model::Tool>> {
        Arc::clone(&self.view.borrow().tools)
    }

    /// Where it stands.
    pub fn status(&self) -> ServerStatus {
        self.view.borrow().status.clone()
    }

    /// Removes it (a reload): its calls in flight finish, then its connections close.
    pub fn retire(&self) {
        self.pool.do_send(RetirePool);
    }

    /// Re-lists tools on ready connections and reconnects the others; waits for the re-lists.
    pub async fn refresh(&self) {
        let _ = self.pool.send(RefreshPool).await;
    }

    /// Calls one of its tools through its pool actor. Dropping the future abandons the call
    /// (the server is told).
    pub fn call(
        &self,
        tool: String,
        arguments: serde_json::Map<String, serde_json::Value>,
        reply: Option<InputReply>,
        hooks: CallHooks,
    ) -> BoxFuture<'static, ToolOutcome> {
        let (alive, caller) = oneshot::channel::<()>();
        let limit = self.limit;
        let request = self.pool.send(CallTool {
            tool,
            arguments,
            reply,
            progress: hooks.progress,
            asker: hooks.asker,
            caller,
            queued: Queued::enter("mcp_pool"),
        });
        let name = self.name.clone();
        Box::pin(async move {
            let _alive = alive;
            let answered = match limit {
                Some(limit) => tokio::time::timeout(limit, request).await,
                None => Ok(request.await),
            };
            match answered {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => ToolOutcome::Failure(format!("MCP server `{name}` is unavailable")),
                Err(_) => ToolOutcome::Failure(format!("MCP server `{name}` did not answer in time")),
            }
        })
    }
}

/// Folds a tool result into text for the model: text blocks in order, other blocks as JSON,
/// `structuredContent` when there is no content, and `isError` as a failure.
pub(super) fn outcome_of(result: CallToolResult) -> ToolOutcome {
    let parts: Vec<String> = result
        .content
        .iter()
        .map(|block| match block.as_text() {
            Some(text) => text.text.clone(),
            None => serde_json::to_string(block).unwrap_or_default(),
        })
        .collect();
    let mut text = parts.join("\n");
    if text.is_empty()
        && let Some(structured) = &result.structured_content
    {
        text = structured.to_string();
    }
    if result.is_error == Some(true) {
        ToolOutcome::Failure(text)
    } else {
        ToolOutcome::Success(text)
    }
}

/// `<server>__<tool>` with characters providers reject replaced by `_`, at most 64 long.
pub fn exposed_name(server: &str, tool: &str) -> String {
    let raw: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if raw.len() <= 64 {
        return raw;
    }
    // Long names keep a prefix and a hash of the whole, so distinct tools stay distinct.
    let hash = raw.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}_{:08x}", &raw[..55], hash as u32)
}

/// Every configured server's tools, as one catalog. A reload may replace the servers: calls in
/// flight keep the server they were routed to.
#[derive(Default)]
pub struct McpTools {
    servers: std::sync::RwLock<Arc<Vec<McpServer>>>,
    /// The lists the specs were built from, and the specs.
    cache: std::sync::Mutex<SpecCache>,
}

/// Each server's tool list (by pointer: a changed list is a new one) and the specs built from them.
type SpecCache = (Vec<Arc<Vec<rmcp::model::Tool>>>, Arc<Vec<ToolSpec>>);

impl McpTools {
    /// A catalog over running servers.
    pub fn new(servers: Vec<McpServer>) -> Self {
        Self {
            servers: std::sync::RwLock::new(Arc::new(servers)),
            cache: std::sync::Mutex::default(),
        }
    }

    /// The servers now.
    fn servers(&self) -> Arc<Vec<McpServer>> {
        Arc::clone(&self.servers.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the servers (a reload). A server left out stops once the calls it runs end.
    pub fn replace(&self, servers: Vec<McpServer>) {
        *self.servers.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(servers);
        *crate::sync::lock_unpoisoned(&self.cache) = SpecCache::default();
    }

    /// Status of every server.
    pub fn status(&self) -> Vec<ServerStatus> {
        self.servers().iter().map(|s| s.status()).collect()
    }

    /// Refreshes every server at once.
    pub async fn refresh(&self) {
        let servers = self.servers();
        futures::future::join_all(servers.iter().map(|s| s.refresh())).await;
    }

    fn route(&self, exposed: &str) -> Option<(McpServer, String)> {
        let specs = self.specs();
        let spec = specs.iter().find(|spec| spec.name == exposed)?;
        let server = self
            .servers()
            .iter()
            .find(|server| server.name() == spec.server)?
            .clone();
        Some((server, spec.tool.clone()))
    }
}

impl McpTools {
    /// Every server's tools as the model sees them, sorted; rebuilt only when a server's list
    /// changed (each model call asks for it).
    fn specs(&self) -> Arc<Vec<ToolSpec>> {
        let servers = self.servers();
        let current: Vec<Arc<Vec<rmcp::model::Tool>>> = servers.iter().map(McpServer::tools).collect();
        let mut cache = crate::sync::lock_unpoisoned(&self.cache);
        let unchanged =
            cache.0.len() == current.len() && cache.0.iter().zip(&current).all(|(was, is)| Arc::ptr_eq(was, is));
        if unchanged {
            return Arc::clone(&cache.1);
        }
        let mut specs: Vec<ToolSpec> = servers
            .iter()
            .zip(&current)
            .flat_map(|(server, tools)| {
                let name = server.name().to_owned();
                tools
                    .iter()
                    .map(|tool| ToolSpec {
                        name: exposed_name(&name, &tool.name),
                        server: name.clone(),
                        tool: tool.name.to_string(),
                        description: format!("{} ({name})", tool.description.as_deref().unwrap_or("").trim()),
                        input_schema: serde_json::Value::Object((*tool.input_schema).clone()),
                        annotations: tool.annotations.as_ref().and_then(|a| serde_json::to_value(a).ok()),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        let specs = Arc::new(specs);
        *cache = (current, Arc::clone(&specs));
        specs
    }
}

impl ToolCatalog for McpTools {
    fn tools(&self) -> Arc<Vec<ToolSpec>> {
        self.specs()
    }

    fn call(&self, call: &ToolCall, reply: Option<InputReply>, hooks: CallHooks) -> BoxFuture<'static, ToolOutcome> {
        let name = call.function.name.clone();
        let arguments = match serde_json::from_str::<serde_json::Value>(&call.function.arguments) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(serde_json::Value::Null) => serde_json::Map::new(),
            Ok(_) | Err(_) if call.function.arguments.trim().is_empty() => serde_json::Map::new(),
            Ok(_) | Err(_) => {
                return Box::pin(async move { ToolOutcome::Failure("the arguments are not a JSON object".into()) });
            }
        };
        match self.route(&name) {
            Some((server, tool)) => server.call(tool, arguments, reply, hooks),
            None => {
                // A tool of a server that is down is not listed; say why instead of "unknown".
                let down = self
                    .servers()
                    .iter()
                    .find(|s| name.starts_with(&exposed_name(s.name(), "")))
                    .map(McpServer::status)
                    .filter(|status| status.state != ConnState::Ready.as_str());
                let reason = match down {
                    Some(status) => status.unavailable(),
                    None => format!("unknown tool: {name}"),
                };
                Box::pin(async move { ToolOutcome::Failure(reason) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_are_namespaced_sanitised_and_bounded() {
        assert_eq!(exposed_name("time", "get_current_time"), "time__get_current_time");
        assert_eq!(exposed_name("every", "get-sum"), "every__get-sum");
        assert_eq!(exposed_name("a", "tool.with spaces"), "a__tool_with_spaces");
        let long_a = exposed_name("s", &"x".repeat(80));
        let long_b = exposed_name("s", &format!("{}y", "x".repeat(79)));
        assert_eq!(long_a.len(), 64);
        assert_ne!(long_a, long_b);
    }

    #[test]
    fn results_keep_every_block_and_honour_is_error() {
        use rmcp::model::ContentBlock as Content;
        let ok = CallToolResult::success(vec![Content::text("a"), Content::text("b")]);
        assert_eq!(outcome_of(ok), ToolOutcome::Success("a\nb".into()));
        let failed = CallToolResult::error(vec![Content::text("boom")]);
        assert_eq!(outcome_of(failed), ToolOutcome::Failure("boom".into()));
    }
}
