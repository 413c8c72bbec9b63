//! Session routes: create, list, read, rename, delete, and a session's messages.

use actix_web::{HttpResponse, delete, get, post, put, web};
use actors::ids::SessionId;
use actors::storage::Page;

use super::AppState;
use super::auth::AuthUser;
use super::body::JsonObject;
use super::dto::{
    Confirmation, ErrorBody, MessagesPage, PageQuery, Pagination, SessionDto, SessionsPage, TitleRequest, TitleUpdate,
};
use super::error::ApiError;

const MAX_TITLE_CHARS: usize = 255;

/// Parses `page` and `limit` as the original did (out-of-range values fall back to defaults);
/// text that is not a number is refused.
fn page(query: &PageQuery, default_limit: u32) -> Result<(u32, u32), ApiError> {
    let number = |name: &'static str, raw: &Option<String>| -> Result<Option<i64>, ApiError> {
        raw.as_deref()
            .map(|v| {
                v.trim().parse::<i64>().map_err(|_| ApiError::InvalidParameter {
                    name,
                    reason: "expected an integer".into(),
                })
            })
            .transpose()
    };
    let page = match number("page", &query.page)?.filter(|p| *p >= 1) {
        None => 1,
        Some(p) => u32::try_from(p).map_err(|_| ApiError::InvalidParameter {
            name: "page",
            reason: format!("at most {}", u32::MAX),
        })?,
    };
    let limit = number("limit", &query.limit)?
        .filter(|l| (1..=100).contains(l))
        .and_then(|l| u32::try_from(l).ok())
        .unwrap_or(default_limit);
    Ok((page, limit))
}

fn paging(page: u32, limit: u32) -> (Page, Pagination) {
    let offset = u64::from(page - 1) * u64::from(limit);
    (
        Page { limit, offset },
        Pagination {
            page,
            limit,
            offset,
            total: None,
        },
    )
}

fn title(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    let title = raw.map(str::trim).filter(|t| !t.is_empty());
    match title {
        Some(t) if t.chars().count() > MAX_TITLE_CHARS => Err(ApiError::InvalidParameter {
            name: "title",
            reason: format!("at most {MAX_TITLE_CHARS} characters"),
        }),
        other => Ok(other.map(str::to_owned)),
    }
}

/// Creates a session.
#[utoipa::path(
    tag = "sessions",
    request_body = TitleRequest,
    responses((status = 201, description = "Created", body = SessionDto))
)]
#[post("/sessions")]
pub async fn create_session(
    user: AuthUser,
    body: JsonObject<TitleRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let session = state.chat.create_session(user.0, title(body.title.as_deref())?).await?;
    Ok(HttpResponse::Created().json(SessionDto::from(session)))
}

/// The user's sessions, newest activity first (default 20 per page).
#[utoipa::path(
    tag = "sessions",
    params(PageQuery),
    responses((status = 200, description = "A page of sessions", body = SessionsPage))
)]
#[get("/sessions")]
pub async fn list_sessions(
    user: AuthUser,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (page, limit) = page(&query, 20)?;
    let (window, mut pagination) = paging(page, limit);
    let (sessions, total) = state.chat.sessions(user.0, window).await?;
    pagination.total = Some(total);
    Ok(HttpResponse::Ok().json(SessionsPage {
        sessions: sessions.into_iter().map(SessionDto::from).collect(),
        pagination,
    }))
}

/// One session.
#[utoipa::path(
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "The session", body = SessionDto),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    )
)]
#[get("/sessions/{id}")]
pub async fn get_session(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::from_raw(path.into_inner());
    let session = state.chat.session(user.0, id).await?;
    Ok(HttpResponse::Ok().json(SessionDto::from(session)))
}

/// Renames a session; a title set here is never replaced automatically.
#[utoipa::path(
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    request_body = TitleUpdate,
    responses(
        (status = 200, description = "Renamed", body = Confirmation),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    )
)]
#[put("/sessions/{id}")]
pub async fn rename_session(
    user: AuthUser,
    path: web::Path<String>,
    body: JsonObject<TitleUpdate>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let title = title(body.title.as_deref())?.ok_or(ApiError::MissingField("title"))?;
    let id = SessionId::from_raw(path.into_inner());
    state.chat.rename(user.0, id, title).await?;
    Ok(HttpResponse::Ok().json(Confirmation {
        message: "Session updated successfully",
    }))
}

/// Deletes a session with its messages, streams and approval requests.
#[utoipa::path(
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "Deleted", body = Confirmation),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    )
)]
#[delete("/sessions/{id}")]
pub async fn delete_session(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state
        .chat
        .delete(user.0, &SessionId::from_raw(path.into_inner()))
        .await?
    {
        return Err(ApiError::SessionNotFound);
    }
    Ok(HttpResponse::Ok().json(Confirmation {
        message: "Session deleted successfully",
    }))
}

/// A session's messages, oldest first (default 50 per page).
#[utoipa::path(
    tag = "sessions",
    params(("id" = String, Path, description = "The session"), PageQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagesPage),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    )
)]
#[get("/sessions/{id}/messages")]
pub async fn list_messages(
    user: AuthUser,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (page, limit) = page(&query, 50)?;
    let (window, pagination) = paging(page, limit);
    let id = SessionId::from_raw(path.into_inner());
    let messages = state.chat.messages(user.0, id, window).await?;
    Ok(HttpResponse::Ok().json(MessagesPage { messages, pagination }))
}

/// Clears a session's stored history and the model's context. A turn running in the session is
/// cancelled first (its stream ends with `error`, code `cancelled`).
#[utoipa::path(
    tag = "sessions",
    params(("id" = String, Path, description = "The session")),
    responses(
        (status = 200, description = "Cleared (a running turn was cancelled)", body = Confirmation),
        (status = 404, description = "`session_not_found`", body = ErrorBody),
    )
)]
#[delete("/sessions/{id}/messages")]
pub async fn clear_messages(
    user: AuthUser,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state
        .chat
        .clear(user.0, &SessionId::from_raw(path.into_inner()))
        .await?
    {
        return Err(ApiError::SessionNotFound);
    }
    Ok(HttpResponse::Ok().json(Confirmation {
        message: "Session messages cleared successfully",
    }))
}
