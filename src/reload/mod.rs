//! Reconfiguration while running (SIGHUP and `POST /v1/chat/admin/reload`): the configuration is
//! read and checked again; an invalid one is refused whole and the running one stays; a valid one
//! is applied where it can change live — providers and MCP servers (only those added, removed
//! or changed), the approval policy, turn limits, session timeouts and limits, the system prompt
//! and the log level, for new turns — and the sections that need a restart are named.

mod sets;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::Chat;
use actors::mcp::{McpTools, ServerSpec};
use actors::provider::Providers;
use actors::session::SessionSettings;
use actors::sync::{Shared, lock_unpoisoned};
use serde::Serialize;
use utoipa::ToSchema;

use self::sets::SetChanges;
pub use self::sets::{McpSet, ProviderSet};
use crate::config::{Config, ConfigError, ProviderConfig};
use crate::http::dto::ProviderDto;

/// What a reload did.
#[derive(Debug, Default, Clone, Serialize, ToSchema)]
pub struct ReloadReport {
    /// Configuration sections that differ from the running ones.
    pub changed: Vec<String>,
    /// Of those, the ones applied (to new turns).
    pub applied: Vec<String>,
    /// Of those, the ones that take a restart (the running values stay until then).
    pub needs_restart: Vec<String>,
    /// Providers started (new names).
    pub providers_added: Vec<String>,
    /// Providers whose settings changed, started again (running turns finish on the old one).
    pub providers_restarted: Vec<String>,
    /// Providers removed (running turns on them finish first).
    pub providers_removed: Vec<String>,
    /// MCP servers started (new names).
    pub mcp_servers_added: Vec<String>,
    /// MCP servers whose settings changed, started again (calls in flight finish on the old one).
    pub mcp_servers_restarted: Vec<String>,
    /// MCP servers removed (calls in flight finish first).
    pub mcp_servers_removed: Vec<String>,
}

impl ReloadReport {
    /// The report of one registered provider or MCP server changed through the admin API.
    fn registered(section: &str) -> Self {
        Self {
            changed: vec![section.into()],
            applied: vec![section.into()],
            ..Self::default()
        }
    }

    fn with_providers(mut self, changes: SetChanges) -> Self {
        (self.providers_added, self.providers_restarted, self.providers_removed) =
            (changes.added, changes.restarted, changes.removed);
        self
    }

    fn with_mcp_servers(mut self, changes: SetChanges) -> Self {
        (
            self.mcp_servers_added,
            self.mcp_servers_restarted,
            self.mcp_servers_removed,
        ) = (changes.added, changes.restarted, changes.removed);
        self
    }

    /// The `warn` line every change leaves: who asked, and what changed.
    fn log(&self, by: &str, what: &str) {
        tracing::warn!(
            by,
            changed = %self.changed.join(", "),
            applied = %self.applied.join(", "),
            needs_restart = %self.needs_restart.join(", "),
            providers_added = %self.providers_added.join(", "),
            providers_restarted = %self.providers_restarted.join(", "),
            providers_removed = %self.providers_removed.join(", "),
            mcp_servers_added = %self.mcp_servers_added.join(", "),
            mcp_servers_restarted = %self.mcp_servers_restarted.join(", "),
            mcp_servers_removed = %self.mcp_servers_removed.join(", "),
            "{what}"
        );
    }
}

