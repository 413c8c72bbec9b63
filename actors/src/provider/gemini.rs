//! Gemini (`POST {base}/v1beta/models/{model}:streamGenerateContent?alt=sse`, SSE without a
//! terminator): text parts, whole `functionCall` parts gathered across chunks, thought signatures
//! kept on the call they came with; the stream must carry a `finishReason` before it ends.

use serde_json::{Value, json};

use super::config::HttpProviderConfig;
use super::wire::{Frame, Prepared, StreamParser};
use super::{CompletionRequest, ProviderError, ProviderEvent};
use crate::attachment::AttachmentKind;
use crate::model::{ChatMessage, Role, ToolCall, Usage};

/// Ids we made up for calls that came without one; never echoed back.
const GENERATED: &str = "gen_";

fn push(contents: &mut Vec<Value>, role: &str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    if let Some(last) = contents.last_mut()
        && last["role"] == role
        && let Some(existing) = last["parts"].as_array_mut()
    {
        existing.extend(parts);
        return;
    }
    contents.push(json!({"role": role, "parts": parts}));
}

/// A user message: its text, then an `inlineData` part per image or PDF and a text part per
/// text file.
fn user_parts(m: &ChatMessage) -> Vec<Value> {
    let mut parts = vec![json!({"text": m.content})];
    parts.extend(m.attachments.iter().map(|a| match a.kind() {
        AttachmentKind::Image | AttachmentKind::Pdf => {
            json!({"inlineData": {"mimeType": a.mime_type, "data": a.content}})
        }
        AttachmentKind::Text => json!({"text": a.as_text_block()}),
    }));
    parts
}

/// The request body and headers.
pub fn prepare(config: &HttpProviderConfig, request: &CompletionRequest) -> Prepared {
    let mut system = Vec::new();
    let mut contents = Vec::new();
    for m in &request.messages {
        match m.role {
            Role::System => system.push(json!({"text": m.content})),
            Role::User | Role::ToolApproval => push(&mut contents, "user", user_parts(m)),
            Role::Assistant => {
                let mut parts = Vec::new();
                if !m.content.is_empty() {
                    parts.push(json!({"text": m.content}));
                }
                for c in &m.tool_calls {
                    let args: Value = serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| json!({}));
                    let mut call = json!({"name": c.function.name, "args": args});
                    if !c.id.starts_with(GENERATED) {
                        call["id"] = json!(c.id);
                    }
                    let mut part = json!({"functionCall": call});
                    if let Some(signature) = &c.thought_signature {
                        part["thoughtSignature"] = json!(signature);
                    }
                    parts.push(part);
                }
                push(&mut contents, "model", parts);
            }
            Role::Tool => {
                let execution = m.tool_executions.first();
                let name = execution.map_or("", |e| e.tool_name.as_str());
                let response = match execution.and_then(|e| e.error.as_ref()) {
                    Some(error) => json!({"error": error}),
                    None => json!({"result": m.content}),
                };
                let mut reply = json!({"name": name, "response": response});
                if let Some(id) = m.tool_call_id.as_deref().filter(|id| !id.starts_with(GENERATED)) {
                    reply["id"] = json!(id);
                }
                push(&mut contents, "user", vec![json!({"functionResponse": reply})]);
            }
        }
    }
    let mut body = json!({"contents": contents});
    if !system.is_empty() {
        body["systemInstruction"] = json!({"parts": system});
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "parametersJsonSchema": t.input_schema}))
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
    }
    let mut generation = json!({});
    if let Some(t) = config.temperature {
        generation["temperature"] = json!(t);
    }
    if let Some(n) = config.max_tokens {
        generation["maxOutputTokens"] = json!(n);
    }
    if generation.as_object().is_some_and(|g| !g.is_empty()) {
        body["generationConfig"] = generation;
    }
    let mut headers = Vec::new();
    if let Some(key) = &config.api_key {
        headers.push(("x-goog-api-key", key.clone()));
    }
    let url = format!(
        "{}/v1beta/models/{}:streamGenerateContent?alt=sse",
        config.base_url.trim_end_matches('/'),
        config.model
    );
    Prepared { url, headers, body }
}

/// Assembles a `streamGenerateContent` stream.
#[derive(Default)]
pub struct Parser {
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    finished: bool,
}

impl StreamParser for Parser {
    fn feed(&mut self, frame: &Frame) -> Result<Vec<ProviderEvent>, ProviderError> {
        if frame.data.trim().is_empty() {
            return Ok(Vec::new());
        }
        let chunk: Value =
            serde_json::from_str(&frame.data).map_err(|e| ProviderError::Protocol(format!("bad chunk: {e}")))?;
        if let Some(error) = chunk.get("error") {
            let status = error["code"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(500);
            return Err(ProviderError::from_status(status, None));
        }
        if let Some(usage) = chunk.get("usageMetadata") {
            self.usage = Some(Usage {
                input_tokens: usage["promptTokenCount"].as_u64().unwrap_or(0),
                output_tokens: usage["candidatesTokenCount"].as_u64().unwrap_or(0),
            });
        }
        let mut events = Vec::new();
        let candidate = chunk.pointer("/candidates/0");
        for part in candidate
            .and_then(|c| c.pointer("/content/parts"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            // Thought summaries are not part of the answer.
            if let Some(text) = part.get("text").and_then(Value::as_str).filter(|t| !t.is_empty())
                && part.get("thought").and_then(Value::as_bool) != Some(true)
            {
                events.push(ProviderEvent::Text(text.to_owned()));
            }
            if let Some(call) = part.get("functionCall") {
                let id = call["id"]
                    .as_str()
                    .map_or_else(|| crate::ids::prefixed_id("gen_call"), str::to_owned);
                let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
                let mut tool = ToolCall::function(id, call["name"].as_str().unwrap_or(""), args.to_string());
                tool.thought_signature = part.get("thoughtSignature").and_then(Value::as_str).map(str::to_owned);
                self.calls.push(tool);
            }
        }
        if candidate.and_then(|c| c.get("finishReason")).is_some() {
            self.finished = true;
        }
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<ProviderEvent>, ProviderError> {
        if !self.finished {
            return Err(ProviderError::Protocol(
                "the stream ended without a finishReason".into(),
            ));
        }
        let mut events = Vec::new();
        if !self.calls.is_empty() {
            events.push(ProviderEvent::ToolCalls(std::mem::take(&mut self.calls)));
        }
        events.extend(self.usage.take().map(ProviderEvent::Usage));
        events.push(ProviderEvent::Done);
        Ok(events)
    }
}
