//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and wire types while the routes are registered (`super::routes`), so the document
//! and the route table cannot drift apart; served at `GET /v1/chat/openapi.json`.

use actix_web::{App, HttpRequest, HttpResponse, get, web};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use super::dto::ErrorBody;
use super::error::ApiError;

/// The served document, rendered once at start-up, and the methods of each documented path.
pub struct ApiDocument {
    json: String,
    methods: Vec<(Vec<String>, Vec<&'static str>)>,
}

impl ApiDocument {
    /// Renders the document for this deployment.
    pub fn new(deployment: &Deployment) -> Result<Self, serde_json::Error> {
        let api = document();
        let methods = api
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let segments = path.split('/').map(str::to_owned).collect();
                let ops = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                ];
                (
                    segments,
                    ops.into_iter().filter(|(_, on)| *on).map(|(m, _)| m).collect(),
                )
            })
            .collect();
        Ok(Self {
            json: render(api, deployment)?,
            methods,
        })
    }

    /// The methods a path answers to (`{param}` segments match any one segment), if it is a route.
    pub fn allowed_methods(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let mut allowed: Vec<&str> = Vec::new();
        for (template, methods) in &self.methods {
            let matches = template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()));
            if matches {
                allowed.extend(methods);
            }
        }
        (!allowed.is_empty()).then(|| allowed.join(", "))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "aichat",
        description = "AI chat backend: streamed answers over Server-Sent Events, MCP tools run in parallel, \
                       tool approval, sessions and history. Compatible with the PMM chat UI.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(ErrorBody, actors::model::StreamMessage, actors::approval::ApprovalStatus)),
    modifiers(&Conventions),
    security(("user_id" = []), ("api_key" = [])),
    tags(
        (name = "chat", description = "Send messages and read their streams"),
        (name = "sessions", description = "Sessions and their history"),
        (name = "approvals", description = "Tool approval requests and grants"),
        (name = "tools", description = "MCP servers and their tools"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// What every operation shares: the two ways to authenticate, and the error answers any route
/// can give (so each handler documents only its own 404s and 409s).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "user_id",
            SecurityScheme::ApiKey(utoipa::openapi::security::ApiKey::Header(
                utoipa::openapi::security::ApiKeyValue::with_description(
                    "X-User-ID",
                    "`auth.mode = \"header\"`: the user id (a positive integer) set by a trusted proxy",
                ),
            )),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`auth.mode = \"api_key\"`: a key whose SHA-256 is configured"))
                    .build(),
            ),
        );
    }
}

fn error(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// Adds the answers every route may give, unless the handler documented that status itself.
fn add_common_errors(operation: &mut Operation) {
    let public = operation
        .security
        .as_ref()
        .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
    let mut common = Vec::new();
    if operation.parameters.as_ref().is_some_and(|p| !p.is_empty()) || operation.request_body.is_some() {
        common.push((
            "400",
            "`invalid_parameter`, `invalid_json`, `missing_field` or `message_too_long`",
        ));
    }
    if !public {
        common.push(("401", "`unauthenticated`: no valid `X-User-ID` or API key"));
        common.push((
            "503",
            "`storage_unavailable`, `service_unavailable` or `shutting_down`, with `Retry-After`",
        ));
    }
    if operation.request_body.is_some() {
        common.push(("413", "`payload_too_large`: the body exceeds `server.max_body_bytes`"));
    }
    for (status, description) in common {
        if !operation.responses.responses.contains_key(status) {
            operation
                .responses
                .responses
                .insert(status.to_owned(), error(description));
        }
    }
}

/// The whole document: `ApiDoc` plus every path the route table registers.
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, mut api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(super::routes)
        .split_for_parts();
    for item in api.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_common_errors(operation);
        }
    }
    api
}

/// What the document says that depends on this server's configuration.
pub struct Deployment {
    /// The configured provider names (what `ChatRequest.provider` accepts).
    pub providers: Vec<String>,
    /// `server.max_message_chars`.
    pub max_message_chars: usize,
}

