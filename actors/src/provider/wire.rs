//! The streaming toolkit the HTTP vendors share: a prepared request, sending it with retries
//! (jittered exponential backoff on connect errors, 429 and 5xx, honouring `Retry-After`; never
//! after the response has started), mapping error statuses, and turning a response body (SSE or
//! NDJSON) into provider events through a vendor's [`StreamParser`].

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use super::config::HttpProviderConfig;
use super::{ProviderError, ProviderEvent};

/// A request ready to send.
pub struct Prepared {
    /// Full URL.
    pub url: String,
    /// Headers (may carry the key).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: serde_json::Value,
}

/// One frame of a response body: an SSE event (name and data) or an NDJSON line (data only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The SSE `event:` name, if any.
    pub event: Option<String>,
    /// The data.
    pub data: String,
}

/// A vendor's incremental parser: frames in, events out; `finish` at the end of the body.
pub trait StreamParser: Send + 'static {
    /// Handles one frame.
    fn feed(&mut self, frame: &Frame) -> Result<Vec<ProviderEvent>, ProviderError>;
    /// The body ended: the final events, or an error if the stream was cut short.
    fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError>;
}

/// Runs frames through a parser, stopping after the first error or `Done`.
pub fn parse_frames<P: StreamParser>(
    frames: BoxStream<'static, Result<Frame, ProviderError>>,
    parser: P,
) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
    stream::unfold(Some((frames, parser)), |state| async move {
        let (mut frames, mut parser) = state?;
        let (batch, more) = match frames.next().await {
            Some(Ok(frame)) => match parser.feed(&frame) {
                Ok(events) => {
                    let done = events.contains(&ProviderEvent::Done);
                    (events.into_iter().map(Ok).collect::<Vec<_>>(), !done)
                }
                Err(err) => (vec![Err(err)], false),
            },
            Some(Err(err)) => (vec![Err(err)], false),
            None => match parser.finish() {
                Ok(events) => (events.into_iter().map(Ok).collect(), false),
                Err(err) => (vec![Err(err)], false),
            },
        };
        Some((batch, more.then_some((frames, parser))))
    })
    .flat_map(stream::iter)
    .boxed()
}

/// A response body as a stream of byte chunks.
pub type ByteChunks = BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// A response's body chunks.
pub fn body_chunks(response: reqwest::Response) -> ByteChunks {
    response
        .bytes_stream()
        .map(|chunk| chunk.map_err(std::io::Error::other))
        .boxed()
}

/// SSE frames of a byte stream (any chunking, CRLF or LF, comments skipped).
pub fn sse_frames(body: ByteChunks) -> BoxStream<'static, Result<Frame, ProviderError>> {
    use tokio_util::codec::FramedRead;
    FramedRead::new(tokio_util::io::StreamReader::new(body), russe::Decoder::default())
        .filter_map(|event| async move {
            match event {
                Ok(russe::Event::Message(message)) => Some(Ok(Frame {
                    event: message.event.map(|e| e.to_string()),
                    data: message.data.to_string(),
                })),
                Ok(russe::Event::Comment(_) | russe::Event::Retry(_)) => None,
                Err(err) => Some(Err(ProviderError::Protocol(format!("bad event stream: {err}")))),
            }
        })
        .boxed()
}

/// NDJSON lines of a byte stream (any chunking; blank lines skipped).
pub fn ndjson_frames(body: ByteChunks) -> BoxStream<'static, Result<Frame, ProviderError>> {
    use tokio_util::codec::{FramedRead, LinesCodec};
    FramedRead::new(
        tokio_util::io::StreamReader::new(body),
        LinesCodec::new_with_max_length(8 << 20),
    )
    .filter_map(|line| async move {
        match line {
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(Ok(Frame {
                event: None,
                data: line,
            })),
            Err(err) => Some(Err(ProviderError::Protocol(format!("bad NDJSON stream: {err}")))),
        }
    })
    .boxed()
}

fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(60.0)))
}

/// Maps an error response; the body is read for the context-length case only, never echoed.
/// The error of a vendor's error answer, and for the log: its status and the vendor's message.
async fn error_of(response: reqwest::Response) -> (ProviderError, String) {
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let body = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let detail = format!("HTTP {status}: {}", vendor_message(&body));
    let lower = body.to_ascii_lowercase();
    let too_long = [
        "context_length_exceeded",
        "prompt is too long",
        "maximum context length",
        "too many tokens",
    ];
    if status == 400 && too_long.iter().any(|needle| lower.contains(needle)) {
        return (ProviderError::ContextLengthExceeded, detail);
    }
    (ProviderError::from_status(status, retry), detail)
}

