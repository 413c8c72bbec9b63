//! `ApiError`: every error the HTTP API returns, mapped to a status and a stable code in one
//! exhaustive table. Bodies keep the original's `{"error": "<text>"}` and add `"code"`.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use actors::answer::{FailureKind, TurnFailure};
use actors::session::SessionError;
use actors::storage::StorageError;
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// `X-User-ID` missing or not a positive integer.
    #[error("Authentication required: missing or invalid user ID")]
    Unauthenticated,
    /// API-key mode: no key, an unknown key, or a request that also names a user.
    #[error("Authentication required: send `Authorization: Bearer <API key>` with a configured key")]
    InvalidApiKey,
    /// The body is not valid JSON or has the wrong shape.
    #[error("Invalid request format: {0}")]
    InvalidJson(String),
    /// A required field is missing or empty.
    #[error("{0} is required")]
    MissingField(&'static str),
    /// A query or path parameter is malformed.
    #[error("Invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The body is larger than `server.max_body_bytes`.
    #[error("Request body too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// The message is longer than `server.max_message_chars`.
    #[error("Message too long ({len} characters; limit {limit})")]
    MessageTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The multipart body cannot be read, or a part is not what `/send-with-files` takes.
    #[error("Failed to parse multipart form: {0}")]
    InvalidMultipart(String),
    /// One file is larger than `attachments.max_file_bytes`.
    #[error("File too large: {filename} (limit {limit} bytes per file)")]
    AttachmentTooLarge {
        /// The file.
        filename: String,
        /// The limit.
        limit: usize,
    },
    /// The files together are larger than `attachments.max_total_bytes`.
    #[error("Files too large together (limit {0} bytes per request)")]
    AttachmentsTooLarge(usize),
    /// More files than `attachments.max_files`.
    #[error("Too many files (limit {0} per request)")]
    TooManyAttachments(usize),
    /// A file of a kind no model is given (or whose content is not what its type says).
    #[error("Unsupported attachment: {0}")]
    UnsupportedAttachment(String),
    /// The provider that would answer cannot read this kind of file.
    #[error("Unsupported attachment: {0}")]
    AttachmentUnreadable(String),
    /// No such session for this user.
    #[error("Session not found")]
    SessionNotFound,
    /// No such stream for this user.
    #[error("Stream not found")]
    StreamNotFound,
    /// No such route.
    #[error("Not found")]
    RouteNotFound,
    /// The route exists, not with this method; carries the `Allow` list.
    #[error("Method not allowed (allowed: {0})")]
    MethodNotAllowed(String),
    /// The session already runs a turn.
    #[error("A turn is already running in this session")]
    TurnInProgress,
    /// No such approval request for this user (or session).
    #[error("Approval request not found")]
    ApprovalNotFound,
    /// The approval request was already decided.
    #[error("The approval request was already decided")]
    ApprovalDecided,
    /// The approval request expired and counts as denied.
    #[error("The approval request expired")]
    ApprovalExpired,
    /// No such elicitation for this user.
    #[error("Elicitation not found")]
    ElicitationNotFound,
    /// The elicitation was already answered.
    #[error("The elicitation was already answered")]
    ElicitationAnswered,
    /// The elicitation expired and counts as cancel.
    #[error("The elicitation expired")]
    ElicitationExpired,
    /// An answer that does not fit the question's schema; `path` points into the request body.
    #[error("The answer does not fit the question at {path}: {reason}")]
    ElicitationAnswerInvalid {
        /// Where (`/content/age`).
        path: String,
        /// Why.
        reason: String,
    },
    /// No such grant.
    #[error("Grant not found")]
    GrantNotFound,
    /// The stream's turn already ended (cancel).
    #[error("The turn of this stream has already ended")]
    TurnFinished,
    /// The server is shutting down.
    #[error("The server is shutting down")]
    ShuttingDown,
    /// Too many turns: running at once, or started this minute.
    #[error("Too many turns: {reason}")]
    TooManyTurns {
        /// Which limit.
        reason: &'static str,
        /// Seconds until a new turn may start.
        retry_after: u64,
    },
    /// Too many SSE streams read at once by this user.
    #[error("Too many streams open at once (at most {0} per user)")]
    TooManyStreams(usize),
    /// The request body did not arrive in time.
    #[error("The request body did not arrive in time")]
    RequestTimeout,
    /// A state-changing request from a web page of another origin (cross-site request forgery).
    #[error("Requests from the origin {0} are not allowed (server.cors_origins)")]
    OriginNotAllowed(String),
    /// A provider of this name exists (in the configuration file or registered).
    #[error("A provider named {0} exists")]
    ProviderExists(String),
    /// No registered provider of this name.
    #[error("No registered provider of this name")]
    ProviderNotFound,
    /// The provider comes from the configuration file, which the API does not change.
    #[error("The provider {0} comes from the configuration file; change it there and reload")]
    ProviderFromFile(String),
    /// Provider settings whose key variable is not set on this server.
    #[error("Provider key missing: {0}")]
    ProviderKeyMissing(String),
    /// Provider settings that cannot be used.
    #[error("Invalid provider: {0}")]
    InvalidProvider(String),
    /// An MCP server of this name exists (in the configuration or registered).
    #[error("An MCP server named {0} exists")]
    McpServerExists(String),
    /// No registered MCP server of this name.
    #[error("No registered MCP server of this name")]
    McpServerNotFound,
    /// The MCP server comes from the configuration, which the API does not change.
    #[error("The MCP server {0} comes from the configuration; change it there and reload")]
    McpServerFromFile(String),
    /// MCP server settings that cannot be used.
    #[error("Invalid MCP server: {0}")]
    InvalidMcpServer(String),
    /// MCP server settings naming a secret variable that is not set on this server.
    #[error("MCP server secret missing: {0}")]
    McpServerSecretMissing(String),
    /// `/admin` for someone who is not an admin.
    #[error("Admin access required (auth.admin_users in header mode, auth.admin_api_keys in api_key mode)")]
    AdminRequired,
    /// A reload found a configuration that does not load or is invalid; the running one stays.
    #[error("The new configuration was refused; the running one stays: {0}")]
    ConfigRefused(String),
    /// The model provider failed (non-streaming send).
    #[error("Failed to process message: {0}")]
    Provider(TurnFailure),
    /// The database failed.
    #[error("Storage is unavailable")]
    Storage,
    /// An internal actor did not answer.
    #[error("The chat service is unavailable")]
    Unavailable,
    /// The whole answer took longer than `server.send_timeout_secs`.
    #[error("The answer took too long")]
    SendTimeout,
}

