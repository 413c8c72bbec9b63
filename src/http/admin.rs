//! Operators' routes under `/admin`, open only to admins (`auth.admin_users`,
//! `auth.admin_api_keys`); every change is logged with who made it.

use actix_web::{HttpResponse, post, web};

use super::AppState;
use super::auth::AdminUser;
use super::dto::ErrorBody;
use super::error::ApiError;
use crate::reload::{ReloadError, ReloadReport};

/// Reads the configuration again (file, environment, flags) and applies what changed, as SIGHUP
/// does: providers added, removed or changed are started or stopped (turns running on them
/// finish first); approval rules, limits, the system prompt and the log level apply to new
/// turns; other sections are named as needing a restart. An invalid configuration is refused
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
            Err(ApiError::ConfigRefused(match err {
                ReloadError::Config(e) => e.to_string(),
                other @ ReloadError::Provider { .. } => other.to_string(),
            }))
        }
    }
}
