//! OpenAI Chat Completions (`POST {base}/chat/completions`, SSE, `data: [DONE]`): tool call
//! fragments are assembled by `index`; usage comes from `stream_options.include_usage`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::config::HttpProviderConfig;
use super::wire::{Frame, Prepared, StreamParser};
use super::{CompletionRequest, ProviderError, ProviderEvent};
use crate::attachment::AttachmentKind;
use crate::model::{ChatMessage, Role, ToolCall, Usage};

/// Tools in the `{"type": "function", "function": {...}}` shape (OpenAI and Ollama).
pub fn function_tools(tools: &[crate::tools::ToolSpec]) -> Value {
    tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
        .collect()
}

/// A user message with files: text, then an `image_url` (data URL), `file` (PDF) or text part
/// per file.
fn user_parts(m: &ChatMessage) -> Vec<Value> {
    let mut parts = vec![json!({"type": "text", "text": m.content})];
    parts.extend(m.attachments.iter().map(|a| match a.kind() {
        AttachmentKind::Image => json!({"type": "image_url", "image_url": {"url": a.data_url()}}),
        AttachmentKind::Pdf => json!({"type": "file", "file": {"filename": a.filename, "file_data": a.data_url()}}),
        AttachmentKind::Text => json!({"type": "text", "text": a.as_text_block()}),
    }));
    parts
}

/// The request body and headers.
pub fn prepare(config: &HttpProviderConfig, request: &CompletionRequest) -> Prepared {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => json!({
                "role": "assistant",
                "content": if m.content.is_empty() { Value::Null } else { json!(m.content) },
                "tool_calls": m.tool_calls.iter().map(|c| json!({
                    "id": c.id, "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments}
                })).collect::<Vec<_>>(),
            }),
            Role::Tool => json!({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}),
            Role::System => json!({"role": "system", "content": m.content}),
            Role::Assistant => json!({"role": "assistant", "content": m.content}),
            Role::User if !m.attachments.is_empty() => json!({"role": "user", "content": user_parts(m)}),
            Role::User | Role::ToolApproval => json!({"role": "user", "content": m.content}),
        })
        .collect();
    let mut body = json!({
        "model": config.model,
        "stream": true,
        "stream_options": {"include_usage": true},
        "messages": messages,
    });
    if !request.tools.is_empty() {
        body["tools"] = function_tools(&request.tools);
    }
    if let Some(t) = config.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = config.max_tokens {
        body["max_tokens"] = json!(n);
    }
    let mut headers = Vec::new();
    if let Some(key) = &config.api_key {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    Prepared {
        url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
        headers,
        body,
    }
}

#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// Assembles a Chat Completions stream.
#[derive(Default)]
pub struct Parser {
    calls: BTreeMap<u64, PartialCall>,
    usage: Option<Usage>,
}

impl Parser {
    fn done(&mut self) -> Vec<ProviderEvent> {
        let mut events = Vec::new();
        let calls: Vec<ToolCall> = std::mem::take(&mut self.calls)
            .into_values()
            .map(|c| {
                let arguments = if c.arguments.trim().is_empty() {
                    "{}".to_owned()
                } else {
                    c.arguments
                };
                ToolCall::function(c.id, c.name, arguments)
            })
            .collect();
        if !calls.is_empty() {
            events.push(ProviderEvent::ToolCalls(calls));
        }
        events.extend(self.usage.take().map(ProviderEvent::Usage));
        events.push(ProviderEvent::Done);
        events
    }
}

impl StreamParser for Parser {
    fn feed(&mut self, frame: &Frame) -> Result<Vec<ProviderEvent>, ProviderError> {
        let data = frame.data.trim();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        if data.starts_with("[DONE]") {
            return Ok(self.done());
        }
        let chunk: Value =
            serde_json::from_str(data).map_err(|e| ProviderError::Protocol(format!("bad chunk: {e}")))?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let code = error.get("code").and_then(Value::as_str).unwrap_or("");
            return Err(match code {
                "context_length_exceeded" => ProviderError::ContextLengthExceeded,
                "rate_limit_exceeded" => ProviderError::RateLimited { retry_after: None },
                _ => ProviderError::Upstream { status: 500 },
            });
        }
        if let Some(usage) = chunk.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(Usage {
                input_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        let mut events = Vec::new();
        let Some(delta) = chunk.pointer("/choices/0/delta") else {
            return Ok(events);
        };
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            events.push(ProviderEvent::Text(text.to_owned()));
        }
        for fragment in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = fragment.get("index").and_then(Value::as_u64).unwrap_or(0);
            // Some compatible servers reuse index 0 for every call and tell them apart by id.
            let index = match fragment.get("id").and_then(Value::as_str) {
                Some(id) if self.calls.get(&index).is_some_and(|c| !c.id.is_empty() && c.id != id) => {
                    self.calls.keys().max().map_or(0, |k| k + 1)
                }
                _ => index,
            };
            let call = self.calls.entry(index).or_default();
            if let Some(id) = fragment.get("id").and_then(Value::as_str) {
                call.id = id.to_owned();
            }
            if let Some(name) = fragment.pointer("/function/name").and_then(Value::as_str) {
                call.name.push_str(name);
            }
            if let Some(piece) = fragment.pointer("/function/arguments").and_then(Value::as_str) {
                call.arguments.push_str(piece);
            }
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        Err(ProviderError::Protocol("the stream ended before [DONE]".into()))
    }
}
