//! The `X-User-ID` extractor: a positive integer set by the trusted proxy in front of us.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use actors::ids::UserId;

use super::error::ApiError;

/// The authenticated user of a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user = req
            .headers()
            .get("X-User-ID")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
            .and_then(UserId::new);
        ready(user.map(AuthUser).ok_or(ApiError::Unauthenticated))
    }
}
