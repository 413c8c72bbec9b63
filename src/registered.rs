//! Providers and MCP servers registered through the admin API: the settings an operator sends
//! and storage keeps (JSON, never a secret: keys, tokens and secret headers are read from the
//! environment variables the settings name), their checks, and the configuration they become
//! beside the configuration file's. MCP servers registered this way are reached over HTTP only:
//! a program to run stays a matter of the configuration file.

use std::collections::BTreeMap;

use actors::mcp::{McpServerConfig, ServerSpec, server_defaults};
use actors::provider::ProviderKind;
use actors::storage::AdminRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::ProviderConfig;

/// The kind of admin record a registered provider is stored as.
pub const PROVIDER: &str = "provider";

/// The kind of admin record a registered MCP server is stored as.
pub const MCP_SERVER: &str = "mcp_server";

/// A provider to register: its name and settings.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    /// Unique name (messages name it in `provider`).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Its settings.
    pub settings: ProviderSpec,
}

/// A provider's settings, as the admin API takes and shows them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// Which vendor it speaks (or the built-in mock).
    #[schema(value_type = String, pattern = "^(openai|anthropic|gemini|ollama|mock)$")]
    pub kind: String,
    /// Model (empty: the vendor's default).
    #[serde(default)]
    pub model: String,
    /// API root, an `http://` or `https://` URL (empty: the vendor's default).
    #[serde(default)]
    #[schema(pattern = "^(https?://.+)?$")]
    pub base_url: String,
    /// The environment variable that holds the API key (the key itself is never sent or stored).
    #[serde(default)]
    pub api_key_env: String,
    /// Sampling temperature, kept exactly as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
    /// Output token limit (0: the vendor's default).
    #[serde(default, deserialize_with = "whole")]
    pub max_tokens: u32,
    /// Retries before the answer starts.
    #[serde(
        default = "actors::provider::config::defaults::max_retries",
        deserialize_with = "whole"
    )]
    #[schema(maximum = 10)]
    pub max_retries: u32,
    /// TCP connect timeout in seconds.
    #[serde(
        default = "actors::provider::config::defaults::connect_timeout_secs",
        deserialize_with = "whole"
    )]
    #[schema(minimum = 1, maximum = 300)]
    pub connect_timeout_secs: u64,
}

/// A whole number, also when written `86.0` (JSON does not tell integers from numbers).
fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u32::MAX as f64)
                .map(|f| f as u64)
        })
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| serde::de::Error::custom(format!("expected a whole number in range, got {number}")))
}

/// Why settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The settings themselves are wrong.
    #[error("{0}")]
    Invalid(String),
    /// They are right, but the key variable they name is not set on this server.
    #[error("{0}")]
    KeyMissing(String),
}

/// Whether `name` may name a provider.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ProviderSpec {
    /// The provider these settings describe, named `name`, its key read through `env`; the
    /// reason when they are not usable.
    pub fn to_config(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderConfig, SpecError> {
        let invalid = SpecError::Invalid;
        if !valid_name(name) {
            return Err(invalid(format!(
                "name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        let kind = ProviderKind::parse(&self.kind).ok_or_else(|| {
            invalid(format!(
                "kind {:?}: expected openai, anthropic, gemini, ollama or mock",
                self.kind
            ))
        })?;
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err(invalid("temperature: between 0 and 2".into()));
        }
        if self.max_retries > 10 || !(1..=300).contains(&self.connect_timeout_secs) {
            return Err(invalid(
                "max_retries: at most 10; connect_timeout_secs: 1 to 300".into(),
            ));
        }
        let url = &self.base_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(format!(
                "base_url {:?}: an http:// or https:// URL",
                self.base_url
            )));
        }
        let mut provider = ProviderConfig {
            name: name.to_owned(),
            kind,
            model: self.model.clone(),
            base_url: self.base_url.clone(),
            api_key_env: self.api_key_env.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            max_retries: self.max_retries,
            connect_timeout_secs: self.connect_timeout_secs,
            api_key: None,
        };
        crate::config::read_provider_key(&mut provider, env).map_err(SpecError::KeyMissing)?;
        Ok(provider)
    }
}

/// The registered providers of `records` as provider configurations (see [`usable`]).
pub fn providers_of(
    records: &[AdminRecord],
    file_names: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<ProviderConfig> {
    usable(records, file_names, "provider", |name, spec: ProviderSpec| {
        spec.to_config(name, env)
    })
}

/// What `records` describe, leaving out (with a warning naming the `what` and why) those whose
/// name the configuration now uses or that are no longer usable (their stored settings do not
/// read, or a variable they name is gone): stored settings never stop the server from starting.
fn usable<S: serde::de::DeserializeOwned, T>(
    records: &[AdminRecord],
    file_names: &[String],
    what: &str,
    build: impl Fn(&str, S) -> Result<T, SpecError>,
) -> Vec<T> {
    records
        .iter()
        .filter_map(|record| {
            let left_out = |reason: String| {
                tracing::warn!(name = %record.name, %reason, "a registered {what} is left out");
            };
            if file_names.contains(&record.name) {
                left_out("the configuration names one the same".into());
                return None;
            }
            let spec = serde_json::from_str(&record.spec)
                .map_err(|err| left_out(format!("its stored settings do not read: {err}")))
                .ok()?;
            build(&record.name, spec).map_err(|err| left_out(err.to_string())).ok()
        })
        .collect()
}

/// An MCP server to register: its name and settings.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMcpServer {
    /// Unique name; its tools are offered as `<name>__<tool>`.
    #[schema(pattern = "^[A-Za-z0-9-]{1,32}$")]
    pub name: String,
    /// Its settings.
    pub settings: McpServerSpec,
}

