//! What the HTTP adapters share: the vendor-neutral configuration, sending a request with retries
//! (jittered exponential backoff on connect errors, 429 and 5xx, honouring `Retry-After`; never
//! after the response has started), mapping error statuses, and turning a response body (SSE or
//! NDJSON) into provider events through a vendor's [`StreamParser`].

use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};

use super::{ProviderError, ProviderEvent};

/// The vendors spoken over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// OpenAI Chat Completions (and compatible servers).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `streamGenerateContent`.
    Gemini,
    /// Ollama `/api/chat`.
    Ollama,
}

impl Vendor {
    /// The vendor for a provider name as the original accepted them.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "openai" => Vendor::OpenAi,
            "claude" | "anthropic" => Vendor::Anthropic,
            "gemini" | "google" => Vendor::Gemini,
            "ollama" => Vendor::Ollama,
            _ => return None,
        })
    }

    /// Whether its API reads PDF documents (Ollama's chat API takes images only).
    pub fn reads_pdf(self) -> bool {
        self != Vendor::Ollama
    }

    /// The API root the vendor's official SDK uses by default.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Vendor::OpenAi => "https://api.openai.com/v1",
            Vendor::Anthropic => "https://api.anthropic.com",
            Vendor::Gemini => "https://generativelanguage.googleapis.com",
            Vendor::Ollama => "http://localhost:11434",
        }
    }
}

/// One HTTP provider's settings.
#[derive(Clone)]
pub struct HttpProviderConfig {
    /// Which wire format.
    pub vendor: Vendor,
    /// API root (the SDK convention: OpenAI `…/v1`, the others the API root).
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// API key (never logged).
    pub api_key: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Retries before the response starts.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    pub retry_base: Duration,
}

impl std::fmt::Debug for HttpProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProviderConfig")
            .field("vendor", &self.vendor)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

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

/// A provider spoken over HTTP: one reqwest client (a connection pool), one vendor format.
pub struct HttpProvider {
    client: reqwest::Client,
    config: std::sync::Arc<HttpProviderConfig>,
}

impl HttpProvider {
    /// A provider with its own connection pool.
    pub fn new(config: HttpProviderConfig) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        Ok(Self {
            client,
            config: std::sync::Arc::new(config),
        })
    }
}

impl super::ChatProvider for HttpProvider {
    fn stream(&self, request: super::CompletionRequest) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let vendor = self.config.vendor;
        let prepared = match vendor {
            Vendor::OpenAi => super::openai::prepare(&self.config, &request),
            Vendor::Anthropic => super::anthropic::prepare(&self.config, &request),
            Vendor::Gemini => super::gemini::prepare(&self.config, &request),
            Vendor::Ollama => super::ollama::prepare(&self.config, &request),
        };
        let (client, config) = (self.client.clone(), std::sync::Arc::clone(&self.config));
        stream::once(async move { send(&client, &config, &prepared).await })
            .flat_map(move |response| match response {
                Err(err) => stream::once(async move { Err(err) }).boxed(),
                Ok(response) => match vendor {
                    Vendor::OpenAi => parse_frames(sse_frames(body_chunks(response)), super::openai::Parser::default()),
                    Vendor::Anthropic => {
                        parse_frames(sse_frames(body_chunks(response)), super::anthropic::Parser::default())
                    }
                    Vendor::Gemini => parse_frames(sse_frames(body_chunks(response)), super::gemini::Parser::default()),
                    Vendor::Ollama => {
                        parse_frames(ndjson_frames(body_chunks(response)), super::ollama::Parser::default())
                    }
                },
            })
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    //! The parsers over the vendors' transcripts (`tests/fixtures/providers`: OpenAI's is recorded
    //! from the live API by its SDK team), whole and dribbled three bytes at a time.

    use super::*;
    use crate::model::ToolCall;