/// The document as served: `api` with this deployment's values filled in.
fn render(api: utoipa::openapi::OpenApi, deployment: &Deployment) -> Result<String, serde_json::Error> {
    let mut doc = serde_json::to_value(api)?;
    for request in [
        "/components/schemas/ChatRequest/properties",
        "/components/schemas/FilesForm/properties",
    ] {
        if let Some(serde_json::Value::Object(message)) = doc.pointer_mut(&format!("{request}/message")) {
            message.insert("maxLength".into(), deployment.max_message_chars.into());
        }
        if let Some(serde_json::Value::Object(provider)) = doc.pointer_mut(&format!("{request}/provider")) {
            let mut names: Vec<serde_json::Value> = deployment.providers.iter().map(|p| p.as_str().into()).collect();
            // Empty (or null in JSON; a form part has no null): the default provider.
            names.push("".into());
            if request.contains("ChatRequest") {
                names.push(serde_json::Value::Null);
            }
            provider.insert("enum".into(), names.into());
        }
    }
    if let Some(serde_json::Value::Array(params)) = doc.pointer_mut("/paths/~1v1~1chat~1stream/get/parameters")
        && let Some(serde_json::Value::Object(schema)) = params
            .iter_mut()
            .find(|p| p["name"] == "message")
            .and_then(|p| p.get_mut("schema"))
    {
        schema.insert("maxLength".into(), deployment.max_message_chars.into());
    }
    serde_json::to_string(&doc)
}

/// This document.
#[utoipa::path(
    tag = "operations",
    security(()),
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object))
)]
#[get("/openapi.json")]
pub async fn serve_document(doc: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.json.clone())
}

/// Requests no route takes: 405 with `Allow` when the path is a route, else 404.
pub async fn unmatched(req: HttpRequest, doc: web::Data<ApiDocument>) -> Result<HttpResponse, ApiError> {
    Err(match doc.allowed_methods(req.path()) {
        Some(allow) => ApiError::MethodNotAllowed(allow),
        None => ApiError::RouteNotFound,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_route_and_this_deployments_values() {
        let deployment = Deployment {
            providers: vec!["mock".into(), "claude".into()],
            max_message_chars: 123,
        };
        let document = ApiDocument::new(&deployment).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&document.json).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.values().map(|p| p.as_object().unwrap().len()).sum::<usize>(), 35);
        assert!(paths["/v1/chat/admin/reload"]["post"]["responses"]["403"].is_object());
        assert!(paths["/v1/chat/sessions/{id}"]["get"]["responses"]["401"].is_object());
        assert!(paths["/v1/chat/health"]["get"]["responses"].get("401").is_none());
        let request = &doc["components"]["schemas"]["ChatRequest"]["properties"];
        assert_eq!(request["message"]["maxLength"], 123);
        assert_eq!(
            request["provider"]["enum"],
            serde_json::json!(["mock", "claude", "", null])
        );
        let form = &doc["components"]["schemas"]["FilesForm"]["properties"];
        assert_eq!(form["message"]["maxLength"], 123);
        assert_eq!(form["provider"]["enum"], serde_json::json!(["mock", "claude", ""]));
        let legacy = &paths["/v1/chat/stream"]["get"]["parameters"];
        let message = legacy
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "message")
            .unwrap();
        assert_eq!(
            (message["required"].as_bool(), &message["schema"]["maxLength"]),
            (Some(true), &serde_json::json!(123))
        );

        assert_eq!(
            document.allowed_methods("/v1/chat/sessions/abc").unwrap(),
            "GET, PUT, DELETE"
        );
        assert_eq!(document.allowed_methods("/v1/chat/send").unwrap(), "POST");
        assert_eq!(document.allowed_methods("/v1/chat/sessions//messages"), None);
        assert_eq!(document.allowed_methods("/v1/chat/nope"), None);
    }
}
