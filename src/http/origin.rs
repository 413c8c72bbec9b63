//! Cross-site request refusal. With `server.cors_origins` set, a state-changing request (POST,
//! PUT, PATCH, DELETE) whose `Origin` is neither a configured origin nor the server's own (the
//! host it was sent to) is refused with 403 `origin_not_allowed` before any handler runs: a page
//! on another site cannot make a person's browser change their chats. Requests without `Origin`
//! (programs, not browsers) pass; CORS preflights are answered by the CORS layer.

use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{ResponseError, web};

use super::error::ApiError;

/// The origins a browser may send state-changing requests from (besides the server's own).
#[derive(Debug, Clone, Default)]
pub struct AllowedOrigins(pub Arc<Vec<String>>);

/// The middleware.
pub async fn refuse_foreign_origins(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let changes_state = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if let Some(origin) = req.headers().get("origin").filter(|_| changes_state) {
        let origin = origin.to_str().unwrap_or("(not text)").to_owned();
        let allowed = req
            .app_data::<web::Data<AllowedOrigins>>()
            .is_some_and(|list| list.0.iter().any(|o| o.eq_ignore_ascii_case(&origin)));
        if !allowed && !same_host(&origin, req.connection_info().host()) {
            let response = ApiError::OriginNotAllowed(origin).error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request was sent to.
fn same_host(origin: &str, host: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/').eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_servers_own_origin_is_its_host() {
        assert!(super::same_host("http://127.0.0.1:3001", "127.0.0.1:3001"));
        assert!(!super::same_host("https://evil.example", "127.0.0.1:3001"));
        assert!(!super::same_host("null", "127.0.0.1:3001"));
    }
}
