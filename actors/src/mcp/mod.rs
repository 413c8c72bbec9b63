//! MCP tools: a supervised pool of [`McpConnection`] actors per server, and [`McpTools`], the
//! [`ToolCatalog`] sessions use. Tools are exposed to models as `<server>__<tool>` in a stable
//! sorted order; a call is routed back to its server, capped by `max_concurrency`, sent on the
//! least busy ready connection, bounded by a timeout that progress notifications extend, and
//! cancelled on the server (`notifications/cancelled`) when it times out or is abandoned.

mod config;
mod connection;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use actix::{Addr, ArbiterHandle, Supervisor};
use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest, ServerResult,
    Tool,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::{Peer, RoleClient};
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use crate::model::ToolCall;
use crate::tools::{ToolCatalog, ToolOutcome, ToolSpec};

pub use config::{McpServerConfig, ServerSpec, Transport, parse_servers_json};
use connection::ConnectionLost;
pub use connection::{ConnState, McpConnection, Refresh, Slot};

/// A server's connections and its concurrency cap.
pub struct McpServer {
    spec: Arc<ServerSpec>,
    slots: Vec<Arc<Slot>>,
    connections: Vec<Addr<McpConnection>>,
    permits: Arc<Semaphore>,
}

/// A server as `GET /v1/chat/mcp/servers` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerStatus {
    /// Its name.
    pub name: String,
    /// `stdio` or `streamable_http`.
    pub transport: &'static str,
    /// `ready` if any connection is ready, else the first connection's state.
    pub state: &'static str,
    /// Tools it offers.
    pub tool_count: usize,
    /// Calls in flight over all its connections.
    pub calls_in_flight: usize,
    /// Ready connections out of `pool_size`.
    pub connections_ready: usize,
    /// Its pool size.
    pub pool_size: usize,
    /// The last failure, if any connection has one.
    pub last_error: Option<String>,
}

impl McpServer {
    /// Starts `pool_size` supervised connection actors on `arbiter`.
    pub fn start(spec: ServerSpec, arbiter: &ArbiterHandle) -> Arc<Self> {
        let spec = Arc::new(spec);
        let slots: Vec<Arc<Slot>> = (0..spec.pool_size).map(|_| Arc::new(Slot::default())).collect();
        let connections = slots
            .iter()
            .map(|slot| {
                let (spec, slot) = (Arc::clone(&spec), Arc::clone(slot));
                Supervisor::start_in_arbiter(arbiter, move |_| McpConnection::new(spec, slot))
            })
            .collect();
        let permits = Arc::new(Semaphore::new(spec.max_concurrency));
        Arc::new(Self {
            spec,
            slots,
            connections,
            permits,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The tools of its first ready connection.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.slots
            .iter()
            .find_map(|slot| {
                let state = slot.lock();
                (state.state == ConnState::Ready).then(|| Arc::clone(&state.tools))
            })
            .unwrap_or_default()
    }

    /// Where it stands.
    pub fn status(&self) -> ServerStatus {
        let states: Vec<(ConnState, Option<String>)> = self
            .slots
            .iter()
            .map(|slot| {
                let state = slot.lock();
                (state.state, state.last_error.clone())
            })
            .collect();
        let ready = states.iter().filter(|(s, _)| *s == ConnState::Ready).count();
        let state = if ready > 0 {
            ConnState::Ready
        } else {
            states.first().map_or(ConnState::Failed, |(s, _)| *s)
        };
        ServerStatus {
            name: self.spec.name.clone(),
            transport: self.spec.transport.kind(),
            state: state.as_str(),
            tool_count: self.tools().len(),
            calls_in_flight: self.slots.iter().map(|s| s.in_flight()).sum(),
            connections_ready: ready,
            pool_size: self.spec.pool_size,
            last_error: states.into_iter().find_map(|(_, e)| e),
        }
    }

    /// Re-lists tools on ready connections and reconnects the others; waits for the re-lists.
    pub async fn refresh(&self) {
        let replies = self.connections.iter().map(|c| c.send(Refresh));
        let _ = futures::future::join_all(replies).await;
    }

    fn pick(&self) -> Option<(usize, Peer<RoleClient>, u64)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| {
                let state = slot.lock();
                let peer = state.peer.clone().filter(|_| state.state == ConnState::Ready)?;
                Some((slot.in_flight(), i, peer, state.generation))
            })
            .min_by_key(|(busy, i, _, _)| (*busy, *i))
            .map(|(_, i, peer, generation)| (i, peer, generation))
    }

    fn describe_unavailable(&self) -> String {
        let status = self.status();
        match status.last_error {
            Some(err) => format!("MCP server `{}` is {} ({err})", self.spec.name, status.state),
            None => format!("MCP server `{}` is {}", self.spec.name, status.state),
        }
    }

