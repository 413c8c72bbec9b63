//! What the binary ships besides the server: a demo MCP server (the quick start's tools, and the
//! test tools behind `--test-tools`) and a minimal MCP client for the conformance suite.

pub mod mcp_client;
pub mod mcp_server;
