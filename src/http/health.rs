//! Health, readiness and the MCP tool list.

use std::time::Duration;

use actix_web::{HttpResponse, get, web};

use super::AppState;
use super::auth::AuthUser;
use super::dto::{
    Health, McpServerState, NodeState, ProviderDto, ProvidersList, Ready, ServersList, ToolDto, ToolsList, ToolsQuery,
    flag,
};
use super::error::ApiError;

async fn storage_ok(state: &AppState) -> bool {
    state.chat.storage_ok(Duration::from_secs(2)).await
}

/// Liveness and the state of each component (no authentication).
#[utoipa::path(
    tag = "operations",
    security(()),
    responses((status = 200, description = "Up; `status` says whether storage answers", body = Health))
)]
#[get("/health")]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let storage = storage_ok(&state).await;
    HttpResponse::Ok().json(Health {
        status: if storage { "ok" } else { "degraded" },
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        version: env!("CARGO_PKG_VERSION"),
        storage: if storage { "ok" } else { "unavailable" },
        providers: state.providers.get().status(),
        draining: state.chat.is_draining(),
        streams_in_memory: state.chat.hub().len(),
        session_actors: state.chat.session_actors().await,
        mcp_servers: state
            .mcp
            .status()
            .into_iter()
            .map(|s| McpServerState {
                name: s.name,
                state: s.state,
            })
            .collect(),
        node: state.node_id.as_ref().map(|id| NodeState {
            id: id.clone(),
            turns_running: state.chat.hub().running(),
            streams_followed: state.chat.hub().followed(),
        }),
    })
}

/// Readiness (no authentication): 200 once storage answers, 503 otherwise and while shutting down.
#[utoipa::path(
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Takes requests", body = Ready),
        (status = 503, description = "Shutting down or storage unavailable", body = Ready),
    )
)]
#[get("/ready")]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let not_ready = |error, code| Ready {
        ready: false,
        error: Some(error),
        code: Some(code),
    };
    if state.chat.is_draining() {
        return HttpResponse::ServiceUnavailable().json(not_ready("shutting down", "shutting_down"));
    }
    if storage_ok(&state).await {
        HttpResponse::Ok().json(Ready {
            ready: true,
            error: None,
            code: None,
        })
    } else {
        HttpResponse::ServiceUnavailable().json(not_ready("storage is unavailable", "not_ready"))
    }
}

/// The tools the model is offered, from every MCP server.
#[utoipa::path(
    tag = "tools",
    params(ToolsQuery),
    responses((status = 200, description = "The tools", body = ToolsList))
)]
#[get("/mcp/tools")]
pub async fn list_tools(
    _user: AuthUser,
    query: web::Query<ToolsQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let refresh = flag("force_refresh", query.force_refresh.as_deref())?;
    if refresh {
        // Re-lists every server's tools and reconnects servers that are down; calls in flight
        // keep running.
        let _ = tokio::time::timeout(Duration::from_secs(15), state.mcp.refresh()).await;
    }
    let tools = state
        .tools
        .tools()
        .iter()
        .map(|t| ToolDto {
            name: t.name.clone(),
            description: t.description.clone(),
            input_schema: t.input_schema.clone(),
            server: t.server.clone(),
            tool: t.tool.clone(),
            annotations: t.annotations.clone(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(ToolsList {
        tools,
        force_refresh: refresh.then_some(true),
    }))
}

/// The providers a message may name (`provider`), with vendor, model and health.
#[utoipa::path(
    tag = "chat",
    responses((status = 200, description = "The providers, the default first", body = ProvidersList))
)]
#[get("/providers")]
pub async fn list_providers(_user: AuthUser, state: web::Data<AppState>) -> HttpResponse {
    let breakers = state.providers.get().status();
    let providers = state
        .provider_list
        .get()
        .iter()
        .map(|p| ProviderDto {
            status: breakers
                .iter()
                .find(|h| h.name == p.name)
                .map_or_else(|| "ok".to_owned(), |h| h.status.to_owned()),
            ..p.clone()
        })
        .collect();
    HttpResponse::Ok().json(ProvidersList { providers })
}

/// Each MCP server's transport, state, tools, calls in flight and last error.
#[utoipa::path(
    tag = "tools",
    responses((status = 200, description = "The servers", body = ServersList))
)]
#[get("/mcp/servers")]
pub async fn list_servers(_user: AuthUser, state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(ServersList {
        servers: state.mcp.status(),
    })
}