impl ApiError {
    /// The stable snake_case code.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidApiKey => "unauthenticated",
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::MissingField(_) => "missing_field",
            ApiError::InvalidParameter { .. } => "invalid_parameter",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::MessageTooLong { .. } => "message_too_long",
            ApiError::InvalidMultipart(_) => "invalid_multipart",
            ApiError::AttachmentTooLarge { .. } => "attachment_too_large",
            ApiError::AttachmentsTooLarge(_) => "attachments_too_large",
            ApiError::TooManyAttachments(_) => "too_many_attachments",
            ApiError::UnsupportedAttachment(_) => "unsupported_attachment",
            ApiError::AttachmentUnreadable(_) => "attachment_not_supported_by_provider",
            ApiError::SessionNotFound => "session_not_found",
            ApiError::StreamNotFound => "stream_not_found",
            ApiError::RouteNotFound => "not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::TurnInProgress => "turn_in_progress",
            ApiError::TurnFinished => "turn_finished",
            ApiError::TooManyTurns { .. } => "too_many_turns",
            ApiError::TooManyStreams(_) => "too_many_streams",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::OriginNotAllowed(_) => "origin_not_allowed",
            ApiError::AdminRequired => "admin_required",
            ApiError::ProviderExists(_) => "provider_exists",
            ApiError::ProviderNotFound => "provider_not_found",
            ApiError::ProviderFromFile(_) => "provider_from_file",
            ApiError::InvalidProvider(_) => "invalid_provider",
            ApiError::ProviderKeyMissing(_) => "provider_key_missing",
            ApiError::McpServerExists(_) => "mcp_server_exists",
            ApiError::McpServerNotFound => "mcp_server_not_found",
            ApiError::McpServerFromFile(_) => "mcp_server_from_file",
            ApiError::InvalidMcpServer(_) => "invalid_mcp_server",
            ApiError::McpServerSecretMissing(_) => "mcp_server_secret_missing",
            ApiError::ConfigRefused(_) => "config_invalid",
            ApiError::ApprovalNotFound => "approval_not_found",
            ApiError::ApprovalDecided => "approval_decided",
            ApiError::ApprovalExpired => "approval_expired",
            ApiError::ElicitationNotFound => "elicitation_not_found",
            ApiError::ElicitationAnswered => "elicitation_answered",
            ApiError::ElicitationExpired => "elicitation_expired",
            ApiError::ElicitationAnswerInvalid { .. } => "elicitation_answer_invalid",
            ApiError::GrantNotFound => "grant_not_found",
            ApiError::ShuttingDown => "shutting_down",
            ApiError::Provider(failure) => &failure.code,
            ApiError::Storage => "storage_unavailable",
            ApiError::Unavailable => "service_unavailable",
            ApiError::SendTimeout => "timeout",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthenticated | ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::InvalidJson(_)
            | ApiError::MissingField(_)
            | ApiError::InvalidParameter { .. }
            | ApiError::MessageTooLong { .. }
            | ApiError::InvalidMultipart(_)
            | ApiError::ElicitationAnswerInvalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_)
            | ApiError::AttachmentTooLarge { .. }
            | ApiError::AttachmentsTooLarge(_)
            | ApiError::TooManyAttachments(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedAttachment(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::AttachmentUnreadable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyTurns { .. } | ApiError::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::OriginNotAllowed(_) | ApiError::AdminRequired => StatusCode::FORBIDDEN,
            ApiError::ConfigRefused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ProviderExists(_) | ApiError::ProviderFromFile(_) | ApiError::ProviderKeyMissing(_) => {
                StatusCode::CONFLICT
            }
            ApiError::ProviderNotFound | ApiError::McpServerNotFound => StatusCode::NOT_FOUND,
            ApiError::McpServerExists(_) | ApiError::McpServerFromFile(_) | ApiError::McpServerSecretMissing(_) => {
                StatusCode::CONFLICT
            }
            ApiError::InvalidMcpServer(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidProvider(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::SessionNotFound | ApiError::StreamNotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::TurnInProgress
            | ApiError::TurnFinished
            | ApiError::ApprovalDecided
            | ApiError::ApprovalExpired
            | ApiError::ElicitationAnswered
            | ApiError::ElicitationExpired => StatusCode::CONFLICT,
            ApiError::ApprovalNotFound | ApiError::GrantNotFound | ApiError::ElicitationNotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::Provider(failure) if failure.kind() == FailureKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Provider(_) => StatusCode::BAD_GATEWAY,
            ApiError::Storage | ApiError::Unavailable | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::SendTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::RequestTimeout) {
            // The rest of a stalled body is never read: the connection cannot be reused.
            response.force_close();
        }
        if self.status_code() == StatusCode::SERVICE_UNAVAILABLE {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from_static("1")));
        }
        if let ApiError::MethodNotAllowed(allow) = self
            && let Ok(value) = HeaderValue::from_str(allow)
        {
            response.insert_header((header::ALLOW, value));
        }
        if let ApiError::TooManyTurns { retry_after, .. } = self {
            response.insert_header((header::RETRY_AFTER, HeaderValue::from(*retry_after)));
        }
        if let ApiError::ElicitationAnswerInvalid { path, .. } = self {
            return response.json(json!({ "error": self.to_string(), "code": self.code(), "path": path }));
        }
        response.json(json!({ "error": self.to_string(), "code": self.code() }))
    }
}

