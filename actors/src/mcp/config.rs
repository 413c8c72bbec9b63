//! MCP server configuration: `[[mcp.servers]]` tables and the common `{"mcpServers": {...}}` JSON
//! file, both resolved into a checked [`ServerSpec`].

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// One `[[mcp.servers]]` entry as written in `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// Unique name; tools are exposed as `<name>__<tool>`.
    pub name: String,
    /// `stdio`, `streamable_http`, `sse` (the legacy HTTP+SSE transport) or `http` (streamable
    /// HTTP, falling back to legacy SSE); inferred from `command` / `url` (as `http`) when absent.
    #[serde(default)]
    pub transport: Option<String>,
    /// Program to start (stdio). `@self` is this executable.
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Extra environment for the process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the process.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Endpoint (streamable HTTP).
    #[serde(default)]
    pub url: Option<String>,
    /// Extra HTTP headers (streamable HTTP).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Environment variable holding a bearer token (streamable HTTP).
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// `false` skips the server.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Free text for operators.
    #[serde(default)]
    pub description: Option<String>,
    /// Connections to the server.
    #[serde(default = "defaults::pool_size")]
    pub pool_size: usize,
    /// Calls in flight at most, over all connections.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Seconds one call may take without progress notifications.
    #[serde(default = "defaults::call_timeout_secs")]
    pub call_timeout_secs: u64,
    /// Seconds the start-up handshake may take.
    #[serde(default = "defaults::connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// Seconds between health pings of a ready connection (0 = none). A server that does not
    /// answer one within the same time (at most 10 s) is treated as lost and reconnected.
    #[serde(default = "defaults::ping_interval_secs")]
    pub ping_interval_secs: u64,
}

fn yes() -> bool {
    true
}
/// The defaults of a server's limits (the configuration file's and the admin API's).
pub mod defaults {
    /// Connections to the server.
    pub fn pool_size() -> usize {
        1
    }
    /// Calls in flight at most.
    pub fn max_concurrency() -> usize {
        16
    }
    /// Seconds a call may take without progress.
    pub fn call_timeout_secs() -> u64 {
        60
    }
    /// Seconds the handshake may take.
    pub fn connect_timeout_secs() -> u64 {
        30
    }
    /// Seconds between health pings.
    pub fn ping_interval_secs() -> u64 {
        30
    }
}

impl McpServerConfig {
    /// A stdio server with default limits.
    pub fn stdio(name: &str, command: &str, args: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            transport: None,
            command: Some(command.to_owned()),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: BTreeMap::new(),
            cwd: None,
            url: None,
            headers: BTreeMap::new(),
            bearer_token_env: None,
            enabled: true,
            description: None,
            pool_size: defaults::pool_size(),
            max_concurrency: defaults::max_concurrency(),
            call_timeout_secs: defaults::call_timeout_secs(),
            connect_timeout_secs: defaults::connect_timeout_secs(),
            ping_interval_secs: defaults::ping_interval_secs(),
        }
    }

    /// A streamable HTTP server with default limits.
    pub fn http(name: &str, url: &str) -> Self {
        Self {
            command: None,
            url: Some(url.to_owned()),
            ..Self::stdio(name, "", &[])
        }
    }
}

