//! The `mock` provider: deterministic, offline, scripted by the last user message. The quick start,
//! the tests and the benchmarks run on it. The script protocol (also in the README):
//!
//! | last user message | answer |
//! |---|---|
//! | anything else | `Mock streaming response to: '<message>'. Available tools: <n>`, word by word |
//! | `/mock tools [{"name": .., "arguments": {..}}, ..]` | one turn requesting all those calls at once |
//! | (called again with tool results) | `Tool results:` then `<i>. <name>: <result>` per call, in call order |
//! | `/mock error <status>` | fails as the vendor would with that HTTP status |
//! | `/mock slow <ms>` | the normal answer, first token after `<ms>` |
//! | `/mock words <n>` | `w1 w2 … w<n>`, one chunk per word (paced by the chunk delay) |
//! | `/mock say <text>` | `<text>` verbatim (newlines kept), in chunks of a few characters |
//! | `/mock context` | `Messages in context: <n>` (messages given, system prompt excluded) |
//! | `/mock attachments` | `Attachments in context: <name (type, size bytes)>, …` (every file in the context) |
//! | (a message with files) | the normal answer, then ` Attachments: <name (type, size bytes)>, …` |
//! | `/mock die` | fails fatally: the provider actor stops and is restarted |
//! | `/mock panic` | panics mid-stream: the provider actor is replaced |

use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt};
use serde::Deserialize;

use super::{ChatProvider, CompletionRequest, ProviderError, ProviderEvent, Purpose};
use crate::model::{ChatMessage, Role, ToolCall};

/// The scripted offline provider.
#[derive(Debug, Clone)]
pub struct MockProvider {
    chunk_delay: Duration,
}

#[derive(Deserialize)]
struct ScriptedCall {
    name: String,
    #[serde(default)]
    arguments: serde_json::Value,
}

impl MockProvider {
    /// A mock that waits `chunk_delay` before each chunk (zero is allowed).
    ///
    /// Chunks are sent as given; `first_delay` comes on top of the first chunk's delay.
    pub fn new(chunk_delay: Duration) -> Self {
        Self { chunk_delay }
    }

    fn chunks(
        &self,
        chunks: Vec<String>,
        first_delay: Duration,
    ) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let delay = self.chunk_delay;
        stream::iter(chunks.into_iter().enumerate())
            .then(move |(i, chunk)| async move {
                let wait = if i == 0 { first_delay + delay } else { delay };
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                Ok(ProviderEvent::Text(chunk))
            })
            .chain(stream::once(async { Ok(ProviderEvent::Done) }))
            .boxed()
    }

    fn default_answer(
        &self,
        message: &str,
        tools: usize,
        first_delay: Duration,
    ) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        // The original's eight chunks, each followed by a space but the last.
        let chunks = ["Mock ", "streaming ", "response ", "to: "]
            .into_iter()
            .map(str::to_owned)
            .chain([
                format!("'{message}'. "),
                "Available ".into(),
                "tools: ".into(),
                tools.to_string(),
            ])
            .collect();
        self.chunks(chunks, first_delay)
    }
}

/// `name (type, size bytes)` per file, in order; `none` for no files.
fn describe(attachments: &[crate::attachment::Attachment]) -> String {
    if attachments.is_empty() {
        return "none".to_owned();
    }
    attachments
        .iter()
        .map(|a| format!("{} ({}, {} bytes)", a.filename, a.mime_type, a.size))
        .collect::<Vec<_>>()
        .join(", ")
}

fn failure(err: ProviderError) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
    stream::once(async move { Err(err) }).boxed()
}

/// `Tool results:` and one line per tool message after the last assistant turn, in order.
fn tool_results(messages: &[Arc<ChatMessage>]) -> Vec<String> {
    let start = messages
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .map_or(0, |i| i + 1);
    let mut lines = vec!["Tool results:".to_owned()];
    for (i, message) in messages[start..].iter().filter(|m| m.role == Role::Tool).enumerate() {
        let name = message
            .tool_executions
            .first()
            .map_or("unknown", |e| e.tool_name.as_str());
        lines.push(format!("\n{}. {name}: {}", i + 1, message.content));
    }
    lines
}

