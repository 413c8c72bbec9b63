//! Configuration: built-in defaults < `config.toml` < `AICHAT_*` environment variables < CLI flags.
//!
//! Loading is a pure function of the file text, an environment lookup and the parsed flags, so
//! tests never touch the process environment. Unknown keys and bad values are refused with the
//! offending key path. Secrets come only from environment variables and never print.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use actors::approval::ApprovalConfig;
use actors::mcp::{McpServerConfig, ServerSpec, parse_servers_json};
use clap::Parser;
use serde::Deserialize;

/// A configuration problem, naming the key (or variable, or flag) at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: `{key}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The key path, e.g. `server.port`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range or unsupported.
    #[error("invalid config value for `{key}`: {message}")]
    Invalid {
        /// The key path, environment variable or flag.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A secret value: its `Debug` and `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1".into(),
            port: 3001,
            workers: 0,
            max_body_bytes: 1024 * 1024,
            max_message_chars: 100_000,
            sse_keepalive_secs: 15,
            stream_retention_secs: 600,
            send_timeout_secs: 300,
            actor_timeout_secs: 30,
            shutdown_grace_secs: 30,
            cancel_on_disconnect_secs: 0,
            cors_origins: Vec::new(),
        }
    }
}

/// `[database]`: where history lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite:PATH`.
    pub url: String,
    /// Connections in the pool.
    pub pool_size: u32,
    /// Storage actor threads.
    pub threads: usize,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite:aichat.db".into(),
            pool_size: 4,
            threads: 2,
        }
    }
}