/// The message of a vendor's error body (`error.message`, `message`, `error` as text), else the
/// start of the body; at most 300 characters.
fn vendor_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error"))
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    });
    let text = message.unwrap_or_else(|| body.trim().to_owned());
    text.chars().take(300).collect()
}

/// `text` without the provider's key or anything shaped like an API key.
pub(crate) fn without_secrets(text: &str, key: Option<&str>) -> String {
    let mut text = match key.filter(|k| k.len() >= 4) {
        Some(key) => text.replace(key, "[redacted]"),
        None => text.to_owned(),
    };
    for prefix in ["sk-", "sk_", "AIza", "xai-", "Bearer "] {
        let mut from = 0;
        while let Some(found) = text[from..].find(prefix) {
            let at = from + found;
            let token = at + prefix.len();
            let end = text[token..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
                .map_or(text.len(), |i| token + i);
            if end - token >= 6 {
                text.replace_range(at..end, "[redacted]");
                from = at + "[redacted]".len();
            } else {
                from = token;
            }
        }
    }
    text
}

/// A few words on why a request did not reach the vendor, for the person.
fn unreachable_reason(err: &reqwest::Error) -> String {
    let chain = crate::cause::chain(err).to_ascii_lowercase();
    let reason = if chain.contains("dns") || chain.contains("lookup address") || chain.contains("name or service") {
        "DNS lookup failed"
    } else if chain.contains("connection refused") {
        "connection refused"
    } else if chain.contains("certificate") || chain.contains("tls") || chain.contains("handshake") {
        "TLS failed"
    } else if chain.contains("reset") || chain.contains("broken pipe") {
        "connection reset"
    } else {
        "network error"
    };
    reason.to_owned()
}

/// Where a provider is, for log lines: its base URL without credentials or query.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.to_string()
        }
        Err(_) => "(invalid URL)".into(),
    }
}

fn retryable(err: &ProviderError) -> bool {
    match err {
        ProviderError::RateLimited { .. } | ProviderError::Network(_) => true,
        ProviderError::Upstream { status } => *status >= 500,
        _ => false,
    }
}

/// Sends a prepared request, retrying before the response starts.
pub async fn send(
    client: &reqwest::Client,
    config: &HttpProviderConfig,
    prepared: &Prepared,
) -> Result<reqwest::Response, ProviderError> {
    let mut attempt = 0;
    loop {
        let mut request = client.post(&prepared.url).json(&prepared.body);
        for (name, value) in &prepared.headers {
            request = request.header(*name, value);
        }
        let (err, detail) = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => error_of(response).await,
            Err(err) if err.is_timeout() => (ProviderError::Timeout("connect".into()), crate::cause::chain(&err)),
            Err(err) => (
                ProviderError::Network(unreachable_reason(&err)),
                crate::cause::chain(&err),
            ),
        };
        if attempt >= config.max_retries || !retryable(&err) {
            tracing::warn!(
                provider = %config.name,
                vendor = ?config.vendor,
                model = %config.model,
                base_url = %shown_url(&config.base_url),
                code = err.code(),
                attempts = attempt + 1,
                cause = %without_secrets(&detail, config.api_key.as_deref()),
                "the model provider failed"
            );
            return Err(err);
        }
        attempt += 1;
        let backoff = config.retry_base.saturating_mul(1 << (attempt - 1).min(6));
        let jittered = backoff / 2 + backoff.mul_f64(fastrand::f64());
        let wait = match &err {
            ProviderError::RateLimited {
                retry_after: Some(after),
            } => (*after).max(jittered),
            _ => jittered,
        };
        tracing::info!(attempt, code = err.code(), ?wait, "retrying the model provider");
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod diagnosis_tests {
    use super::*;

    #[test]
    fn keys_never_reach_a_log_line() {
        let said = "Incorrect API key provided: sk-test-secret-key-123. Also AIzaSyA1234567 and sk-ab";
        let shown = without_secrets(said, Some("sk-test-secret-key-123"));
        assert_eq!(
            shown,
            "Incorrect API key provided: [redacted]. Also [redacted] and sk-ab"
        );
        assert_eq!(without_secrets("Bearer abcdefgh1234 x", None), "[redacted] x");
    }

    #[test]
    fn vendor_messages_are_read_from_their_error_bodies() {
        assert_eq!(
            vendor_message(r#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(vendor_message(r#"{"error":"model not found"}"#), "model not found");
        assert_eq!(vendor_message("  <html>gateway</html> "), "<html>gateway</html>");
        assert_eq!(vendor_message(&"x".repeat(1000)).len(), 300);
    }

    #[test]
    fn base_urls_are_shown_without_credentials() {
        assert_eq!(
            shown_url("https://user:pw@api.example.com/v1?key=abc"),
            "https://api.example.com/v1"
        );
    }
}
