//! The command line: flags that override the file and the environment, and the subcommands.

use std::path::PathBuf;

use clap::Parser;

/// Command-line flags; each overrides the file and the environment.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "aichat",
    version,
    about = "AI chat backend: SSE streaming, MCP tools, SQLite history"
)]
pub struct Cli {
    /// Config file (default `config.toml` when it exists; env `AICHAT_CONFIG`).
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Ignore the config file: built-in defaults plus environment and flags.
    #[arg(long)]
    pub env_only: bool,
    /// Port to listen on.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long)]
    pub listen_address: Option<String>,
    /// `sqlite:PATH`.
    #[arg(long)]
    pub database_url: Option<String>,
    /// This node's id among several on one PostgreSQL database.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Default provider.
    #[arg(long)]
    pub llm_provider: Option<String>,
    /// Default model.
    #[arg(long)]
    pub llm_model: Option<String>,
    /// Provider API root.
    #[arg(long)]
    pub base_url: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system_prompt: Option<String>,
    /// MCP servers JSON file.
    #[arg(long)]
    pub mcp_servers_file: Option<String>,
    /// Log level.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Run something other than the server.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the demo MCP tools over stdio (the default config connects to it).
    McpDemo {
        /// Also offer the tools the tests use (gate, crash, add_tool, wait_for_cancel).
        #[arg(long)]
        test_tools: bool,
        /// Prefix `echo` answers with `[LABEL] `.
        #[arg(long)]
        label: Option<String>,
        /// With `--test-tools`: this many more echo tools, `extra_0` … (the scaling benchmark).
        #[arg(long, default_value_t = 0)]
        extra_tools: usize,
    },
    /// Act as an MCP client of the server at URL (for the MCP conformance suite; the scenario
    /// comes from `MCP_CONFORMANCE_SCENARIO`).
    McpClient {
        /// The streamable HTTP endpoint.
        url: String,
    },
}
