//! The sections of `config.toml` the shell owns (`[server]`, `[database]`, `[llm]`, `[auth]`,
//! `[limits]`, `[attachments]`, `[mock]`, `[session]`, `[mcp]`, `[log]`) and their defaults.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Secret, invalid};
use actors::mcp::{McpServerConfig, ServerSpec};

/// `[server]`: the HTTP listener and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen_address: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// HTTP worker threads (0 = one per core).
    pub workers: usize,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Longest chat message, in characters.
    pub max_message_chars: usize,
    /// Seconds between SSE keep-alive comments on an idle stream.
    pub sse_keepalive_secs: u64,
    /// Seconds a finished stream stays in memory (later it is read from storage).
    pub stream_retention_secs: u64,
    /// Bytes of finished streams kept in memory at most (the oldest leave first).
    pub stream_retention_bytes: usize,
    /// Seconds a non-streaming `/send` waits for the whole answer.
    pub send_timeout_secs: u64,
    /// Seconds any internal request to an actor may take.
    pub actor_timeout_secs: u64,
    /// Seconds running turns get to finish at shutdown before they are stored as interrupted.
    pub shutdown_grace_secs: u64,
    /// Seconds after the last reader of a running turn disconnects before the turn is cancelled
    /// (0 = never: the turn finishes and is stored, ready for resume).
    pub cancel_on_disconnect_secs: u64,
    /// Browser origins allowed to call the API cross-origin (exact, e.g. `https://pmm.example`);
    /// empty = none (same-origin only).
    pub cors_origins: Vec<String>,
    /// Serve the chat page at `/`.
    pub ui: bool,
    /// Seconds a request body may take to arrive (then 408 and the connection closes).
    pub body_timeout_secs: u64,
    /// Open connections at most, over all workers (more wait to be accepted).
    pub max_connections: usize,
    /// SSE streams one user may read at once (then 429 `too_many_streams`).
    pub max_streams_per_user: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            port: 3001,
            workers: 0,
            // The longest message (100,000 characters) as JSON, each escaped as `\uXXXX\uXXXX` at worst.
            max_body_bytes: 2 * 1024 * 1024,
            max_message_chars: 100_000,
            sse_keepalive_secs: 15,
            stream_retention_secs: 600,
            stream_retention_bytes: 16 * 1024 * 1024,
            send_timeout_secs: 300,
            actor_timeout_secs: 30,
            shutdown_grace_secs: 30,
            cancel_on_disconnect_secs: 0,
            cors_origins: Vec::new(),
            ui: true,
            body_timeout_secs: 10,
            max_connections: 10_000,
            max_streams_per_user: 64,
        }
    }
}

/// `[database]`: where history lives.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:PATH` (the embedded default) or `postgres://user@host:port/database?sslmode=…`.
    pub url: String,
    /// For PostgreSQL: the environment variable holding the password (default `PGPASSWORD`).
    /// A password is never read from the file.
    pub password_env: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Storage actor threads.
    pub threads: usize,
    /// The PostgreSQL password, from the environment (see `password_env`).
    #[serde(skip)]
    pub password: Option<Secret>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:aichat.db".into(),
            password_env: "PGPASSWORD".into(),
            pool_size: 4,
            threads: 2,
            password: None,
        }
    }
}

/// The URL may carry a password (from the environment or a flag): never shown.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match self.target() {
            Ok(target) => target.describe(),
            Err(_) => "(invalid)".into(),
        };
        f.debug_struct("DatabaseConfig")
            .field("url", &url)
            .field("password_env", &self.password_env)
            .field("pool_size", &self.pool_size)
            .field("threads", &self.threads)
            .field("password", &self.password)
            .finish()
    }
}

/// Where history lives, as `database.url` says.
pub enum DatabaseTarget {
    /// An SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(Box<actors::storage::PostgresUrl>),
}

impl DatabaseTarget {
    /// For log lines: the file, or the server and database without user or password.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseTarget::Postgres(url) => url.describe(),
        }
    }
}

impl DatabaseConfig {
    /// The database `url` names.
    pub fn target(&self) -> Result<DatabaseTarget, ConfigError> {
        if self.url.starts_with("postgres://") || self.url.starts_with("postgresql://") {
            let url = actors::storage::PostgresUrl::parse(&self.url).map_err(|e| invalid("database.url", e))?;
            return Ok(DatabaseTarget::Postgres(Box::new(url)));
        }
        let path = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                invalid(
                    "database.url",
                    "must be `sqlite:PATH` or `postgres://user@host:port/database`",
                )
            })?;
        if path.is_empty() {
            return Err(invalid("database.url", "the SQLite path is empty"));
        }
        Ok(DatabaseTarget::Sqlite(PathBuf::from(path)))
    }
}

/// `[llm]`: the default provider. The API key comes only from `AICHAT_API_KEY`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// `mock`, `openai`, `gemini`|`google`, `claude`|`anthropic`, `ollama`.
    pub provider: String,
    /// The model name.
    pub model: String,
    /// The vendor's API root (empty = the vendor's default).
    pub base_url: String,
    /// Prepended to every conversation (empty = none).
    pub system_prompt: String,
    /// Sampling temperature.
    pub temperature: f64,
    /// Output token limit (0 = the vendor's default; Anthropic needs one and gets 4096).
    pub max_tokens: u32,
    /// Retries of a model call that fails before its answer starts (connect errors, 429, 5xx).
    pub max_retries: u32,
    /// Seconds to wait for the TCP connection to the vendor.
    pub connect_timeout_secs: u64,
    /// Providers (names from `[[providers]]`) tried in order when the chosen one fails before its
    /// first token.
    pub fallback: Vec<String>,
    /// Failures in a row after which a provider is skipped for `breaker_cooldown_secs`.
    pub breaker_threshold: u32,
    /// Seconds an unhealthy provider is skipped.
    pub breaker_cooldown_secs: u64,
    /// The API key (environment only).
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            provider: "mock".into(),
            model: "mock-model".into(),
            base_url: String::new(),
            system_prompt: String::new(),
            temperature: 0.7,
            max_tokens: 0,
            max_retries: 2,
            connect_timeout_secs: 10,
            fallback: Vec::new(),
            breaker_threshold: 3,
            breaker_cooldown_secs: 30,
            api_key: None,
        }
    }
}