impl DatabaseConfig {
    /// The SQLite file named by `url`.
    pub fn sqlite_path(&self) -> Result<PathBuf, ConfigError> {
        let path = self
            .url
            .strip_prefix("sqlite://")
            .or_else(|| self.url.strip_prefix("sqlite:"))
            .ok_or_else(|| {
                invalid(
                    "database.url",
                    "must be `sqlite:PATH` (PostgreSQL is not supported yet)",
                )
            })?;
        if path.is_empty() {
            return Err(invalid("database.url", "the SQLite path is empty"));
        }
        Ok(PathBuf::from(path))
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
    pub temperature: f32,
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

/// One `[[providers]]` entry: a provider besides the default one of `[llm]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Unique name (requests and `llm.fallback` use it).
    pub name: String,
    /// `mock`, `openai`, `gemini`|`google`, `claude`|`anthropic`, `ollama`.
    pub kind: String,
    /// Model name (empty = the vendor's default).
    #[serde(default)]
    pub model: String,
    /// API root (empty = the vendor's default).
    #[serde(default)]
    pub base_url: String,
    /// Environment variable holding the API key.
    #[serde(default)]
    pub api_key_env: String,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Output token limit (0 = vendor default).
    #[serde(default)]
    pub max_tokens: u32,
    /// Retries before the answer starts.
    #[serde(default = "two")]
    pub max_retries: u32,
    /// TCP connect timeout.
    #[serde(default = "ten")]
    pub connect_timeout_secs: u64,
    /// The key, read from `api_key_env`.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

fn two() -> u32 {
    2
}

fn ten() -> u64 {
    10
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
    /// Allow header mode on a non-loopback address (only behind a proxy that sets the header).
    pub allow_header_mode_on_network: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "header".into(),
            api_keys: Vec::new(),
            allow_header_mode_on_network: false,
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
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_tool_rounds: 8,
            first_token_timeout_secs: 60,
            chunk_gap_timeout_secs: 60,
            idle_timeout_secs: 600,
            title_timeout_secs: 10,
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

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[database]`.
    pub database: DatabaseConfig,
    /// `[llm]`.
    pub llm: LlmConfig,
    /// `[mock]`.
    pub mock: MockConfig,
    /// `[session]`.
    pub session: SessionConfig,
    /// `[mcp]`.
    pub mcp: McpConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[approval]`.
    pub approval: ApprovalConfig,
    /// `[[providers]]`: more providers besides the default one of `[llm]`.
    pub providers: Vec<ProviderConfig>,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[limits]`.
    pub limits: LimitsConfig,
    /// `[attachments]`.
    pub attachments: AttachmentsConfig,
}

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
    },
    /// Act as an MCP client of the server at URL (for the MCP conformance suite; the scenario
    /// comes from `MCP_CONFORMANCE_SCENARIO`).
    McpClient {
        /// The streamable HTTP endpoint.
        url: String,
    },
}

fn parse_bool(key: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(key, format!("expected true or false, got {raw:?}"))),
    }
}

/// Parses config file text (the path is only for messages).
pub fn parse_file(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let parse_error = |key: String, message: String| ConfigError::Parse {
        path: path.to_owned(),
        key,
        message,
    };
    let deserializer = toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), e.to_string()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let mut key = err.path().to_string();
        let message = err.inner().to_string();
        let message = message.lines().next().unwrap_or_default().to_owned();
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            key = if key == "." || key.is_empty() {
                field.to_owned()
            } else {
                format!("{key}.{field}")
            };
        }
        parse_error(key, message)
    })
}

impl Config {
    /// Loads the configuration from flags, the environment (through `env`) and the file.
    pub fn load(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let explicit = cli.config.clone().or_else(|| env("AICHAT_CONFIG").map(PathBuf::from));
        let mut config = if cli.env_only || parse_bool("AICHAT_ENV_ONLY", &env("AICHAT_ENV_ONLY").unwrap_or_default())?
        {
            Config::default()
        } else {
            match explicit {
                Some(path) => Self::read(&path)?,
                None if Path::new("config.toml").exists() => Self::read(Path::new("config.toml"))?,
                None => Config::default(),
            }
        };
        config.apply_env(&env)?;
        config.apply_cli(cli);
        config.finish(&env)?;
        Ok(config)
    }

    /// Validates and resolves what needs the environment (MCP servers); `load` calls it, and so
    /// must anyone who builds a `Config` by hand.
    pub fn finish(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.validate()?;
        self.resolve_providers(env)?;
        let self_exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "aichat".into());
        let mut entries: Vec<(String, McpServerConfig)> = self
            .mcp
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("mcp.servers[{i}]"), s.clone()))
            .collect();
        if !self.mcp.servers_file.is_empty() {
            let path = &self.mcp.servers_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid("mcp.servers_file", format!("cannot read {path}: {e}")))?;
            let servers = parse_servers_json(&text).map_err(|e| invalid("mcp.servers_file", format!("{path}: {e}")))?;
            entries.extend(
                servers
                    .into_iter()
                    .map(|s| (format!("{path}: mcpServers.{}", s.name), s)),
            );
        }
        let mut resolved: Vec<ServerSpec> = Vec::new();
        for (key, entry) in entries {
            let spec = entry.resolve(env, &self_exe).map_err(|e| invalid(&key, e))?;
            if resolved.iter().any(|r| r.name == spec.name) {
                return Err(invalid(&key, format!("duplicate MCP server name {:?}", spec.name)));
            }
            if entry.enabled {
                resolved.push(spec);
            } else {
                tracing::info!(server = %entry.name, "MCP server disabled in config");
            }
        }
        self.mcp.resolved = resolved;
        Ok(())
    }

    fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        parse_file(path, &text)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(port) = env("AICHAT_PORT") {
            self.server.port = port
                .trim()
                .parse()
                .map_err(|_| invalid("AICHAT_PORT", format!("expected a port number, got {port:?}")))?;
        }
        let strings: [(&str, &mut String); 8] = [
            ("AICHAT_LISTEN_ADDRESS", &mut self.server.listen_address),
            ("AICHAT_DATABASE_URL", &mut self.database.url),
            ("AICHAT_LLM_PROVIDER", &mut self.llm.provider),
            ("AICHAT_LLM_MODEL", &mut self.llm.model),
            ("AICHAT_LLM_BASE_URL", &mut self.llm.base_url),
            ("AICHAT_SYSTEM_PROMPT", &mut self.llm.system_prompt),
            ("AICHAT_MCP_SERVERS_FILE", &mut self.mcp.servers_file),
            ("AICHAT_LOG_LEVEL", &mut self.log.level),
        ];
        for (name, slot) in strings {
            if let Some(value) = env(name) {
                *slot = value;
            }
        }
        if let Some(json) = env("AICHAT_LOG_JSON") {
            self.log.json = parse_bool("AICHAT_LOG_JSON", &json)?;
        }
        // AICHAT_API_KEY first, then the vendor's usual variable (the original read ANTHROPIC_API_KEY).
        let vendor_key = match self.llm.provider.as_str() {
            "openai" => "OPENAI_API_KEY",
            "claude" | "anthropic" => "ANTHROPIC_API_KEY",
            "gemini" | "google" => "GEMINI_API_KEY",
            _ => "AICHAT_API_KEY",
        };
        if let Some(keys) = env("AICHAT_API_KEYS") {
            self.auth.api_keys.extend(
                keys.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned),
            );
        }
        self.llm.api_key = ["AICHAT_API_KEY", vendor_key]
            .iter()
            .find_map(|name| env(name).filter(|k| !k.is_empty()))
            .map(Secret);
        Ok(())
    }

    fn apply_cli(&mut self, cli: &Cli) {
        let overrides: [(&Option<String>, &mut String); 8] = [
            (&cli.listen_address, &mut self.server.listen_address),
            (&cli.database_url, &mut self.database.url),
            (&cli.llm_provider, &mut self.llm.provider),
            (&cli.llm_model, &mut self.llm.model),
            (&cli.base_url, &mut self.llm.base_url),
            (&cli.system_prompt, &mut self.llm.system_prompt),
            (&cli.mcp_servers_file, &mut self.mcp.servers_file),
            (&cli.log_level, &mut self.log.level),
        ];
        for (flag, slot) in overrides {
            if let Some(value) = flag {
                slot.clone_from(value);
            }
        }
        if let Some(port) = cli.port {
            self.server.port = port;
        }
        if cli.log_json {
            self.log.json = true;
        }
    }

    /// The default provider (from `[llm]`, named after its kind) and every `[[providers]]` entry.
    pub fn provider_configs(&self) -> Vec<ProviderConfig> {
        let llm = &self.llm;
        let default = ProviderConfig {
            name: llm.provider.clone(),
            kind: llm.provider.clone(),
            model: if llm.model == "mock-model" {
                String::new()
            } else {
                llm.model.clone()
            },
            base_url: llm.base_url.clone(),
            api_key_env: "AICHAT_API_KEY".into(),
            temperature: Some(llm.temperature),
            max_tokens: llm.max_tokens,
            max_retries: llm.max_retries,
            connect_timeout_secs: llm.connect_timeout_secs,
            api_key: llm.api_key.clone(),
        };
        std::iter::once(default).chain(self.providers.iter().cloned()).collect()
    }

    fn resolve_providers(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut names = vec![self.llm.provider.clone()];
        for (i, provider) in self.providers.iter_mut().enumerate() {
            let key = format!("providers[{i}]");
            if provider.name.is_empty() || names.contains(&provider.name) {
                return Err(invalid(
                    &key,
                    format!("name {:?} must be set and unique", provider.name),
                ));
            }
            names.push(provider.name.clone());
            let needs_key = matches!(
                provider.kind.as_str(),
                "openai" | "gemini" | "google" | "claude" | "anthropic"
            );
            if !needs_key && !matches!(provider.kind.as_str(), "mock" | "ollama") {
                return Err(invalid(&key, format!("unknown kind {:?}", provider.kind)));
            }
            if !provider.api_key_env.is_empty() {
                provider.api_key = env(&provider.api_key_env).filter(|k| !k.is_empty()).map(Secret);
            }
            if needs_key && provider.api_key.is_none() {
                return Err(invalid(
                    &key,
                    format!(
                        "needs an API key in the variable named by api_key_env ({:?})",
                        provider.api_key_env
                    ),
                ));
            }
        }
        for name in &self.llm.fallback {
            if !names.contains(name) {
                return Err(invalid("llm.fallback", format!("no provider named {name:?}")));
            }
        }
        Ok(())
    }

    /// The configured API keys as (SHA-256 hash, user id).
    pub fn api_key_hashes(&self) -> Result<Vec<(Vec<u8>, i64)>, ConfigError> {
        self.auth
            .api_keys
            .iter()
            .map(|entry| {
                let bad = || invalid("auth.api_keys", "entries look like sha256:<64 hex digits>:<user id>");
                let mut parts = entry.splitn(3, ':');
                let (Some("sha256"), Some(hex), Some(user)) = (parts.next(), parts.next(), parts.next()) else {
                    return Err(bad());
                };
                let hash = (0..hex.len())
                    .step_by(2)
                    .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                    .collect::<Option<Vec<u8>>>()
                    .filter(|h| h.len() == 32)
                    .ok_or_else(bad)?;
                let user = user.parse::<i64>().ok().filter(|u| *u > 0).ok_or_else(bad)?;
                Ok((hash, user))
            })
            .collect()
    }

    /// Checks ranges and supported values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Ok(ip) = self.server.listen_address.parse::<IpAddr>() {
            match self.auth.mode.as_str() {
                "header" if !ip.is_loopback() && !self.auth.allow_header_mode_on_network => {
                    return Err(invalid(
                        "auth.mode",
                        "header mode trusts X-User-ID from anyone who can connect: on a non-loopback address use \
                         api_key mode, or set auth.allow_header_mode_on_network behind a proxy that sets the header",
                    ));
                }
                "header" => {}
                "api_key" if self.auth.api_keys.is_empty() => {
                    return Err(invalid("auth.api_keys", "api_key mode needs at least one key hash"));
                }
                "api_key" => {}
                other => {
                    return Err(invalid(
                        "auth.mode",
                        format!("expected header or api_key, got {other:?}"),
                    ));
                }
            }
        }
        self.api_key_hashes()?;
        self.server.listen_address.parse::<IpAddr>().map_err(|_| {
            invalid(
                "server.listen_address",
                format!("not an IP address: {:?}", self.server.listen_address),
            )
        })?;
        let positive = [
            ("server.max_body_bytes", self.server.max_body_bytes as u64),
            ("server.max_message_chars", self.server.max_message_chars as u64),
            ("server.sse_keepalive_secs", self.server.sse_keepalive_secs),
            ("server.send_timeout_secs", self.server.send_timeout_secs),
            ("server.actor_timeout_secs", self.server.actor_timeout_secs),
            ("database.pool_size", u64::from(self.database.pool_size)),
            ("database.threads", self.database.threads as u64),
            (
                "session.first_token_timeout_secs",
                self.session.first_token_timeout_secs,
            ),
            ("session.chunk_gap_timeout_secs", self.session.chunk_gap_timeout_secs),
            ("session.idle_timeout_secs", self.session.idle_timeout_secs),
            ("session.title_timeout_secs", self.session.title_timeout_secs),
            ("mcp.max_tool_output_chars", self.mcp.max_tool_output_chars as u64),
            (
                "mcp.max_stored_tool_output_chars",
                self.mcp.max_stored_tool_output_chars as u64,
            ),
            ("approval.expiry_secs", self.approval.expiry_secs),
            ("attachments.max_file_bytes", self.attachments.max_file_bytes as u64),
            ("attachments.max_total_bytes", self.attachments.max_total_bytes as u64),
            ("attachments.max_files", self.attachments.max_files as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.database.pool_size < self.database.threads as u32 {
            return Err(invalid("database.pool_size", "must be at least database.threads"));
        }
        self.database.sqlite_path()?;
        match self.llm.provider.as_str() {
            "mock" | "ollama" => {}
            "openai" | "gemini" | "google" | "claude" | "anthropic" => {
                if self.llm.api_key.is_none() {
                    return Err(invalid(
                        "llm.provider",
                        format!("`{}` needs an API key in AICHAT_API_KEY", self.llm.provider),
                    ));
                }
            }
            other => return Err(invalid("llm.provider", format!("unknown provider `{other}`"))),
        }
        let url = &self.llm.base_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid("llm.base_url", "must be an http(s) URL"));
        }
        if !matches!(self.log.level.as_str(), "trace" | "debug" | "info" | "warn" | "error") {
            return Err(invalid(
                "log.level",
                format!("expected trace|debug|info|warn|error, got {:?}", self.log.level),
            ));
        }
        if !(0.0..=2.0).contains(&self.llm.temperature) {
            return Err(invalid("llm.temperature", "must be between 0 and 2"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_shipped_config_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let config = Config::read(&path).unwrap();
        config.validate().unwrap();
        assert_eq!(config.llm.provider, "mock");
        assert_eq!(config.server.listen_address, "127.0.0.1");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let err = parse_file(Path::new("x.toml"), "[server]\nprot = 1\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`server.prot`"), "{text}");
        let err = parse_file(Path::new("x.toml"), "[sever]\n").unwrap_err();
        assert!(err.to_string().contains("`sever`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse_file(Path::new("x.toml"), "[server]\nport = \"high\"\n").unwrap_err();
        assert!(err.to_string().contains("`server.port`"), "{err}");
        let cli = Cli {
            env_only: true,
            ..Cli::default()
        };
        let err = Config::load(&cli, |k| (k == "AICHAT_PORT").then(|| "99999".to_owned())).unwrap_err();
        assert!(err.to_string().contains("AICHAT_PORT"), "{err}");
        let err = Config::load(&cli, |k| (k == "AICHAT_LLM_PROVIDER").then(|| "skynet".to_owned())).unwrap_err();
        assert!(err.to_string().contains("llm.provider"), "{err}");
    }

    #[test]
    fn precedence_is_defaults_then_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nport = 4000\nmax_message_chars = 10\n[log]\nlevel = \"warn\"\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "AICHAT_PORT" => Some("5000".to_owned()),
            "AICHAT_LOG_LEVEL" => Some("debug".to_owned()),
            "AICHAT_API_KEY" => Some("sk-very-secret".to_owned()),
            _ => None,
        };
        let cli = Cli {
            config: Some(path.clone()),
            port: Some(6000),
            ..Cli::default()
        };
        let config = Config::load(&cli, env).unwrap();
        assert_eq!(config.server.port, 6000);
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.server.max_message_chars, 10);
        assert_eq!(config.server.max_body_bytes, ServerConfig::default().max_body_bytes);
        let shown = format!("{config:?}");
        assert!(!shown.contains("sk-very-secret"), "secret leaked into Debug output");
        assert_eq!(config.llm.api_key.as_ref().map(Secret::expose), Some("sk-very-secret"));
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        assert_eq!(Config::load(&cli, no_env).unwrap().server.port, 4000);
    }

    #[test]
    fn public_addresses_need_authentication() {
        let mut config = Config::default();
        config.server.listen_address = "0.0.0.0".into();
        assert!(config.validate().unwrap_err().to_string().contains("auth.mode"));
        config.auth.allow_header_mode_on_network = true;
        config.validate().unwrap();
        config.auth.mode = "api_key".into();
        assert!(config.validate().unwrap_err().to_string().contains("auth.api_keys"));
        config.auth.api_keys = vec![format!("sha256:{}:3", "ab".repeat(32))];
        config.validate().unwrap();
        config.auth.api_keys = vec!["sha256:nothex:3".into()];
        assert!(config.validate().is_err());
        let hashes = Config {
            auth: AuthConfig {
                api_keys: vec![format!("sha256:{}:3", "0f".repeat(32))],
                ..AuthConfig::default()
            },
            ..Config::default()
        }
        .api_key_hashes()
        .unwrap();
        assert_eq!(hashes, vec![(vec![0x0f; 32], 3)]);
    }

    #[test]
    fn database_urls_must_be_sqlite() {
        let mut config = Config::default();
        config.database.url = "postgres://x".into();
        assert!(config.validate().unwrap_err().to_string().contains("database.url"));
        config.database.url = "sqlite:/tmp/a.db".into();
        assert_eq!(config.database.sqlite_path().unwrap(), PathBuf::from("/tmp/a.db"));
    }
}
