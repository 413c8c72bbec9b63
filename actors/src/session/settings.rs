//! What sessions are configured with ([`SessionSettings`]) and what they share ([`SessionDeps`]).

use std::sync::Arc;
use std::time::Duration;

use crate::provider::Providers;
use crate::storage::Storage;
use crate::stream::StreamHub;
use crate::tools::ToolCatalog;

/// Tunables of sessions and turns.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Prepended to every model call (not stored in history).
    pub system_prompt: Option<String>,
    /// Tool rounds one turn may chain.
    pub max_tool_rounds: u32,
    /// Longest wait for a model's first event.
    pub first_token_timeout: Duration,
    /// Longest wait between two events of a model's answer.
    pub chunk_gap_timeout: Duration,
    /// A session actor with no turn stops after this long without messages.
    pub idle_timeout: Duration,
    /// Session actors kept at most; past it the least recently used idle ones stop.
    pub max_live_sessions: usize,
    /// Longest wait for a generated title.
    pub title_timeout: Duration,
    /// Longest tool result the model sees (head and tail are kept).
    pub max_tool_output_chars: usize,
    /// Longest tool result stored and streamed (head and tail are kept): a server that answers
    /// with megabytes fills neither the database nor the clients.
    pub max_stored_tool_output_chars: usize,
    /// Which tools need the person's approval.
    pub approval: crate::approval::ApprovalConfig,
    /// How long a tool's question waits for the person's answer (then it counts as `cancel`).
    pub elicitation_expiry: Duration,
    /// Streamed events are stored at least this often while a turn runs (readers on other
    /// nodes see them once stored).
    pub flush_every: Duration,
}

/// What every session actor shares.
pub struct SessionDeps {
    /// Persistence.
    pub storage: Storage,
    /// The providers (default, named, fallback chain; a reload may replace them: a turn keeps
    /// the ones it started with).
    pub providers: crate::sync::Shared<Providers>,
    /// The tools on offer.
    pub tools: Arc<dyn ToolCatalog>,
    /// Where streams are registered.
    pub hub: Arc<StreamHub>,
    /// Tunables (a reload may replace them: a turn keeps the ones it started with).
    pub settings: crate::sync::Shared<SessionSettings>,
}
