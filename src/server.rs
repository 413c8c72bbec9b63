//! Wiring: opens storage, starts the actors (storage on a `SyncArbiter`, providers on their own
//! arbiter, the session registry) and the HTTP server on a listener.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix::{Arbiter, Supervisor};
use actix_web::{App, HttpServer, web};
use actors::Chat;
use actors::cluster::ClusterActor;
use actors::limits::{ReaderLimits, TurnLimits};
use actors::mcp::McpTools;
use actors::registry::SessionRegistry;
use actors::session::SessionDeps;
use actors::storage::{ChatStore, PostgresOptions, PostgresStore, SqliteStore, Storage, StorageError};
use actors::stream::StreamHub;
use actors::sync::Shared;
use actors::tools::ToolCatalog;

use crate::config::{Config, DatabaseTarget};
use crate::http::auth::{ApiKey, Authenticator};
use crate::http::{self, AppState, Limits};
use crate::reload::{LiveParts, Loader, McpSet, ProviderSet, Reloader};

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
    /// This node's id when several may share the database (PostgreSQL).
    pub node_id: Option<String>,
    /// Applies a changed configuration (SIGHUP and `POST /admin/reload`).
    pub reloader: Arc<Reloader>,
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
    /// The provider's HTTP client could not be built.
    #[error("cannot set up the model provider: {0}")]
    Provider(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The OpenAPI document could not be rendered.
    #[error("cannot render the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

/// The store as opened: the trait object, and the PostgreSQL store itself (for its listener).
struct Opened {
    store: Arc<dyn ChatStore>,
    postgres: Option<Arc<PostgresStore>>,
    /// Providers and MCP servers registered through the admin API.
    registered: Vec<actors::storage::AdminRecord>,
    registered_mcp: Vec<actors::storage::AdminRecord>,
}

/// Opens the configured database (migrating it) and marks the turns a previous process left
/// running as interrupted. On a plain thread: the PostgreSQL client blocks on its own runtime,
/// which tokio refuses on the server's.
fn open_store(config: &Config) -> Result<Opened, StartError> {
    let (database, cluster) = (&config.database, &config.cluster);
    let target = database.target()?;
    let where_ = target.describe();
    let open = || -> Result<Opened, StorageError> {
        let opened = match &target {
            DatabaseTarget::Sqlite(path) => Opened {
                store: Arc::new(SqliteStore::open(path, database.pool_size)?),
                postgres: None,
                registered: Vec::new(),
                registered_mcp: Vec::new(),
            },
            DatabaseTarget::Postgres(_) => {
                let mut options = PostgresOptions {
                    password: database.password.as_ref().map(|p| p.expose().to_owned()),
                    pool_size: database.pool_size,
                    lease: Duration::from_secs(cluster.lease_secs),
                    // Counted in the database, across every node.
                    max_running_per_user: u32::try_from(config.limits.max_concurrent_turns_per_user)
                        .unwrap_or(u32::MAX),
                    turns_per_minute_per_user: config.limits.turns_per_minute_per_user,
                    ..PostgresOptions::default()
                };
                if !cluster.node_id.is_empty() {
                    options.node_id.clone_from(&cluster.node_id);
                }
                let store = Arc::new(PostgresStore::open(&database.url, &options)?);
                tracing::info!(node_id = %store.node_id(), lease_secs = cluster.lease_secs, "cluster node");
                Opened {
                    store: store.clone(),
                    postgres: Some(store),
                    registered: Vec::new(),
                    registered_mcp: Vec::new(),
                }
            }
        };
        let mut opened = opened;
        opened.registered = opened.store.list_admin_records(crate::registered::PROVIDER)?;
        opened.registered_mcp = opened.store.list_admin_records(crate::registered::MCP_SERVER)?;
        let interrupted = actors::session::recovery::interrupt_running(opened.store.as_ref())?;
        if interrupted > 0 {
            tracing::warn!(
                interrupted,
                "turns left running by the previous process were marked interrupted"
            );
        }
        Ok(opened)
    };
    let opened = std::thread::scope(|scope| scope.spawn(open).join())
        .map_err(|_| StorageError::Unavailable("opening the database panicked".into()))??;
    tracing::info!(database = %where_, "storage ready");
    Ok(opened)
}

/// Starts everything; must run inside an actix System. Signals are the caller's (`main` drains on
/// SIGTERM and reloads on SIGHUP); `loader` reads the configuration again on a reload.
pub fn start(config: &Config, loader: Loader) -> Result<Running, StartError> {
    crate::install_crypto_provider();
    let secs = Duration::from_secs;
    // The port first: a second instance started by mistake fails here, before it touches the
    // database (where it would mark the first one's running turns as interrupted) or starts actors.
    let wanted = format!("{}:{}", config.server.listen_address, config.server.port);
    let cannot_listen = |source| StartError::Listen {
        addr: wanted.clone(),
        source,
    };
    let listener =
        TcpListener::bind((config.server.listen_address.as_str(), config.server.port)).map_err(cannot_listen)?;
    let addr = listener.local_addr().map_err(cannot_listen)?;
    let opened = open_store(config)?;
    let opened_shared = opened.postgres.is_some();
    let storage = Storage::start(
        opened.store,
        config.database.threads,
        secs(config.server.actor_timeout_secs),
    );

    let provider_arbiter = Arbiter::new();
    let mut provider_set = ProviderSet::new(provider_arbiter.handle());
    let file_names: Vec<String> = config.provider_configs().into_iter().map(|p| p.name).collect();
    let registered = crate::registered::providers_of(&opened.registered, &file_names, &|name| loader.env(name));
    let (providers, provider_list) = provider_set
        .first(config, &registered)
        .map_err(|e| StartError::Provider(e.to_string()))?;
    let (providers, provider_list) = (Shared::new(providers), Shared::new(provider_list));
    // Every MCP server connects on its own, in parallel; a server that fails stops nothing else.
    let mcp_arbiter = Arbiter::new();
    let mut mcp_set = McpSet::new(mcp_arbiter.handle());
    let file_servers: Vec<String> = config.mcp.resolved.iter().map(|s| s.name.clone()).collect();
    let registered_mcp =
        crate::registered::mcp_servers_of(&opened.registered_mcp, &file_servers, &|name| loader.env(name));
    let mcp = Arc::new(McpTools::new(mcp_set.first(
        &config.mcp.resolved,
        &registered_mcp,
        config.mcp.elicitation.enabled,
    )));
    let tools: Arc<dyn ToolCatalog> = mcp.clone();
    let hub = Arc::new(StreamHub::new(
        secs(config.server.stream_retention_secs),
        config.server.stream_retention_bytes,
    ));
    // On a database several nodes share, readers elsewhere see events once stored.
    let flush_every = Duration::from_millis(if opened_shared { config.cluster.flush_ms } else { 500 });
    let settings = Shared::new(crate::reload::session_settings(config, flush_every));
    let deps = Arc::new(SessionDeps {
        storage: storage.clone(),
        providers: providers.clone(),
        tools: Arc::clone(&tools),
        hub: Arc::clone(&hub),
        settings: settings.clone(),
    });
    let timeout = secs(config.server.actor_timeout_secs);
    let registry = Supervisor::start(move |_| SessionRegistry::new(deps, timeout));
    let node_id = match &opened.postgres {
        Some(postgres) => {
            // Several nodes may share the database: hear their notices, renew this node's
            // leases, end the turns of nodes that died.
            postgres.listen(actors::cluster::on_notice(Arc::clone(&hub), registry.clone()));
            let (storage, hub, registry) = (storage.clone(), Arc::clone(&hub), registry.clone());
            let lease = secs(config.cluster.lease_secs);
            Supervisor::start(move |_| ClusterActor::new(storage, hub, registry, lease));
            Some(postgres.node_id().to_owned())
        }
        None => None,
    };
    // Counted here first (this node's turns: cheap, and a refusal here is always right); on
    // PostgreSQL the database then counts every node's in the turn's first write.
    let turns = TurnLimits::new(
        config.limits.max_concurrent_turns_per_user,
        config.limits.turns_per_minute_per_user,
    );
    let chat = Chat::new(
        registry,
        storage,
        hub,
        providers.clone(),
        turns,
        ReaderLimits::new(config.server.max_streams_per_user),
        secs(config.server.actor_timeout_secs),
    );

    let auth = match config.auth.mode.as_str() {
        "api_key" => {
            let keys = config.api_key_hashes()?.into_iter().map(|k| (k, false));
            let admin_keys = config.admin_api_key_hashes()?.into_iter().map(|k| (k, true));
            Authenticator::ApiKeys(
                keys.chain(admin_keys)
                    .filter_map(|((hash, user), admin)| {
                        actors::ids::UserId::new(user).map(|user| ApiKey { hash, user, admin })
                    })
                    .collect(),
            )
        }
        _ => Authenticator::Header {
            admins: config
                .auth
                .admin_users
                .iter()
                .filter_map(|u| actors::ids::UserId::new(*u))
                .collect(),
        },
    };
    let reloader = Arc::new(Reloader::new(
        loader,
        config.clone(),
        (registered, registered_mcp),
        (provider_set, mcp_set),
        LiveParts {
            chat: chat.clone(),
            settings,
            providers: providers.clone(),
            provider_list: provider_list.clone(),
            mcp: Arc::clone(&mcp),
        },
    ));
    let state = web::Data::new(AppState {
        provider_list,
        reloader: Arc::clone(&reloader),
        node_id: node_id.clone(),
        auth,
        chat: chat.clone(),
        tools,
        mcp,
        providers,
        limits: Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_message_chars: config.server.max_message_chars,
            sse_keepalive: secs(config.server.sse_keepalive_secs),
            cancel_on_disconnect: secs(config.server.cancel_on_disconnect_secs),
            send_timeout: secs(config.server.send_timeout_secs),
            max_file_bytes: config.attachments.max_file_bytes,
            max_files_bytes: config.attachments.max_total_bytes,
            max_files: config.attachments.max_files,
            body_timeout: secs(config.server.body_timeout_secs),
        },
    });
    let routes = http::configure(state)?;
    crate::telemetry::metrics();
    let origins = config.server.cors_origins.clone();
    let allowed = web::Data::new(http::origin::AllowedOrigins(Arc::new(origins.clone())));
    let ui = config.server.ui;
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(allowed.clone())
            // With configured origins, a state-changing request from any other site is refused.
            .wrap(actix_web::middleware::Condition::new(
                !origins.is_empty(),
                actix_web::middleware::from_fn(http::origin::refuse_foreign_origins),
            ))
            // Without configured origins no CORS layer runs at all: browsers then allow only
            // same-origin calls (a CORS layer would refuse the Origin header of those too).
            .wrap(actix_web::middleware::Condition::new(
                !origins.is_empty(),
                http::cors(&origins),
            ))
            .wrap(actix_web::middleware::from_fn(http::observe::request_context))
            .configure(routes.clone())
            .configure(|cfg| {
                if ui {
                    http::ui::configure(cfg);
                }
            })
    })
    .shutdown_timeout(30)
    // Streams are many small writes: without TCP_NODELAY, Nagle holds the last one back until
    // the client's delayed ACK (40 ms).
    .tcp_nodelay(true)
    .listen(listener)
    .map_err(cannot_listen)?;
    let workers = if config.server.workers > 0 {
        config.server.workers
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    };
    server = server
        .workers(workers)
        .max_connections(config.server.max_connections.div_ceil(workers));
    let server = server.disable_signals().run();
    let handle = server.handle();
    Ok(Running {
        addr,
        server,
        handle,
        arbiters: vec![provider_arbiter, mcp_arbiter],
        chat,
        node_id,
        reloader,
    })
}
