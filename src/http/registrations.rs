//! What the admin routes share for things registered at run time (providers, MCP servers):
//! check the settings, store them (durable before applied: a crash in between finds them at the
//! next start), apply the change, and remove; each kind with its own error codes.

use actix_web::web;
use actors::mcp::ServerSpec;
use actors::storage::{AdminRecord, DeleteAdminRecord, PutAdminRecord};
use serde::Serialize;

use super::AppState;
use super::auth::AdminUser;
use super::error::ApiError;
use crate::config::ProviderConfig;
use crate::registered::{MCP_SERVER, McpServerSpec, PROVIDER, ProviderSpec, SpecError, valid_name};
use crate::reload::{ReloadReport, Reloader};

/// Settings of something an admin registers.
pub trait Registrable: Serialize + Sized {
    /// The kind of admin record it is stored as.
    const KIND: &'static str;
    /// What the settings become once checked.
    type Built: Send + 'static;
    /// Checks the settings for `name`, reading secrets through `env`.
    fn build(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self::Built, SpecError>;
    /// Whether something of this kind may be called `name`.
    fn valid_name(name: &str) -> bool;
    /// Whether the configuration has one called `name` (the API does not change those).
    fn in_file(reloader: &Reloader, name: &str) -> bool;
    /// Starts (or, `None`, stops) the one called `name`.
    fn apply(reloader: &Reloader, name: &str, built: Option<Self::Built>, by: &str) -> Result<ReloadReport, String>;
    /// The errors of this kind: the name is taken / none registered / the configuration's /
    /// unusable settings / a secret variable unset.
    fn exists(name: String) -> ApiError;
    fn not_found() -> ApiError;
    fn from_file(name: String) -> ApiError;
    fn invalid(reason: String) -> ApiError;
    fn secret_missing(reason: String) -> ApiError;
}

impl Registrable for ProviderSpec {
    const KIND: &'static str = PROVIDER;
    type Built = ProviderConfig;

    fn build(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ProviderConfig, SpecError> {
        self.to_config(name, env)
    }
    fn valid_name(name: &str) -> bool {
        valid_name(name)
    }
    fn in_file(reloader: &Reloader, name: &str) -> bool {
        reloader.in_file(name)
    }
    fn apply(reloader: &Reloader, name: &str, built: Option<ProviderConfig>, by: &str) -> Result<ReloadReport, String> {
        reloader.register(name, built, by).map_err(|e| e.to_string())
    }
    fn exists(name: String) -> ApiError {
        ApiError::ProviderExists(name)
    }
    fn not_found() -> ApiError {
        ApiError::ProviderNotFound
    }
    fn from_file(name: String) -> ApiError {
        ApiError::ProviderFromFile(name)
    }
    fn invalid(reason: String) -> ApiError {
        ApiError::InvalidProvider(reason)
    }
    fn secret_missing(reason: String) -> ApiError {
        ApiError::ProviderKeyMissing(reason)
    }
}

impl Registrable for McpServerSpec {
    const KIND: &'static str = MCP_SERVER;
    type Built = ServerSpec;

    fn build(&self, name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<ServerSpec, SpecError> {
        self.to_spec(name, env)
    }
    fn valid_name(name: &str) -> bool {
        actors::mcp::valid_server_name(name)
    }
    fn in_file(reloader: &Reloader, name: &str) -> bool {
        reloader.mcp_in_file(name)
    }
    fn apply(reloader: &Reloader, name: &str, built: Option<ServerSpec>, by: &str) -> Result<ReloadReport, String> {
        Ok(reloader.register_mcp(name, built, by))
    }
    fn exists(name: String) -> ApiError {
        ApiError::McpServerExists(name)
    }
    fn not_found() -> ApiError {
        ApiError::McpServerNotFound
    }
    fn from_file(name: String) -> ApiError {
        ApiError::McpServerFromFile(name)
    }
    fn invalid(reason: String) -> ApiError {
        ApiError::InvalidMcpServer(reason)
    }
    fn secret_missing(reason: String) -> ApiError {
        ApiError::McpServerSecretMissing(reason)
    }
}

/// Checks `settings` for `name`, stores them (`create`: a new name; otherwise the registered one
/// of that name), then applies them; the reply is what changed.
pub async fn store_and_apply<S: Registrable>(
    admin: AdminUser,
    state: &AppState,
    name: String,
    settings: S,
    create: bool,
) -> Result<ReloadReport, ApiError> {
    if S::in_file(&state.reloader, &name) {
        return Err(if create { S::exists(name) } else { S::from_file(name) });
    }
    // A name nothing may have names nothing that exists.
    if !create && !S::valid_name(&name) {
        return Err(S::not_found());
    }
    let reloader = &state.reloader;
    let built = settings
        .build(&name, &|var| reloader.env(var))
        .map_err(|err| match err {
            SpecError::Invalid(reason) => S::invalid(reason),
            SpecError::KeyMissing(reason) => S::secret_missing(reason),
        })?;
    let record = AdminRecord {
        kind: S::KIND.into(),
        name: name.clone(),
        spec: serde_json::to_string(&settings).unwrap_or_default(),
        updated_by: format!("user {}", admin.0.get()),
        updated_at: actors::model::now(),
    };
    let stored = state.chat.storage().ask(PutAdminRecord { record, create }).await?;
    match (stored, create) {
        (true, _) => {}
        (false, true) => return Err(S::exists(name)),
        (false, false) => return Err(S::not_found()),
    }
    apply::<S>(admin, state, name, Some(built)).await
}

/// Removes the registered one called `name`: deleted from storage, then stopped.
pub async fn remove<S: Registrable>(
    admin: AdminUser,
    state: &AppState,
    name: String,
) -> Result<ReloadReport, ApiError> {
    if S::in_file(&state.reloader, &name) {
        return Err(S::from_file(name));
    }
    let deleted = state
        .chat
        .storage()
        .ask(DeleteAdminRecord {
            kind: S::KIND.into(),
            name: name.clone(),
        })
        .await?;
    if !deleted {
        return Err(S::not_found());
    }
    apply::<S>(admin, state, name, None).await
}

/// Applies a change on a blocking thread (starting a provider or a server takes a lock and
/// spawns actors), logged with who made it.
async fn apply<S: Registrable>(
    admin: AdminUser,
    state: &AppState,
    name: String,
    built: Option<S::Built>,
) -> Result<ReloadReport, ApiError> {
    let reloader = std::sync::Arc::clone(&state.reloader);
    let by = format!("admin user {}", admin.0.get());
    web::block(move || S::apply(&reloader, &name, built, &by))
        .await
        .map_err(|_| S::invalid("the change did not finish".into()))?
        .map_err(S::invalid)
}