    /// Calls one of its tools.
    pub async fn call(
        self: Arc<Self>,
        tool: String,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> ToolOutcome {
        let timeout = self.spec.call_timeout;
        let permit = match tokio::time::timeout(timeout, Arc::clone(&self.permits).acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return ToolOutcome::Failure(format!("MCP server `{}` is busy", self.spec.name)),
        };
        let Some((index, peer, generation)) = self.pick() else {
            return ToolOutcome::Failure(self.describe_unavailable());
        };
        let slot = Arc::clone(&self.slots[index]);
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(Arc::clone(&slot));
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(
            CallToolRequestParams::new(tool).with_arguments(arguments),
        ));
        let options = PeerRequestOptions::with_timeout(timeout)
            .reset_timeout_on_progress()
            .with_max_total_timeout(timeout.saturating_mul(10));
        let outcome = match peer.send_cancellable_request(request, options).await {
            Ok(handle) => {
                let mut guard = CancelOnDrop {
                    peer: Some(peer.clone()),
                    id: Some(handle.id.clone()),
                };
                let response = handle.await_response().await;
                guard.id = None;
                response
            }
            Err(err) => Err(err),
        };
        drop(permit);
        match outcome {
            Ok(ServerResult::CallToolResult(result)) => outcome_of(result),
            Ok(_) => ToolOutcome::Failure("the MCP server sent an unexpected response".into()),
            Err(err) => {
                let broken = match &err {
                    ServiceError::TransportClosed | ServiceError::TransportSend(_) => true,
                    ServiceError::Timeout { .. } => matches!(self.spec.transport, Transport::StreamableHttp { .. }),
                    _ => false,
                };
                if broken {
                    self.connections[index].do_send(ConnectionLost {
                        generation,
                        reason: err.to_string(),
                    });
                }
                ToolOutcome::Failure(describe_error(&err, timeout))
            }
        }
    }
}

fn describe_error(err: &ServiceError, timeout: std::time::Duration) -> String {
    match err {
        ServiceError::Timeout { .. } => format!("the tool did not answer within {} s", timeout.as_secs()),
        ServiceError::McpError(data) => format!("{} (code {})", data.message, data.code.0),
        ServiceError::TransportClosed => "the MCP server closed the connection".into(),
        other => other.to_string(),
    }
}

/// Counts a call in flight on a connection while it lives.
struct InFlight(Arc<Slot>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells the server to stop working on a call whose caller went away (turn cancelled).
struct CancelOnDrop {
    peer: Option<Peer<RoleClient>>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let (Some(peer), Some(id)) = (self.peer.take(), self.id.take())
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let note = CancelledNotificationParam::new(Some(id), Some("abandoned by the caller".into()));
                let _ = peer.notify_cancelled(note).await;
            });
        }
    }
}

/// Folds a tool result into text for the model: text blocks in order, other blocks as JSON,
/// `structuredContent` when there is no content, and `isError` as a failure.
fn outcome_of(result: CallToolResult) -> ToolOutcome {
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

/// Every configured server's tools, as one catalog.
#[derive(Default)]
pub struct McpTools {
    servers: Vec<Arc<McpServer>>,
}

impl McpTools {
    /// A catalog over running servers.
    pub fn new(servers: Vec<Arc<McpServer>>) -> Self {
        Self { servers }
    }

    /// Status of every server.
    pub fn status(&self) -> Vec<ServerStatus> {
        self.servers.iter().map(|s| s.status()).collect()
    }

    /// Refreshes every server at once.
    pub async fn refresh(&self) {
        futures::future::join_all(self.servers.iter().map(|s| s.refresh())).await;
    }

    fn route(&self, exposed: &str) -> Option<(Arc<McpServer>, String)> {
        self.servers.iter().find_map(|server| {
            server
                .tools()
                .iter()
                .find(|tool| exposed_name(server.name(), &tool.name) == exposed)
                .map(|tool| (Arc::clone(server), tool.name.to_string()))
        })
    }
}

impl ToolCatalog for McpTools {
    fn tools(&self) -> Vec<ToolSpec> {
        let mut specs: Vec<ToolSpec> = self
            .servers
            .iter()
            .flat_map(|server| {
                let name = server.name().to_owned();
                server
                    .tools()
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
        specs
    }

    fn call(&self, call: &ToolCall) -> BoxFuture<'static, ToolOutcome> {
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
            Some((server, tool)) => Box::pin(server.call(tool, arguments)),
            None => Box::pin(async move { ToolOutcome::Failure(format!("unknown tool: {name}")) }),
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