impl ChatProvider for MockProvider {
    fn stream(&self, request: CompletionRequest) -> BoxStream<'static, Result<ProviderEvent, ProviderError>> {
        let conversation: Vec<&ChatMessage> = request
            .messages
            .iter()
            .map(AsRef::as_ref)
            .filter(|m| m.role != Role::System)
            .collect();
        if request.purpose == Purpose::Title {
            let first = conversation
                .iter()
                .find(|m| m.role == Role::User)
                .map_or("chat", |m| m.content.as_str());
            let words: Vec<&str> = first.split_whitespace().take(4).collect();
            return self.chunks(vec![format!("Mock title: {}", words.join(" "))], Duration::ZERO);
        }
        if conversation.last().is_some_and(|m| m.role == Role::Tool) {
            return self.chunks(tool_results(&request.messages), Duration::ZERO);
        }
        let last_user = conversation.iter().rev().find(|m| m.role == Role::User);
        let message = last_user.map_or("", |m| m.content.trim());
        let tools = request.tools.len();
        let Some(script) = message.strip_prefix("/mock") else {
            let answer = self.default_answer(message, tools, Duration::ZERO);
            return match last_user.filter(|m| !m.attachments.is_empty()) {
                Some(m) => answer
                    .take_while(|e| std::future::ready(!matches!(e, Ok(ProviderEvent::Done))))
                    .chain(self.chunks(
                        vec![format!(" Attachments: {}", describe(&m.attachments))],
                        Duration::ZERO,
                    ))
                    .boxed(),
                None => answer,
            };
        };
        let script = script.trim();
        let (command, argument) = script.split_once(char::is_whitespace).unwrap_or((script, ""));
        let argument = argument.trim();
        match command {
            "tools" => match serde_json::from_str::<Vec<ScriptedCall>>(argument) {
                Ok(calls) => {
                    let calls = calls
                        .into_iter()
                        .map(|c| {
                            let arguments = if c.arguments.is_null() {
                                "{}".to_owned()
                            } else {
                                c.arguments.to_string()
                            };
                            ToolCall::function(crate::ids::prefixed_id("call"), c.name, arguments)
                        })
                        .collect();
                    stream::iter([Ok(ProviderEvent::ToolCalls(calls)), Ok(ProviderEvent::Done)]).boxed()
                }
                Err(err) => failure(ProviderError::InvalidRequest(format!("bad /mock tools script: {err}"))),
            },
            "error" => match argument.parse::<u16>() {
                Ok(status) => failure(ProviderError::from_status(status, Some(Duration::from_secs(1)))),
                Err(_) => failure(ProviderError::InvalidRequest("bad /mock error status".into())),
            },
            "slow" => match argument.parse::<u64>() {
                Ok(ms) => self.default_answer(message, tools, Duration::from_millis(ms)),
                Err(_) => failure(ProviderError::InvalidRequest("bad /mock slow delay".into())),
            },
            "words" => match argument.parse::<usize>() {
                Ok(n) if n <= 100_000 => {
                    let words = (1..=n)
                        .map(|i| if i < n { format!("w{i} ") } else { format!("w{i}") })
                        .collect();
                    self.chunks(words, Duration::ZERO)
                }
                _ => failure(ProviderError::InvalidRequest(
                    "bad /mock words count (0 to 100000)".into(),
                )),
            },
            "attachments" => {
                let all: Vec<_> = conversation
                    .iter()
                    .flat_map(|m| m.attachments.iter().cloned())
                    .collect();
                self.chunks(
                    vec![format!("Attachments in context: {}", describe(&all))],
                    Duration::ZERO,
                )
            }
            "say" => {
                // The text after `say` as sent, line breaks included, in chunks of 8 characters.
                let text = message.strip_prefix("/mock").unwrap_or("").trim_start();
                let text = text.strip_prefix("say").unwrap_or("").trim_start_matches([' ', '\t']);
                let chars: Vec<char> = text.chars().collect();
                let pieces = chars.chunks(8).map(|c| c.iter().collect()).collect();
                self.chunks(pieces, Duration::ZERO)
            }
            "context" => self.chunks(
                vec![format!("Messages in context: {}", conversation.len())],
                Duration::ZERO,
            ),
            "die" => failure(ProviderError::Fatal("scripted by /mock die".into())),
            "panic" => stream::iter([Ok(ProviderEvent::Text("about to crash ".into()))])
                .chain(stream::once(async { scripted_panic() }))
                .boxed(),
            _ => self.default_answer(message, tools, Duration::ZERO),
        }
    }
}

#[expect(clippy::panic, reason = "`/mock panic` exists to prove that panics are supervised")]
fn scripted_panic() -> Result<ProviderEvent, ProviderError> {
    panic!("scripted by /mock panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(provider: &MockProvider, messages: Vec<ChatMessage>) -> Vec<Result<ProviderEvent, ProviderError>> {
        provider
            .stream(CompletionRequest {
                messages: messages.into_iter().map(Arc::new).collect(),
                tools: Default::default(),
                purpose: Purpose::Chat,
            })
            .collect()
            .await
    }

    #[actix_rt::test]
    async fn plain_messages_stream_the_original_sentence_word_by_word() {
        let events = collect(
            &MockProvider::new(Duration::ZERO),
            vec![ChatMessage::new(Role::User, "hi there")],
        )
        .await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(ProviderEvent::Text(t)) => Some(t.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Mock streaming response to: 'hi there'. Available tools: 0");
        assert_eq!(events.len(), 9);
        assert_eq!(events.last(), Some(&Ok(ProviderEvent::Done)));
    }

    #[actix_rt::test]
    async fn tool_scripts_request_every_call_at_once() {
        let script = r#"/mock tools [{"name":"a","arguments":{"x":1}},{"name":"b"}]"#;
        let events = collect(
            &MockProvider::new(Duration::ZERO),
            vec![ChatMessage::new(Role::User, script)],
        )
        .await;
        let Some(Ok(ProviderEvent::ToolCalls(calls))) = events.first() else {
            panic!("expected tool calls, got {events:?}");
        };
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].function.name, "a");
        assert_eq!(calls[0].function.arguments, r#"{"x":1}"#);
        assert_eq!(calls[1].function.arguments, "{}");
    }

    #[actix_rt::test]
    async fn error_scripts_map_statuses() {
        let events = collect(
            &MockProvider::new(Duration::ZERO),
            vec![ChatMessage::new(Role::User, "/mock error 429")],
        )
        .await;
        assert!(matches!(events[..], [Err(ProviderError::RateLimited { .. })]));
        let events = collect(
            &MockProvider::new(Duration::ZERO),
            vec![ChatMessage::new(Role::User, "/mock error 500")],
        )
        .await;
        assert_eq!(events, vec![Err(ProviderError::Upstream { status: 500 })]);
    }
}