    fn fixture(name: &str) -> String {
        let path = format!("{}/../tests/fixtures/providers/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(path).unwrap()
    }

    fn chunks(text: &str, size: usize) -> ByteChunks {
        let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = text
            .as_bytes()
            .chunks(size)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        stream::iter(pieces).boxed()
    }

    async fn run<P: StreamParser + Default>(
        text: &str,
        size: usize,
        ndjson: bool,
    ) -> Vec<Result<ProviderEvent, ProviderError>> {
        let frames = if ndjson {
            ndjson_frames(chunks(text, size))
        } else {
            sse_frames(chunks(text, size))
        };
        parse_frames(frames, P::default()).collect().await
    }

    fn calls(events: &[Result<ProviderEvent, ProviderError>]) -> Vec<ToolCall> {
        events
            .iter()
            .filter_map(|e| match e {
                Ok(ProviderEvent::ToolCalls(calls)) => Some(calls.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[actix_rt::test]
    async fn openai_recorded_parallel_calls_at_any_chunking() {
        let text = fixture("openai_parallel_recorded.sse");
        for size in [text.len(), 3, 1] {
            let events = run::<super::super::openai::Parser>(&text, size, false).await;
            let calls = calls(&events);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].id, "call_JMW1whyEaYG438VE1OIflxA2");
            assert_eq!(
                calls[0].function.arguments,
                r#"{"city": "Edinburgh", "country": "GB", "units": "c"}"#
            );
            assert_eq!(calls[1].function.name, "get_stock_price");
            assert_eq!(
                calls[1].function.arguments,
                r#"{"ticker": "AAPL", "exchange": "NASDAQ"}"#
            );
            assert!(events.contains(&Ok(ProviderEvent::Usage(crate::model::Usage {
                input_tokens: 149,
                output_tokens: 60
            }))));
            assert_eq!(events.last(), Some(&Ok(ProviderEvent::Done)));
        }
        let cut = &text[..text.len() / 2];
        let events = run::<super::super::openai::Parser>(cut, 7, false).await;
        assert!(
            matches!(events.last(), Some(Err(ProviderError::Protocol(_)))),
            "a truncated stream is an error"
        );
    }

    #[actix_rt::test]
    async fn anthropic_parallel_tool_use_blocks() {
        let text = fixture("anthropic_parallel.sse");
        for size in [text.len(), 3] {
            let events = run::<super::super::anthropic::Parser>(&text, size, false).await;
            let calls = calls(&events);
            assert_eq!(calls.len(), 2);
            assert_eq!(calls[0].id, "toolu_0179r6ofLHbaispTuUAqMJfr");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&calls[1].function.arguments).unwrap(),
                serde_json::json!({"count": 2})
            );
            let text: String = events
                .iter()
                .filter_map(|e| match e {
                    Ok(ProviderEvent::Text(t)) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(
                text,
                "I'll use the test_tool twice as requested, first with count 1 and then with count 2."
            );
            assert_eq!(events.last(), Some(&Ok(ProviderEvent::Done)));
        }
    }

    #[actix_rt::test]
    async fn gemini_crlf_calls_keep_their_signature() {
        let text = fixture("gemini_parallel.sse");
        for size in [text.len(), 3, 1] {
            let events = run::<super::super::gemini::Parser>(&text, size, false).await;
            let calls = calls(&events);
            assert_eq!(calls.len(), 2, "{events:?}");
            assert_eq!(calls[0].id, "call_k2x7p9qa");
            assert!(calls[0].thought_signature.is_some());
            assert!(calls[1].thought_signature.is_none());
            assert_eq!(calls[1].function.arguments, r#"{"city":"Tokyo"}"#);
        }
    }

    #[actix_rt::test]
    async fn ollama_ndjson_calls_over_lines() {
        let text = fixture("ollama_parallel.ndjson");
        for size in [text.len(), 3] {
            let events = run::<super::super::ollama::Parser>(&text, size, true).await;
            let calls = calls(&events);
            assert_eq!(
                calls.iter().map(|c| c.function.arguments.as_str()).collect::<Vec<_>>(),
                [r#"{"city":"New York"}"#, r#"{"city":"London"}"#]
            );
            assert_eq!(calls[0].id, "call_etugzc4r");
            assert_eq!(events.last(), Some(&Ok(ProviderEvent::Done)));
        }
    }
}