/// A reload that was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration does not load or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A provider of the new configuration cannot be built.
    #[error("provider {name}: {reason}")]
    Provider {
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// The parts of a running server a reload changes.
pub struct LiveParts {
    /// Turn limits are set through it.
    pub chat: Chat,
    /// What sessions and turns are configured with (new turns read it).
    pub settings: Shared<SessionSettings>,
    /// The providers new turns use.
    pub providers: Shared<Providers>,
    /// `GET /providers`' list.
    pub provider_list: Shared<Vec<ProviderDto>>,
    /// The MCP servers' tools.
    pub mcp: Arc<McpTools>,
}

/// What `config` gives sessions and turns; `flush_every` is how often a running turn stores its
/// events (set at start from the storage backend and `[cluster]`).
pub fn session_settings(config: &Config, flush_every: Duration) -> SessionSettings {
    let secs = Duration::from_secs;
    SessionSettings {
        system_prompt: Some(config.llm.system_prompt.trim().to_owned()).filter(|p| !p.is_empty()),
        max_tool_rounds: config.session.max_tool_rounds,
        first_token_timeout: secs(config.session.first_token_timeout_secs),
        chunk_gap_timeout: secs(config.session.chunk_gap_timeout_secs),
        idle_timeout: secs(config.session.idle_timeout_secs),
        max_live_sessions: config.session.max_live_sessions,
        title_timeout: secs(config.session.title_timeout_secs),
        max_tool_output_chars: config.mcp.max_tool_output_chars,
        max_stored_tool_output_chars: config.mcp.max_stored_tool_output_chars,
        approval: config.approval.clone(),
        elicitation_expiry: secs(config.mcp.elicitation.expiry_secs),
        flush_every,
    }
}

/// Where the configuration comes from: reads it again (the same file, environment and flags as
/// at start), and reads one environment variable (the keys of registered providers).
pub struct Loader {
    read: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
    env: fn(&str) -> Option<String>,
}

impl Loader {
    /// Reads the configuration with `read` and the environment with `env`.
    pub fn new(
        read: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
        env: fn(&str) -> Option<String>,
    ) -> Self {
        Self { read, env }
    }

    /// Always finds `config`, and an empty environment (a server started from a value, as in
    /// tests).
    pub fn fixed(config: Config) -> Self {
        Self::new(Box::new(move || Ok(config.clone())), |_| None)
    }

    /// The value of an environment variable.
    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }
}

/// Re-reads and applies the configuration; one reload at a time.
pub struct Reloader {
    loader: Loader,
    live: LiveParts,
    state: Mutex<State>,
}

/// What the running server was last built from.
struct State {
    config: Config,
    set: ProviderSet,
    mcp: McpSet,
    /// Providers registered through the admin API (beside the file's).
    registered: Vec<ProviderConfig>,
    /// MCP servers registered through the admin API (beside the file's).
    registered_mcp: Vec<ServerSpec>,
}

/// Sections whose whole content a reload applies.
const LIVE_SECTIONS: &[&str] = &["limits", "approval", "providers", "mock", "llm", "session", "log"];

impl Reloader {
    /// A reloader for a server started from `running` (read again by `loader`) and the
    /// `registered` providers, whose providers are `set`.
    pub fn new(
        loader: Loader,
        running: Config,
        (registered, registered_mcp): (Vec<ProviderConfig>, Vec<ServerSpec>),
        (set, mcp): (ProviderSet, McpSet),
        live: LiveParts,
    ) -> Self {
        Self {
            loader,
            live,
            state: Mutex::new(State {
                config: running,
                set,
                mcp,
                registered,
                registered_mcp,
            }),
        }
    }

    /// The value of an environment variable (a registered provider's key).
    pub fn env(&self, name: &str) -> Option<String> {
        self.loader.env(name)
    }

    /// The configuration file's providers (the default first).
    pub fn file_providers(&self) -> Vec<ProviderConfig> {
        lock_unpoisoned(&self.state).config.provider_configs()
    }

    /// The configuration's MCP servers.
    pub fn file_mcp_servers(&self) -> Vec<ServerSpec> {
        lock_unpoisoned(&self.state).config.mcp.resolved.clone()
    }

    /// Whether the configuration names an MCP server `name`.
    pub fn mcp_in_file(&self, name: &str) -> bool {
        lock_unpoisoned(&self.state)
            .config
            .mcp
            .resolved
            .iter()
            .any(|s| s.name == name)
    }

    /// Replaces (or adds) or removes (`None`) the registered MCP server `name` and applies the
    /// result: only that server starts or stops; its calls in flight finish on the old one.
    pub fn register_mcp(&self, name: &str, server: Option<ServerSpec>, by: &str) -> ReloadReport {
        let mut state = lock_unpoisoned(&self.state);
        let State {
            config,
            mcp,
            registered_mcp,
            ..
        } = &mut *state;
        let mut next: Vec<ServerSpec> = registered_mcp.iter().filter(|s| s.name != name).cloned().collect();
        next.extend(server);
        let (servers, changes) = mcp.build(&config.mcp.resolved, &next, config.mcp.elicitation.enabled);
        *registered_mcp = next;
        self.live.mcp.replace(servers);
        let report = ReloadReport::registered("mcp").with_mcp_servers(changes);
        report.log(&format!("{by}, for {name}"), "registered MCP servers changed");
        report
    }

