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
        "providers": state.providers.status(),
        "draining": state.chat.is_draining(),
        "streams_in_memory": state.chat.hub().len(),
        "mcp_servers": state.mcp.status().iter().map(|s| json!({ "name": s.name, "state": s.state })).collect::<Vec<_>>(),
    }))
}

/// `GET /v1/chat/ready`: 200 once storage answers, 503 otherwise and while shutting down.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    if state.chat.is_draining() {
        return HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "error": "shutting down", "code": "shutting_down" }));
    }
    if storage_ok(&state).await {
        HttpResponse::Ok().json(json!({ "ready": true }))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(json!({ "ready": false, "error": "storage is unavailable", "code": "not_ready" }))
    }
}

/// `GET /v1/chat/mcp/tools[?force_refresh=true]`.
pub async fn tools(_user: AuthUser, query: web::Query<ToolsQuery>, state: web::Data<AppState>) -> HttpResponse {
    let refresh = query.force_refresh.as_deref() == Some("true");
    if refresh {
        // Re-lists every server's tools and reconnects servers that are down; calls in flight
        // keep running.
        let _ = tokio::time::timeout(Duration::from_secs(15), state.mcp.refresh()).await;
    }
    let tools: Vec<_> = state
        .tools
        .tools()
        .into_iter()
        .map(|t| {
            let mut tool = json!({ "name": t.name, "description": t.description, "input_schema": t.input_schema, "server": t.server, "tool": t.tool });
            if let Some(annotations) = t.annotations {
                tool["annotations"] = annotations;
            }
            tool
        })
        .collect();
    let mut body = json!({ "tools": tools });
    if refresh {
        body["force_refresh"] = json!(true);
    }
    HttpResponse::Ok().json(body)
}

/// `GET /v1/chat/mcp/servers`: each server's transport, state, tools, calls in flight, last error.
pub async fn servers(_user: AuthUser, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "servers": state.mcp.status() }))
}
