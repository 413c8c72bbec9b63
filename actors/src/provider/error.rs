//! `ProviderError`: how a model call fails, with the stable code clients see.

use std::time::Duration;

/// A failure of an LLM provider call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The vendor is rate limiting us.
    #[error("the model provider is rate limiting requests")]
    RateLimited {
        /// How long the vendor asked us to wait.
        retry_after: Option<Duration>,
    },
    /// The API key was refused.
    #[error("the model provider refused the credentials")]
    AuthFailed,
    /// The conversation does not fit the model's context window.
    #[error("the conversation is too long for the model")]
    ContextLengthExceeded,
    /// The vendor answered with an error status.
    #[error("the model provider failed with status {status}")]
    Upstream {
        /// The HTTP status.
        status: u16,
    },
    /// No answer in time (connect, first token, or the gap between chunks).
    #[error("the model provider did not answer in time ({0})")]
    Timeout(String),
    /// The vendor could not be reached; why, in a few words (`connection refused`, `DNS lookup
    /// failed`, `TLS failed`, ...).
    #[error("the model provider could not be reached ({0})")]
    Network(String),
    /// The vendor's answer did not follow its format (truncated, malformed).
    #[error("the model provider sent a malformed answer: {0}")]
    Protocol(String),
    /// Our request was not acceptable (e.g. a malformed mock script).
    #[error("the request to the model provider was invalid: {0}")]
    InvalidRequest(String),
    /// The provider actor crashed while serving this stream.
    #[error("the model provider crashed")]
    Crashed,
    /// The provider cannot continue; its actor restarts.
    #[error("the model provider stopped: {0}")]
    Fatal(String),
    /// The provider actor is not reachable.
    #[error("the model provider is unavailable")]
    Unavailable,
}

impl ProviderError {
    /// The stable snake_case code for clients.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::AuthFailed => "auth_failed",
            ProviderError::ContextLengthExceeded => "context_length_exceeded",
            ProviderError::Upstream { .. } => "upstream_error",
            ProviderError::Timeout(_) => "timeout",
            ProviderError::Network(_) => "upstream_unreachable",
            ProviderError::Protocol(_) => "upstream_protocol_error",
            ProviderError::InvalidRequest(_) => "invalid_provider_request",
            ProviderError::Crashed | ProviderError::Fatal(_) => "provider_crashed",
            ProviderError::Unavailable => "provider_unavailable",
        }
    }

    /// An error for an HTTP status the vendor answered with.
    pub fn from_status(status: u16, retry_after: Option<Duration>) -> Self {
        match status {
            429 => ProviderError::RateLimited { retry_after },
            401 | 403 => ProviderError::AuthFailed,
            413 => ProviderError::ContextLengthExceeded,
            _ => ProviderError::Upstream { status },
        }
    }
}
