//! Ollama (`POST {base}/api/chat`, NDJSON): content fragments, whole tool calls gathered over the
//! lines, `done: true` ends the answer.

use serde_json::{Value, json};

use super::config::HttpProviderConfig;
use super::wire::{Frame, Prepared, StreamParser};
use super::{CompletionRequest, ProviderError, ProviderEvent};
use crate::attachment::AttachmentKind;
use crate::model::{ChatMessage, Role, ToolCall, Usage};

/// A user message with files: images in `images` (base64), text files appended to the content;
/// Ollama reads no PDFs (a PDF from another provider's turn becomes a note).
fn user_message(m: &ChatMessage) -> Value {
    let mut content = m.content.clone();
    let mut images = Vec::new();
    for a in &m.attachments {
        match a.kind() {
            AttachmentKind::Image => images.push(json!(a.content)),
            AttachmentKind::Text => content = format!("{content}\n\n{}", a.as_text_block()),
            AttachmentKind::Pdf => content = format!("{content}\n\n{}", a.as_placeholder()),
        }
    }
    let mut message = json!({"role": "user", "content": content});
    if !images.is_empty() {
        message["images"] = Value::Array(images);
    }
    message
}

/// The request body (Ollama needs no key; one is sent as a bearer token if configured, for proxies).
pub fn prepare(config: &HttpProviderConfig, request: &CompletionRequest) -> Prepared {
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| match m.role {
            Role::Assistant => {
                let mut message = json!({"role": "assistant", "content": m.content});
                if !m.tool_calls.is_empty() {
                    message["tool_calls"] = m
                        .tool_calls
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let args: Value = serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                            json!({"type": "function", "function": {"index": i, "name": c.function.name, "arguments": args}})
                        })
                        .collect();
                }
                message
            }
            Role::Tool => json!({
                "role": "tool",
                "tool_name": m.tool_executions.first().map_or("", |e| e.tool_name.as_str()),
                "tool_call_id": m.tool_call_id,
                "content": m.content,
            }),
            Role::System => json!({"role": "system", "content": m.content}),
            Role::User if !m.attachments.is_empty() => user_message(m),
            Role::User | Role::ToolApproval => json!({"role": "user", "content": m.content}),
        })
        .collect();
    let mut body = json!({"model": config.model, "stream": true, "messages": messages});
    if !request.tools.is_empty() {
        body["tools"] = super::openai::function_tools(&request.tools);
    }
    let mut options = json!({});
    if let Some(t) = config.temperature {
        options["temperature"] = json!(t);
    }
    if let Some(n) = config.max_tokens {
        options["num_predict"] = json!(n);
    }
    if options.as_object().is_some_and(|o| !o.is_empty()) {
        body["options"] = options;
    }
    let headers = config
        .api_key
        .iter()
        .map(|key| ("authorization", format!("Bearer {key}")))
        .collect();
    Prepared {
        url: format!("{}/api/chat", config.base_url.trim_end_matches('/')),
        headers,
        body,
    }
}

/// Assembles an `/api/chat` stream.
#[derive(Default)]
pub struct Parser {
    calls: Vec<ToolCall>,
}

impl StreamParser for Parser {
    fn feed(&mut self, frame: &Frame) -> Result<Vec<ProviderEvent>, ProviderError> {
        let line: Value =
            serde_json::from_str(&frame.data).map_err(|e| ProviderError::Protocol(format!("bad line: {e}")))?;
        if line.get("error").is_some() {
            return Err(ProviderError::Upstream { status: 500 });
        }
        let mut events = Vec::new();
        if let Some(text) = line
            .pointer("/message/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            events.push(ProviderEvent::Text(text.to_owned()));
        }
        for call in line
            .pointer("/message/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let id = call["id"]
                .as_str()
                .map_or_else(|| crate::ids::prefixed_id("call"), str::to_owned);
            let args = call
                .pointer("/function/arguments")
                .cloned()
                .unwrap_or_else(|| json!({}));
            let args = match args {
                Value::String(text) => text,
                other => other.to_string(),
            };
            self.calls.push(ToolCall::function(
                id,
                call.pointer("/function/name").and_then(Value::as_str).unwrap_or(""),
                args,
            ));
        }
        if line["done"].as_bool() == Some(true) {
            if !self.calls.is_empty() {
                events.push(ProviderEvent::ToolCalls(std::mem::take(&mut self.calls)));
            }
            events.push(ProviderEvent::Usage(Usage {
                input_tokens: line["prompt_eval_count"].as_u64().unwrap_or(0),
                output_tokens: line["eval_count"].as_u64().unwrap_or(0),
            }));
            events.push(ProviderEvent::Done);
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        Err(ProviderError::Protocol("the stream ended before done".into()))
    }
}
