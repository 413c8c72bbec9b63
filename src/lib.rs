//! The shell of aichat: configuration, the HTTP API with SSE, and the wiring that starts the
//! actors of the `actors` crate.
//!
//! # Layout
//! - [`config`]: defaults < `config.toml` < `AICHAT_*` env < CLI flags, validated at start-up.
//! - [`http`]: the route table under `/v1/chat`, handlers, wire types, and `ApiError`.
//! - [`server`]: starts storage, providers, the session registry and the HTTP server.
//! - [`telemetry`]: `tracing` output.
//! - [`demo`]: the demo MCP server (`aichat mcp-demo`) and client (`aichat mcp-client`).

pub mod config;
pub mod demo;
pub mod http;
pub mod server;
pub mod telemetry;

/// Installs the process-wide TLS crypto provider (ring) that every HTTP client (reqwest, rmcp)
/// needs. Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