/// An MCP server's settings, as the admin API takes and shows them (HTTP servers only).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct McpServerSpec {
    /// `http` (streamable HTTP, falling back to the legacy HTTP+SSE transport; the default),
    /// `streamable_http` or `sse`.
    #[serde(default = "http")]
    #[schema(pattern = "^(http|streamable_http|sse)$")]
    pub transport: String,
    /// The endpoint, an `http://` or `https://` URL.
    #[schema(pattern = "^https?://.+$")]
    pub url: String,
    /// Headers whose values come from environment variables: header name → variable name.
    #[serde(default)]
    pub headers_env: BTreeMap<String, String>,
    /// The variable holding a bearer token (sent as `Authorization: Bearer …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_env: Option<String>,
    /// Free text for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Connections to the server.
    #[serde(default = "server_defaults::pool_size", deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 16)]
    pub pool_size: usize,
    /// Calls in flight at most.
    #[serde(default = "server_defaults::max_concurrency", deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 256)]
    pub max_concurrency: usize,
    /// Seconds one call may take without progress notifications.
    #[serde(default = "server_defaults::call_timeout_secs", deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 3600)]
    pub call_timeout_secs: u64,
    /// Seconds the handshake may take.
    #[serde(default = "server_defaults::connect_timeout_secs", deserialize_with = "whole")]
    #[schema(minimum = 1, maximum = 300)]
    pub connect_timeout_secs: u64,
    /// Seconds between health pings (0: none).
    #[serde(default = "server_defaults::ping_interval_secs", deserialize_with = "whole")]
    #[schema(maximum = 3600)]
    pub ping_interval_secs: u64,
}

fn http() -> String {
    "http".into()
}

impl McpServerSpec {
    /// The server these settings describe, named `name`, its secrets read through `env`.
    pub fn to_spec(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ServerSpec, SpecError> {
        let invalid = SpecError::Invalid;
        if !matches!(self.transport.as_str(), "http" | "streamable_http" | "sse") {
            return Err(invalid(format!(
                "transport {:?}: http, streamable_http or sse (programs to run belong in the configuration file)",
                self.transport
            )));
        }
        let limits = (1..=16).contains(&self.pool_size)
            && (1..=256).contains(&self.max_concurrency)
            && (1..=3600).contains(&self.call_timeout_secs)
            && (1..=300).contains(&self.connect_timeout_secs)
            && self.ping_interval_secs <= 3600;
        if !limits {
            return Err(invalid(
                "pool_size 1-16, max_concurrency 1-256, call_timeout_secs 1-3600, connect_timeout_secs 1-300, \
                 ping_interval_secs 0-3600"
                    .into(),
            ));
        }
        let mut headers = BTreeMap::new();
        for (header, var) in &self.headers_env {
            let value = env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
                SpecError::KeyMissing(format!(
                    "header {header} needs the environment variable {var:?}, which is not set on this server"
                ))
            })?;
            headers.insert(header.clone(), value);
        }
        if let Some(var) = &self.bearer_token_env
            && env(var).is_none_or(|v| v.is_empty())
        {
            return Err(SpecError::KeyMissing(format!(
                "bearer_token_env names {var:?}, which is not set on this server"
            )));
        }
        let config = McpServerConfig {
            transport: Some(self.transport.clone()),
            url: Some(self.url.clone()),
            headers,
            bearer_token_env: self.bearer_token_env.clone(),
            description: self.description.clone(),
            pool_size: self.pool_size,
            max_concurrency: self.max_concurrency,
            call_timeout_secs: self.call_timeout_secs,
            connect_timeout_secs: self.connect_timeout_secs,
            ping_interval_secs: self.ping_interval_secs,
            ..McpServerConfig::http(name, &self.url)
        };
        config.resolve(env, "").map_err(invalid)
    }
}

/// The registered MCP servers of `records` as server specs (see [`usable`]).
pub fn mcp_servers_of(
    records: &[AdminRecord],
    file_names: &[String],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<ServerSpec> {
    usable(records, file_names, "MCP server", |name, spec: McpServerSpec| {
        spec.to_spec(name, env)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, key_env: &str) -> ProviderSpec {
        serde_json::from_value(serde_json::json!({"kind": kind, "api_key_env": key_env, "temperature": 0.7})).unwrap()
    }

    #[test]
    fn settings_become_a_provider_with_the_key_from_the_environment_and_exact_sampling() {
        let env = |var: &str| (var == "BACKUP_KEY").then(|| "sk-test".to_owned());
        let config = spec("openai", "BACKUP_KEY").to_config("backup", &env).unwrap();
        assert_eq!(
            config.api_key.as_ref().map(crate::config::Secret::expose),
            Some("sk-test")
        );
        assert_eq!(config.temperature, Some(0.7));
        let missing = spec("openai", "NOT_SET").to_config("backup", &env).unwrap_err();
        assert!(
            matches!(&missing, SpecError::KeyMissing(m) if m.contains("NOT_SET")),
            "{missing}"
        );
        assert!(spec("mock", "").to_config("bad name", &env).is_err());
        assert!(
            spec("nonsense", "")
                .to_config("x", &env)
                .unwrap_err()
                .to_string()
                .contains("kind")
        );
        let floats: ProviderSpec =
            serde_json::from_value(serde_json::json!({"kind": "mock", "connect_timeout_secs": 86.0})).unwrap();
        assert_eq!(floats.connect_timeout_secs, 86);
        assert!(
            serde_json::from_value::<ProviderSpec>(serde_json::json!({"kind": "mock", "max_retries": 1.5})).is_err()
        );
    }
}
