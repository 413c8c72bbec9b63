//! Checks a loaded configuration: ranges, supported values, safety rules; and the API keys.

use std::net::IpAddr;

use super::{Config, ConfigError, ProviderKind, invalid};

impl Config {
    /// The configured API keys as (SHA-256 hash, user id).
    pub fn api_key_hashes(&self) -> Result<Vec<(Vec<u8>, i64)>, ConfigError> {
        key_hashes("auth.api_keys", &self.auth.api_keys)
    }

    /// The configured admin API keys as (SHA-256 hash, user id).
    pub fn admin_api_key_hashes(&self) -> Result<Vec<(Vec<u8>, i64)>, ConfigError> {
        key_hashes("auth.admin_api_keys", &self.auth.admin_api_keys)
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
        self.admin_api_key_hashes()?;
        if let Some(bad) = self.auth.admin_users.iter().find(|u| **u <= 0) {
            return Err(invalid(
                "auth.admin_users",
                format!("user ids are positive integers, got {bad}"),
            ));
        }
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
            ("server.body_timeout_secs", self.server.body_timeout_secs),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.max_streams_per_user", self.server.max_streams_per_user as u64),
            ("database.pool_size", u64::from(self.database.pool_size)),
            ("database.threads", self.database.threads as u64),
            (
                "session.first_token_timeout_secs",
                self.session.first_token_timeout_secs,
            ),
            ("session.chunk_gap_timeout_secs", self.session.chunk_gap_timeout_secs),
            ("session.idle_timeout_secs", self.session.idle_timeout_secs),
            ("session.max_live_sessions", self.session.max_live_sessions as u64),
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
        if !(10..=5000).contains(&self.cluster.flush_ms) {
            return Err(invalid("cluster.flush_ms", "must be between 10 and 5000"));
        }
        if !(2..=600).contains(&self.cluster.lease_secs) {
            return Err(invalid("cluster.lease_secs", "must be between 2 and 600"));
        }
        if self.cluster.node_id.len() > 64 || self.cluster.node_id.chars().any(|c| c.is_control() || c == ':') {
            return Err(invalid(
                "cluster.node_id",
                "at most 64 characters, no control characters or ':'",
            ));
        }
        if self.database.pool_size < self.database.threads as u32 {
            return Err(invalid("database.pool_size", "must be at least database.threads"));
        }
        self.database.target()?;
        match ProviderKind::parse(&self.llm.provider) {
            Some(kind) if kind.needs_key() && self.llm.api_key.is_none() => {
                return Err(invalid(
                    "llm.provider",
                    format!("`{}` needs an API key in AICHAT_API_KEY", self.llm.provider),
                ));
            }
            Some(_) => {}
            None => {
                return Err(invalid(
                    "llm.provider",
                    format!(
                        "unknown provider `{}` (one of {})",
                        self.llm.provider,
                        ProviderKind::NAMES
                    ),
                ));
            }
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

/// Parses `sha256:<hex of the key's SHA-256>:<user id>` entries of the setting `field`.
fn key_hashes(field: &'static str, entries: &[String]) -> Result<Vec<(Vec<u8>, i64)>, ConfigError> {
    entries
        .iter()
        .map(|entry| {
            let bad = || invalid(field, "entries look like sha256:<64 hex digits>:<user id>");
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
