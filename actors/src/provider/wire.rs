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
async fn error_of(response: reqwest::Response) -> ProviderError {
    let status = response.status().as_u16();
    let retry = retry_after(&response);
    let body = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .ok()
        .and_then(Result::ok);
    let body = body.unwrap_or_default().to_ascii_lowercase();
    let too_long = [
        "context_length_exceeded",
        "prompt is too long",
        "maximum context length",
        "too many tokens",
    ];
    if status == 400 && too_long.iter().any(|needle| body.contains(needle)) {
        return ProviderError::ContextLengthExceeded;
    }
    ProviderError::from_status(status, retry)
}

fn retryable(err: &ProviderError) -> bool {
    match err {
        ProviderError::RateLimited { .. } | ProviderError::Network => true,
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
        let err = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => error_of(response).await,
            Err(err) if err.is_timeout() => ProviderError::Timeout("connect".into()),
            Err(_) => ProviderError::Network,
        };
        if attempt >= config.max_retries || !retryable(&err) {
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
