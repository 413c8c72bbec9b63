//! Configuration: built-in defaults < `config.toml` < `AICHAT_*` environment variables < CLI flags.
//!
//! Loading is a pure function of the file text, an environment lookup and the parsed flags, so
//! tests never touch the process environment. Unknown keys and bad values are refused with the
//! offending key path. Secrets come only from environment variables and never print.

use std::path::{Path, PathBuf};

mod cli;
mod sections;
mod validate;

use actors::approval::ApprovalConfig;
use actors::mcp::{McpServerConfig, ServerSpec, parse_servers_json};
use actors::provider::ProviderKind;
pub use actors::provider::config::{ProviderConfig, Secret};
use serde::Deserialize;

pub use cli::{Cli, Command};
pub use sections::{
    AttachmentsConfig, AuthConfig, ClusterConfig, DatabaseConfig, DatabaseTarget, LimitsConfig, LlmConfig, LogConfig,
    McpConfig, MockConfig, ServerConfig, SessionConfig,
};

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
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// Where the file layer came from (for the start-up lines).
    #[serde(skip)]
    pub source: ConfigSource,
    /// What loading found worth a warning but not worth refusing to start (logged once the log
    /// is set up).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Which configuration file was read, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// No file: the built-in defaults (`env_only`: as `--env-only` asked).
    #[default]
    Defaults,
    /// `--env-only` / `AICHAT_ENV_ONLY`: no file was read.
    EnvOnly,
    /// The file `--config` or `AICHAT_CONFIG` named.
    Named(PathBuf),
    /// `config.toml` found in the working directory (no `--config` given).
    WorkingDirectory,
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Defaults => {
                f.write_str("built-in defaults (no --config given and no config.toml in the working directory)")
            }
            ConfigSource::EnvOnly => f.write_str("built-in defaults and the environment (--env-only)"),
            ConfigSource::Named(path) => write!(f, "{} (named by --config or AICHAT_CONFIG)", path.display()),
            ConfigSource::WorkingDirectory => {
                f.write_str("config.toml in the working directory (read because no --config was given)")
            }
        }
    }
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
    let deserializer =
        toml::Deserializer::parse(text).map_err(|e| parse_error(String::new(), reason_and_place(&e.to_string())))?;
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let mut key = err.path().to_string();
        let message = reason_and_place(&err.inner().to_string());
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            key = if key == "." || key.is_empty() {
                field.to_owned()
            } else if key == field || key.ends_with(&format!(".{field}")) {
                key
            } else {
                format!("{key}.{field}")
            };
        }
        parse_error(key, message)
    })
}

/// A TOML error as one line: what is wrong (its last line: "unknown field `prot`, expected one
/// of …", "invalid type …"), then where ("line 2, column 1"), without the code frame between.
fn reason_and_place(toml_error: &str) -> String {
    let mut lines = toml_error.lines().map(str::trim).filter(|l| !l.is_empty());
    let place = lines.next().unwrap_or_default();
    let place = place.strip_prefix("TOML parse error at ").unwrap_or(place);
    match toml_error.lines().map(str::trim).rfind(|l| !l.is_empty()) {
        Some(reason) if reason != place && !reason.starts_with("TOML parse error") => format!("{reason} ({place})"),
        _ => place.to_owned(),
    }
}

/// The sections of `new` that differ from `running` (`server`, `llm`, `providers`, …), compared
/// as they print (secrets print redacted, so a changed key shows as its section changing only
/// when something else in it changed too).
pub fn changed_sections(running: &Config, new: &Config) -> Vec<&'static str> {
    use std::fmt::Debug;
    let sections: [(&'static str, &dyn Debug, &dyn Debug); 13] = [
        ("server", &running.server, &new.server),
        ("database", &running.database, &new.database),
        ("llm", &running.llm, &new.llm),
        ("mock", &running.mock, &new.mock),
        ("session", &running.session, &new.session),
        ("mcp", &running.mcp, &new.mcp),
        ("log", &running.log, &new.log),
        ("approval", &running.approval, &new.approval),
        ("providers", &running.providers, &new.providers),
        ("auth", &running.auth, &new.auth),
        ("limits", &running.limits, &new.limits),
        ("attachments", &running.attachments, &new.attachments),
        ("cluster", &running.cluster, &new.cluster),
    ];
    sections
        .into_iter()
        .filter(|(_, running, new)| format!("{running:?}") != format!("{new:?}"))
        .map(|(name, _, _)| name)
        .collect()
}

