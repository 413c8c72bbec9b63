//! `HttpProvider`: a provider spoken over HTTP. It dispatches to the vendor's request builder and
//! stream parser; what the vendors share lives in [`super::wire`].

use futures::stream::{self, BoxStream, StreamExt};

use super::config::{HttpProviderConfig, Vendor};
use super::wire::{body_chunks, ndjson_frames, parse_frames, send, sse_frames};
use super::{ProviderError, ProviderEvent};

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
    use crate::provider::wire::{ByteChunks, StreamParser};

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

#[cfg(test)]
mod sampling_tests {
    use std::time::Duration;

    use super::super::{CompletionRequest, Purpose};
    use super::{HttpProviderConfig, Vendor};

    /// `temperature = 0.7` reaches every vendor as 0.7, not as a widened `f32` (0.699999988…).
    #[test]
    fn sampling_parameters_reach_the_vendors_exactly_as_configured() {
        let request = CompletionRequest {
            messages: Vec::new(),
            tools: Default::default(),
            purpose: Purpose::Chat,
        };
        for vendor in [Vendor::OpenAi, Vendor::Anthropic, Vendor::Gemini, Vendor::Ollama] {
            let config = HttpProviderConfig {
                name: "p".into(),
                vendor,
                base_url: "http://127.0.0.1:1".into(),
                model: "m".into(),
                api_key: None,
                temperature: Some(0.7),
                max_tokens: Some(100),
                connect_timeout: Duration::from_secs(1),
                max_retries: 0,
                retry_base: Duration::from_millis(1),
            };
            let prepared = match vendor {
                Vendor::OpenAi => super::super::openai::prepare(&config, &request),
                Vendor::Anthropic => super::super::anthropic::prepare(&config, &request),
                Vendor::Gemini => super::super::gemini::prepare(&config, &request),
                Vendor::Ollama => super::super::ollama::prepare(&config, &request),
            };
            let body = prepared.body.to_string();
            assert!(body.contains("\"temperature\":0.7"), "{vendor:?}: {body}");
        }
    }
}
