//! Authentication: in `header` mode the trusted proxy's `X-User-ID` (a positive integer); in
//! `api_key` mode `Authorization: Bearer <key>`, whose SHA-256 is compared in constant time with
//! the configured hashes, and any `X-User-ID` is refused.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use actors::ids::UserId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// How requests prove who they are.
pub enum Authenticator {
    /// `X-User-ID` from a trusted proxy.
    Header,
    /// Bearer API keys: (SHA-256 of the key, user).
    ApiKeys(Vec<(Vec<u8>, UserId)>),
}

impl Authenticator {
    fn user(&self, req: &HttpRequest) -> Option<UserId> {
        let header_user = req.headers().get("X-User-ID");
        match self {
            Authenticator::Header => header_user
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .and_then(UserId::new),
            Authenticator::ApiKeys(keys) => {
                if header_user.is_some() {
                    return None;
                }
                let key = req
                    .headers()
                    .get(actix_web::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))?;
                let hash = Sha256::digest(key.trim().as_bytes());
                // Every hash is compared, in constant time, whichever matches.
                let mut found = None;
                for (expected, user) in keys {
                    if bool::from(expected.as_slice().ct_eq(hash.as_slice())) {
                        found = Some(*user);
                    }
                }
                found
            }
        }
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser(pub UserId);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unauthenticated));
        };
        // The 401 speaks of what this mode expects: a user id header, or a key.
        let refused = match state.auth {
            Authenticator::ApiKeys(_) => ApiError::InvalidApiKey,
            Authenticator::Header => ApiError::Unauthenticated,
        };
        ready(state.auth.user(req).map(AuthUser).ok_or(refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_by_hash_and_refuse_the_user_header() {
        let hash = Sha256::digest(b"secret-key").to_vec();
        let auth = Authenticator::ApiKeys(vec![(hash, UserId::new(7).unwrap())]);
        let ok = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer secret-key"))
            .to_http_request();
        assert_eq!(auth.user(&ok).map(UserId::get), Some(7));
        let wrong = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer other"))
            .to_http_request();
        assert!(auth.user(&wrong).is_none());
        let both = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer secret-key"))
            .insert_header(("X-User-ID", "7"))
            .to_http_request();
        assert!(auth.user(&both).is_none(), "X-User-ID is refused in api_key mode");
    }
}
