//! Operators' routes under `/admin`, open only to admins (`auth.admin_users`,
//! `auth.admin_api_keys`): reload the configuration, and register, change and remove providers
//! and MCP servers at run time (stored in the database beside the configuration's). Every change
//! is logged with who made it.

use actix_web::{HttpResponse, delete, get, post, put, web};
use actors::mcp::Transport;
use actors::storage::{AdminRecord, ListAdminRecords};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::AdminUser;
use super::body::JsonObject;
use super::dto::ErrorBody;
use super::error::ApiError;
use super::registrations::{remove, store_and_apply};
use crate::config::ProviderConfig;
use crate::registered::{MCP_SERVER, McpServerSpec, NewMcpServer, NewProvider, PROVIDER, ProviderSpec};
use crate::reload::ReloadReport;

/// Reads the configuration again (file, environment, flags) and applies what changed, as SIGHUP
/// does: providers and MCP servers added, removed or changed are started or stopped (what runs
/// on them finishes first); approval rules, limits, session settings, the system prompt and the
/// log level apply to new turns; other sections are named as needing a restart. An invalid configuration is refused
/// whole and the running one stays.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "Reloaded: what changed, what was applied, what needs a restart", body = ReloadReport),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 422, description = "`config_invalid`: the new configuration was refused (the reason names the key)", body = ErrorBody),
    )
)]
#[post("/admin/reload")]
pub async fn reload(admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let by = format!("admin user {}", admin.0.get());
    let reloader = std::sync::Arc::clone(&state.reloader);
    // Reading the file and starting providers is short, but not for an async worker's thread.
    let result = web::block(move || reloader.reload(&by))
        .await
        .map_err(|_| ApiError::ConfigRefused("the reload did not finish".into()))?;
    match result {
        Ok(report) => Ok(HttpResponse::Ok().json(report)),
        Err(err) => {
            tracing::warn!(admin = admin.0.get(), error = %err, "reload refused; the running configuration stays");
            Err(ApiError::ConfigRefused(err.to_string()))
        }
    }
}

/// A provider as operators see it: its settings, where it comes from, and who last changed it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminProvider {
    /// Its name.
    pub name: String,
    /// Its settings (as `PUT /admin/providers/{name}` takes them).
    pub settings: ProviderSpec,
    /// `file` (the configuration file: the API does not change it) or `api` (registered).
    pub source: &'static str,
    /// Who registered or last changed it (registered ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// When (registered ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `GET /admin/providers` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminProvidersList {
    /// The file's providers (the default first), then the registered ones by name.
    pub providers: Vec<AdminProvider>,
}

fn spec_of(provider: &ProviderConfig) -> ProviderSpec {
    ProviderSpec {
        kind: provider.vendor_name(),
        model: provider.model.clone(),
        base_url: provider.base_url.clone(),
        api_key_env: provider.api_key_env.clone(),
        temperature: provider.temperature,
        max_tokens: provider.max_tokens,
        max_retries: provider.max_retries,
        connect_timeout_secs: provider.connect_timeout_secs,
    }
}

fn listed(record: AdminRecord) -> Option<AdminProvider> {
    let settings: ProviderSpec = serde_json::from_str(&record.spec).ok()?;
    Some(AdminProvider {
        name: record.name,
        settings,
        source: "api",
        updated_by: Some(record.updated_by),
        updated_at: Some(actors::model::format_time(record.updated_at)),
    })
}

/// Every provider: the configuration file's and the ones registered through this API.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "The providers", body = AdminProvidersList),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
    )
)]
#[get("/admin/providers")]
pub async fn list_providers(_admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut providers: Vec<AdminProvider> = state
        .reloader
        .file_providers()
        .iter()
        .map(|p| AdminProvider {
            name: p.name.clone(),
            settings: spec_of(p),
            source: "file",
            updated_by: None,
            updated_at: None,
        })
        .collect();
    let records = state
        .chat
        .storage()
        .ask(ListAdminRecords { kind: PROVIDER.into() })
        .await?;
    providers.extend(records.into_iter().filter_map(listed));
    Ok(HttpResponse::Ok().json(AdminProvidersList { providers }))
}

/// Registers a provider; it serves new turns at once, is stored in the database and survives
/// restarts. Its key is read from the environment variable `api_key_env` names.
#[utoipa::path(
    tag = "operations",
    request_body = NewProvider,
    responses(
        (status = 201, description = "Registered and started", body = ReloadReport),
        (status = 400, description = "`invalid_provider`: settings that cannot be used (the reason says which)", body = ErrorBody),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 409, description = "`provider_exists`: the name is taken; `provider_key_missing`: the key variable it names is not set on this server", body = ErrorBody),
    )
)]
#[post("/admin/providers")]
pub async fn create_provider(
    admin: AdminUser,
    body: JsonObject<NewProvider>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let NewProvider { name, settings } = body.0;
    let report = store_and_apply(admin, &state, name, settings, true).await?;
    Ok(HttpResponse::Created().json(report))
}

