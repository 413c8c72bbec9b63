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

/// What was started, by name, with the settings each was started from (compared as text, in
/// memory only: settings may hold keys or header values).
struct Started<H> {
    by_name: BTreeMap<String, (String, H)>,
}

/// A set rebuilt: what runs now, in the order asked, what changed, and the ones replaced or
/// left out.
struct Rebuilt<H> {
    running: Vec<H>,
    changes: SetChanges,
    dropped: Vec<H>,
}

impl<H: Clone> Started<H> {
    fn new() -> Self {
        Self {
            by_name: BTreeMap::new(),
        }
    }

    /// Keeps the running one of each `(name, settings)` whose settings did not change and starts
    /// the others; nothing changes when one cannot start.
    fn rebuild<T, E>(
        &mut self,
        wanted: &[(String, String, T)],
        mut start: impl FnMut(&T) -> Result<H, E>,
    ) -> Result<Rebuilt<H>, E> {
        let mut next = BTreeMap::new();
        let mut changes = SetChanges::default();
        let mut running = Vec::with_capacity(wanted.len());
        for (name, print, item) in wanted {
            let handle = match self.by_name.get(name) {
                Some((old, handle)) if old == print => handle.clone(),
                was => {
                    let handle = start(item)?;
                    if was.is_some() {
                        &mut changes.restarted
                    } else {
                        &mut changes.added
                    }
                    .push(name.clone());
                    handle
                }
            };
            next.insert(name.clone(), (print.clone(), handle.clone()));
            running.push(handle);
        }
        let mut dropped = Vec::new();
        for (name, (print, handle)) in std::mem::replace(&mut self.by_name, next) {
            match self.by_name.get(&name) {
                Some((now, _)) if *now == print => {}
                Some(_) => dropped.push(handle),
                None => {
                    changes.removed.push(name);
                    dropped.push(handle);
                }
            }
        }
        Ok(Rebuilt {
            running,
            changes,
            dropped,
        })
    }
}

/// The configuration's entries, then the registered ones whose names it does not use.
fn file_then_registered<'a, T>(file: &'a [T], registered: &'a [T], name: impl Fn(&T) -> &str) -> Vec<&'a T> {
    file.iter()
        .chain(registered.iter().filter(|r| !file.iter().any(|f| name(f) == name(r))))
        .collect()
}

/// The MCP servers started, by name, with the settings they were started from.
pub struct McpSet {
    arbiter: ArbiterHandle,
    started: Started<McpServer>,
}

impl McpSet {
    /// No servers yet; they run on `arbiter`.
    pub fn new(arbiter: ArbiterHandle) -> Self {
        Self {
            arbiter,
            started: Started::new(),
        }
    }

    /// The servers `file` and `registered` describe (the file's win a shared name), each told
    /// whether it may ask the person (`elicitation`), reusing the running pool of each one whose
    /// settings did not change and starting the others; a server replaced or left out stops once
    /// its calls in flight end.
    pub(super) fn build(
        &mut self,
        file: &[ServerSpec],
        registered: &[ServerSpec],
        elicitation: bool,
    ) -> (Vec<McpServer>, SetChanges) {
        let wanted: Vec<_> = file_then_registered(file, registered, |s| &s.name)
            .into_iter()
            .map(|spec| ServerSpec {
                elicitation,
                ..spec.clone()
            })
            .map(|spec| (spec.name.clone(), format!("{spec:?}"), spec))
            .collect();
        let arbiter = &self.arbiter;
        let Ok(rebuilt) = self.started.rebuild(&wanted, |spec| {
            Ok::<_, std::convert::Infallible>(McpServer::start(spec.clone(), arbiter))
        });
        for server in &rebuilt.dropped {
            server.retire();
        }
        (rebuilt.running, rebuilt.changes)
    }

    /// The first servers, at start-up.
    pub fn first(&mut self, file: &[ServerSpec], registered: &[ServerSpec], elicitation: bool) -> Vec<McpServer> {
        self.build(file, registered, elicitation).0
    }
}

/// The provider actors started, by name, with what they were started from.
pub struct ProviderSet {
    arbiter: ArbiterHandle,
    started: Started<ProviderHandle>,
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
            started: Started::new(),
        }
    }

    /// The providers `config` names and the `registered` ones (the file's win a shared name),
    /// reusing the running actor of each one whose settings did not change and starting the
    /// others. Nothing changes when one of them cannot be built. A provider replaced or left out
    /// stops once the turns holding it end.
    pub(super) fn build(
        &mut self,
        config: &Config,
        registered: &[ProviderConfig],
    ) -> Result<(Providers, Vec<ProviderDto>, SetChanges), ReloadError> {
        let mock_delay = Duration::from_millis(config.mock.chunk_delay_ms);
        let file = config.provider_configs();
        let wanted: Vec<_> = file_then_registered(&file, registered, |p| &p.name)
            .into_iter()
            .map(|p| (p.name.clone(), fingerprint(p, mock_delay), p))
            .collect();
        let arbiter = &self.arbiter;
        let rebuilt = self.started.rebuild(&wanted, |provider| {
            let factory = provider_factory(provider, mock_delay).map_err(|e| ReloadError::Provider {
                name: provider.name.clone(),
                reason: e.to_string(),
            })?;
            let handle = ProviderHandle::start(&provider.name, factory, arbiter);
            let reads_pdf = provider.kind.vendor().is_none_or(Vendor::reads_pdf);
            Ok::<_, ReloadError>(if reads_pdf { handle } else { handle.without_pdf() })
        })?;
        let providers = Providers::new(
            rebuilt.running,
            &config.llm.fallback,
            config.llm.breaker_threshold,
            Duration::from_secs(config.llm.breaker_cooldown_secs),
        );
        let list = wanted
            .iter()
            .enumerate()
            .map(|(i, (_, _, p))| ProviderDto {
                name: p.name.clone(),
                vendor: p.vendor_name(),
                model: p.model_name(),
                default: i == 0,
                status: "ok".into(),
            })
            .collect();
        Ok((providers, list, rebuilt.changes))
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
