//! The providers and MCP servers a server runs, by name, with the settings each was started
//! from: rebuilding a set from new settings keeps the ones that did not change and starts the
//! others; the ones left out stop once what they run has ended.

use std::collections::BTreeMap;
use std::time::Duration;

use actix::ArbiterHandle;
use actors::mcp::{McpServer, ServerSpec};
use actors::provider::factory::provider_factory;
use actors::provider::{ProviderHandle, Providers, Vendor};
use sha2::{Digest, Sha256};

use super::ReloadError;
use crate::config::{Config, ProviderConfig};
use crate::http::dto::ProviderDto;

/// The MCP servers started, by name, with the settings they were started from.
pub struct McpSet {
    arbiter: ArbiterHandle,
    started: BTreeMap<String, (String, McpServer)>,
}

impl McpSet {
    /// No servers yet; they run on `arbiter`.
    pub fn new(arbiter: ArbiterHandle) -> Self {
        Self {
            arbiter,
            started: BTreeMap::new(),
        }
    }

    /// The servers `file` and `registered` describe (the file's win a shared name), reusing the
    /// running pool of each one whose settings did not change and starting the others; a server
    /// left out stops once its calls in flight end.
    pub(super) fn build(&mut self, file: &[ServerSpec], registered: &[ServerSpec]) -> (Vec<McpServer>, SetChanges) {
        let specs: Vec<&ServerSpec> = file
            .iter()
            .chain(registered.iter().filter(|r| !file.iter().any(|f| f.name == r.name)))
            .collect();
        let mut next = BTreeMap::new();
        let mut changes = SetChanges::default();
        let mut servers = Vec::with_capacity(specs.len());
        for spec in specs {
            // Settings compared in memory only (they may hold header values).
            let print = format!("{spec:?}");
            let server = match self.started.get(&spec.name) {
                Some((old, server)) if *old == print => server.clone(),
                running => {
                    let list = if running.is_some() {
                        &mut changes.restarted
                    } else {
                        &mut changes.added
                    };
                    list.push(spec.name.clone());
                    McpServer::start((*spec).clone(), &self.arbiter)
                }
            };
            next.insert(spec.name.clone(), (print, server.clone()));
            servers.push(server);
        }
        // Removed and restarted servers' old pools close once their calls in flight end.
        for (name, (print, server)) in &self.started {
            if next
                .get(name)
                .is_none_or(|(new_print, _): &(String, McpServer)| new_print != print)
            {
                server.retire();
            }
        }
        changes.removed = self
            .started
            .keys()
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        self.started = next;
        (servers, changes)
    }

    /// The first servers, at start-up.
    pub fn first(&mut self, file: &[ServerSpec], registered: &[ServerSpec]) -> Vec<McpServer> {
        self.build(file, registered).0
    }
}

/// The provider actors started, by name, with what they were started from.
pub struct ProviderSet {
    arbiter: ArbiterHandle,
    started: BTreeMap<String, (String, ProviderHandle)>,
}

/// What decides whether a provider must start again: its settings, the key it read and the mock's
/// pace (the key only as a hash, and only in memory).
fn fingerprint(provider: &ProviderConfig, mock_delay: Duration) -> String {
    let key = provider
        .api_key
        .as_ref()
        .map(|k| Sha256::digest(k.expose().as_bytes()).to_vec());
    format!("{provider:?}|{key:?}|{mock_delay:?}")
}

/// What rebuilding a set changed.
#[derive(Default)]
pub(super) struct SetChanges {
    /// New names, started.
    pub(super) added: Vec<String>,
    /// Changed settings, started again.
    pub(super) restarted: Vec<String>,
    /// Left out.
    pub(super) removed: Vec<String>,
}

impl ProviderSet {
    /// No providers yet; they run on `arbiter`.
    pub fn new(arbiter: ArbiterHandle) -> Self {
        Self {
            arbiter,
            started: BTreeMap::new(),
        }
    }

    /// The providers `config` names and the `registered` ones, reusing the running actor of
    /// each one whose settings did not change and starting the others. Nothing changes when one
    /// of them cannot be built.
    pub(super) fn build(
        &mut self,
        config: &Config,
        registered: &[ProviderConfig],
    ) -> Result<(Providers, Vec<ProviderDto>, SetChanges), ReloadError> {
        let mock_delay = Duration::from_millis(config.mock.chunk_delay_ms);
        let mut wanted = config.provider_configs();
        let from_file: Vec<String> = wanted.iter().map(|p| p.name.clone()).collect();
        wanted.extend(registered.iter().filter(|p| !from_file.contains(&p.name)).cloned());
        let mut next = BTreeMap::new();
        let mut changes = SetChanges::default();
        let mut handles = Vec::with_capacity(wanted.len());
        for provider in &wanted {
            let print = fingerprint(provider, mock_delay);
            let handle = match self.started.get(&provider.name) {
                Some((old, handle)) if *old == print => handle.clone(),
                running => {
                    let factory = provider_factory(provider, mock_delay).map_err(|e| ReloadError::Provider {
                        name: provider.name.clone(),
                        reason: e.to_string(),
                    })?;
                    let handle = ProviderHandle::start(&provider.name, factory, &self.arbiter);
                    let reads_pdf = provider.kind.vendor().is_none_or(Vendor::reads_pdf);
                    let list = if running.is_some() {
                        &mut changes.restarted
                    } else {
                        &mut changes.added
                    };
                    list.push(provider.name.clone());
                    if reads_pdf { handle } else { handle.without_pdf() }
                }
            };
            next.insert(provider.name.clone(), (print, handle.clone()));
            handles.push(handle);
        }
        changes.removed = self
            .started
            .keys()
            .filter(|n| !next.contains_key(*n))
            .cloned()
            .collect();
        // Dropping a handle here does not stop its actor while running turns hold theirs.
        self.started = next;
        let providers = Providers::new(
            handles,
            &config.llm.fallback,
            config.llm.breaker_threshold,
            Duration::from_secs(config.llm.breaker_cooldown_secs),
        );
        let list = wanted
            .iter()
            .enumerate()
            .map(|(i, p)| ProviderDto {
                name: p.name.clone(),
                vendor: p.vendor_name(),
                model: p.model_name(),
                default: i == 0,
                status: "ok".into(),
            })
            .collect();
        Ok((providers, list, changes))
    }

    /// The first set, at start-up.
    pub fn first(
        &mut self,
        config: &Config,
        registered: &[ProviderConfig],
    ) -> Result<(Providers, Vec<ProviderDto>), ReloadError> {
        self.build(config, registered)
            .map(|(providers, list, _)| (providers, list))
    }
}