impl Config {
    /// Loads the configuration from flags, the environment (through `env`) and the file.
    pub fn load(cli: &Cli, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let explicit = cli.config.clone().or_else(|| env("AICHAT_CONFIG").map(PathBuf::from));
        let env_only = cli.env_only || parse_bool("AICHAT_ENV_ONLY", &env("AICHAT_ENV_ONLY").unwrap_or_default())?;
        let (mut config, source) = if env_only {
            (Config::default(), ConfigSource::EnvOnly)
        } else {
            match explicit {
                Some(path) => (Self::read(&path)?, ConfigSource::Named(path)),
                None if Path::new("config.toml").exists() => {
                    (Self::read(Path::new("config.toml"))?, ConfigSource::WorkingDirectory)
                }
                None => (Config::default(), ConfigSource::Defaults),
            }
        };
        config.source = source;
        config.apply_env(&env)?;
        config.apply_cli(cli);
        config.resolve_llm_key(&env);
        config.finish(&env)?;
        Ok(config)
    }

    /// Validates and resolves what needs the environment (MCP servers); `load` calls it, and so
    /// must anyone who builds a `Config` by hand.
    pub fn finish(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.validate()?;
        self.resolve_database_password(env);
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
            let path = self.mcp.servers_file.clone();
            match std::fs::read_to_string(&path) {
                // As the original: a servers file that is not there means no servers from it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.warnings.push(format!(
                    "mcp.servers_file: {path} does not exist; starting without the MCP servers it would list"
                )),
                Err(e) => return Err(invalid("mcp.servers_file", format!("cannot read {path}: {e}"))),
                Ok(text) => {
                    let servers =
                        parse_servers_json(&text).map_err(|e| invalid("mcp.servers_file", format!("{path}: {e}")))?;
                    entries.extend(
                        servers
                            .into_iter()
                            .map(|s| (format!("{path}: mcpServers.{}", s.name), s)),
                    );
                }
            }
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
        let config = parse_file(path, &text)?;
        if let Ok(DatabaseTarget::Postgres(url)) = config.database.target()
            && url.has_password()
        {
            return Err(invalid(
                "database.url",
                format!(
                    "in {}: a password does not belong in the config file; set it in the variable \
                     database.password_env names (PGPASSWORD by default)",
                    path.display()
                ),
            ));
        }
        Ok(config)
    }

    /// The PostgreSQL password from the variable `database.password_env` names, unless the URL
    /// (from the environment or a flag) carries one.
    fn resolve_database_password(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let database = &mut self.database;
        database.password = match database.target() {
            Ok(DatabaseTarget::Postgres(url)) if !url.has_password() => {
                env(&database.password_env).filter(|p| !p.is_empty()).map(Secret::new)
            }
            _ => None,
        };
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(port) = env("AICHAT_PORT") {
            self.server.port = port
                .trim()
                .parse()
                .map_err(|_| invalid("AICHAT_PORT", format!("expected a port number, got {port:?}")))?;
        }
        let strings: [(&str, &mut String); 9] = [
            ("AICHAT_NODE_ID", &mut self.cluster.node_id),
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
        for (var, list) in [
            ("AICHAT_API_KEYS", &mut self.auth.api_keys),
            ("AICHAT_ADMIN_API_KEYS", &mut self.auth.admin_api_keys),
        ] {
            if let Some(keys) = env(var) {
                list.extend(
                    keys.split(',')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        Ok(())
    }

    /// The default provider's key: `AICHAT_API_KEY` first, then the vendor's usual variable (the
    /// original read `ANTHROPIC_API_KEY`) — of the provider chosen after every layer (file,
    /// environment, flags) is applied.
    fn resolve_llm_key(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let vendor_key = ProviderKind::parse(&self.llm.provider)
            .and_then(ProviderKind::key_variable)
            .unwrap_or("AICHAT_API_KEY");
        self.llm.api_key = ["AICHAT_API_KEY", vendor_key]
            .iter()
            .find_map(|name| env(name).filter(|k| !k.is_empty()))
            .map(Secret::new);
    }

    fn apply_cli(&mut self, cli: &Cli) {
        let overrides: [(&Option<String>, &mut String); 9] = [
            (&cli.node_id, &mut self.cluster.node_id),
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
        // `validate` refused an unknown `[llm].provider`.
        let kind = ProviderKind::parse(&llm.provider).unwrap_or(ProviderKind::Mock);
        let default = ProviderConfig {
            name: llm.provider.clone(),
            kind,
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
            read_provider_key(provider, env).map_err(|reason| invalid(&key, reason))?;
        }
        for name in &self.llm.fallback {
            if !names.contains(name) {
                return Err(invalid("llm.fallback", format!("no provider named {name:?}")));
            }
        }
        Ok(())
    }
}

/// Reads `provider`'s key from the variable its `api_key_env` names (the configuration file's
/// providers and the registered ones); the reason when its kind needs a key and there is none.
pub fn read_provider_key(provider: &mut ProviderConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    if !provider.api_key_env.is_empty() {
        provider.api_key = env(&provider.api_key_env).filter(|k| !k.is_empty()).map(Secret::new);
    }
    if provider.kind.needs_key() && provider.api_key.is_none() {
        return Err(format!(
            "needs an API key in the variable named by api_key_env ({:?}), which is not set",
            provider.api_key_env
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
