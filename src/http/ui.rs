//! The chat page at `/` (`server.ui`): HTML, CSS and JavaScript modules compiled into the binary
//! from `src/ui/`, so it works offline and needs no build step. It speaks only the public API. A
//! strict Content-Security-Policy (scripts and styles from this server only, no inline script)
//! backs up the page's own rule that model output and tool results are never markup.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// Each asset: name under `/ui/`, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../ui/api.js")),
    (
        "markdown.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/markdown.js"),
    ),
    ("style.css", "text/css; charset=utf-8", include_str!("../ui/style.css")),
];

const INDEX: &str = include_str!("../ui/index.html");

const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Registers `/` and `/ui/{file}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/ui/{file}", web::get().to(asset));
}

fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(file: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(name, _, _)| *name == file.as_str()) {
        Some((_, content_type, body)) => page(content_type, body),
        None => actix_web::ResponseError::error_response(&super::error::ApiError::RouteNotFound),
    }
}
