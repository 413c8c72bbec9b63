//! `JsonObject<T>`: a JSON request body that must be an object. serde's derived `Deserialize`
//! also takes a JSON array for a struct (fields by position); the API documents objects, so
//! anything else is `invalid_json`. A body that does not arrive within `server.body_timeout_secs`
//! is `request_timeout` (408, connection closed): a stalled body never holds a connection.

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use futures::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::ApiError;

/// For an app without state (tests of the extractor alone).
const DEFAULT_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A JSON object body, deserialized into `T` (size limit and error mapping from `JsonConfig`).
#[derive(Debug)]
pub struct JsonObject<T>(pub T);

impl<T> std::ops::Deref for JsonObject<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for JsonObject<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = web::Json::<Map<String, Value>>::from_request(req, payload);
        let limit = req
            .app_data::<web::Data<super::AppState>>()
            .map_or(DEFAULT_BODY_TIMEOUT, |state| state.limits.body_timeout);
        Box::pin(async move {
            let object = tokio::time::timeout(limit, object)
                .await
                .map_err(|_| ApiError::RequestTimeout)??
                .into_inner();
            serde_json::from_value(Value::Object(object))
                .map(JsonObject)
                .map_err(|err| ApiError::InvalidJson(err.to_string()).into())
        })
    }
}
