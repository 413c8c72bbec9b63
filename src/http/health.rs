//! Health, readiness and the MCP tool list.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use actors::storage::Ping;
use serde_json::json;

use super::AppState;
use super::auth::AuthUser;
use super::dto::ToolsQuery;

async fn storage_ok(state: &AppState) -> bool {
    let ping = state.chat.storage().ask(Ping {});
    matches!(tokio::time::timeout(Duration::from_secs(2), ping).await, Ok(Ok(())))
}

/// `GET /v1/chat/health`: the original's `status`, `timestamp`, `version`, plus components.
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let storage = storage_ok(&state).await;
    HttpResponse::Ok().json(json!({
        "status": if storage { "ok" } else { "degraded" },
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "version": env!("CARGO_PKG_VERSION"),
        "storage": if storage { "ok" } else { "unavailable" },
        "providers": [{ "name": state.provider_name, "status": "ok" }],
        "streams_in_memory": state.chat.hub().len(),
    }))
}

/// `GET /v1/chat/ready`: 200 once storage answers, 503 otherwise.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if storage_ok(&state).await {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "error": "storage is unavailable", "code": "not_ready" }))
    }
}

/// `GET /v1/chat/mcp/tools[?force_refresh=true]`.
pub async fn tools(_user: AuthUser, query: web::Query<ToolsQuery>, state: web::Data<AppState>) -> HttpResponse {
    let tools: Vec<_> = state
        .tools
        .tools()
        .into_iter()
        .map(|t| json!({ "name": t.name, "description": t.description, "input_schema": t.input_schema, "server": t.server, "tool": t.tool }))
        .collect();
    let mut body = json!({ "tools": tools });
    if query.force_refresh.as_deref() == Some("true") {
        body["force_refresh"] = json!(true);
    }
    HttpResponse::Ok().json(body)
}