/// `[auth]`: how requests are authenticated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `header`: a trusted proxy sets `X-User-ID` (PMM's set-up). `api_key`: clients send
    /// `Authorization: Bearer <key>`; `X-User-ID` is then refused.
    pub mode: String,
    /// API keys as `sha256:<hex of the key's SHA-256>:<user id>` (env AICHAT_API_KEYS, comma
    /// separated, is added). Only hashes are configured, never keys.
    pub api_keys: Vec<String>,
    /// Admin API keys, in the same form (env AICHAT_ADMIN_API_KEYS is added): they authenticate
    /// their user and open `/admin` (api_key mode).
    pub admin_api_keys: Vec<String>,
    /// User ids that may use `/admin` (header mode). Nobody may by default.
    pub admin_users: Vec<i64>,
    /// Allow header mode on a non-loopback address (only behind a proxy that sets the header).
    pub allow_header_mode_on_network: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "header".into(),
            api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            admin_users: Vec::new(),
            allow_header_mode_on_network: false,
        }
    }
}

/// `[cluster]`: this node among several on one PostgreSQL database (ignored on SQLite, which is
/// single-node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's id in the leases it holds; empty: generated at start (and logged). Give each
    /// node a stable id to have its own turns recovered at once when it restarts.
    pub node_id: String,
    /// How long a node's hold on a running turn lasts unless renewed (every third of it); a dead
    /// node's turns are ended by another node after this.
    pub lease_secs: u64,
    /// A running turn stores its streamed events at least this often (milliseconds), so that
    /// readers on other nodes get them soon (on SQLite: every 500 ms).
    pub flush_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            lease_secs: 10,
            flush_ms: 100,
        }
    }
}

/// `[limits]`: per-user limits on turns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Turns one user may have running at once (0 = no cap).
    pub max_concurrent_turns_per_user: usize,
    /// Turns one user may start per minute (0 = no limit).
    pub turns_per_minute_per_user: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrent_turns_per_user: 4,
            turns_per_minute_per_user: 60,
        }
    }
}

/// `[attachments]`: files sent with `POST /send-with-files`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttachmentsConfig {
    /// Largest file, in bytes (the original's limit: 10 MiB).
    pub max_file_bytes: usize,
    /// Largest sum of the files of one request, in bytes.
    pub max_total_bytes: usize,
    /// Most files in one request.
    pub max_files: usize,
}

impl Default for AttachmentsConfig {
    fn default() -> Self {
        Self {
            max_file_bytes: 10 * 1024 * 1024,
            max_total_bytes: 32 * 1024 * 1024,
            max_files: 10,
        }
    }
}

/// `[mock]`: the offline provider.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// Milliseconds before each streamed chunk (0 allowed).
    pub chunk_delay_ms: u64,
}

/// `[session]`: turns and session actors.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Tool rounds one turn may chain.
    pub max_tool_rounds: u32,
    /// Seconds to wait for a model's first event.
    pub first_token_timeout_secs: u64,
    /// Seconds to wait between two events of a model's answer.
    pub chunk_gap_timeout_secs: u64,
    /// Seconds an idle session actor lives (its history is reloaded from storage later).
    pub idle_timeout_secs: u64,
    /// Seconds to wait for a generated title.
    pub title_timeout_secs: u64,
    /// Session actors kept in memory at most; past it the least recently used idle ones stop.
    pub max_live_sessions: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_tool_rounds: 8,
            first_token_timeout_secs: 60,
            chunk_gap_timeout_secs: 60,
            idle_timeout_secs: 600,
            title_timeout_secs: 10,
            max_live_sessions: 256,
        }
    }
}

/// `[mcp]`: tool servers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    /// A JSON file in the `{"mcpServers": {...}}` format (empty = none).
    pub servers_file: String,
    /// `[[mcp.servers]]` entries.
    pub servers: Vec<McpServerConfig>,
    /// Longest tool result the model sees; longer ones keep head and tail.
    pub max_tool_output_chars: usize,
    /// Longest tool result stored and streamed; longer ones keep head and tail.
    pub max_stored_tool_output_chars: usize,
    /// `[mcp.elicitation]`: whether servers may ask the person, and how long a question waits.
    pub elicitation: actors::elicitation::ElicitationConfig,
    /// The checked, enabled servers of both sources (filled by [`Config::finish`]).
    #[serde(skip)]
    pub resolved: Vec<ServerSpec>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            servers_file: String::new(),
            servers: Vec::new(),
            max_tool_output_chars: 20_000,
            max_stored_tool_output_chars: 1_000_000,
            elicitation: actors::elicitation::ElicitationConfig::default(),
            resolved: Vec::new(),
        }
    }
}

/// `[log]`: diagnostics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn` or `error` (`RUST_LOG` overrides it).
    pub level: String,
    /// JSON lines instead of text.
    pub json: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            json: false,
        }
    }
}