/// One server of the JSON file format used by the original and by common MCP hosts.
#[derive(Debug, Clone, Deserialize)]
struct JsonServer {
    #[serde(default)]
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JsonFile {
    #[serde(rename = "mcpServers", default)]
    mcp_servers: BTreeMap<String, JsonServer>,
}

/// Parses a `{"mcpServers": {...}}` file. `timeout` keeps the original's meaning: the handshake.
pub fn parse_servers_json(text: &str) -> Result<Vec<McpServerConfig>, String> {
    let file: JsonFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(file
        .mcp_servers
        .into_iter()
        .map(|(name, s)| McpServerConfig {
            name,
            transport: None,
            command: s.command,
            args: s.args,
            env: s.env,
            cwd: None,
            url: s.url,
            headers: s.headers,
            bearer_token_env: None,
            enabled: s.enabled.unwrap_or(true),
            description: s.description,
            pool_size: defaults::pool_size(),
            max_concurrency: defaults::max_concurrency(),
            call_timeout_secs: defaults::call_timeout_secs(),
            connect_timeout_secs: s.timeout.filter(|t| *t > 0).unwrap_or(30),
            ping_interval_secs: defaults::ping_interval_secs(),
        })
        .collect())
}

/// How to reach a server.
#[derive(Clone, PartialEq, Eq)]
pub enum Transport {
    /// A child process speaking JSON-RPC on stdin/stdout.
    Stdio {
        /// The program.
        command: String,
        /// Its arguments.
        args: Vec<String>,
        /// Extra environment.
        env: BTreeMap<String, String>,
        /// Working directory.
        cwd: Option<String>,
    },
    /// An HTTP server: streamable HTTP, or the legacy HTTP+SSE transport (see `mode`).
    StreamableHttp {
        /// The endpoint.
        url: String,
        /// Headers sent with every request (may hold secrets).
        headers: BTreeMap<String, String>,
        /// Which HTTP transport to speak.
        mode: HttpMode,
    },
}

/// Which HTTP transport a `url` server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMode {
    /// Streamable HTTP first; the legacy HTTP+SSE transport when the first POST gets 400, 404 or
    /// 405 (the specification's backwards-compatibility rule). The default for a `url`.
    Auto,
    /// Streamable HTTP only (`transport = "streamable_http"`).
    Streamable,
    /// The legacy HTTP+SSE transport only (`transport = "sse"`).
    LegacySse,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Stdio { command, args, .. } => write!(f, "stdio({command} {args:?})"),
            // Header values may be tokens: never print them.
            Transport::StreamableHttp { url, headers, mode } => {
                write!(
                    f,
                    "{mode:?} http({url}, headers: {:?})",
                    headers.keys().collect::<Vec<_>>()
                )
            }
        }
    }
}

impl Transport {
    /// `stdio`, `streamable_http` or `sse`.
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::StreamableHttp {
                mode: HttpMode::LegacySse,
                ..
            } => "sse",
            Transport::StreamableHttp { .. } => "streamable_http",
        }
    }
}

/// A checked server definition.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    /// Its name.
    pub name: String,
    /// How to reach it.
    pub transport: Transport,
    /// Connections.
    pub pool_size: usize,
    /// Calls in flight at most.
    pub max_concurrency: usize,
    /// Per-call timeout (extended by progress notifications).
    pub call_timeout: Duration,
    /// Handshake timeout.
    pub connect_timeout: Duration,
    /// Health pings of a ready connection, if any.
    pub ping_every: Option<Duration>,
    /// Whether the server is told it may ask the person (`[mcp.elicitation] enabled`).
    pub elicitation: bool,
}

/// Whether `name` may name a server: 1-32 characters of A-Z a-z 0-9 - _ without `__` (its tools
/// are offered as `<name>__<tool>`).
pub fn valid_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.contains("__")
}

