//! Authentication: in `header` mode the trusted proxy's `X-User-ID` (a positive integer); in
//! `api_key` mode `Authorization: Bearer <key>`, whose SHA-256 is compared in constant time with
//! the configured hashes, and any `X-User-ID` is refused. Admins (`/admin`): the users of
//! `auth.admin_users` in header mode, the holders of `auth.admin_api_keys` in api_key mode.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use actors::ids::UserId;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;

/// How requests prove who they are, and who may use `/admin`.
pub enum Authenticator {
    /// `X-User-ID` from a trusted proxy; the listed users are admins (`auth.admin_users`).
    Header {
        /// The admins.
        admins: Vec<UserId>,
    },
    /// Bearer API keys; an admin key (`auth.admin_api_keys`) also opens `/admin`.
    ApiKeys(Vec<ApiKey>),
}

/// One configured key.
pub struct ApiKey {
    /// SHA-256 of the key.
    pub hash: Vec<u8>,
    /// Whose key it is.
    pub user: UserId,
    /// Whether it opens `/admin`.
    pub admin: bool,
}

impl Authenticator {
    /// The user of a request and whether they are an admin.
    fn identify(&self, req: &HttpRequest) -> Option<(UserId, bool)> {
        let header_user = req.headers().get("X-User-ID");
        match self {
            Authenticator::Header { admins } => header_user
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .and_then(UserId::new)
                .map(|user| (user, admins.contains(&user))),
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
                for key in keys {
                    if bool::from(key.hash.as_slice().ct_eq(hash.as_slice())) {
                        found = Some((key.user, key.admin));
                    }
                }
                found
            }
        }
    }

    /// The 401 of this mode: it speaks of what the mode expects (a user id header, or a key).
    fn refused(&self) -> ApiError {
        match self {
            Authenticator::ApiKeys(_) => ApiError::InvalidApiKey,
            Authenticator::Header { .. } => ApiError::Unauthenticated,
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
        ready(
            state
                .auth
                .identify(req)
                .map(|(user, _)| AuthUser(user))
                .ok_or_else(|| state.auth.refused()),
        )
    }
}

/// An authenticated admin: anyone else gets 401 (not authenticated) or 403 `admin_required`.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub UserId);

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unauthenticated));
        };
        ready(match state.auth.identify(req) {
            Some((user, true)) => Ok(AdminUser(user)),
            Some((_, false)) => Err(ApiError::AdminRequired),
            None => Err(state.auth.refused()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_match_by_hash_and_refuse_the_user_header() {
        let hash = Sha256::digest(b"secret-key").to_vec();
        let auth = Authenticator::ApiKeys(vec![
            ApiKey {
                hash,
                user: UserId::new(7).unwrap(),
                admin: false,
            },
            ApiKey {
                hash: Sha256::digest(b"admin-key").to_vec(),
                user: UserId::new(8).unwrap(),
                admin: true,
            },
        ]);
        let ok = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer secret-key"))
            .to_http_request();
        assert_eq!(auth.identify(&ok).map(|(u, admin)| (u.get(), admin)), Some((7, false)));
        let wrong = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer other"))
            .to_http_request();
        assert!(auth.identify(&wrong).is_none());
        let both = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer secret-key"))
            .insert_header(("X-User-ID", "7"))
            .to_http_request();
        assert!(auth.identify(&both).is_none(), "X-User-ID is refused in api_key mode");
        let admin = actix_web::test::TestRequest::default()
            .insert_header(("Authorization", "Bearer admin-key"))
            .to_http_request();
        assert_eq!(auth.identify(&admin).map(|(u, a)| (u.get(), a)), Some((8, true)));
    }
}