/// Changes a registered provider: it starts again with the new settings; turns running on it
/// finish on the old one.
#[utoipa::path(
    tag = "operations",
    params(("name" = String, Path, description = "The provider")),
    request_body = ProviderSpec,
    responses(
        (status = 200, description = "Changed and started again", body = ReloadReport),
        (status = 400, description = "`invalid_provider`: settings that cannot be used (the reason says which)", body = ErrorBody),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 404, description = "`provider_not_found`: no registered provider of this name", body = ErrorBody),
        (status = 409, description = "`provider_from_file`: the configuration file's, which the API does not change; `provider_key_missing`: the key variable it names is not set on this server", body = ErrorBody),
    )
)]
#[put("/admin/providers/{name}")]
pub async fn change_provider(
    admin: AdminUser,
    path: web::Path<String>,
    body: JsonObject<ProviderSpec>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = store_and_apply(admin, &state, path.into_inner(), body.0, false).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Removes a registered provider: new turns cannot name it; turns running on it finish first.
#[utoipa::path(
    tag = "operations",
    params(("name" = String, Path, description = "The provider")),
    responses(
        (status = 200, description = "Removed", body = ReloadReport),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 404, description = "`provider_not_found`: no registered provider of this name", body = ErrorBody),
        (status = 409, description = "`provider_from_file`: the configuration file's, which the API does not change", body = ErrorBody),
    )
)]
#[delete("/admin/providers/{name}")]
pub async fn delete_provider(
    admin: AdminUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = remove::<ProviderSpec>(admin, &state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// An MCP server as operators see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminMcpServer {
    /// Its name.
    pub name: String,
    /// `file` (the configuration: the API does not change it) or `api` (registered).
    pub source: &'static str,
    /// `stdio` or `http` (streamable HTTP or legacy SSE).
    pub transport: &'static str,
    /// The endpoint (HTTP servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The program (stdio servers; arguments and environment are not shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its settings (registered ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<McpServerSpec>,
    /// Who registered or last changed it (registered ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// When (registered ones).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// `GET /admin/mcp/servers` reply.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminMcpServersList {
    /// The configuration's servers, then the registered ones by name.
    pub servers: Vec<AdminMcpServer>,
}

/// Every MCP server: the configuration's and the ones registered through this API.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "The MCP servers", body = AdminMcpServersList),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
    )
)]
#[get("/admin/mcp/servers")]
pub async fn list_mcp_servers(_admin: AdminUser, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut servers: Vec<AdminMcpServer> = state
        .reloader
        .file_mcp_servers()
        .into_iter()
        .map(|spec| {
            let (transport, url, command) = match spec.transport {
                Transport::Stdio { command, .. } => ("stdio", None, Some(command)),
                Transport::StreamableHttp { url, .. } => ("http", Some(url), None),
            };
            AdminMcpServer {
                name: spec.name,
                source: "file",
                transport,
                url,
                command,
                settings: None,
                updated_by: None,
                updated_at: None,
            }
        })
        .collect();
    let records = state
        .chat
        .storage()
        .ask(ListAdminRecords {
            kind: MCP_SERVER.into(),
        })
        .await?;
    servers.extend(records.into_iter().filter_map(|record| {
        let settings: McpServerSpec = serde_json::from_str(&record.spec).ok()?;
        Some(AdminMcpServer {
            name: record.name,
            source: "api",
            transport: "http",
            url: Some(settings.url.clone()),
            command: None,
            settings: Some(settings),
            updated_by: Some(record.updated_by),
            updated_at: Some(actors::model::format_time(record.updated_at)),
        })
    }));
    Ok(HttpResponse::Ok().json(AdminMcpServersList { servers }))
}

/// Registers an MCP server reached over HTTP; its tools are offered to new turns once it is
/// ready. Stored in the database; secrets come from the environment variables it names.
#[utoipa::path(
    tag = "operations",
    request_body = NewMcpServer,
    responses(
        (status = 201, description = "Registered and started", body = ReloadReport),
        (status = 400, description = "`invalid_mcp_server`: settings that cannot be used (the reason says which)", body = ErrorBody),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 409, description = "`mcp_server_exists`: the name is taken; `mcp_server_secret_missing`: a variable it names is not set on this server", body = ErrorBody),
    )
)]
#[post("/admin/mcp/servers")]
pub async fn create_mcp_server(
    admin: AdminUser,
    body: JsonObject<NewMcpServer>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let NewMcpServer { name, settings } = body.0;
    let report = store_and_apply(admin, &state, name, settings, true).await?;
    Ok(HttpResponse::Created().json(report))
}

/// Changes a registered MCP server: it starts again with the new settings; calls in flight
/// finish on the old connections.
#[utoipa::path(
    tag = "operations",
    params(("name" = String, Path, description = "The MCP server")),
    request_body = McpServerSpec,
    responses(
        (status = 200, description = "Changed and started again", body = ReloadReport),
        (status = 400, description = "`invalid_mcp_server`: settings that cannot be used", body = ErrorBody),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 404, description = "`mcp_server_not_found`: no registered server of this name", body = ErrorBody),
        (status = 409, description = "`mcp_server_from_file`: the configuration's; `mcp_server_secret_missing`: a variable it names is not set", body = ErrorBody),
    )
)]
#[put("/admin/mcp/servers/{name}")]
pub async fn change_mcp_server(
    admin: AdminUser,
    path: web::Path<String>,
    body: JsonObject<McpServerSpec>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = store_and_apply(admin, &state, path.into_inner(), body.0, false).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// Removes a registered MCP server: new turns no longer see its tools; calls in flight finish,
/// then its connections close.
#[utoipa::path(
    tag = "operations",
    params(("name" = String, Path, description = "The MCP server")),
    responses(
        (status = 200, description = "Removed", body = ReloadReport),
        (status = 403, description = "`admin_required`: not an admin", body = ErrorBody),
        (status = 404, description = "`mcp_server_not_found`: no registered server of this name", body = ErrorBody),
        (status = 409, description = "`mcp_server_from_file`: the configuration's, which the API does not change", body = ErrorBody),
    )
)]
#[delete("/admin/mcp/servers/{name}")]
pub async fn delete_mcp_server(
    admin: AdminUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = remove::<McpServerSpec>(admin, &state, path.into_inner()).await?;
    Ok(HttpResponse::Ok().json(report))
}