    /// Whether the configuration file names a provider `name` (the default one is `[llm]`'s).
    pub fn in_file(&self, name: &str) -> bool {
        let state = lock_unpoisoned(&self.state);
        state.config.llm.provider == name || state.config.providers.iter().any(|p| p.name == name)
    }

    /// Replaces (or adds, when `provider` is new) or removes (`None`) the registered provider
    /// `name` and applies the result: only that provider starts or stops; turns running on the
    /// one it replaces finish on it.
    pub fn register(
        &self,
        name: &str,
        provider: Option<ProviderConfig>,
        by: &str,
    ) -> Result<ReloadReport, ReloadError> {
        let mut state = lock_unpoisoned(&self.state);
        let State {
            config,
            set,
            registered,
            ..
        } = &mut *state;
        let mut next: Vec<ProviderConfig> = registered.iter().filter(|p| p.name != name).cloned().collect();
        next.extend(provider);
        let (providers, list, changes) = set.build(config, &next)?;
        *registered = next;
        self.live.providers.set(providers);
        self.live.provider_list.set(list);
        let report = ReloadReport::registered("providers").with_providers(changes);
        report.log(&format!("{by}, for {name}"), "registered providers changed");
        Ok(report)
    }

    /// Loads the configuration again and applies the difference. `by` names who asked (the log).
    pub fn reload(&self, by: &str) -> Result<ReloadReport, ReloadError> {
        let new = (self.loader.read)()?;
        let mut state = lock_unpoisoned(&self.state);
        let State {
            config: running,
            set,
            mcp,
            registered,
            registered_mcp,
        } = &mut *state;
        let changed = crate::config::changed_sections(running, &new);
        if changed.is_empty() {
            tracing::info!(by, "reload: the configuration is valid and unchanged");
            return Ok(ReloadReport::default());
        }
        let mut report = ReloadReport {
            changed: changed.iter().map(|s| (*s).to_owned()).collect(),
            ..ReloadReport::default()
        };
        let providers_changed = changed.iter().any(|s| matches!(*s, "providers" | "mock" | "llm"));
        if providers_changed {
            let (providers, list, changes) = set.build(&new, registered)?;
            self.live.providers.set(providers);
            self.live.provider_list.set(list);
            report = report.with_providers(changes);
        }
        // Sessions' tunables (the approval policy, the system prompt, timeouts, rounds, tool output
        // limits) are one value new turns read: replaced whole when any of them changed.
        if changed
            .iter()
            .any(|s| matches!(*s, "approval" | "llm" | "session" | "mcp"))
        {
            let flush_every = self.live.settings.get().flush_every;
            self.live.settings.set(session_settings(&new, flush_every));
        }
        for section in changed {
            let applied = match section {
                "limits" => {
                    self.live.chat.set_turn_limits(
                        new.limits.max_concurrent_turns_per_user,
                        new.limits.turns_per_minute_per_user,
                    );
                    true
                }
                "log" => match crate::telemetry::set_level(&new.log) {
                    Ok(()) => new.log.json == running.log.json,
                    Err(reason) => {
                        tracing::warn!(%reason, "reload: the log level was not changed");
                        false
                    }
                },
                "mcp" => {
                    let (servers, changes) = mcp.build(&new.mcp.resolved, registered_mcp, new.mcp.elicitation.enabled);
                    self.live.mcp.replace(servers);
                    report = std::mem::take(&mut report).with_mcp_servers(changes);
                    true
                }
                other => LIVE_SECTIONS.contains(&other),
            };
            if applied {
                report.applied.push(section.to_owned());
            } else {
                report.needs_restart.push(section.to_owned());
            }
        }
        // What was applied becomes the running configuration; the rest waits for a restart.
        let kept = running.clone();
        *running = new;
        for section in &report.needs_restart {
            restore(running, &kept, section);
        }
        report.log(by, "configuration reloaded");
        Ok(report)
    }
}

/// Puts back the running value of a section that was not applied, so the next reload still
/// reports it as different.
fn restore(running: &mut Config, kept: &Config, section: &str) {
    match section {
        "server" => running.server = kept.server.clone(),
        "database" => running.database = kept.database.clone(),
        "log" => running.log = kept.log.clone(),
        "auth" => running.auth = kept.auth.clone(),
        "attachments" => running.attachments = kept.attachments.clone(),
        "cluster" => running.cluster = kept.cluster.clone(),
        _ => {}
    }
}
