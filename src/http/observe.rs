//! Per-request observability: a request id (the client's `X-Request-ID` if sane, else a new one)
//! echoed in the response, a `tracing` span carrying it with the route and user, and the HTTP
//! metrics (requests by route, method and status; latency).

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, get, web};
use tracing::Instrument;

use super::AppState;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn sane(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
}

/// The middleware.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map_or_else(|| actors::ids::prefixed_id("req"), str::to_owned);
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let user = req
        .headers()
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!("request", request_id = %id, %method, %route, user = %user);
    let started = Instant::now();
    let mut response = next.call(req).instrument(span.clone()).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request"));
    let labels = [("route", route), ("method", method), ("status", status.to_string())];
    metrics::counter!("aichat_http_requests_total", &labels).increment(1);
    metrics::histogram!("aichat_http_request_duration_seconds", &labels[..2]).record(elapsed.as_secs_f64());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(response)
}

/// Prometheus metrics in the text exposition format (no authentication: keep it off the public
/// network, as any scrape endpoint).
#[utoipa::path(
    tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub async fn prometheus(state: web::Data<AppState>) -> HttpResponse {
    for server in state.mcp.status() {
        metrics::gauge!("aichat_mcp_server_ready", "server" => server.name.clone()).set(if server.state == "ready" {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("aichat_mcp_calls_in_flight", "server" => server.name).set(server.calls_in_flight as f64);
    }
    for provider in state.providers.get().status() {
        metrics::gauge!("aichat_provider_healthy", "provider" => provider.name.clone())
            .set(if provider.status == "ok" { 1.0 } else { 0.0 });
        metrics::gauge!("aichat_provider_streams_in_flight", "provider" => provider.name)
            .set(provider.streams_in_flight as f64);
    }
    metrics::gauge!("aichat_turns_running").set(state.chat.hub().running() as f64);
    let handle = crate::telemetry::metrics();
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
