//! Wiring: opens storage, starts the actors (storage on a `SyncArbiter`, providers on their own
//! arbiter, the session registry) and the HTTP server on a listener.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, Supervisor};
use actix_web::{App, HttpServer, web};
use actors::Chat;
use actors::mcp::{McpServer, McpTools};
use actors::provider::{ChatProvider, MockProvider, ProviderFactory, ProviderHandle};
use actors::registry::SessionRegistry;
use actors::session::{SessionDeps, SessionSettings};
use actors::storage::{ChatStore, SqliteStore, Storage};
use actors::stream::StreamHub;
use actors::tools::ToolCatalog;

use crate::config::Config;
use crate::http::{self, AppState, Limits};

/// A running server.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The HTTP server; await it to run until stopped.
    pub server: actix_web::dev::Server,
    /// Stops it.
    pub handle: actix_web::dev::ServerHandle,
    /// The arbiters the provider and MCP actors run on (stop them after the server).
    pub arbiters: Vec<Arbiter>,
    /// The chat service (for draining at shutdown).
    pub chat: Chat,
}

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Storage could not be opened or migrated.
    #[error(transparent)]
    Storage(#[from] actors::storage::StorageError),
    /// The listener could not be bound.
    #[error("cannot listen: {0}")]
    Listen(#[from] std::io::Error),
}

fn provider_factory(config: &Config) -> ProviderFactory {
    let delay = Duration::from_millis(config.mock.chunk_delay_ms);
    Arc::new(move || Arc::new(MockProvider::new(delay)) as Arc<dyn ChatProvider>)
}

/// Starts everything; must run inside an actix System. `handle_signals = false` for tests.
pub fn start(config: &Config, handle_signals: bool) -> Result<Running, StartError> {
    crate::install_crypto_provider();
    let secs = Duration::from_secs;
    let path = config.database.sqlite_path()?;
    let store = SqliteStore::open(&path, config.database.pool_size)?;
    let interrupted = store.interrupt_running_streams()?;
    if interrupted > 0 {
        tracing::warn!(
            interrupted,
            "turns left running by the previous process were marked interrupted"
        );
    }
    let storage = Storage::start(
        Arc::new(store),
        config.database.threads,
        secs(config.server.actor_timeout_secs),
    );

    let provider_arbiter = Arbiter::new();
    let provider = ProviderHandle::start(
        &config.llm.provider,
        provider_factory(config),
        &provider_arbiter.handle(),
    );
    // Every MCP server connects on its own, in parallel; a server that fails stops nothing else.
    let mcp_arbiter = Arbiter::new();
    let servers = config
        .mcp
        .resolved
        .iter()
        .map(|spec| McpServer::start(spec.clone(), &mcp_arbiter.handle()))
        .collect();
    let mcp = Arc::new(McpTools::new(servers));
    let tools: Arc<dyn ToolCatalog> = mcp.clone();
    let hub = Arc::new(StreamHub::default());
    let system_prompt = Some(config.llm.system_prompt.trim().to_owned()).filter(|p| !p.is_empty());
    let deps = Arc::new(SessionDeps {
        storage: storage.clone(),
        provider: provider.clone(),
        tools: Arc::clone(&tools),
        hub: Arc::clone(&hub),
        settings: SessionSettings {
            system_prompt,
            max_tool_rounds: config.session.max_tool_rounds,
            first_token_timeout: secs(config.session.first_token_timeout_secs),
            chunk_gap_timeout: secs(config.session.chunk_gap_timeout_secs),
            idle_timeout: secs(config.session.idle_timeout_secs),
            title_timeout: secs(config.session.title_timeout_secs),
            max_tool_output_chars: config.mcp.max_tool_output_chars,
            approval: config.approval.clone(),
        },
    });
    let retention = secs(config.server.stream_retention_secs);
    let registry = Supervisor::start(move |_| SessionRegistry::new(deps, retention));
    let chat = Chat::new(registry, storage, hub, secs(config.server.actor_timeout_secs));

    let state = web::Data::new(AppState {
        chat: chat.clone(),
        tools,
        mcp,
        provider,
        limits: Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_message_chars: config.server.max_message_chars,
            sse_keepalive: secs(config.server.sse_keepalive_secs),
            cancel_on_disconnect: secs(config.server.cancel_on_disconnect_secs),
            send_timeout: secs(config.server.send_timeout_secs),
        },
    });
    let listener = TcpListener::bind((config.server.listen_address.as_str(), config.server.port))?;
    let addr = listener.local_addr()?;
    let routes = http::configure(state);
    let mut server = HttpServer::new(move || App::new().configure(routes.clone()))
        .shutdown_timeout(30)
        // Streams are many small writes: without TCP_NODELAY, Nagle holds the last one back until
        // the client's delayed ACK (40 ms).
        .tcp_nodelay(true)
        .listen(listener)?;
    if config.server.workers > 0 {
        server = server.workers(config.server.workers);
    }
    if !handle_signals {
        server = server.disable_signals();
    }
    let server = server.run();
    let handle = server.handle();
    Ok(Running {
        addr,
        server,
        handle,
        arbiters: vec![provider_arbiter, mcp_arbiter],
        chat,
    })
}
