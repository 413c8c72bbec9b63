//! `Providers`: every configured provider, the default, the ordered fallback chain, and a circuit
//! breaker per provider: after `threshold` failures in a row a provider is skipped for `cooldown`
//! (then tried again; a success closes it).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use utoipa::ToSchema;

use super::ProviderHandle;

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

struct Entry {
    handle: ProviderHandle,
    breaker: Mutex<Breaker>,
}

/// A provider as `/v1/chat/health` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProviderStatus {
    /// Its name.
    pub name: String,
    /// `ok`, or `unhealthy` while its breaker is open.
    pub status: &'static str,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Model calls streaming right now.
    pub streams_in_flight: usize,
    /// Whether it is the default.
    pub default: bool,
}

/// The configured providers.
pub struct Providers {
    entries: Vec<Entry>,
    fallback: Vec<usize>,
    threshold: u32,
    cooldown: Duration,
}

impl Providers {
    /// `handles[0]` is the default; `fallback` names the chain tried after the chosen one.
    pub fn new(handles: Vec<ProviderHandle>, fallback: &[String], threshold: u32, cooldown: Duration) -> Self {
        let entries: Vec<Entry> = handles
            .into_iter()
            .map(|handle| Entry {
                handle,
                breaker: Mutex::new(Breaker::default()),
            })
            .collect();
        let fallback = fallback
            .iter()
            .filter_map(|name| entries.iter().position(|e| e.handle.name() == name))
            .collect();
        Self {
            entries,
            fallback,
            threshold: threshold.max(1),
            cooldown,
        }
    }

    /// Whether a provider of that name is configured.
    pub fn contains(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.handle.name() == name)
    }

    /// The default provider.
    pub fn default_provider(&self) -> Option<&ProviderHandle> {
        self.entries.first().map(|e| &e.handle)
    }

    fn is_open(&self, index: usize) -> bool {
        let breaker = crate::sync::lock_unpoisoned(&self.entries[index].breaker);
        breaker.open_until.is_some_and(|until| Instant::now() < until)
    }

    /// The providers to try, in order: the named one (or the default), then the fallback chain,
    /// skipping providers whose breaker is open (unless none would be left).
    pub fn chain(&self, preferred: Option<&str>) -> Vec<ProviderHandle> {
        let first = preferred
            .and_then(|name| self.entries.iter().position(|e| e.handle.name() == name))
            .unwrap_or(0);
        let mut order = vec![first];
        order.extend(self.fallback.iter().copied().filter(|i| *i != first));
        order.dedup();
        let healthy: Vec<usize> = order.iter().copied().filter(|i| !self.is_open(*i)).collect();
        let picked = if healthy.is_empty() { order } else { healthy };
        picked
            .into_iter()
            .filter_map(|i| self.entries.get(i).map(|e| e.handle.clone()))
            .collect()
    }

    /// Records how a provider's call started: success closes its breaker, failures open it.
    pub fn report(&self, name: &str, ok: bool) {
        let Some(entry) = self.entries.iter().find(|e| e.handle.name() == name) else {
            return;
        };
        let mut breaker = crate::sync::lock_unpoisoned(&entry.breaker);
        if ok {
            *breaker = Breaker::default();
            return;
        }
        breaker.failures = breaker.failures.saturating_add(1);
        if breaker.failures >= self.threshold {
            tracing::warn!(provider = name, failures = breaker.failures, cooldown = ?self.cooldown, "provider marked unhealthy");
            breaker.open_until = Some(Instant::now() + self.cooldown);
        }
    }

    /// Every provider's state.
    pub fn status(&self) -> Vec<ProviderStatus> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let failures = crate::sync::lock_unpoisoned(&e.breaker).failures;
                ProviderStatus {
                    name: e.handle.name().to_owned(),
                    status: if self.is_open(i) { "unhealthy" } else { "ok" },
                    consecutive_failures: failures,
                    streams_in_flight: e.handle.streams_in_flight(),
                    default: i == 0,
                }
            })
            .collect()
    }
}
