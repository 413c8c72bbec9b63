//! The HTTP API under `/v1/chat`: the one route table, the shared state, and how malformed
//! requests become `ApiError`s.

pub mod admin;
pub mod approvals;
pub mod attachments;
pub mod auth;
pub mod body;
pub mod chat;
pub mod dto;
pub mod elicitations;
pub mod error;
pub mod health;
pub mod observe;
pub mod openapi;
pub mod origin;
pub mod registrations;
pub mod sessions;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::web;
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
    /// Largest attached file, in bytes.
    pub max_file_bytes: usize,
    /// Largest sum of one request's files, in bytes.
    pub max_files_bytes: usize,
    /// Most files in one request.
    pub max_files: usize,
    /// Longest wait for a request body.
    pub body_timeout: Duration,
}

/// What every handler can reach.
pub struct AppState {
    /// The chat service.
    pub chat: Chat,
    /// The tools on offer.
    pub tools: Arc<dyn ToolCatalog>,
    /// The MCP servers behind them.
    pub mcp: Arc<McpTools>,
    /// The providers (a reload may replace them).
    pub providers: actors::sync::Shared<Providers>,
    /// Limits.
    pub limits: Limits,
    /// How requests authenticate.
    pub auth: auth::Authenticator,
    /// This node's id when several may share the database (PostgreSQL).
    pub node_id: Option<String>,
    /// The configured providers (name, vendor, model), the default first.
    pub provider_list: actors::sync::Shared<Vec<dto::ProviderDto>>,
    /// Applies a changed configuration (`POST /admin/reload`).
    pub reloader: Arc<crate::reload::Reloader>,
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

/// The route table. The same function registers the routes and, through `openapi::document`,
/// collects their OpenAPI description.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(observe::prometheus).service(
        utoipa_actix_web::scope("/v1/chat")
            .service(health::health)
            .service(health::ready)
            .service(openapi::serve_document)
            .service(chat::send)
            .service(attachments::send_with_files)
            .service(chat::legacy_stream)
            .service(chat::read_stream)
            .service(chat::cancel)
            .service(chat::clear)
            .service(health::list_tools)
            .service(health::list_servers)
            .service(health::list_providers)
            .service(admin::reload)
            .service(admin::list_providers)
            .service(admin::create_provider)
            .service(admin::change_provider)
            .service(admin::delete_provider)
            .service(admin::list_mcp_servers)
            .service(admin::create_mcp_server)
            .service(admin::change_mcp_server)
            .service(admin::delete_mcp_server)
            .service(approvals::list_approvals)
            .service(approvals::list_grants)
            .service(approvals::revoke_grant)
            .service(approvals::decide)
            .service(elicitations::answer)
            .service(elicitations::list_pending)
            .service(sessions::create_session)
            .service(sessions::list_sessions)
            .service(sessions::get_session)
            .service(sessions::rename_session)
            .service(sessions::delete_session)
            .service(sessions::list_messages)
            .service(sessions::clear_messages),
    );
}

/// Registers the routes, limits, error handlers and the OpenAPI document (rendered once here).
pub fn configure(state: web::Data<AppState>) -> Result<impl Fn(&mut web::ServiceConfig) + Clone, serde_json::Error> {
    let deployment = openapi::Deployment {
        providers: state.providers.get().status().into_iter().map(|p| p.name).collect(),
        max_message_chars: state.limits.max_message_chars,
    };
    let document = web::Data::new(openapi::ApiDocument::new(&deployment)?);
    Ok(move |cfg: &mut web::ServiceConfig| {
        let limit = state.limits.max_body_bytes;
        cfg.app_data(state.clone())
            .app_data(document.clone())
            .app_data(
                web::JsonConfig::default()
                    .limit(limit)
                    .error_handler(move |err, _| json_error(err, limit)),
            )
            .app_data(web::PayloadConfig::default().limit(limit))
            .app_data(web::QueryConfig::default().error_handler(|err, _| query_error(err)))
            .app_data(web::PathConfig::default().error_handler(|err, _| {
                ApiError::InvalidParameter {
                    name: "path",
                    reason: err.to_string(),
                }
                .into()
            }));
        routes(&mut utoipa_actix_web::service_config::ServiceConfig::new(cfg));
        cfg.default_service(web::to(openapi::unmatched));
    })
}
