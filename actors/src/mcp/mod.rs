//! MCP tools: per server, a supervised [`McpPool`] actor that owns the server's connection
//! actors ([`McpConnection`]) and runs its tool calls; [`McpTools`], the [`crate::tools::ToolCatalog`]
//! sessions use, routes each call to its server's pool as a `CallTool` message. Calls are capped
//! by `max_concurrency`, sent on the least busy ready connection, bounded by a timeout that
//! progress notifications extend (and that stands while a server's question waits on the person),
//! and cancelled on the server (`notifications/cancelled`) when they time out or are abandoned.
//! An "input required" result comes back as [`crate::tools::ToolOutcome::InputRequired`]; a
//! question asked during a call goes to that call's asker ([`asking`]).

pub mod asking;
mod catalog;
mod clock;
mod config;
mod connection;
mod legacy_sse;
mod pool;
pub mod progress;

pub use catalog::{McpServer, McpTools, exposed_name};
pub use config::{
    HttpMode, McpServerConfig, ServerSpec, Transport, defaults as server_defaults, parse_servers_json,
    valid_server_name,
};
pub use connection::{ConnState, McpConnection};
pub use pool::{CallTool, McpPool, PoolView, ServerStatus};