impl From<SessionError> for ApiError {
    fn from(err: SessionError) -> Self {
        match err {
            SessionError::SessionNotFound => ApiError::SessionNotFound,
            SessionError::StreamNotFound => ApiError::StreamNotFound,
            SessionError::ApprovalNotFound => ApiError::ApprovalNotFound,
            SessionError::GrantNotFound => ApiError::GrantNotFound,
            SessionError::AlreadyDecided => ApiError::ApprovalDecided,
            SessionError::ApprovalExpired => ApiError::ApprovalExpired,
            SessionError::ElicitationNotFound => ApiError::ElicitationNotFound,
            SessionError::ElicitationAnswered => ApiError::ElicitationAnswered,
            // `Elsewhere` is taken by `Chat` (the answer goes to the node that runs the call).
            SessionError::ElicitationExpired | SessionError::Elsewhere => ApiError::ElicitationExpired,
            SessionError::AnswerInvalid(invalid) => ApiError::ElicitationAnswerInvalid {
                path: invalid.path,
                reason: invalid.reason,
            },
            SessionError::Busy | SessionError::Stale => ApiError::TurnInProgress,
            SessionError::Finished | SessionError::TurnNotRunning => ApiError::TurnFinished,
            SessionError::ShuttingDown => ApiError::ShuttingDown,
            SessionError::DecisionWithFiles => ApiError::InvalidParameter {
                name: "message",
                reason: err.to_string(),
            },
            SessionError::UnknownProvider(_) => ApiError::InvalidParameter {
                name: "provider",
                reason: err.to_string(),
            },
            SessionError::TooManyTurns { reason, retry_after } => ApiError::TooManyTurns { reason, retry_after },
            SessionError::TooManyStreams { limit } => ApiError::TooManyStreams(limit),
            SessionError::AttachmentUnreadable { .. } => ApiError::AttachmentUnreadable(err.to_string()),
            SessionError::TurnFailed(failure) if failure.kind() == FailureKind::Storage => ApiError::Storage,
            SessionError::TurnFailed(failure) => ApiError::Provider(failure),
            SessionError::AnswerTimeout => ApiError::SendTimeout,
            SessionError::Storage(err) => err.into(),
            SessionError::Unavailable(reason) => {
                tracing::warn!(%reason, "an actor did not answer");
                ApiError::Unavailable
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        // A full disk or a lost database fails every request alike: one line per period, with
        // how many were left out, instead of one per request.
        if let Some(suppressed) = STORAGE_ERRORS.admit() {
            tracing::error!(error = %err, suppressed, "storage failed");
        }
        ApiError::Storage
    }
}

/// Repeated storage failures are logged at most once per this period.
const STORAGE_ERROR_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

static STORAGE_ERRORS: RepeatedErrors = RepeatedErrors::new(STORAGE_ERROR_PERIOD);

/// Lets one log line of a kind through per period and counts the others.
struct RepeatedErrors {
    period: std::time::Duration,
    state: std::sync::Mutex<Option<(std::time::Instant, u64)>>,
}

impl RepeatedErrors {
    const fn new(period: std::time::Duration) -> Self {
        Self {
            period,
            state: std::sync::Mutex::new(None),
        }
    }

    /// `Some(how many were left out since the last line)` when this one may be logged.
    fn admit(&self) -> Option<u64> {
        let mut state = actors::sync::lock_unpoisoned(&self.state);
        let now = std::time::Instant::now();
        match state.as_mut() {
            Some((last, suppressed)) if now.duration_since(*last) < self.period => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let left_out = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(left_out)
            }
            None => {
                *state = Some((now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_errors_are_logged_once_per_period_with_a_count() {
        let errors = RepeatedErrors::new(std::time::Duration::from_secs(3600));
        assert_eq!(errors.admit(), Some(0));
        assert_eq!((0..5).filter_map(|_| errors.admit()).count(), 0);
        let zero = RepeatedErrors::new(std::time::Duration::ZERO);
        assert_eq!(zero.admit(), Some(0));
        assert_eq!(zero.admit(), Some(0));
    }

    #[test]
    fn every_error_has_its_code_and_status() {
        let failure = |code: &str| {
            ApiError::Provider(TurnFailure {
                code: code.into(),
                message: "m".into(),
            })
        };
        let cases = [
            (ApiError::Unauthenticated, 401, "unauthenticated"),
            (ApiError::InvalidApiKey, 401, "unauthenticated"),
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::MissingField("message"), 400, "missing_field"),
            (
                ApiError::InvalidParameter {
                    name: "page",
                    reason: "x".into(),
                },
                400,
                "invalid_parameter",
            ),
            (ApiError::PayloadTooLarge(1), 413, "payload_too_large"),
            (ApiError::MessageTooLong { len: 2, limit: 1 }, 400, "message_too_long"),
            (ApiError::SessionNotFound, 404, "session_not_found"),
            (ApiError::StreamNotFound, 404, "stream_not_found"),
            (ApiError::RouteNotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed("GET".into()), 405, "method_not_allowed"),
            (ApiError::TurnInProgress, 409, "turn_in_progress"),
            (ApiError::TurnFinished, 409, "turn_finished"),
            (
                ApiError::TooManyTurns {
                    reason: "x",
                    retry_after: 1,
                },
                429,
                "too_many_turns",
            ),
            (ApiError::TooManyStreams(64), 429, "too_many_streams"),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (
                ApiError::OriginNotAllowed("https://x".into()),
                403,
                "origin_not_allowed",
            ),
            (ApiError::AdminRequired, 403, "admin_required"),
            (ApiError::ProviderExists("x".into()), 409, "provider_exists"),
            (ApiError::ProviderNotFound, 404, "provider_not_found"),
            (ApiError::ProviderFromFile("x".into()), 409, "provider_from_file"),
            (ApiError::InvalidProvider("x".into()), 400, "invalid_provider"),
            (ApiError::ProviderKeyMissing("x".into()), 409, "provider_key_missing"),
            (ApiError::McpServerExists("x".into()), 409, "mcp_server_exists"),
            (ApiError::McpServerNotFound, 404, "mcp_server_not_found"),
            (ApiError::McpServerFromFile("x".into()), 409, "mcp_server_from_file"),
            (ApiError::InvalidMcpServer("x".into()), 400, "invalid_mcp_server"),
            (
                ApiError::McpServerSecretMissing("x".into()),
                409,
                "mcp_server_secret_missing",
            ),
            (ApiError::ConfigRefused("x".into()), 422, "config_invalid"),
            (ApiError::ApprovalNotFound, 404, "approval_not_found"),
            (ApiError::ApprovalDecided, 409, "approval_decided"),
            (ApiError::ApprovalExpired, 409, "approval_expired"),
            (ApiError::ElicitationNotFound, 404, "elicitation_not_found"),
            (ApiError::ElicitationAnswered, 409, "elicitation_answered"),
            (ApiError::ElicitationExpired, 409, "elicitation_expired"),
            (
                ApiError::ElicitationAnswerInvalid {
                    path: "/content/age".into(),
                    reason: "must be a number".into(),
                },
                400,
                "elicitation_answer_invalid",
            ),
            (ApiError::GrantNotFound, 404, "grant_not_found"),
            (ApiError::ShuttingDown, 503, "shutting_down"),
            (failure("rate_limited"), 502, "rate_limited"),
            (failure("timeout"), 504, "timeout"),
            (ApiError::Storage, 503, "storage_unavailable"),
            (ApiError::Unavailable, 503, "service_unavailable"),
            (ApiError::SendTimeout, 504, "timeout"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status_code().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code);
        }
    }
}