impl McpServerConfig {
    /// Checks the entry; `env` resolves `bearer_token_env`, `self_exe` replaces `@self`.
    pub fn resolve(&self, env: &dyn Fn(&str) -> Option<String>, self_exe: &str) -> Result<ServerSpec, String> {
        if !valid_server_name(&self.name) {
            return Err(format!(
                "name {:?} must be 1-32 characters of A-Z a-z 0-9 - _ without `__`",
                self.name
            ));
        }
        let kind = match (&self.transport, &self.command, &self.url) {
            (Some(kind), _, _) => kind.as_str(),
            (None, _, Some(_)) => "http",
            (None, Some(_), None) => "stdio",
            (None, None, None) => return Err("needs `command` (stdio) or `url` (streamable_http)".into()),
        };
        let transport = match kind {
            "stdio" => {
                let command = self
                    .command
                    .clone()
                    .filter(|c| !c.is_empty())
                    .ok_or("stdio needs `command`")?;
                let command = if command == "@self" {
                    self_exe.to_owned()
                } else {
                    command
                };
                Transport::Stdio {
                    command,
                    args: self.args.clone(),
                    env: self.env.clone(),
                    cwd: self.cwd.clone(),
                }
            }
            "streamable_http" | "http" | "sse" => {
                let mode = match kind {
                    "sse" => HttpMode::LegacySse,
                    "streamable_http" => HttpMode::Streamable,
                    _ => HttpMode::Auto,
                };
                let url = self
                    .url
                    .clone()
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
                let url = url.ok_or("streamable_http needs an http(s) `url`")?;
                let mut headers = self.headers.clone();
                if let Some(var) = &self.bearer_token_env {
                    let token = env(var).ok_or_else(|| format!("environment variable {var} is not set"))?;
                    headers.insert("Authorization".into(), format!("Bearer {token}"));
                }
                Transport::StreamableHttp { url, headers, mode }
            }
            other => {
                return Err(format!(
                    "unknown transport {other:?} (stdio, streamable_http, sse or http)"
                ));
            }
        };
        if self.pool_size == 0
            || self.max_concurrency == 0
            || self.call_timeout_secs == 0
            || self.connect_timeout_secs == 0
        {
            return Err("pool_size, max_concurrency and the timeouts must be greater than 0".into());
        }
        Ok(ServerSpec {
            name: self.name.clone(),
            transport,
            pool_size: self.pool_size,
            max_concurrency: self.max_concurrency,
            call_timeout: Duration::from_secs(self.call_timeout_secs),
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            ping_every: (self.ping_interval_secs > 0).then(|| Duration::from_secs(self.ping_interval_secs)),
            // Set for every server by whoever starts them, from `[mcp.elicitation]`.
            elicitation: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_file_format_is_understood() {
        let servers = parse_servers_json(
            r#"{"mcpServers": {"time": {"command": "python3", "args": ["-m", "mcp_server_time"], "timeout": 5},
                "remote": {"url": "http://127.0.0.1:9/mcp", "enabled": false}}}"#,
        )
        .unwrap();
        assert_eq!(servers.len(), 2);
        let remote = &servers[0];
        assert_eq!(remote.name, "remote");
        assert!(!remote.enabled);
        let spec = servers[1].resolve(&|_| None, "/bin/aichat").unwrap();
        assert_eq!(spec.transport.kind(), "stdio");
        assert_eq!(spec.connect_timeout, Duration::from_secs(5));
        assert_eq!(
            remote.resolve(&|_| None, "x").unwrap().transport.kind(),
            "streamable_http"
        );
    }

    #[test]
    fn bad_entries_are_refused_and_tokens_never_print() {
        let mut config = parse_servers_json(r#"{"mcpServers": {"a__b": {"command": "x"}}}"#)
            .unwrap()
            .remove(0);
        assert!(config.resolve(&|_| None, "x").is_err());
        config.name = "ok".into();
        config.command = None;
        assert!(config.resolve(&|_| None, "x").is_err());
        config.url = Some("http://127.0.0.1:1/mcp".into());
        config.bearer_token_env = Some("TOKEN".into());
        assert!(
            config.resolve(&|_| None, "x").is_err(),
            "a missing token variable is an error"
        );
        let spec = config.resolve(&|_| Some("s3cret".into()), "x").unwrap();
        assert!(!format!("{spec:?}").contains("s3cret"));
        config.command = Some("@self".into());
        config.url = None;
        config.transport = Some("stdio".into());
        let Transport::Stdio { command, .. } = config.resolve(&|_| None, "/me").unwrap().transport else {
            panic!("stdio expected");
        };
        assert_eq!(command, "/me");
    }
}
