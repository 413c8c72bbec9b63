//! The HTTP API under `/v1/chat`: the one route table, the shared state, and how malformed
//! requests become `ApiError`s.

pub mod approvals;
pub mod auth;
pub mod chat;
pub mod dto;
pub mod error;
pub mod health;
pub mod limits;
pub mod observe;
pub mod sessions;

use std::sync::Arc;
use std::time::Duration;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::{HttpResponse, web};
use actors::Chat;
use actors::mcp::McpTools;
use actors::provider::Providers;
use actors::tools::ToolCatalog;

use error::ApiError;

/// Request limits and timings the handlers apply.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Longest message.
    pub max_message_chars: usize,
    /// SSE keep-alive period.
    pub sse_keepalive: Duration,
    /// Grace after the last reader of a running turn disconnects before the turn is cancelled
    /// (zero: never).
    pub cancel_on_disconnect: Duration,
    /// Longest non-streaming send.
    pub send_timeout: Duration,
}

/// What every handler can reach.
pub struct AppState {
    /// The chat service.
    pub chat: Chat,
    /// The tools on offer.
    pub tools: Arc<dyn ToolCatalog>,
    /// The MCP servers behind them.
    pub mcp: Arc<McpTools>,
    /// The providers.
    pub providers: Arc<Providers>,
    /// Limits.
    pub limits: Limits,
    /// How requests authenticate.
    pub auth: auth::Authenticator,
    /// Per-user turn limits.
    pub turns: limits::TurnLimits,
}

fn json_error(err: JsonPayloadError, limit: usize) -> actix_web::Error {
    match err {
        JsonPayloadError::Overflow { .. } | JsonPayloadError::OverflowKnownLength { .. } => {
            ApiError::PayloadTooLarge(limit)
        }
        JsonPayloadError::ContentType => ApiError::InvalidJson("expected Content-Type: application/json".into()),
        other => ApiError::InvalidJson(other.to_string()),
    }
    .into()
}

fn query_error(err: QueryPayloadError) -> actix_web::Error {
    ApiError::InvalidParameter {
        name: "query",
        reason: err.to_string(),
    }
    .into()
}

/// CORS for exactly the configured origins (none by default). Unlike the original, which allowed
/// every origin with credentials, an unlisted origin gets no CORS headers.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut cors = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allowed_headers([
            "content-type",
            "authorization",
            "x-user-id",
            "x-request-id",
            "last-event-id",
        ])
        .expose_headers(["x-request-id", "retry-after"])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Registers the routes, limits and error handlers.
pub fn configure(state: web::Data<AppState>) -> impl Fn(&mut web::ServiceConfig) + Clone {
    move |cfg: &mut web::ServiceConfig| {
        let limit = state.limits.max_body_bytes;
        cfg.app_data(state.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |err, _| json_error(err, limit)),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::QueryConfig::default().error_handler(|err, _| query_error(err)))
            .route("/metrics", web::get().to(observe::metrics))
            .service(
                web::scope("/v1/chat")
                    .route("/health", web::get().to(health::health))
                    .route("/ready", web::get().to(health::ready))
                    .route("/send", web::post().to(chat::send))
                    .route("/stream/{stream_id}", web::get().to(chat::stream))
                    .route("/stream/{stream_id}/cancel", web::post().to(chat::cancel))
                    .route("/clear", web::delete().to(chat::clear))
                    .route("/mcp/tools", web::get().to(health::tools))
                    .route("/mcp/servers", web::get().to(health::servers))
                    .route("/approvals", web::get().to(approvals::list))
                    .route("/approvals/grants", web::get().to(approvals::grants))
                    .route("/approvals/grants/{id}", web::delete().to(approvals::revoke))
                    .route("/approvals/{request_id}", web::post().to(approvals::decide))
                    .route("/sessions", web::post().to(sessions::create))
                    .route("/sessions", web::get().to(sessions::list))
                    .route("/sessions/{id}", web::get().to(sessions::get))
                    .route("/sessions/{id}", web::put().to(sessions::update))
                    .route("/sessions/{id}", web::delete().to(sessions::delete))
                    .route("/sessions/{id}/messages", web::get().to(sessions::messages))
                    .route("/sessions/{id}/messages", web::delete().to(sessions::clear_messages)),
            )
            .default_service(web::to(|| async { Err::<HttpResponse, _>(ApiError::RouteNotFound) }));
    }
}
