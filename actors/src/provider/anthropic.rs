//! Anthropic Messages (`POST {base}/v1/messages`, SSE with `event:` names): text deltas, `tool_use`
//! blocks whose `input_json_delta` pieces are joined per block index, `ping` skipped, `error`
//! events mapped.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::config::HttpProviderConfig;
use super::wire::{Frame, Prepared, StreamParser};
use super::{CompletionRequest, ProviderError, ProviderEvent};
use crate::attachment::AttachmentKind;
use crate::model::{ChatMessage, Role, ToolCall, Usage};

fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    // Messages must alternate: consecutive turns of one role become one message.
    if let Some(last) = messages.last_mut()
        && last["role"] == role
        && let Some(content) = last["content"].as_array_mut()
    {
        content.extend(blocks);
        return;
    }
    messages.push(json!({"role": role, "content": blocks}));
}

/// A user message: its files first (`image`, `document` for PDFs, text blocks), then its text.
fn user_blocks(m: &ChatMessage) -> Vec<Value> {
    let mut blocks: Vec<Value> = m
        .attachments
        .iter()
        .map(|a| match a.kind() {
            AttachmentKind::Image => json!({"type": "image",
                "source": {"type": "base64", "media_type": a.mime_type, "data": a.content}}),
            AttachmentKind::Pdf => json!({"type": "document", "title": a.filename,
                "source": {"type": "base64", "media_type": "application/pdf", "data": a.content}}),
            AttachmentKind::Text => json!({"type": "text", "text": a.as_text_block()}),
        })
        .collect();
    blocks.push(json!({"type": "text", "text": m.content}));
    blocks
}

/// The request body and headers.
pub fn prepare(config: &HttpProviderConfig, request: &CompletionRequest) -> Prepared {
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for m in &request.messages {
        match m.role {
            Role::System => system.push(m.content.clone()),
            Role::User | Role::ToolApproval => push(&mut messages, "user", user_blocks(m)),
            Role::Assistant => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input: Value = serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.function.name, "input": input}));
                }
                push(&mut messages, "assistant", blocks);
            }
            Role::Tool => {
                let failed = m.tool_executions.first().is_some_and(|e| e.error.is_some());
                let mut block = json!({"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content});
                if failed {
                    block["is_error"] = json!(true);
                }
                push(&mut messages, "user", vec![block]);
            }
        }
    }
    let mut body = json!({
        "model": config.model,
        "max_tokens": config.max_tokens.unwrap_or(4096),
        "stream": true,
        "messages": messages,
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    if let Some(t) = config.temperature {
        body["temperature"] = json!(t.min(1.0));
    }
    let mut headers = vec![("anthropic-version", "2023-06-01".to_owned())];
    if let Some(key) = &config.api_key {
        headers.push(("x-api-key", key.clone()));
    }
    Prepared {
        url: format!("{}/v1/messages", config.base_url.trim_end_matches('/')),
        headers,
        body,
    }
}

struct Block {
    id: String,
    name: String,
    input: String,
}

/// Assembles a Messages stream.
#[derive(Default)]
pub struct Parser {
    blocks: BTreeMap<u64, Block>,
    usage: Usage,
}

impl StreamParser for Parser {
    fn feed(&mut self, frame: &Frame) -> Result<Vec<ProviderEvent>, ProviderError> {
        if frame.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let event: Value =
            serde_json::from_str(&frame.data).map_err(|e| ProviderError::Protocol(format!("bad event: {e}")))?;
        let kind = frame.event.as_deref().or_else(|| event["type"].as_str()).unwrap_or("");
        let index = event["index"].as_u64().unwrap_or(0);
        let mut events = Vec::new();
        match kind {
            "message_start" => {
                self.usage.input_tokens = event
                    .pointer("/message/usage/input_tokens")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
            }
            "content_block_start" if event.pointer("/content_block/type") == Some(&json!("tool_use")) => {
                let block = &event["content_block"];
                self.blocks.insert(
                    index,
                    Block {
                        id: block["id"].as_str().unwrap_or("").to_owned(),
                        name: block["name"].as_str().unwrap_or("").to_owned(),
                        input: String::new(),
                    },
                );
            }
            "content_block_delta" => match event.pointer("/delta/type").and_then(Value::as_str) {
                Some("text_delta") => {
                    if let Some(text) = event
                        .pointer("/delta/text")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                    {
                        events.push(ProviderEvent::Text(text.to_owned()));
                    }
                }
                Some("input_json_delta") => {
                    let piece = event
                        .pointer("/delta/partial_json")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    match self.blocks.get_mut(&index) {
                        Some(block) => block.input.push_str(piece),
                        None => return Err(ProviderError::Protocol(format!("input for unknown block {index}"))),
                    }
                }
                _ => {}
            },
            "message_delta" => {
                if let Some(out) = event.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output_tokens = out;
                }
            }
            "message_stop" => {
                let calls: Vec<ToolCall> = std::mem::take(&mut self.blocks)
                    .into_values()
                    .map(|b| {
                        let input = if b.input.trim().is_empty() {
                            "{}".to_owned()
                        } else {
                            b.input
                        };
                        ToolCall::function(b.id, b.name, input)
                    })
                    .collect();
                if !calls.is_empty() {
                    events.push(ProviderEvent::ToolCalls(calls));
                }
                events.push(ProviderEvent::Usage(self.usage));
                events.push(ProviderEvent::Done);
            }
            "error" => {
                return Err(match event.pointer("/error/type").and_then(Value::as_str) {
                    Some("rate_limit_error") => ProviderError::RateLimited { retry_after: None },
                    Some("overloaded_error") => ProviderError::Upstream { status: 529 },
                    Some("authentication_error") => ProviderError::AuthFailed,
                    _ => ProviderError::Upstream { status: 500 },
                });
            }
            _ => {}
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        Err(ProviderError::Protocol("the stream ended before message_stop".into()))
    }
}
